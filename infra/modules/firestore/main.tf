# The Firestore database (native mode), its security rules, and the composite indexes and TTL policies of
# firestore.indexes.json (the same file the emulator-backed tests are written against, so they cannot drift).
variable "project_id" { type = string }
variable "location" { type = string }
variable "rules_file" {
  type        = string
  description = "path to firestore.rules"
}
variable "indexes_file" {
  type        = string
  description = "path to firestore.indexes.json"
}
variable "deletion_protection" {
  type    = bool
  default = true
}

locals {
  indexes = jsondecode(file(var.indexes_file))
  ttl_fields = {
    for field in try(local.indexes.fieldOverrides, []) :
    "${field.collectionGroup}.${field.fieldPath}" => field if try(field.ttl, false)
  }
}

resource "google_firestore_database" "default" {
  project                           = var.project_id
  name                              = "(default)"
  location_id                       = var.location
  type                              = "FIRESTORE_NATIVE"
  concurrency_mode                  = "OPTIMISTIC"
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
}

resource "google_firestore_index" "composite" {
  for_each   = { for index in local.indexes.indexes : join(",", [index.collectionGroup, join(",", [for f in index.fields : f.fieldPath])]) => index }
  project    = var.project_id
  database   = google_firestore_database.default.name
  collection = each.value.collectionGroup

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.fieldPath
      order      = fields.value.order
    }
  }
}

resource "google_firestore_field" "ttl" {
  for_each   = local.ttl_fields
  project    = var.project_id
  database   = google_firestore_database.default.name
  collection = each.value.collectionGroup
  field      = each.value.fieldPath

  ttl_config {}
  index_config {}
}

resource "google_firebaserules_ruleset" "firestore" {
  project = var.project_id

  source {
    files {
      name    = "firestore.rules"
      content = file(var.rules_file)
    }
  }

  depends_on = [google_firestore_database.default]
}

resource "google_firebaserules_release" "firestore" {
  project      = var.project_id
  name         = "cloud.firestore"
  ruleset_name = google_firebaserules_ruleset.firestore.name
}

output "database" {
  value = google_firestore_database.default.name
}
