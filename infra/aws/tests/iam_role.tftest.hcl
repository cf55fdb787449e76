# Unit tests of modules/iam-role with a mocked AWS provider.

mock_provider "aws" {
  source = "./tests/mocks"
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
