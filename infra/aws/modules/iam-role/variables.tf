variable "description" {
  description = "What the role is for."
  type        = string
  nullable    = false

  validation {
    condition     = length(trimspace(var.description)) > 0 && length(var.description) <= 1000
    error_message = "description must be non-empty and at most 1000 characters."
  }
}

variable "max_session_duration_seconds" {
  description = "Longest session a caller can request."
  type        = number
  default     = 3600
  nullable    = false

  validation {
    condition     = var.max_session_duration_seconds >= 3600 && var.max_session_duration_seconds <= 43200
    error_message = "max_session_duration_seconds must be from 3600 to 43200."
  }
}

variable "name" {
  description = "Role purpose; the role is named <prefix>-<name>."
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

variable "statements" {
  description = "The role's permissions: Allow statements with explicit actions (no wildcards) on explicit ARNs (no \"*\"), each optionally conditioned (`test`, `variable`, `values`, as in IAM)."
  type = list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
    conditions = optional(list(object({
      test     = string
      variable = string
      values   = list(string)
    })), [])
  }))
  nullable = false

  validation {
    condition     = length(var.statements) > 0 && alltrue([for s in var.statements : can(regex("^[A-Za-z0-9]{1,64}$", s.sid))]) && length(distinct([for s in var.statements : s.sid])) == length(var.statements)
    error_message = "statements must be non-empty with unique alphanumeric sids."
  }

  validation {
    condition     = alltrue(flatten([for s in var.statements : [for a in s.actions : can(regex("^[a-z0-9-]+:[A-Za-z0-9]+$", a))]])) && alltrue([for s in var.statements : length(s.actions) > 0])
    error_message = "statements[*].actions must be explicit service:Action names: no wildcards (\"*\", \"s3:*\", \"kms:Get*\")."
  }

  validation {
    condition     = alltrue(flatten([for s in var.statements : [for r in s.resources : startswith(r, "arn:") && !can(regex("^arn:[^:]*:[^:]*:[^:]*:[^:]*:\\*$", r))]])) && alltrue([for s in var.statements : length(s.resources) > 0])
    error_message = "statements[*].resources must be ARNs scoped to a resource (not \"*\" nor arn:...:*)."
  }

  validation {
    condition     = alltrue(flatten([for s in var.statements : [for c in s.conditions : contains(["ArnEquals", "Bool", "ForAllValues:StringEquals", "ForAnyValue:StringEquals", "IpAddress", "NumericLessThanEquals", "StringEquals", "StringLike"], c.test) && length(c.values) > 0]]))
    error_message = "statements[*].conditions[*].test must be one of ArnEquals, Bool, ForAllValues:StringEquals, ForAnyValue:StringEquals, IpAddress, NumericLessThanEquals, StringEquals, StringLike, with at least one value."
  }
}

variable "tags" {
  description = "Tags added to the role."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "trusted_principal_arns" {
  description = "AWS principals (role, user or account-root ARNs) allowed to assume the role."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.trusted_principal_arns) > 0 && alltrue([for p in var.trusted_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[A-Za-z0-9+=,.@_/-]+|user/[A-Za-z0-9+=,.@_/-]+)$", p))])
    error_message = "trusted_principal_arns must be a non-empty list of IAM role, user or account-root ARNs (no \"*\")."
  }
}
