output "endpoint_ids" {
  description = "IDs of the VPC endpoints, by service (firehose, kinesis, kms, s3)."
  value       = merge({ for k, v in aws_vpc_endpoint.interface : k => v.id }, { s3 = aws_vpc_endpoint.s3.id })
}

output "policies" {
  description = "Endpoint policies as JSON, by service, for review."
  value       = local.policy_documents
}

output "security_group_id" {
  description = "Security group of the interface endpoints."
  value       = aws_security_group.endpoints.id
}
