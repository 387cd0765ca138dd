# Cloud Tasks queues from the topology (retry config as declared).
variable "project_id" { type = string }
variable "region" { type = string }
variable "queues" {
  type = map(object({
    function      = string
    max_attempts  = number
    min_backoff_s = number
    max_backoff_s = number
  }))
}

resource "google_cloud_tasks_queue" "queue" {
  for_each = var.queues
  project  = var.project_id
  location = var.region
  name     = each.key

  retry_config {
    max_attempts  = each.value.max_attempts
    min_backoff   = "${each.value.min_backoff_s}s"
    max_backoff   = "${each.value.max_backoff_s}s"
    max_doublings = 5
  }

  rate_limits {
    max_dispatches_per_second = 50
  }

  stackdriver_logging_config {
    sampling_ratio = 1.0
  }
}

output "queue_ids" {
  value = { for name, queue in google_cloud_tasks_queue.queue : name => queue.id }
}
