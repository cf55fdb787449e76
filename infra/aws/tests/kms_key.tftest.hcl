# Unit tests of modules/kms-key with a mocked AWS provider: secure defaults and every validation.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  prefix             = "saip-test"
  name               = "data"
  description        = "test key"
  administrator_arns = ["arn:aws:iam::123456789012:role/key-admin"]
  users = [{
    sid                = "Envelope"
    principal_arns     = ["arn:aws:iam::123456789012:role/consumer"]
    actions            = ["kms:Decrypt", "kms:GenerateDataKey"]
    encryption_context = { "saip:pipeline" = ["ingest"] }
  }]
}

run "secure_defaults" {
  command = apply
  module {
    source = "./modules/kms-key"
  }

  assert {
    condition     = aws_kms_key.this.enable_key_rotation == true
    error_message = "key rotation must always be on"
  }
  assert {
    condition     = aws_kms_key.this.deletion_window_in_days == 30
    error_message = "deletion window must default to 30 days"
  }
  assert {
    condition     = aws_kms_key.this.multi_region == false && aws_kms_key.this.customer_master_key_spec == "SYMMETRIC_DEFAULT"
    error_message = "single-region symmetric key expected"
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_kms_key.this.policy).Statement : s.Effect == "Deny" || alltrue([for a in s.Action : !strcontains(a, "*")])])
    error_message = "no Allow statement of the key policy may use a wildcard action"
  }
  assert {
    condition     = [for s in jsondecode(aws_kms_key.this.policy).Statement : s.Sid if strcontains(jsonencode(s.Principal), ":root")] == ["AccountRecovery"]
    error_message = "only the AccountRecovery statement may name the account root"
  }
  assert {
    condition     = toset(one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "AccountRecovery"]).Action) == toset(["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"]) && one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "AccountRecovery"]).Effect == "Allow"
    error_message = "the account root may recover the key policy (no lock-out when the admin role is recreated) and nothing else: no cryptographic use"
  }
  assert {
    condition     = one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "DenyRotationOff"]).Action == ["kms:DisableKeyRotation"]
    error_message = "the key policy must deny kms:DisableKeyRotation to everyone"
  }
  assert {
    condition     = !contains(one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "KeyAdministration"]).Action, "kms:Decrypt")
    error_message = "administrators must not get cryptographic use"
  }
  assert {
    condition     = one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "Envelope"]).Condition.StringEquals["kms:EncryptionContext:saip:pipeline"] == ["ingest"]
    error_message = "users must be bound to the encryption context"
  }
  assert {
    condition     = aws_kms_alias.this.name == "alias/saip-test-data"
    error_message = "alias must be alias/<prefix>-<name>"
  }
}

run "rejects_root_administrator" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    administrator_arns = ["arn:aws:iam::123456789012:root"]
  }
  expect_failures = [var.administrator_arns]
}

run "rejects_no_administrator" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    administrator_arns = []
  }
  expect_failures = [var.administrator_arns]
}

# One run per validation block of `users` would cost a provider start each; each of these runs
# breaks exactly one block of `users` together with one single-block variable.
run "rejects_wildcard_action_and_short_deletion_window" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users                   = [{ sid = "Bad", principal_arns = ["arn:aws:iam::123456789012:role/x"], actions = ["kms:*"] }]
    deletion_window_in_days = 3
  }
  expect_failures = [var.users, var.deletion_window_in_days]
}

run "rejects_duplicate_sid_and_short_rotation" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users = [
      { sid = "Same", principal_arns = ["arn:aws:iam::123456789012:role/x"], actions = ["kms:Decrypt"] },
      { sid = "Same", principal_arns = ["arn:aws:iam::123456789012:role/y"], actions = ["kms:Decrypt"] },
    ]
    rotation_period_in_days = 30
  }
  expect_failures = [var.users, var.rotation_period_in_days]
}

run "rejects_wildcard_principal_and_empty_description" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users       = [{ sid = "Bad", principal_arns = ["*"], actions = ["kms:Decrypt"] }]
    description = " "
  }
  expect_failures = [var.users, var.description]
}

run "rejects_unknown_via_service_and_bad_name" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users = [{ sid = "Bad", principal_arns = ["arn:aws:iam::123456789012:role/x"], actions = ["kms:Decrypt"], via_service = "ec2" }]
    name  = "Data_Key"
  }
  expect_failures = [var.users, var.name]
}

run "rejects_describe_with_context_and_bad_prefix" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users  = [{ sid = "Bad", principal_arns = ["arn:aws:iam::123456789012:role/x"], actions = ["kms:DescribeKey"], encryption_context = { k = ["v"] } }]
    prefix = "-bad"
  }
  expect_failures = [var.users, var.prefix]
}

run "rejects_empty_context_values" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    users = [{ sid = "Bad", principal_arns = ["arn:aws:iam::123456789012:role/x"], actions = ["kms:Decrypt"], encryption_context = { k = [] } }]
  }
  expect_failures = [var.users]
}

run "service_users_are_bound_to_their_source" {
  command = apply
  module {
    source = "./modules/kms-key"
  }
  variables {
    service_users = [{ sid = "Trail", service = "cloudtrail.amazonaws.com", actions = ["kms:GenerateDataKey"], source_arns = ["arn:aws:cloudtrail:eu-west-1:123456789012:trail/t"] }]
  }
  assert {
    condition     = one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "Trail"]).Condition.StringEquals["aws:SourceArn"] == ["arn:aws:cloudtrail:eu-west-1:123456789012:trail/t"] && one([for s in jsondecode(aws_kms_key.this.policy).Statement : s if s.Sid == "Trail"]).Condition.StringEquals["aws:SourceAccount"] == "123456789012"
    error_message = "a service principal may use the key only for its own source resource in this account"
  }
}

run "rejects_bad_service_users" {
  command = plan
  module {
    source = "./modules/kms-key"
  }
  variables {
    service_users = [{ sid = "Any", service = "s3.amazonaws.com", actions = ["kms:*"], source_arns = ["*"] }]
  }
  expect_failures = [var.service_users]
}
