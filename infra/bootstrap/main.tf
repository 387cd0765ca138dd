# What must exist before the first `gcloud builds submit` of a project (docs/deploy.md, step 2), applied once by an
# operator with their own credentials:
#
#   terraform -chdir=infra/bootstrap init -backend-config="bucket=<state bucket>"
#   terraform -chdir=infra/bootstrap apply -var project_id=<project> [-var region=us-central1]
#
# * the APIs;
# * the worker image's Artifact Registry repository, readable by anyone: endpoints are created in the users' own
#   Runpod accounts, which hold no credentials of ours, so Runpod pulls the image anonymously (only this
#   repository is public; it holds the worker image and nothing secret);
# * the Cloud Build service account, with what build, push and `terraform apply` of an environment need, and no
#   more (no Owner, no Editor).
terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.10"
    }
  }
  backend "gcs" {
    prefix = "visgate-deploy/bootstrap"
  }
}

variable "project_id" { type = string }
variable "region" {
  type    = string
  default = "us-central1"
}
variable "repository_id" {
  type        = string
  description = "the Artifact Registry repository of the worker image (cloudbuild.yaml's _WORKER_REPOSITORY)"
  default     = "visgate"
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "apis" {
  source     = "../modules/apis"
  project_id = var.project_id
}

resource "google_artifact_registry_repository" "worker" {
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  format        = "DOCKER"
  description   = "The Visgate worker image, pulled anonymously by Runpod endpoints in users' accounts"
  labels        = { app = "visgate-deploy" }

  docker_config {
    # A digest is what deploys (WORKER_IMAGE); a tag that moved would make two builds claim one name.
    immutable_tags = true
  }

  depends_on = [module.apis]
}

# Public read on this repository alone (an org policy restricting allUsers must allow it: docs/deploy.md).
resource "google_artifact_registry_repository_iam_member" "public_read" {
  project    = var.project_id
  location   = google_artifact_registry_repository.worker.location
  repository = google_artifact_registry_repository.worker.name
  role       = "roles/artifactregistry.reader"
  member     = "allUsers"
}

resource "google_service_account" "cloudbuild" {
  project      = var.project_id
  account_id   = "visgate-cloudbuild"
  display_name = "Builds, pushes and applies Visgate Deploy (cloudbuild.yaml)"
  depends_on   = [module.apis]
}

locals {
  # What `terraform apply` of infra/environments/* creates and wires, one role per kind of resource.
  apply_roles = [
    "roles/cloudfunctions.admin", "roles/run.admin", "roles/eventarc.admin", "roles/pubsub.admin",
    "roles/cloudtasks.admin", "roles/cloudscheduler.admin", "roles/secretmanager.admin", "roles/datastore.owner",
    "roles/firebaserules.admin", "roles/identityplatform.admin",
    # The functions' source bucket and its objects, and the Terraform state bucket.
    "roles/storage.admin",
    "roles/iam.serviceAccountAdmin", "roles/resourcemanager.projectIamAdmin", "roles/serviceusage.serviceUsageAdmin",
    # Deploying a function as its service account, and scheduler jobs and tasks signed as the invoker: actAs.
    "roles/iam.serviceAccountUser",
    # The build's own logs (the build runs with CLOUD_LOGGING_ONLY).
    "roles/logging.logWriter",
  ]
}

resource "google_project_iam_member" "cloudbuild" {
  for_each = toset(local.apply_roles)
  project  = var.project_id
  role     = each.value
  member   = google_service_account.cloudbuild.member
}

# Push the worker image: write on its repository only.
resource "google_artifact_registry_repository_iam_member" "cloudbuild_push" {
  project    = var.project_id
  location   = google_artifact_registry_repository.worker.location
  repository = google_artifact_registry_repository.worker.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.cloudbuild.member
}

output "worker_repository" {
  description = "cloudbuild.yaml's _WORKER_REPOSITORY"
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.worker.repository_id}/worker"
}

output "cloudbuild_service_account" {
  description = "gcloud builds submit --service-account=<this>"
  value       = google_service_account.cloudbuild.id
}
