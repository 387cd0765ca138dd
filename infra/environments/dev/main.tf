# The dev environment: `terraform -chdir=infra/environments/dev init -backend-config="bucket=<state bucket>"`,
# then `apply -var project_id=... -var worker_image=...` (cloudbuild.yaml does both).
terraform {
  required_version = ">= 1.9"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.10"
    }
    archive = {
      source  = "hashicorp/archive"
      version = "~> 2.6"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }
  backend "gcs" {
    prefix = "visgate-deploy/dev"
  }
}

variable "project_id" { type = string }
variable "region" {
  type    = string
  default = "us-central1"
}
variable "worker_image" { type = string }
variable "bundle_dir" {
  type        = string
  description = "where `python -m local.gen_infra bundle` staged the function sources"
  default     = "../../../build/functions"
}
variable "public_api_base_url" {
  type    = string
  default = ""
}
variable "settings" {
  type        = map(string)
  description = "function settings by environment variable name (README, Configuration), e.g. { RATE_LIMIT_PER_MINUTE = \"240\" }"
  default     = {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "platform" {
  source                        = "../../modules/platform"
  project_id                    = var.project_id
  region                        = var.region
  environment                   = "dev"
  bundle_dir                    = abspath("${path.module}/${var.bundle_dir}")
  worker_image                  = var.worker_image
  public_api_base_url           = var.public_api_base_url
  settings                      = var.settings
  min_instances                 = {}
  firestore_deletion_protection = false
}

output "function_uris" {
  value = module.platform.function_uris
}

output "public_api_base_url" {
  value = module.platform.public_api_base_url
}
