variable "administrator_arns" {
  description = "IAM role or user ARNs that administer the key (policy, rotation, deletion). They get no cryptographic use. The identity running Terraform must be one of them (KMS's lockout safety check)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.administrator_arns) > 0
    error_message = "administrator_arns must name at least one IAM role or user."
  }

  validation {
    condition     = alltrue([for arn in var.administrator_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]+$", arn))])
    error_message = "administrator_arns must be IAM role or user ARNs (arn:aws:iam::<account>:role/NAME); account roots and wildcards are not accepted."
  }
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled key deletion completes."
  type        = number
  default     = 30
  nullable    = false

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30 && floor(var.deletion_window_in_days) == var.deletion_window_in_days
    error_message = "deletion_window_in_days must be a whole number from 7 to 30."
  }
}

variable "description" {
  description = "What the key protects (shown in the KMS console)."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.description)) > 0 && length(var.description) <= 8192
    error_message = "description must be non-empty and at most 8192 characters."
  }
}

variable "name" {
  description = "Short purpose name; the alias becomes alias/<prefix>-<name>."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,30}[a-z0-9]$", var.name))
    error_message = "name must be 2-32 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (cloud-foundation-fabric convention); no random suffixes are added."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-20 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "rotation_period_in_days" {
  description = "Automatic rotation period of the key material; null keeps the KMS default (365 days). Rotation itself is always on."
  type        = number
  default     = null

  validation {
    condition     = var.rotation_period_in_days == null || try(var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560 && floor(var.rotation_period_in_days) == var.rotation_period_in_days, false)
    error_message = "rotation_period_in_days must be a whole number from 90 to 2560 (the KMS limits), or null."
  }
}

variable "service_users" {
  description = "Key-policy statements for AWS service principals that encrypt on the account's behalf (CloudTrail log files, SNS messages published by EventBridge/CloudWatch). Each is bound by aws:SourceAccount and to the listed aws:SourceArn values, so another account's resource cannot use the key through that service."
  type = list(object({
    sid                = string
    service            = string
    actions            = list(string)
    source_arns        = list(string)
    encryption_context = optional(map(list(string)), {})
  }))
  default  = []
  nullable = false

  validation {
    condition     = alltrue([for u in var.service_users : can(regex("^[A-Za-z0-9]{1,64}$", u.sid)) && contains(["cloudtrail.amazonaws.com", "cloudwatch.amazonaws.com", "events.amazonaws.com"], u.service) && length(u.source_arns) > 0 && alltrue([for a in u.source_arns : can(regex("^arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9-]*:[0-9]{12}:[A-Za-z0-9/_+=,.@:-]+$", a))])])
    error_message = "service_users: sid alphanumeric, service one of cloudtrail/cloudwatch/events.amazonaws.com, source_arns non-empty ARNs of this kind of resource (no wildcards)."
  }

  validation {
    condition     = alltrue(flatten([for u in var.service_users : [for a in u.actions : contains(["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey"], a)]])) && alltrue([for u in var.service_users : length(u.actions) > 0])
    error_message = "service_users[*].actions must be a non-empty list of kms:Decrypt, kms:DescribeKey, kms:GenerateDataKey."
  }
}

variable "tags" {
  description = "Tags added to the key."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "users" {
  description = <<-EOT
    Key-policy statements granting cryptographic use, one per group of principals. `actions` are
    limited to the cryptographic operations; `via_service` (e.g. "kinesis") restricts use to calls
    made through that AWS service in this region; `encryption_context` requires each listed
    context key to equal one of the values (kms:EncryptionContext:<key>), so a caller cannot use the
    key for another purpose.
  EOT
  type = list(object({
    sid                = string
    principal_arns     = list(string)
    actions            = list(string)
    via_service        = optional(string)
    encryption_context = optional(map(list(string)), {})
  }))
  nullable = false

  validation {
    condition     = alltrue([for u in var.users : can(regex("^[A-Za-z0-9]{1,64}$", u.sid))]) && length(distinct([for u in var.users : u.sid])) == length(var.users)
    error_message = "users[*].sid must be unique, alphanumeric, at most 64 characters."
  }

  validation {
    condition = alltrue(flatten([for u in var.users : [
      for a in u.actions : contains(["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"], a)
    ]])) && alltrue([for u in var.users : length(u.actions) > 0])
    error_message = "users[*].actions must be a non-empty list of kms:Decrypt, kms:DescribeKey, kms:Encrypt, kms:GenerateDataKey, kms:GenerateDataKeyWithoutPlaintext, kms:ReEncryptFrom or kms:ReEncryptTo (no wildcards, no administrative actions)."
  }

  validation {
    condition = alltrue(flatten([for u in var.users : [
      for p in u.principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", p))
    ]])) && alltrue([for u in var.users : length(u.principal_arns) > 0])
    error_message = "users[*].principal_arns must be a non-empty list of IAM role ARNs (no account roots, no wildcards)."
  }

  validation {
    condition     = alltrue([for u in var.users : u.via_service == null || contains(["dynamodb", "firehose", "kinesis", "s3"], coalesce(u.via_service, "none"))])
    error_message = "users[*].via_service must be one of dynamodb, firehose, kinesis, s3 (or omitted)."
  }

  validation {
    condition = alltrue([for u in var.users : length(u.encryption_context) == 0 || alltrue([
      for a in u.actions : contains(["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext", "kms:ReEncryptFrom", "kms:ReEncryptTo"], a)
    ])])
    error_message = "users with an encryption_context may only hold operations that take one (kms:DescribeKey takes none and would always be denied)."
  }

  validation {
    condition     = alltrue(flatten([for u in var.users : [for k, v in u.encryption_context : length(k) > 0 && length(v) > 0]]))
    error_message = "users[*].encryption_context keys must be non-empty and each needs at least one allowed value."
  }
}
