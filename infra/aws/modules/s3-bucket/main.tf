# One hardened S3 bucket: SSE-KMS with a customer-managed key and a bucket key, versioning, access
# logging, public access blocked, object ownership enforced (ACLs off), TLS >= 1.2 only. None of these
# is a switch; the two `unsafe_*` escape hatches exist for local emulators and throwaway stacks.

locals {
  bucket_name = "${var.prefix}-${var.name}"
}

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_144:Cross-region replication is a resilience/cost decision for the deployer (it doubles storage and needs a second region and key); it is not a confidentiality control.
  # checkov:skip=CKV2_AWS_62:Event notifications are optional plumbing; the pipeline polls the stream, not S3 events.
  bucket        = local.bucket_name
  force_destroy = var.unsafe_force_destroy
  tags          = merge(var.tags, { Name = local.bucket_name })
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "this" {
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket.bucket
  target_prefix = coalesce(var.access_log_bucket.target_prefix, "${local.bucket_name}/")
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "housekeeping"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = var.lifecycle_rules.abort_incomplete_multipart_upload_days
    }

    noncurrent_version_expiration {
      noncurrent_days = var.lifecycle_rules.noncurrent_version_expiration_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_policy" "this" {
  count = var.unsafe_omit_bucket_policy ? 0 : 1

  bucket = aws_s3_bucket.this.id
  # Inline (not a local) so static checkers (checkov, CKV_SAIP_1) can read the statements.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:*"]
        Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOutdatedTls"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:*"]
        Resource  = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
      ], [
      {
        Sid       = "DenyObjectsEncryptedWithAnotherKey"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:PutObject"]
        Resource  = ["${aws_s3_bucket.this.arn}/*"]
        Condition = {
          Null            = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = "false" }
          StringNotEquals = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = var.kms_key_arn }
        }
      },
      {
        # "aws:kms" without a key ID makes S3 use the AWS managed key aws/s3, not the bucket's
        # default key (the statement above fires only when a key ID is sent). Requests with no
        # encryption header at all get the bucket default (this key) and are allowed.
        Sid       = "DenyKmsWithoutKeyId"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:PutObject"]
        Resource  = ["${aws_s3_bucket.this.arn}/*"]
        Condition = {
          StringEquals = { "s3:x-amz-server-side-encryption" = "aws:kms" }
          Null         = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = "true" }
        }
      },
      {
        Sid       = "DenyS3ManagedEncryption"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["s3:PutObject"]
        Resource  = ["${aws_s3_bucket.this.arn}/*"]
        Condition = { StringEquals = { "s3:x-amz-server-side-encryption" = "AES256" } }
      },
    ])
  })

  depends_on = [aws_s3_bucket_public_access_block.this]
}
