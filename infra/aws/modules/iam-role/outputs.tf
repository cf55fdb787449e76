output "arn" {
  description = "ARN of the role."
  value       = aws_iam_role.this.arn
}

output "name" {
  description = "Name of the role."
  value       = aws_iam_role.this.name
}

output "policy" {
  description = "The role's inline policy as JSON, for review."
  value       = aws_iam_role_policy.this.policy
}
