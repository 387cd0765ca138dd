# The whole platform for one environment, wired from the topology (infra/topology.auto.tfvars.json, generated from
# shared/topology.py by `python -m local.gen_infra tfvars`).
variable "project_id" { type = string }
variable "region" { type = string }
variable "environment" { type = string }
variable "bundle_dir" { type = string }
variable "worker_image" {
  type        = string
  description = "the worker image Runpod templates use (pushed by cloudbuild.yaml)"
  # shared/config.py defaults WORKER_IMAGE to an all-zero digest so that local runs and tests need no image; a
  # deployed environment must never create templates from it.
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$", var.worker_image)) && !can(regex("@sha256:0{64}$", var.worker_image))
    error_message = "worker_image must be a pushed image pinned by digest (<repository>@sha256:<64 hex>), not the all-zero placeholder."
  }
}
variable "public_api_base_url" {
  type        = string
  description = "base URL users call (a custom domain in front of the intake function); empty: the function URL"
  default     = ""
}
variable "min_instances" {
  type    = map(number)
  default = {}
}
variable "firestore_deletion_protection" {
  type    = bool
  default = true
}

locals {
  repo_root = "${path.module}/../../.."
  topology  = jsondecode(file("${path.module}/../../topology.auto.tfvars.json"))
  labels    = { app = "visgate-deploy", env = var.environment }
  # Gen2 functions also answer on https://REGION-PROJECT.cloudfunctions.net/NAME, the layout FUNCTIONS_BASE_URL
  # expects (base URL + the function's path), which is known before the functions exist.
  functions_base_url = "https://${var.region}-${var.project_id}.cloudfunctions.net"
  # Every secret some function declares (shared/topology.py). The shared cache's key is optional: a secret without
  # a version is read as unset.
  secret_ids = distinct(flatten([for fn in local.topology.functions : fn.secrets]))
  apis = [
    "artifactregistry.googleapis.com", "cloudbuild.googleapis.com", "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com", "cloudtasks.googleapis.com", "eventarc.googleapis.com",
    "firebaserules.googleapis.com", "firestore.googleapis.com", "pubsub.googleapis.com", "run.googleapis.com",
    "secretmanager.googleapis.com",
    # Client apps: Firebase Authentication (Identity Platform) takes our custom tokens, which the intake signs
    # through the IAM Credentials API (signBlob) as its own service account.
    "firebase.googleapis.com", "identitytoolkit.googleapis.com", "iamcredentials.googleapis.com",
  ]
}

resource "google_project_service" "api" {
  for_each           = toset(local.apis)
  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

# The secrets' values are added out of band (gcloud secrets versions add), never through Terraform state.
resource "google_secret_manager_secret" "secret" {
  for_each  = toset(local.secret_ids)
  project   = var.project_id
  secret_id = each.value
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

module "firestore" {
  source              = "../firestore"
  project_id          = var.project_id
  location            = var.region
  rules_file          = "${local.repo_root}/firestore.rules"
  indexes_file        = "${local.repo_root}/firestore.indexes.json"
  deletion_protection = var.firestore_deletion_protection
  depends_on          = [google_project_service.api]
}

# Firebase Authentication for client apps that listen to Firestore (POST /v1/client-token). Custom tokens need no
# sign-in provider; adding Firebase to the project and registering the web app are operator steps (README).
resource "google_identity_platform_config" "auth" {
  project    = var.project_id
  depends_on = [google_project_service.api]
}

module "pubsub" {
  source            = "../pubsub"
  project_id        = var.project_id
  topics            = local.topology.topics
  dead_letter_topic = local.topology.dead_letter_topic
  labels            = local.labels
  depends_on        = [google_project_service.api]
}

module "tasks" {
  source     = "../tasks"
  project_id = var.project_id
  region     = var.region
  queues     = local.topology.queues
  depends_on = [google_project_service.api]
}

module "iam" {
  source     = "../iam"
  project_id = var.project_id
  region     = var.region
  functions  = local.topology.functions
  secret_ids = { for secret in google_secret_manager_secret.secret : secret.secret_id => secret.id }
  topic_ids  = module.pubsub.topic_ids
  queue_ids  = module.tasks.queue_ids
}

module "functions" {
  source           = "../functions"
  project_id       = var.project_id
  region           = var.region
  bundle_dir       = var.bundle_dir
  functions        = local.topology.functions
  service_accounts = module.iam.function_service_accounts
  invoker_email    = module.iam.invoker_email
  invoker_member   = module.iam.invoker_member
  topic_ids        = module.pubsub.topic_ids
  min_instances    = var.min_instances
  labels           = local.labels
  environment = {
    GOOGLE_CLOUD_PROJECT        = var.project_id
    REGION                      = var.region
    SECRET_MANAGER_PROJECT      = var.project_id
    FUNCTIONS_BASE_URL          = local.functions_base_url
    PUBLIC_API_BASE_URL         = var.public_api_base_url != "" ? var.public_api_base_url : "${local.functions_base_url}/intake"
    TASKS_SERVICE_ACCOUNT_EMAIL = module.iam.invoker_email
    WORKER_IMAGE                = var.worker_image
  }
  depends_on = [module.firestore, module.tasks]
}

module "scheduler" {
  source        = "../scheduler"
  project_id    = var.project_id
  region        = var.region
  schedules     = local.topology.schedules
  function_uris = module.functions.uris
  invoker_email = module.iam.invoker_email
}

output "function_uris" {
  value = module.functions.uris
}

output "public_api_base_url" {
  value = var.public_api_base_url != "" ? var.public_api_base_url : "${local.functions_base_url}/intake"
}
