# The ingestion stream (Kinesis, encrypted with a customer-managed key) and its archive (Firehose
# reading the stream and writing SSE-KMS objects to S3). Firehose's role can read this stream and
# write under two prefixes of one bucket, nothing else.

data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  stream_name   = "${var.prefix}-records"
  firehose_name = "${var.prefix}-archive"
  on_demand     = var.stream.shard_count == null
}

resource "aws_kinesis_stream" "this" {
  name             = local.stream_name
  shard_count      = local.on_demand ? null : var.stream.shard_count
  retention_period = var.stream.retention_period_hours
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_arn

  enforce_consumer_deletion = false

  stream_mode_details {
    stream_mode = local.on_demand ? "ON_DEMAND" : "PROVISIONED"
  }

  tags = merge(var.tags, { Name = local.stream_name })
}

resource "aws_iam_role" "firehose" {
  name = "${var.prefix}-firehose"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "FirehoseService"
      Effect    = "Allow"
      Principal = { Service = "firehose.amazonaws.com" }
      Action    = ["sts:AssumeRole"]
      Condition = { StringEquals = { "sts:ExternalId" = data.aws_caller_identity.current.account_id } }
    }]
  })
  tags = var.tags
}

data "aws_caller_identity" "current" {}

resource "aws_iam_role_policy" "firehose" {
  name = "${var.prefix}-firehose"
  role = aws_iam_role.firehose.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid      = "ReadSourceStream"
        Effect   = "Allow"
        Action   = ["kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetRecords", "kinesis:GetShardIterator", "kinesis:ListShards"]
        Resource = [aws_kinesis_stream.this.arn]
      },
      {
        Sid      = "DecryptSourceStream"
        Effect   = "Allow"
        Action   = ["kms:Decrypt"]
        Resource = [var.kms_key_arn]
        Condition = { StringEquals = {
          "kms:ViaService"                        = "kinesis.${data.aws_region.current.name}.amazonaws.com"
          "kms:EncryptionContext:aws:kinesis:arn" = aws_kinesis_stream.this.arn
        } }
      },
      {
        Sid      = "ListDestinationBucket"
        Effect   = "Allow"
        Action   = ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"]
        Resource = [var.destination.bucket_arn]
      },
      {
        Sid      = "WriteArchive"
        Effect   = "Allow"
        Action   = ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"]
        Resource = ["${var.destination.bucket_arn}/${var.destination.object_prefix}*", "${var.destination.bucket_arn}/${var.destination.error_prefix}*"]
      },
      {
        Sid      = "EncryptArchive"
        Effect   = "Allow"
        Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
        Resource = [var.destination.kms_key_arn]
        Condition = { StringEquals = {
          "kms:ViaService"                   = "s3.${data.aws_region.current.name}.amazonaws.com"
          "kms:EncryptionContext:aws:s3:arn" = var.destination.bucket_arn
        } }
      },
    ]
  })
}

resource "aws_kinesis_firehose_delivery_stream" "this" {
  # checkov:skip=CKV_AWS_240:Firehose server-side encryption applies to DirectPut only; the AWS API rejects it for a Kinesis-stream source, whose records are already encrypted with the customer-managed key (aws_kinesis_stream.this).
  # checkov:skip=CKV_AWS_241:Same as CKV_AWS_240: with a Kinesis source the data at rest is the stream's (CMK-encrypted) and the S3 objects are SSE-KMS with the customer-managed key (extended_s3_configuration.kms_key_arn).
  name        = local.firehose_name
  destination = "extended_s3"

  kinesis_source_configuration {
    kinesis_stream_arn = aws_kinesis_stream.this.arn
    role_arn           = aws_iam_role.firehose.arn
  }

  extended_s3_configuration {
    role_arn            = aws_iam_role.firehose.arn
    bucket_arn          = var.destination.bucket_arn
    kms_key_arn         = var.destination.kms_key_arn
    prefix              = var.destination.object_prefix
    error_output_prefix = var.destination.error_prefix
    buffering_size      = var.destination.buffering_size_mib
    buffering_interval  = var.destination.buffering_interval_seconds
    compression_format  = "GZIP"
  }

  tags = merge(var.tags, { Name = local.firehose_name })

  depends_on = [aws_iam_role_policy.firehose]
}
