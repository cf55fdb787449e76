# Unit tests of modules/s3-bucket with a mocked AWS provider: secure defaults and every validation.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix            = "saip-test"
  name              = "landing"
  kms_key_arn       = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
  access_log_bucket = { bucket = "saip-test-access-logs" }
}

run "secure_defaults" {
  command = apply
  module {
    source = "./modules/s3-bucket"
  }

  assert {
    condition     = aws_s3_bucket.this.bucket == "saip-test-landing" && aws_s3_bucket.this.force_destroy == false
    error_message = "bucket named <prefix>-<name>, never force-destroyed by default"
  }
  assert {
    condition     = aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.block_public_policy && aws_s3_bucket_public_access_block.this.ignore_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets
    error_message = "all four public access blocks must be on"
  }
  assert {
    condition     = one(aws_s3_bucket_ownership_controls.this.rule).object_ownership == "BucketOwnerEnforced"
    error_message = "object ownership must be enforced (ACLs off)"
  }
  assert {
    condition     = one(aws_s3_bucket_versioning.this.versioning_configuration).status == "Enabled"
    error_message = "versioning must be on"
  }
  assert {
    condition     = one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).sse_algorithm == "aws:kms" && one(one(aws_s3_bucket_server_side_encryption_configuration.this.rule).apply_server_side_encryption_by_default).kms_master_key_id == var.kms_key_arn
    error_message = "default encryption must be SSE-KMS with the customer-managed key"
  }
  assert {
    condition     = one(aws_s3_bucket_server_side_encryption_configuration.this.rule).bucket_key_enabled == true
    error_message = "S3 bucket keys must be on"
  }
  assert {
    condition     = aws_s3_bucket_logging.this.target_bucket == "saip-test-access-logs" && aws_s3_bucket_logging.this.target_prefix == "saip-test-landing/"
    error_message = "access logging must go to the log bucket under <bucket>/"
  }
  assert {
    condition     = one([for s in jsondecode(aws_s3_bucket_policy.this[0].policy).Statement : s if s.Sid == "DenyInsecureTransport"]).Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "the bucket policy must deny requests without TLS"
  }
  assert {
    condition     = one([for s in jsondecode(aws_s3_bucket_policy.this[0].policy).Statement : s if s.Sid == "DenyOutdatedTls"]).Condition.NumericLessThan["s3:TlsVersion"] == "1.2"
    error_message = "the bucket policy must deny TLS older than 1.2"
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_s3_bucket_policy.this[0].policy).Statement : s.Effect == "Deny"])
    error_message = "the bucket policy must only deny (access is granted by IAM roles)"
  }
}

run "escape_hatch_is_explicit" {
  command = apply
  module {
    source = "./modules/s3-bucket"
  }
  variables {
    unsafe_omit_bucket_policy = true
    unsafe_force_destroy      = true
  }
  assert {
    condition     = length(aws_s3_bucket_policy.this) == 0 && aws_s3_bucket.this.force_destroy
    error_message = "the unsafe_* variables are the only way to drop TLS-only and enable force destroy"
  }
}

run "rejects_bad_input" {
  command = plan
  module {
    source = "./modules/s3-bucket"
  }
  variables {
    prefix            = "Saip"
    name              = "-x"
    kms_key_arn       = "alias/aws/s3"
    access_log_bucket = { bucket = "Not_A_Bucket" }
  }
  expect_failures = [var.prefix, var.name, var.kms_key_arn, var.access_log_bucket]
}

run "rejects_lifecycle_noncurrent_days" {
  command = plan
  module {
    source = "./modules/s3-bucket"
  }
  variables {
    lifecycle_rules = { noncurrent_version_expiration_days = 0 }
  }
  expect_failures = [var.lifecycle_rules]
}

run "rejects_lifecycle_multipart_days" {
  command = plan
  module {
    source = "./modules/s3-bucket"
  }
  variables {
    lifecycle_rules = { abort_incomplete_multipart_upload_days = 0 }
  }
  expect_failures = [var.lifecycle_rules]
}
