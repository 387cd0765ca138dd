# Cloud Scheduler jobs from the topology: an authenticated POST to the function (plus the path suffix), as the
# local scheduler loop does.
variable "project_id" { type = string }
variable "region" { type = string }
variable "schedules" {
  type = map(object({
    function    = string
    cron        = string
    path_suffix = string
  }))
}
variable "function_uris" { type = map(string) }
variable "invoker_email" { type = string }

resource "google_cloud_scheduler_job" "job" {
  for_each         = { for name, job in var.schedules : name => job if contains(keys(var.function_uris), job.function) }
  project          = var.project_id
  region           = var.region
  name             = each.key
  schedule         = each.value.cron
  time_zone        = "Etc/UTC"
  attempt_deadline = "320s"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = "${var.function_uris[each.value.function]}${each.value.path_suffix}"
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")

    oidc_token {
      service_account_email = var.invoker_email
      audience              = var.function_uris[each.value.function]
    }
  }
}
