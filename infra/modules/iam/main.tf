# One service account per function, granted only what its entry in shared/topology.py declares (exported to
# infra/topology.auto.tfvars.json): Firestore and log writing on the project, accessor on its own secrets, publisher
# on the topics it publishes, enqueuer on the queues it enqueues (and actAs on the invoker identity, which signs
# those tasks). One invoker identity for Cloud Tasks, Cloud Scheduler and Eventarc pushes.
# tests/unit/test_infra_least_privilege.py checks that every grant here follows the declaration.
variable "project_id" { type = string }
variable "region" { type = string }
variable "functions" {
  type = map(object({
    entry_point           = string
    signature             = string
    public                = bool
    trigger_topic         = optional(string)
    max_delivery_attempts = optional(number)
    secrets               = optional(list(string), [])
    publishes             = optional(list(string), [])
    enqueues              = optional(list(string), [])
    signs_tokens          = optional(bool, false)
    timeout_s             = optional(number, 60)
  }))
}
variable "secret_ids" {
  type        = map(string)
  description = "Secret Manager secret id => its resource id (tenant-pepper, sealing-key, model-cache-aws-secret-access-key)"
}
variable "topic_ids" {
  type        = map(string)
  description = "topic name => its resource id"
}
variable "queue_ids" {
  type        = map(string)
  description = "Cloud Tasks queue name => its resource id"
}

locals {
  # The only project-wide roles: deployment state lives in Firestore (no finer IAM there), and logs.
  project_roles = ["roles/datastore.user", "roles/logging.logWriter"]
  project_bindings = merge([
    for name, _ in var.functions : { for role in local.project_roles : "${name}/${role}" => { function = name, role = role } }
  ]...)
  secret_bindings = merge([
    for name, fn in var.functions : { for secret in fn.secrets : "${name}/${secret}" => { function = name, secret = secret } }
  ]...)
  topic_bindings = merge([
    for name, fn in var.functions : { for topic in fn.publishes : "${name}/${topic}" => { function = name, topic = topic } }
  ]...)
  queue_bindings = merge([
    for name, fn in var.functions : { for queue in fn.enqueues : "${name}/${queue}" => { function = name, queue = queue } }
  ]...)
  enqueuing_functions     = toset([for name, fn in var.functions : name if length(fn.enqueues) > 0])
  token_signing_functions = toset([for name, fn in var.functions : name if fn.signs_tokens])
}

resource "google_service_account" "function" {
  for_each     = var.functions
  project      = var.project_id
  account_id   = "fn-${each.key}"
  display_name = "Cloud Function ${each.key}"
}

resource "google_project_iam_member" "function" {
  for_each = local.project_bindings
  project  = var.project_id
  role     = each.value.role
  member   = google_service_account.function[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "function" {
  for_each  = local.secret_bindings
  project   = var.project_id
  secret_id = var.secret_ids[each.value.secret]
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value.function].member
}

resource "google_pubsub_topic_iam_member" "function" {
  for_each = local.topic_bindings
  project  = var.project_id
  topic    = var.topic_ids[each.value.topic]
  role     = "roles/pubsub.publisher"
  member   = google_service_account.function[each.value.function].member
}

resource "google_cloud_tasks_queue_iam_member" "function" {
  for_each = local.queue_bindings
  project  = var.project_id
  location = var.region
  name     = var.queue_ids[each.value.queue]
  role     = "roles/cloudtasks.enqueuer"
  member   = google_service_account.function[each.value.function].member
}

resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "fn-invoker"
  display_name = "Invokes internal functions (Cloud Tasks, Cloud Scheduler, Eventarc)"
}

# Functions that create tasks sign them as the invoker (OIDC), which needs actAs on it.
resource "google_service_account_iam_member" "functions_act_as_invoker" {
  for_each           = local.enqueuing_functions
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

# Functions that sign as themselves (IAM signBlob): the intake's Firebase custom tokens (POST /v1/client-token).
resource "google_service_account_iam_member" "functions_sign_as_themselves" {
  for_each           = local.token_signing_functions
  service_account_id = google_service_account.function[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_service_account.function[each.key].member
}

resource "google_project_iam_member" "invoker_receives_events" {
  project = var.project_id
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.invoker.member
}

output "function_service_accounts" {
  value = { for name, account in google_service_account.function : name => account.email }
}

output "invoker_email" {
  value = google_service_account.invoker.email
}

output "invoker_member" {
  value = google_service_account.invoker.member
}
