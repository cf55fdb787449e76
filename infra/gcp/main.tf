# Secure ingestion on GCP: a Cloud KMS key ring with HSM keys rotated at most every 90 days; a
# Pub/Sub topic with CMEK, the ingestion package's Avro schema (BINARY encoding, as saip publishes;
# rejects malformed messages at publish time), regional message storage, retention and a
# dead-letter topic; a BigQuery dataset/table with CMEK in saip's landing schema, written ONLY by
# saip's consumer (after validation, provenance checks and envelope encryption) and read by the
# trainer only for accepted rows (row access policy); least-privilege service accounts; the
# Pub/Sub and BigQuery service agents' use of the keys; Private Service Connect to the restricted
# Google APIs VIP; data-access audit logs and alerts; and an optional VPC Service Controls
# perimeter (dry-run first). There is deliberately no BigQuery/Cloud Storage subscription: it
# would land unverified, unsanitised, non-envelope-encrypted messages next to the trainer's data.

data "google_project" "this" {
  project_id = var.project_id
}

data "google_bigquery_default_service_account" "this" {
  project = var.project_id
}

# APIs the module uses, enabled before anything that needs them (first apply on a new project).
resource "google_project_service" "this" {
  for_each = toset([
    "bigquery.googleapis.com", "bigquerystorage.googleapis.com", "cloudkms.googleapis.com",
    "compute.googleapis.com", "dns.googleapis.com", "logging.googleapis.com",
    "monitoring.googleapis.com", "pubsub.googleapis.com", "storage.googleapis.com",
  ])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

locals {
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  bq_agent     = "serviceAccount:${data.google_bigquery_default_service_account.this.email}"

  keys = toset(["pubsub", "bigquery", "data", "commits"])

  service_accounts = {
    publisher  = "Publishes records to the ${var.prefix} topic"
    subscriber = "saip ingestion: pulls, validates and envelope-encrypts records"
    trainer    = "Reads accepted (envelope-encrypted) records from BigQuery, seals models"
  }

  retention = "${var.pubsub.message_retention_days * 86400}s"
}

# ------------------------------------------------------------------------------------- KMS --

resource "google_kms_key_ring" "this" {
  project  = var.project_id
  name     = "${var.prefix}-keyring"
  location = var.region

  depends_on = [google_project_service.this]
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

  # saip's publisher sends Avro BINARY (saip_ingestion.backends.gcp), and its consumer refuses a
  # topic bound with another encoding.
  schema_settings {
    schema   = google_pubsub_schema.record.id
    encoding = "BINARY"
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
  project      = var.project_id
  subscription = google_pubsub_subscription.ingest.name
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

  # Authoritative: without an access block the API grants READER to every project viewer.
  # Workloads get table-level roles below; nobody else reads the dataset.
  access {
    role          = "OWNER"
    special_group = "projectOwners"
  }

  depends_on = [google_kms_crypto_key_iam_member.bigquery_agent]
}

# saip's landing table, exactly the schema BigQueryObjectStore writes (saip_ingestion.backends.gcp):
# one row per envelope-encrypted batch or quarantine entry.
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
    field = "inserted_at"
  }

  schema = jsonencode([
    { name = "key", type = "STRING", mode = "REQUIRED" },
    { name = "data", type = "BYTES", mode = "REQUIRED" },
    { name = "sha256", type = "STRING", mode = "REQUIRED" },
    { name = "metadata", type = "STRING", mode = "NULLABLE" },
    { name = "inserted_at", type = "TIMESTAMP", mode = "REQUIRED" },
  ])
}

# The only writer: saip's consumer (streaming inserts and key look-ups).
resource "google_bigquery_table_iam_member" "subscriber" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  table_id   = google_bigquery_table.records.table_id
  role       = "roles/bigquery.dataEditor"
  member     = "serviceAccount:${google_service_account.this["subscriber"].email}"
}

resource "google_bigquery_table_iam_member" "trainer" {
  project    = var.project_id
  dataset_id = google_bigquery_dataset.this.dataset_id
  table_id   = google_bigquery_table.records.table_id
  role       = "roles/bigquery.dataViewer"
  member     = "serviceAccount:${google_service_account.this["trainer"].email}"
}

# Row access policies: once one exists, a principal sees only the rows of the policies naming it.
# The trainer sees accepted batches only (never quarantine entries); the consumer sees every row
# (it re-reads its batches after a crash and shows/releases quarantined records).
resource "google_bigquery_row_access_policy" "trainer_accepted" {
  project          = var.project_id
  dataset_id       = google_bigquery_dataset.this.dataset_id
  table_id         = google_bigquery_table.records.table_id
  policy_id        = "trainer_accepted_only"
  filter_predicate = "STARTS_WITH(key, 'accepted/')"
  grantees         = ["serviceAccount:${google_service_account.this["trainer"].email}"]
}

resource "google_bigquery_row_access_policy" "subscriber_all" {
  project          = var.project_id
  dataset_id       = google_bigquery_dataset.this.dataset_id
  table_id         = google_bigquery_table.records.table_id
  policy_id        = "subscriber_all_rows"
  filter_predicate = "TRUE"
  grantees         = ["serviceAccount:${google_service_account.this["subscriber"].email}"]
}

