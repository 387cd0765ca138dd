# One service account per function, with only the roles its steps need; one invoker identity for Cloud Tasks,
# Cloud Scheduler and Eventarc pushes.
variable "project_id" { type = string }
variable "functions" {
  type = map(object({
    entry_point           = string
    signature             = string
    public                = bool
    trigger_topic         = optional(string)
    max_delivery_attempts = optional(number)
  }))
}
variable "secret_ids" {
  type        = list(string)
  description = "Secret Manager secrets every function reads (tenant-pepper, sealing-key, model-cache-aws-secret-access-key)"
}

locals {
  # Every step reads/writes deployment state, publishes lifecycle events, schedules tasks and reads the secrets.
  function_roles = ["roles/datastore.user", "roles/pubsub.publisher", "roles/cloudtasks.enqueuer", "roles/logging.logWriter"]
  bindings = merge([
    for name, _ in var.functions : { for role in local.function_roles : "${name}/${role}" => { function = name, role = role } }
  ]...)
}

resource "google_service_account" "function" {
  for_each     = var.functions
  project      = var.project_id
  account_id   = "fn-${each.key}"
  display_name = "Cloud Function ${each.key}"
}

resource "google_project_iam_member" "function" {
  for_each = local.bindings
  project  = var.project_id
  role     = each.value.role
  member   = google_service_account.function[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "function" {
  for_each  = { for pair in setproduct(keys(var.functions), var.secret_ids) : "${pair[0]}/${pair[1]}" => pair }
  project   = var.project_id
  secret_id = each.value[1]
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function[each.value[0]].member
}

resource "google_service_account" "invoker" {
  project      = var.project_id
  account_id   = "fn-invoker"
  display_name = "Invokes internal functions (Cloud Tasks, Cloud Scheduler, Eventarc)"
}

# Functions that create tasks sign them as the invoker (OIDC), which needs actAs on it.
resource "google_service_account_iam_member" "functions_act_as_invoker" {
  for_each           = var.functions
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function[each.key].member
}

# The intake signs Firebase custom tokens for client apps as itself (IAM signBlob; POST /v1/client-token).
resource "google_service_account_iam_member" "intake_signs_client_tokens" {
  for_each           = contains(keys(var.functions), "intake") ? toset(["intake"]) : toset([])
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
