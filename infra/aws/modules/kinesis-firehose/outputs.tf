output "firehose_arn" {
  description = "ARN of the Firehose delivery stream that archives the stream to S3."
  value       = aws_kinesis_firehose_delivery_stream.this.arn
}

output "firehose_name" {
  description = "Name of the Firehose delivery stream."
  value       = aws_kinesis_firehose_delivery_stream.this.name
}

output "firehose_role_arn" {
  description = "ARN of the role Firehose assumes (needs use of both keys; add it to their key policies)."
  value       = aws_iam_role.firehose.arn
}

output "stream_arn" {
  description = "ARN of the Kinesis data stream."
  value       = aws_kinesis_stream.this.arn
}

output "stream_name" {
  description = "Name of the Kinesis data stream."
  value       = aws_kinesis_stream.this.name
}
