# Training environment on GCP: what Vertex AI custom training jobs need to run privately on the
# ingestion module's accepted data. A CMEK key (HSM, rotated) used by the Vertex AI, Cloud
# Storage and Secret Manager service agents; an artifacts bucket (CMEK, uniform access, public
# access prevented, versioned); a Secret Manager secret (regional, CMEK) for training-time secrets;
# a private service access peering so jobs run on the VPC (no public IPs; Google APIs through the
# ingestion module's Private Service Connect endpoint); and the trainer service account's grants:
# read/write objects of the artifacts bucket and read the secret. Its read access to the data is
# the ingestion module's (BigQuery row access policy: accepted rows only). Jobs are submitted with
# the `custom_job_spec` output (CMEK, network, service account, no web access); add
# `vpc_sc_restricted_services` to the perimeter (ingestion variable vpc_service_controls).

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  agents = {
    vertex        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-aiplatform.iam.gserviceaccount.com"
    storage       = "serviceAccount:service-${data.google_project.this.number}@gs-project-accounts.iam.gserviceaccount.com"
    secretmanager = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-secretmanager.iam.gserviceaccount.com"
  }
  trainer = "serviceAccount:${var.ingestion.trainer_service_account_email}"
}

resource "google_project_service" "this" {
  for_each = toset(["aiplatform.googleapis.com", "secretmanager.googleapis.com", "servicenetworking.googleapis.com", "storage.googleapis.com"])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

# ------------------------------------------------------------------------------------- CMEK --

resource "google_kms_crypto_key" "vertex" {
  name            = "${var.prefix}-vertex"
  key_ring        = var.ingestion.key_ring_id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = var.key_rotation_period

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "HSM"
  }

  lifecycle {
    prevent_destroy = true
  }
}

resource "google_kms_crypto_key_iam_member" "agents" {
  for_each = local.agents

  crypto_key_id = google_kms_crypto_key.vertex.id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = each.value

  depends_on = [google_project_service.this]
}

# -------------------------------------------------------------------------------- artifacts --

resource "google_storage_bucket" "artifacts" {
  # checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Storage Data Access audit logs (google_project_iam_audit_config.storage), which replace the legacy usage-log bucket.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.prefix}-training"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  versioning {
    enabled = true
  }

  encryption {
    default_kms_key_name = google_kms_crypto_key.vertex.id
  }

  depends_on = [google_kms_crypto_key_iam_member.agents]
}

resource "google_storage_bucket_iam_member" "trainer" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])

  bucket = google_storage_bucket.artifacts.name
  role   = each.key
  member = local.trainer
}

resource "google_project_iam_audit_config" "storage" {
  project = var.project_id
  service = "storage.googleapis.com"

  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

# ---------------------------------------------------------------------------------- secrets --

resource "google_secret_manager_secret" "training" {
  project   = var.project_id
  secret_id = "${var.prefix}-training"

  replication {
    user_managed {
      replicas {
        location = var.region
        customer_managed_encryption {
          kms_key_name = google_kms_crypto_key.vertex.id
        }
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.agents]
}

resource "google_secret_manager_secret_iam_member" "trainer" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.training.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = local.trainer
}

# ------------------------------------------------------------------------ private networking --

resource "google_compute_global_address" "vertex_peering" {
  project       = var.project_id
  name          = "${var.prefix}-vertex-peering"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  address       = var.network.peering_range_address
  prefix_length = var.network.peering_range_prefix_length
  network       = var.network.self_link
}

resource "google_service_networking_connection" "vertex" {
  network                 = var.network.self_link
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.vertex_peering.name]

  depends_on = [google_project_service.this]
}
