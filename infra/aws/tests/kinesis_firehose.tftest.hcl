# Unit tests of modules/kinesis-firehose with a mocked AWS provider.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix      = "saip-test"
  kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
  destination = {
    bucket_arn  = "arn:aws:s3:::saip-test-landing"
    kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
  }
}

run "secure_defaults" {
  command = apply
  module {
    source = "./modules/kinesis-firehose"
  }
  assert {
    condition     = aws_kinesis_stream.this.encryption_type == "KMS" && aws_kinesis_stream.this.kms_key_id == var.kms_key_arn
    error_message = "the stream must be encrypted with the customer-managed key"
  }
  assert {
    condition     = one(aws_kinesis_firehose_delivery_stream.this.extended_s3_configuration).kms_key_arn == var.destination.kms_key_arn
    error_message = "archived objects must be SSE-KMS with the customer-managed key"
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_iam_role_policy.firehose.policy).Statement : alltrue([for a in s.Action : !strcontains(a, "*")]) && alltrue([for r in s.Resource : r != "*"])])
    error_message = "the Firehose role must name every action and resource"
  }
  assert {
    condition     = jsondecode(aws_iam_role.firehose.assume_role_policy).Statement[0].Condition.StringEquals["sts:ExternalId"] == "123456789012"
    error_message = "Firehose may assume the role only for this account (confused deputy)"
  }
}

run "rejects_bad_input" {
  command = plan
  module {
    source = "./modules/kinesis-firehose"
  }
  variables {
    prefix      = "x"
    kms_key_arn = "alias/aws/kinesis"
    stream      = { shard_count = 0 }
    destination = {
      bucket_arn  = "arn:aws:s3:::saip-test-landing/raw"
      kms_key_arn = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
    }
  }
  expect_failures = [var.prefix, var.kms_key_arn, var.stream, var.destination]
}

run "rejects_short_retention_and_destination_key" {
  command = plan
  module {
    source = "./modules/kinesis-firehose"
  }
  variables {
    stream = { retention_period_hours = 12 }
    destination = {
      bucket_arn  = "arn:aws:s3:::saip-test-landing"
      kms_key_arn = "alias/aws/s3"
    }
  }
  expect_failures = [var.stream, var.destination]
}

run "rejects_buffering_size" {
  command = plan
  module {
    source = "./modules/kinesis-firehose"
  }
  variables {
    destination = {
      bucket_arn         = "arn:aws:s3:::saip-test-landing"
      kms_key_arn        = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
      buffering_size_mib = 500
    }
  }
  expect_failures = [var.destination]
}

run "rejects_buffering_interval" {
  command = plan
  module {
    source = "./modules/kinesis-firehose"
  }
  variables {
    destination = {
      bucket_arn                 = "arn:aws:s3:::saip-test-landing"
      kms_key_arn                = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
      buffering_interval_seconds = 1000
    }
  }
  expect_failures = [var.destination]
}

run "rejects_prefixes" {
  command = plan
  module {
    source = "./modules/kinesis-firehose"
  }
  variables {
    destination = {
      bucket_arn    = "arn:aws:s3:::saip-test-landing"
      kms_key_arn   = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
      object_prefix = "raw"
    }
  }
  expect_failures = [var.destination]
}
