# The whole platform for one environment, wired from the topology (infra/topology.auto.tfvars.json, generated from
# shared/topology.py by `python -m local.gen_infra tfvars`).
variable "project_id" { type = string }
variable "region" { type = string }
variable "environment" { type = string }
variable "bundle_dir" { type = string }
variable "worker_image" {
  type        = string
  description = "the worker image Runpod endpoints run (pushed by cloudbuild.yaml, passed on by its digest)"
  # shared/config.py defaults WORKER_IMAGE to an all-zero digest so that local runs and tests need no image; a
  # deployed environment must never create endpoints from it.
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
variable "settings" {
  type        = map(string)
  description = "settings of every function by environment variable name (README, Configuration): only names listed in the topology's `settings`"
  default     = {}
}

locals {
  repo_root = "${path.module}/../../.."
  topology  = jsondecode(file("${path.module}/../../topology.auto.tfvars.json"))
  labels    = { app = "visgate-deploy", env = var.environment }
  # Gen2 functions also answer on https://REGION-PROJECT.cloudfunctions.net/NAME, the layout FUNCTIONS_BASE_URL
  # expects (base URL + the function's path), which is known before the functions exist.
  functions_base_url = "https://${var.region}-${var.project_id}.cloudfunctions.net"
  secrets            = local.topology.secrets
  generated          = { for name, secret in local.secrets : name => secret.first_version if secret.first_version != null }
  unknown_settings   = setsubtract(keys(var.settings), local.topology.settings)
}

module "apis" {
  source     = "../apis"
  project_id = var.project_id
}

# A setting the functions do not read, or one Terraform manages itself, is a typo or a mistake: fail the plan.
resource "terraform_data" "settings" {
  input = var.settings
  lifecycle {
    precondition {
      condition     = length(local.unknown_settings) == 0
      error_message = "settings has names no function may be given here: ${join(", ", local.unknown_settings)} (see the topology's settings list)."
    }
  }
}

resource "google_secret_manager_secret" "secret" {
  for_each  = local.secrets
  project   = var.project_id
  secret_id = each.key
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [module.apis]
}

# The first version of each generated secret, so the functions (which read them at cold start) can start on a new
# project. The value lives in the Terraform state (keep the state bucket private); later changes are ignored, so
# a rotation (a new version added with gcloud, docs/deploy.md) is never undone by the next apply.
resource "random_bytes" "key32" {
  for_each = { for name, kind in local.generated : name => kind if kind == "key32" }
  length   = 32
}

resource "random_password" "token" {
  for_each = { for name, kind in local.generated : name => kind if kind == "token" }
  length   = 48
  special  = false
}

resource "google_secret_manager_secret_version" "first" {
  for_each    = local.generated
  secret      = google_secret_manager_secret.secret[each.key].id
  secret_data = each.value == "key32" ? random_bytes.key32[each.key].base64 : random_password.token[each.key].result

  lifecycle {
    ignore_changes = [secret_data, enabled]
  }
}

module "firestore" {
  source              = "../firestore"
  project_id          = var.project_id
  location            = var.region
  rules_file          = "${local.repo_root}/firestore.rules"
  indexes_file        = "${local.repo_root}/firestore.indexes.json"
  deletion_protection = var.firestore_deletion_protection
  depends_on          = [module.apis]
}

# Firebase Authentication for client apps that listen to Firestore (POST /v1/client-token). Custom tokens need no
# sign-in provider; adding Firebase to the project and registering the web app are operator steps (README).
resource "google_identity_platform_config" "auth" {
  project    = var.project_id
  depends_on = [module.apis]
}

module "pubsub" {
  source            = "../pubsub"
  project_id        = var.project_id
  topics            = local.topology.topics
  dead_letter_topic = local.topology.dead_letter_topic
  labels            = local.labels
  depends_on        = [module.apis]
}

module "tasks" {
  source     = "../tasks"
  project_id = var.project_id
  region     = var.region
  queues     = local.topology.queues
  depends_on = [module.apis]
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
  environment = merge(var.settings, {
    GOOGLE_CLOUD_PROJECT        = var.project_id
    REGION                      = var.region
    SECRET_MANAGER_PROJECT      = var.project_id
    FUNCTIONS_BASE_URL          = local.functions_base_url
    PUBLIC_API_BASE_URL         = var.public_api_base_url != "" ? var.public_api_base_url : "${local.functions_base_url}/intake"
    TASKS_SERVICE_ACCOUNT_EMAIL = module.iam.invoker_email
    WORKER_IMAGE                = var.worker_image
  })
  # A function reads its secrets at cold start and needs its grants to do anything: both exist before it does.
  depends_on = [module.apis, module.firestore, module.tasks, module.iam, google_secret_manager_secret_version.first, terraform_data.settings]
}

module "scheduler" {
  source             = "../scheduler"
  project_id         = var.project_id
  region             = var.region
  schedules          = local.topology.schedules
  functions_base_url = local.functions_base_url
  invoker_email      = module.iam.invoker_email
  depends_on         = [module.functions]
}

output "function_uris" {
  value = module.functions.uris
}

output "public_api_base_url" {
  value = var.public_api_base_url != "" ? var.public_api_base_url : "${local.functions_base_url}/intake"
}
