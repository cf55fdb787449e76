output "arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.bucket
}

output "policy" {
  description = "The bucket policy as JSON, for review (null only under unsafe_omit_bucket_policy)."
  value       = one(aws_s3_bucket_policy.this[*].policy)
}
