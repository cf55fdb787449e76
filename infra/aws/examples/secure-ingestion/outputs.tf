output "bucket_names" {
  description = "Bucket names by purpose."
  value       = module.secure_ingestion.bucket_names
}

output "data_key_arn" {
  description = "ARN of the envelope-encryption key."
  value       = module.secure_ingestion.data_key_arn
}

output "lease_table_name" {
  description = "DynamoDB lease table for several consumers of the stream (saip ingest run --lease-table)."
  value       = module.secure_ingestion.lease_table_name
}

output "role_arns" {
  description = "Workload role ARNs (producer, consumer, trainer)."
  value       = module.secure_ingestion.role_arns
}

output "saip_config" {
  description = "The [ingest] and [encryption] sections of saip's --config TOML; endpoint_url is the local emulator's URL in local mode, else null."
  value = merge(module.secure_ingestion.saip_config, {
    ingest = merge(module.secure_ingestion.saip_config.ingest, { endpoint_url = var.local_endpoint_url })
  })
}

output "stream_name" {
  description = "Name of the Kinesis data stream."
  value       = module.secure_ingestion.stream_name
}

output "vpc_id" {
  description = "ID of the example VPC."
  value       = aws_vpc.this.id
}
