output "alerts_topic_arn" {
  description = "SNS topic of the security and delivery alerts (subscribe your on-call channel)."
  value       = aws_sns_topic.alerts.arn
}

output "bucket_names" {
  description = "Bucket names: landing (accepted records and the stream archive), quarantine (rejected records), artifacts (sealed models), access_logs."
  value       = merge({ for k, m in module.bucket : k => m.name }, { access_logs = aws_s3_bucket.access_logs.id })
}

output "cloudtrail_arn" {
  description = "CloudTrail trail recording management events and the data events of the buckets and stream."
  value       = aws_cloudtrail.data.arn
}

output "data_key_arn" {
  description = "ARN of the KMS key for saip's envelope encryption (use as aws-kms:ARN)."
  value       = module.data_key.key_arn
}

output "firehose_arn" {
  description = "ARN of the Firehose delivery stream archiving the stream to the landing bucket."
  value       = module.stream.firehose_arn
}

output "flow_log_id" {
  description = "ID of the VPC flow log (all traffic of network.vpc_id, delivered to the access-log bucket)."
  value       = aws_flow_log.vpc.id
}

output "lease_table_name" {
  description = "DynamoDB lease table for several consumers of one stream: `saip ingest run --lease-table NAME --consumer-name UNIQUE` (or [ingest.aws] lease_table)."
  value       = aws_dynamodb_table.leases.name
}

output "role_arns" {
  description = "ARNs of the workload roles: producer, consumer, trainer."
  value       = local.role_arns
}

output "saip_config" {
  description = "saip's --config settings ([ingest], [ingest.aws], [encryption]); `terraform output -json saip_config | saip config from-terraform` writes the TOML (endpoint_url stays null on AWS: private DNS of the interface endpoints makes the SDK's default endpoints private)."
  value = {
    ingest = {
      backend      = "aws"
      endpoint_url = null
      region       = local.region
      stream       = module.stream.stream_name
      bucket       = module.bucket["landing"].name
      aws = {
        # saip names the bucket key on every PutObject: "aws:kms" without it would mean aws/s3.
        kms_key_id = module.storage_key.key_arn
      }
    }
    encryption = {
      key     = "aws-kms:${module.data_key.key_arn}"
      context = var.encryption_context
    }
  }
}

output "storage_key_arn" {
  description = "ARN of the KMS key encrypting the stream and buckets at rest."
  value       = module.storage_key.key_arn
}

output "stream_arn" {
  description = "ARN of the Kinesis data stream."
  value       = module.stream.stream_arn
}

output "stream_name" {
  description = "Name of the Kinesis data stream."
  value       = module.stream.stream_name
}

output "vpc_endpoint_ids" {
  description = "IDs of the VPC endpoints by service (firehose, kinesis, kms, s3); empty when network.shared_vpc is true."
  value       = module.endpoints.endpoint_ids
}

output "vpc_endpoint_policies" {
  description = "Endpoint policies (JSON) by service: attached to the endpoints created here, or, with network.shared_vpc, for the VPC owner to merge into the existing endpoints."
  value       = module.endpoints.policies
}
