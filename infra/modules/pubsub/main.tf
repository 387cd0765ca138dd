# Topics from the topology. The cloudevent functions' subscriptions are created by Eventarc (see modules/functions);
# this module grants the Pub/Sub service agent what dead-lettering needs.
variable "project_id" { type = string }
variable "topics" { type = list(string) }
variable "dead_letter_topic" { type = string }
variable "labels" {
  type    = map(string)
  default = {}
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_pubsub_topic" "topic" {
  for_each                   = toset(var.topics)
  project                    = var.project_id
  name                       = each.value
  labels                     = var.labels
  message_retention_duration = "86400s"
}

# Dead-lettered messages are kept for inspection (a topic without a subscription drops them).
resource "google_pubsub_subscription" "dead_letter_inbox" {
  project                    = var.project_id
  name                       = "${var.dead_letter_topic}-inbox"
  topic                      = google_pubsub_topic.topic[var.dead_letter_topic].id
  message_retention_duration = "604800s"
  labels                     = var.labels
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.topic[var.dead_letter_topic].name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

output "topic_ids" {
  value = { for name, topic in google_pubsub_topic.topic : name => topic.id }
}

output "pubsub_agent" {
  value = local.pubsub_agent
}
