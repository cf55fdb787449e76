output "alias_name" {
  description = "Alias of the key (alias/<prefix>-<name>)."
  value       = aws_kms_alias.this.name
}

output "key_arn" {
  description = "ARN of the key."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "Key ID of the key."
  value       = aws_kms_key.this.key_id
}

output "policy" {
  description = "The key policy as JSON, for review."
  value       = aws_kms_key.this.policy
}
