# Secure ingestion on GCP: a Cloud KMS key ring with HSM keys rotated at most every 90 days; a
# Pub/Sub topic with CMEK, the ingestion package's Avro schema (rejects malformed messages at publish
# time), regional message storage, retention and a dead-letter topic; a BigQuery dataset/table with
# CMEK fed by a BigQuery subscription; least-privilege service accounts; the Pub/Sub and BigQuery
# service agents' use of the keys; Private Service Connect to the restricted Google APIs VIP; and an
# optional VPC Service Controls perimeter.

data "google_project" "this" {
  project_id = var.project_id
}

data "google_bigquery_default_service_account" "this" {
  project = var.project_id
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  bq_agent     = "serviceAccount:${data.google_bigquery_default_service_account.this.email}"

  keys = toset(["pubsub", "bigquery", "data"])

  service_accounts = {
    publisher  = "Publishes records to the ${var.prefix} topic"
    subscriber = "saip ingestion: pulls, validates and envelope-encrypts records"
    trainer    = "Reads accepted records from BigQuery, seals models"
    bq-writer  = "Identity of the BigQuery subscription writing to the records table"
  }

  retention = "${var.pubsub.message_retention_days * 86400}s"
}

# ------------------------------------------------------------------------------------- KMS --

resource "google_kms_key_ring" "this" {
  project  = var.project_id
  name     = "${var.prefix}-keyring"
  location = var.region
}

resource "google_kms_crypto_key" "this" {
  for_each = local.keys

  name            = "${var.prefix}-${each.key}"
  key_ring        = google_kms_key_ring.this.id
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

# Service agents may use only the key of their own service.
resource "google_kms_crypto_key_iam_member" "pubsub_agent" {
  crypto_key_id = google_kms_crypto_key.this["pubsub"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.pubsub_agent
}

resource "google_kms_crypto_key_iam_member" "bigquery_agent" {
  crypto_key_id = google_kms_crypto_key.this["bigquery"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = local.bq_agent
}

resource "google_kms_crypto_key_iam_member" "data_key" {
  for_each = toset(["subscriber", "trainer"])

  crypto_key_id = google_kms_crypto_key.this["data"].id
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${google_service_account.this[each.key].email}"
}

# ------------------------------------------------------------------------- service accounts --

resource "google_service_account" "this" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = "${var.prefix}-${each.key}"
  display_name = "${var.prefix} ${each.key}"
  description  = each.value
}

# ---------------------------------------------------------------------------------- Pub/Sub --

resource "google_pubsub_schema" "record" {
  project    = var.project_id
  name       = "${var.prefix}-record"
  type       = "AVRO"
  definition = var.avro_schema_definition
}

resource "google_pubsub_topic" "records" {
  project                    = var.project_id
  name                       = "${var.prefix}-records"
  kms_key_name               = google_kms_crypto_key.this["pubsub"].id
  message_retention_duration = local.retention

  schema_settings {
    schema   = google_pubsub_schema.record.id
    encoding = "JSON"
  }

  message_storage_policy {
    allowed_persistence_regions = [var.region]
    enforce_in_transit          = true
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_topic" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.prefix}-records-dead-letter"
  kms_key_name               = google_kms_crypto_key.this["pubsub"].id
  message_retention_duration = "2678400s" # 31 days: time to triage

  message_storage_policy {
    allowed_persistence_regions = [var.region]
    enforce_in_transit          = true
  }

  depends_on = [google_kms_crypto_key_iam_member.pubsub_agent]
}

resource "google_pubsub_subscription" "ingest" {
  project                    = var.project_id
  name                       = "${var.prefix}-ingest"
  topic                      = google_pubsub_topic.records.id
  ack_deadline_seconds       = var.pubsub.ack_deadline_seconds
  message_retention_duration = local.retention
  enable_message_ordering    = false

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.pubsub.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  expiration_policy {
    ttl = "" # never expires
  }
}

resource "google_pubsub_subscription" "dead_letter_triage" {
  project                    = var.project_id
  name                       = "${var.prefix}-dead-letter-triage"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "bigquery" {
  project = var.project_id
  name    = "${var.prefix}-to-bigquery"
  topic   = google_pubsub_topic.records.id

  bigquery_config {
    table                 = "${google_bigquery_table.records.project}.${google_bigquery_table.records.dataset_id}.${google_bigquery_table.records.table_id}"
    write_metadata        = true
    service_account_email = google_service_account.this["bq-writer"].email
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.pubsub.max_delivery_attempts
  }

  depends_on = [google_bigquery_table_iam_member.bq_writer]
}

resource "google_pubsub_topic_iam_member" "publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.records.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.this["publisher"].email}"
}

resource "google_pubsub_subscription_iam_member" "subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.ingest.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.this["subscriber"].email}"
}

# The Pub/Sub service agent forwards undeliverable messages: it must publish to the dead-letter
# topic and acknowledge on the source subscriptions.
resource "google_pubsub_topic_iam_member" "dead_letter_agent" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_agent" {
  for_each = {
    ingest   = google_pubsub_subscription.ingest.name
    bigquery = google_pubsub_subscription.bigquery.name
  }

  project      = var.project_id
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# --------------------------------------------------------------------------------- BigQuery --

resource "google_bigquery_dataset" "this" {
  project                    = var.project_id
  dataset_id                 = replace("${var.prefix}_ingest", "-", "_")
  location                   = var.region
  delete_contents_on_destroy = false

  default_encryption_configuration {
    kms_key_name = google_kms_crypto_key.this["bigquery"].id
  }

  depends_on = [google_kms_crypto_key_iam_member.bigquery_agent]
}

resource "google_bigquery_table" "records" {
  project             = var.project_id
  dataset_id          = google_bigquery_dataset.this.dataset_id
  table_id            = "records"
  deletion_protection = true

  encryption_configuration {
    kms_key_name = google_kms_crypto_key.this["bigquery"].id
  }

  time_partitioning {
    type  = "DAY"
    field = "publish_time"
  }

  schema = jsonencode([
    { name = "subscription_name", type = "STRING", mode = "NULLABLE" },
    { name = "message_id", type = "STRING", mode = "NULLABLE" },
    { name = "publish_time", type = "TIMESTAMP", mode = "NULLABLE" },
    { name = "data", type = "STRING", mode = "NULLABLE" },
    { name = "attributes", type = "STRING", mode = "NULLABLE" },
  ])
}

resource "google_bigquery_table_iam_member" "bq_writer" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  table_id   = google_bigquery_table.records.table_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.this["bq-writer"].email}"
}

