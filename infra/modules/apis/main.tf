# The Google APIs the platform uses, enabled before anything that needs them. Both roots call this module: the
# bootstrap (before the first build) and every environment (so an environment's apply stands on its own); a
# service enabled twice is one enablement, and neither root disables it on destroy.
variable "project_id" { type = string }

locals {
  apis = [
    # Terraform itself: projects, IAM, service accounts, API enablement.
    "cloudresourcemanager.googleapis.com", "iam.googleapis.com", "serviceusage.googleapis.com",
    # The build: Cloud Build, the worker image's repository, logs.
    "artifactregistry.googleapis.com", "cloudbuild.googleapis.com", "logging.googleapis.com",
    # The functions (2nd gen: Cloud Run services built by Cloud Build, Pub/Sub triggers through Eventarc).
    "cloudfunctions.googleapis.com", "run.googleapis.com", "eventarc.googleapis.com", "pubsub.googleapis.com",
    "cloudtasks.googleapis.com", "cloudscheduler.googleapis.com", "secretmanager.googleapis.com",
    "firestore.googleapis.com", "firebaserules.googleapis.com", "storage.googleapis.com",
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

output "enabled" {
  description = "the enabled services (depend on this output to run after every enablement)"
  value       = [for api in google_project_service.api : api.service]
}
