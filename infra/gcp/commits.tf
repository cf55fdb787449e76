# Scale-out commit store: several saip consumers share the one `ingest` subscription; a message
# redelivered after a consumer died must not be stored twice, so each consumer claims the
# messages of a batch and decides the batch with CREATE-ONLY writes here (ifGenerationMatch=0)
# before the batch becomes visible in BigQuery (ingestion/src/saip_ingestion/backends/claims.py).
# The subscriber may create and read objects, nothing else: without storage.objects.delete an
# existing claim or decision cannot be overwritten even by a request without the precondition.
# Objects expire after the message retention + 1 day (a claim must outlive every redelivery).

data "google_storage_project_service_account" "this" {
  project = var.project_id
}

resource "google_kms_crypto_key_iam_member" "storage_agent" {
  crypto_key_id = google_kms_crypto_key.this["commits"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.this.email_address}"
}

resource "google_storage_bucket" "commits" {
  # checkov:skip=CKV_GCP_62:Object access is recorded by Cloud Storage Data Access audit logs (google_project_iam_audit_config.this["storage.googleapis.com"]), which replace the legacy usage-log bucket.
  project                     = var.project_id
  name                        = "${var.project_id}-${var.prefix}-commits"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  encryption {
    default_kms_key_name = google_kms_crypto_key.this["commits"].id
  }

  versioning {
    enabled = true # objects are create-only; a version appears only if one is deleted early
  }

  lifecycle_rule {
    condition {
      age = var.pubsub.message_retention_days + 1
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 1
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}

resource "google_storage_bucket_iam_member" "subscriber_commits" {
  for_each = toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])

  bucket = google_storage_bucket.commits.name
  role   = each.key
  member = "serviceAccount:${google_service_account.this["subscriber"].email}"
}
