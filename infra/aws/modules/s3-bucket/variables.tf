variable "access_log_bucket" {
  description = "Bucket receiving this bucket's S3 server access logs (target_prefix defaults to <name>/)."
  type = object({
    bucket        = string
    target_prefix = optional(string)
  })
  nullable = false

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.access_log_bucket.bucket))
    error_message = "access_log_bucket.bucket must be a valid S3 bucket name."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for default SSE-KMS encryption (with an S3 bucket key)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID), not an alias or an AWS-managed key."
  }
}

variable "lifecycle_rules" {
  description = "Housekeeping: expire non-current object versions and abort stale multipart uploads after these many days."
  type = object({
    noncurrent_version_expiration_days     = optional(number, 90)
    abort_incomplete_multipart_upload_days = optional(number, 7)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.lifecycle_rules.noncurrent_version_expiration_days >= 1 && var.lifecycle_rules.noncurrent_version_expiration_days <= 3650
    error_message = "lifecycle_rules.noncurrent_version_expiration_days must be from 1 to 3650."
  }

  validation {
    condition     = var.lifecycle_rules.abort_incomplete_multipart_upload_days >= 1 && var.lifecycle_rules.abort_incomplete_multipart_upload_days <= 365
    error_message = "lifecycle_rules.abort_incomplete_multipart_upload_days must be from 1 to 365."
  }
}

variable "name" {
  description = "Purpose of the bucket; the bucket is named <prefix>-<name>."
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

variable "tags" {
  description = "Tags added to the bucket."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "unsafe_force_destroy" {
  description = "UNSAFE - throwaway environments only. Lets `terraform destroy` delete a bucket that still holds objects and versions, i.e. delete data."
  type        = bool
  default     = false
  nullable    = false
}

variable "unsafe_omit_bucket_policy" {
  description = "UNSAFE - local emulators only. Creates no bucket policy, i.e. none of the Deny statements (TLS-only, TLS >= 1.2, key pinning): moto server speaks plain HTTP and applies Deny statements without their conditions, so it would refuse every object call. Never set this for a real account."
  type        = bool
  default     = false
  nullable    = false
}
