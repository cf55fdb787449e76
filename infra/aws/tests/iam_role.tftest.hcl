# Unit tests of modules/iam-role with a mocked AWS provider.

mock_provider "aws" {
  mock_resource "aws_kms_key" {
    defaults = {
      arn    = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
      key_id = "0a1b2c3d-0000-4000-8000-00000000abcd"
    }
  }
  mock_resource "aws_iam_role" {
    defaults = {
      arn = "arn:aws:iam::123456789012:role/mock-role"
    }
  }
  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::mock-bucket"
    }
  }
  mock_resource "aws_kinesis_stream" {
    defaults = {
      arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/mock-records"
    }
  }
  mock_resource "aws_kinesis_firehose_delivery_stream" {
    defaults = {
      arn = "arn:aws:firehose:eu-west-1:123456789012:deliverystream/mock-archive"
    }
  }
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
      arn        = "arn:aws:iam::123456789012:user/ci"
    }
  }
  mock_data "aws_region" {
    defaults = {
      name = "eu-west-1"
    }
  }
  mock_data "aws_partition" {
    defaults = {
      partition = "aws"
    }
  }
}

variables {
  prefix                 = "saip-test"
  name                   = "producer"
  description            = "test role"
  trusted_principal_arns = ["arn:aws:iam::123456789012:root"]
  statements = [{
    sid        = "Publish"
    actions    = ["kinesis:PutRecords"]
    resources  = ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"]
    conditions = [{ test = "Bool", variable = "aws:SecureTransport", values = ["true"] }]
  }]
}

run "least_privilege" {
  command = apply
  module {
    source = "./modules/iam-role"
  }
  assert {
    condition     = jsondecode(aws_iam_role_policy.this.policy).Statement[0].Action == ["kinesis:PutRecords"] && jsondecode(aws_iam_role_policy.this.policy).Statement[0].Resource == ["arn:aws:kinesis:eu-west-1:123456789012:stream/s"]
    error_message = "the policy holds exactly the given actions on the given ARNs"
  }
  assert {
    condition     = jsondecode(aws_iam_role_policy.this.policy).Statement[0].Condition.Bool["aws:SecureTransport"] == ["true"]
    error_message = "conditions are rendered"
  }
  assert {
    condition     = aws_iam_role.this.max_session_duration == 3600 && aws_iam_role.this.name == "saip-test-producer"
    error_message = "one-hour sessions and prefix naming by default"
  }
}

run "rejects_wildcards" {
  command = plan
  module {
    source = "./modules/iam-role"
  }
  variables {
    trusted_principal_arns       = ["*"]
    max_session_duration_seconds = 60
    description                  = ""
    name                         = "X"
    prefix                       = "x-"
    statements                   = [{ sid = "S", actions = ["s3:*"], resources = ["arn:aws:s3:::b/*"] }]
  }
  expect_failures = [var.trusted_principal_arns, var.max_session_duration_seconds, var.description, var.name, var.prefix, var.statements]
}

run "rejects_star_resource" {
  command = plan
  module {
    source = "./modules/iam-role"
  }
  variables {
    statements = [{ sid = "S", actions = ["s3:GetObject"], resources = ["*"] }]
  }
  expect_failures = [var.statements]
}

run "rejects_duplicate_sid" {
  command = plan
  module {
    source = "./modules/iam-role"
  }
  variables {
    statements = [
      { sid = "S", actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"] },
      { sid = "S", actions = ["s3:PutObject"], resources = ["arn:aws:s3:::b/*"] },
    ]
  }
  expect_failures = [var.statements]
}

run "rejects_unknown_condition_operator" {
  command = plan
  module {
    source = "./modules/iam-role"
  }
  variables {
    statements = [{ sid = "S", actions = ["s3:GetObject"], resources = ["arn:aws:s3:::b/*"], conditions = [{ test = "StringNotLike", variable = "x", values = ["y"] }] }]
  }
  expect_failures = [var.statements]
}
