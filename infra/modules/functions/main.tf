# Cloud Functions (2nd gen), one per topology entry. Bundles are staged by `make bundles` (main.py, the shared
# package and the functions' lock as requirements.txt); a declared function without its bundle fails the plan
# instead of planning to destroy it. Cloudevent functions are triggered through Eventarc on their topic, which
# delivers the same binary CloudEvent the local functions host produces.
variable "project_id" { type = string }
variable "region" { type = string }
variable "bundle_dir" { type = string }
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
    concurrency           = optional(number, 16)
  }))
}
variable "service_accounts" {
  type        = map(string)
  description = "function name => service account email"
}
variable "invoker_email" { type = string }
variable "invoker_member" { type = string }
variable "topic_ids" { type = map(string) }
variable "environment" {
  type        = map(string)
  description = "environment variables of every function (settings field names)"
}
variable "min_instances" {
  type    = map(number)
  default = {}
}
variable "labels" {
  type    = map(string)
  default = {}
}

locals {
  deployed = var.functions
}

resource "google_storage_bucket" "source" {
  project                     = var.project_id
  name                        = "${var.project_id}-function-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = var.labels

  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }
}

data "archive_file" "bundle" {
  for_each    = local.deployed
  type        = "zip"
  source_dir  = "${var.bundle_dir}/${each.key}"
  output_path = "${path.root}/.terraform/bundles/${each.key}.zip"

  lifecycle {
    precondition {
      condition     = fileexists("${var.bundle_dir}/${each.key}/main.py") && fileexists("${var.bundle_dir}/${each.key}/requirements.txt")
      error_message = "No bundle for function ${each.key} in ${var.bundle_dir}: run `make bundles` before planning."
    }
  }
}

resource "google_storage_bucket_object" "bundle" {
  for_each = local.deployed
  bucket   = google_storage_bucket.source.name
  # The content hash in the name makes a changed bundle a new object, which redeploys the function.
  name   = "${each.key}/${data.archive_file.bundle[each.key].output_md5}.zip"
  source = data.archive_file.bundle[each.key].output_path
}

resource "google_cloudfunctions2_function" "function" {
  for_each = local.deployed
  project  = var.project_id
  location = var.region
  name     = each.key
  labels   = var.labels

  build_config {
    runtime     = "python311"
    entry_point = each.value.entry_point
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.bundle[each.key].name
      }
    }
  }

  service_config {
    service_account_email            = var.service_accounts[each.key]
    available_memory                 = "512Mi"
    available_cpu                    = "1"
    timeout_seconds                  = each.value.timeout_s
    max_instance_request_concurrency = each.value.concurrency
    min_instance_count               = lookup(var.min_instances, each.key, 0)
    max_instance_count               = 20
    # Only the API and the workers' callback are reached from outside; the other functions are called by Pub/Sub
    # (Eventarc), Cloud Tasks and Cloud Scheduler, which internal ingress admits.
    ingress_settings = each.value.public ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
    # functions-framework serves THREADS requests at once: as many as the instance is sent. No LOG_EXECUTION_ID:
    # it adds a second log handler (every line twice); our JSON lines carry the execution id themselves.
    environment_variables = merge(var.environment, { THREADS = tostring(each.value.concurrency) })
  }

  dynamic "event_trigger" {
    for_each = each.value.trigger_topic == null ? [] : [each.value.trigger_topic]
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = var.topic_ids[event_trigger.value]
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = var.invoker_email
    }
  }
}

# Public functions (the API; the worker's callback, which authenticates by signature) take unauthenticated calls;
# the others only the invoker identity (Cloud Tasks, Cloud Scheduler, Eventarc).
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = google_cloudfunctions2_function.function
  project  = var.project_id
  location = var.region
  name     = each.value.service_config[0].service
  role     = "roles/run.invoker"
  member   = local.deployed[each.key].public ? "allUsers" : var.invoker_member
}

output "uris" {
  value = { for name, fn in google_cloudfunctions2_function.function : name => fn.service_config[0].uri }
}
