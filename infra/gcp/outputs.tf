output "bigquery_table" {
  description = "BigQuery table receiving the records (project.dataset.table)."
  value       = "${google_bigquery_table.records.project}.${google_bigquery_table.records.dataset_id}.${google_bigquery_table.records.table_id}"
}

output "commit_bucket" {
  description = "GCS bucket of the consumers' claims and batch decisions for several consumers of the subscription: `saip ingest run --commit-store gs://BUCKET/SUBSCRIPTION --consumer-name UNIQUE` (or [ingest.gcp] commit_store)."
  value       = google_storage_bucket.commits.name
}

output "data_key_id" {
  description = "Cloud KMS key for saip's envelope encryption (use as gcp-kms:ID)."
  value       = google_kms_crypto_key.this["data"].id
}

output "dead_letter_topic" {
  description = "Dead-letter topic ID."
  value       = google_pubsub_topic.dead_letter.id
}

output "saip_config" {
  description = "saip's --config settings ([ingest], [ingest.gcp], [encryption]) for the consumer; turn it into TOML with `terraform output -json saip_config | saip config from-terraform`. No endpoint_url: the SDKs' default endpoints resolve to the PSC endpoint through the private zone."
  value = {
    ingest = {
      backend = "gcp"
      region  = var.region
      stream  = google_pubsub_topic.records.name
      bucket  = "${google_bigquery_table.records.project}.${google_bigquery_table.records.dataset_id}.${google_bigquery_table.records.table_id}"
      gcp = {
        project           = var.project_id
        subscription      = google_pubsub_subscription.ingest.name
        dead_letter_topic = google_pubsub_topic.dead_letter.name
      }
    }
    encryption = {
      key = "gcp-kms:${google_kms_crypto_key.this["data"].id}"
    }
  }
}

output "service_account_emails" {
  description = "Service accounts by role: publisher, subscriber, trainer."
  value       = { for k, v in google_service_account.this : k => v.email }
}

output "topic" {
  description = "Records topic ID."
  value       = google_pubsub_topic.records.id
}

output "training_inputs" {
  description = "What the training environment (modules/vertex-training) needs from this module: pass it as its `ingestion` input."
  value = {
    key_ring_id                   = google_kms_key_ring.this.id
    trainer_service_account_email = google_service_account.this["trainer"].email
  }
}