resource "google_bigquery_table_iam_member" "trainer" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  table_id   = google_bigquery_table.records.table_id
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.this["trainer"].email}"
}

# ------------------------------------------------------------------- private Google access --

resource "google_compute_global_address" "psc" {
  project      = var.project_id
  name         = "${replace(var.prefix, "-", "")}psc"
  purpose      = "PRIVATE_SERVICE_CONNECT"
  address_type = "INTERNAL"
  address      = var.network.psc_address
  network      = var.network.self_link
}

# Private Service Connect endpoint to the restricted VIP: only VPC-SC-supported APIs are reachable.
resource "google_compute_global_forwarding_rule" "psc" {
  project               = var.project_id
  name                  = "${replace(var.prefix, "-", "")}psc"
  target                = "vpc-sc"
  network               = var.network.self_link
  ip_address            = google_compute_global_address.psc.id
  load_balancing_scheme = ""
}

resource "google_dns_managed_zone" "googleapis" {
  # checkov:skip=CKV_GCP_16:DNSSEC does not apply to private zones (Cloud DNS supports it only on public zones).
  project     = var.project_id
  name        = "${var.prefix}-googleapis"
  dns_name    = "googleapis.com."
  description = "Resolves Google APIs to the Private Service Connect endpoint"
  visibility  = "private"

  private_visibility_config {
    networks {
      network_url = var.network.self_link
    }
  }
}

resource "google_dns_record_set" "googleapis_a" {
  project      = var.project_id
  managed_zone = google_dns_managed_zone.googleapis.name
  name         = "restricted.googleapis.com."
  type         = "A"
  ttl          = 300
  rrdatas      = [var.network.psc_address]
}

resource "google_dns_record_set" "googleapis_cname" {
  project      = var.project_id
  managed_zone = google_dns_managed_zone.googleapis.name
  name         = "*.googleapis.com."
  type         = "CNAME"
  ttl          = 300
  rrdatas      = ["restricted.googleapis.com."]
}

# --------------------------------------------------------------------- VPC Service Controls --

resource "google_access_context_manager_service_perimeter" "this" {
  count = var.vpc_service_controls.access_policy == null ? 0 : 1

  parent = var.vpc_service_controls.access_policy
  name   = "${var.vpc_service_controls.access_policy}/servicePerimeters/${replace(var.prefix, "-", "_")}_ingest"
  title  = "${var.prefix} secure ingestion"

  status {
    resources           = ["projects/${var.vpc_service_controls.project_number}"]
    restricted_services = ["bigquery.googleapis.com", "cloudkms.googleapis.com", "pubsub.googleapis.com", "storage.googleapis.com"]

    vpc_accessible_services {
      enable_restriction = true
      allowed_services   = ["bigquery.googleapis.com", "cloudkms.googleapis.com", "pubsub.googleapis.com", "storage.googleapis.com"]
    }
  }
}