# Query jobs run in the project (jobs.query / Storage Read API sessions): project-level by design,
# they grant no data access by themselves.
resource "google_project_iam_member" "bigquery_jobs" {
  for_each = {
    subscriber-job = { sa = "subscriber", role = "roles/bigquery.jobUser" }
    trainer-job    = { sa = "trainer", role = "roles/bigquery.jobUser" }
    trainer-read   = { sa = "trainer", role = "roles/bigquery.readSessionUser" }
  }

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${google_service_account.this[each.value.sa].email}"
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
# Dry run first: the perimeter is written to `spec` (violations are only logged) until
# `vpc_service_controls.enforce` is true, which copies it to `status`. Ingress/egress rules let the
# module's own service accounts (and the identities you list) reach the restricted services.

locals {
  vpc_sc_services = distinct(concat(["bigquery.googleapis.com", "cloudkms.googleapis.com", "pubsub.googleapis.com", "storage.googleapis.com"], var.vpc_service_controls.additional_restricted_services))
  vpc_sc_identities = concat(
    [for k in ["publisher", "subscriber", "trainer"] : "serviceAccount:${google_service_account.this[k].email}"],
    var.vpc_service_controls.ingress_identities,
  )
  vpc_sc_perimeter = {
    resources           = ["projects/${data.google_project.this.number}"]
    restricted_services = local.vpc_sc_services
  }
}

resource "google_access_context_manager_service_perimeter" "this" {
  count = var.vpc_service_controls.access_policy == null ? 0 : 1

  parent                    = var.vpc_service_controls.access_policy
  name                      = "${var.vpc_service_controls.access_policy}/servicePerimeters/${replace(var.prefix, "-", "_")}_ingest"
  title                     = "${var.prefix} secure ingestion"
  use_explicit_dry_run_spec = true

  spec {
    resources           = local.vpc_sc_perimeter.resources
    restricted_services = local.vpc_sc_perimeter.restricted_services

    vpc_accessible_services {
      enable_restriction = true
      allowed_services   = local.vpc_sc_services
    }

    ingress_policies {
      ingress_from {
        identities = local.vpc_sc_identities
        sources {
          access_level = "*"
        }
      }
      ingress_to {
        resources = ["*"]
        operations {
          service_name = "*"
        }
      }
    }

    egress_policies {
      egress_from {
        identities = local.vpc_sc_identities
      }
      egress_to {
        resources = local.vpc_sc_perimeter.resources
        operations {
          service_name = "*"
        }
      }
    }
  }

  dynamic "status" {
    for_each = var.vpc_service_controls.enforce ? [local.vpc_sc_perimeter] : []

    content {
      resources           = status.value.resources
      restricted_services = status.value.restricted_services

      vpc_accessible_services {
        enable_restriction = true
        allowed_services   = local.vpc_sc_services
      }
    }
  }
}

# ------------------------------------------------------------------------- audit and alerts --

# Data-access audit logs (off by default on GCP) for the services holding or guarding the data.
resource "google_project_iam_audit_config" "this" {
  for_each = toset(["bigquery.googleapis.com", "cloudkms.googleapis.com", "pubsub.googleapis.com", "storage.googleapis.com"])

  project = var.project_id
  service = each.key

  audit_log_config {
    log_type = "ADMIN_READ"
  }
  audit_log_config {
    log_type = "DATA_READ"
  }
  audit_log_config {
    log_type = "DATA_WRITE"
  }
}

resource "google_logging_metric" "key_destruction" {
  project     = var.project_id
  name        = "${var.prefix}-kms-key-version-destroy"
  description = "A version of a ${var.prefix} Cloud KMS key was scheduled for destruction or disabled."
  filter      = "protoPayload.serviceName=\"cloudkms.googleapis.com\" AND (protoPayload.methodName:\"DestroyCryptoKeyVersion\" OR (protoPayload.methodName:\"UpdateCryptoKeyVersion\" AND protoPayload.request.cryptoKeyVersion.state=\"DISABLED\")) AND protoPayload.resourceName:\"${google_kms_key_ring.this.id}\""

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "INT64"
  }
}

resource "google_monitoring_alert_policy" "key_destruction" {
  project               = var.project_id
  display_name          = "${var.prefix}: Cloud KMS key version destroy/disable"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "key version destroy scheduled or disabled"
    condition_threshold {
      filter          = "metric.type=\"logging.googleapis.com/user/${google_logging_metric.key_destruction.name}\" AND resource.type=\"global\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_COUNT"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "dead_letter" {
  project               = var.project_id
  display_name          = "${var.prefix}: messages in the dead-letter subscription"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "dead-letter backlog > 0"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letter_triage.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

resource "google_monitoring_alert_policy" "delivery_errors" {
  project               = var.project_id
  display_name          = "${var.prefix}: ingest backlog growing (consumer not delivering)"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "oldest unacked message older than 15 minutes"
    condition_threshold {
      filter          = "metric.type=\"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.ingest.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 900
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}
