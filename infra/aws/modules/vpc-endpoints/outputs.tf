output "endpoint_ids" {
  description = "IDs of the VPC endpoints, by service (firehose, kinesis, kms, s3, dynamodb when requested); empty when create_endpoints is false."
  value       = merge({ for k, v in aws_vpc_endpoint.interface : k => v.id }, { for e in aws_vpc_endpoint.s3 : "s3" => e.id }, { for e in aws_vpc_endpoint.dynamodb : "dynamodb" => e.id })
}

output "policies" {
  description = "Endpoint policies as JSON, by service: attached to the endpoints created here, or (create_endpoints = false) for the VPC owner to merge into existing endpoints."
  value       = local.policy_documents
}

output "security_group_id" {
  description = "Security group of the interface endpoints (null when create_endpoints is false)."
  value       = one(aws_security_group.endpoints[*].id)
}
