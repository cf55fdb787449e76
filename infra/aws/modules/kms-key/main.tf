# A customer-managed KMS key whose policy separates administrators (manage, never use) from users
# (use, never manage). Rotation is always on. The account root may only read and replace the key
# policy (AccountRecovery): without it, deleting and recreating the administrator role would lock
# everyone out of the key for good (KMS cannot be recovered without AWS Support). IAM policies can
# therefore grant kms:PutKeyPolicy on this key — guard that permission like account
# administration — but never any cryptographic use: only the principals named here can use it.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  # Every administrative action by name: no wildcards. kms:DisableKeyRotation is deliberately absent,
  # so even a key administrator cannot switch rotation off.
  admin_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]

  account_id = data.aws_caller_identity.current.account_id

  user_statements = [for u in var.users : {
    Sid       = u.sid
    Effect    = "Allow"
    Principal = { AWS = u.principal_arns }
    Action    = u.actions
    Resource  = "*" # in a key policy "*" means "this key"
    Condition = merge(
      { StringEquals = merge(
        { "kms:CallerAccount" = local.account_id },
        u.via_service == null ? {} : { "kms:ViaService" = "${u.via_service}.${data.aws_region.current.name}.amazonaws.com" },
        { for k, v in u.encryption_context : "kms:EncryptionContext:${k}" => v },
      ) },
    )
  }]
}

locals {
  service_statements = [for u in var.service_users : {
    Sid       = u.sid
    Effect    = "Allow"
    Principal = { Service = u.service }
    Action    = u.actions
    Resource  = "*" # in a key policy "*" means "this key"
    Condition = { StringEquals = merge(
      { "aws:SourceAccount" = local.account_id, "aws:SourceArn" = u.source_arns },
      { for k, v in u.encryption_context : "kms:EncryptionContext:${k}" => v },
    ) }
  }]
}

resource "aws_kms_key" "this" {
  description              = var.description
  key_usage                = "ENCRYPT_DECRYPT"
  customer_master_key_spec = "SYMMETRIC_DEFAULT"
  enable_key_rotation      = true
  rotation_period_in_days  = var.rotation_period_in_days
  deletion_window_in_days  = var.deletion_window_in_days
  is_enabled               = true
  multi_region             = false
  # Inline (not a local) so static checkers (checkov, CKV_SAIP_2) can read the statements.
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      {
        Sid       = "KeyAdministration"
        Effect    = "Allow"
        Principal = { AWS = var.administrator_arns }
        Action    = local.admin_actions
        Resource  = "*" # in a key policy "*" means "this key"
      },
      {
        Sid       = "AccountRecovery"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${local.account_id}:root" }
        Action    = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:PutKeyPolicy"]
        Resource  = "*" # in a key policy "*" means "this key"
      },
      {
        Sid       = "DenyRotationOff"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = ["kms:DisableKeyRotation"]
        Resource  = "*"
      },
    ], local.user_statements, local.service_statements)
  })
  tags = merge(var.tags, { Name = "${var.prefix}-${var.name}" })
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.prefix}-${var.name}"
  target_key_id = aws_kms_key.this.key_id
}
