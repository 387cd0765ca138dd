# Cloud Scheduler jobs from the topology: an authenticated POST to the function (plus the path suffix), as the
# local scheduler loop does. The OIDC audience is the function's URL (shared.topology.function_url), the one a 2nd
# gen function accepts; both paths come from the topology (infra/topology.auto.tfvars.json).
variable "project_id" { type = string }
variable "region" { type = string }
variable "schedules" {
  type = map(object({
    function      = string
    cron          = string
    target_path   = string
    audience_path = string
  }))
}
variable "functions_base_url" { type = string }
variable "invoker_email" { type = string }

resource "google_cloud_scheduler_job" "job" {
  for_each         = var.schedules
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
    uri         = "${var.functions_base_url}${each.value.target_path}"
    headers     = { "Content-Type" = "application/json" }
    body        = base64encode("{}")

    oidc_token {
      service_account_email = var.invoker_email
      audience              = "${var.functions_base_url}${each.value.audience_path}"
    }
  }
}
