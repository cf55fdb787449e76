output "artifacts_bucket" {
  description = "CMEK bucket for staging and sealed model artifacts."
  value       = google_storage_bucket.artifacts.name
}

output "custom_job_spec" {
  description = "Fields of every Vertex AI CustomJob (gcloud ai custom-jobs create / aiplatform.CustomJob): CMEK, the peered VPC, the trainer service account, output under the artifacts bucket, web/dashboard access off."
  value = {
    encryption_spec_key_name = google_kms_crypto_key.vertex.id
    network                  = "projects/${data.google_project.this.number}/global/networks/${element(split("/", var.network.self_link), length(split("/", var.network.self_link)) - 1)}"
    service_account          = var.ingestion.trainer_service_account_email
    base_output_directory    = "gs://${google_storage_bucket.artifacts.name}/models/"
    enable_web_access        = false
    enable_dashboard_access  = false
  }
}

output "secret_id" {
  description = "Secret Manager secret for training-time secrets (trainer: accessor only)."
  value       = google_secret_manager_secret.training.id
}

output "vpc_sc_restricted_services" {
  description = "Services to add to the VPC Service Controls perimeter for training."
  value       = ["aiplatform.googleapis.com", "secretmanager.googleapis.com", "storage.googleapis.com"]
}
