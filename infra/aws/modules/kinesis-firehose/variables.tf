variable "destination" {
  description = "Where Firehose archives the stream: an S3 bucket (SSE-KMS with `kms_key_arn`), under `object_prefix`; failed deliveries go under `error_prefix`."
  type = object({
    bucket_arn                 = string
    kms_key_arn                = string
    object_prefix              = optional(string, "raw/")
    error_prefix               = optional(string, "firehose-errors/")
    buffering_size_mib         = optional(number, 64)
    buffering_interval_seconds = optional(number, 300)
  })
  nullable = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.destination.bucket_arn))
    error_message = "destination.bucket_arn must be an S3 bucket ARN (arn:aws:s3:::NAME)."
  }

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+$", var.destination.kms_key_arn))
    error_message = "destination.kms_key_arn must be a customer-managed KMS key ARN."
  }

  validation {
    condition     = var.destination.buffering_size_mib >= 1 && var.destination.buffering_size_mib <= 128
    error_message = "destination.buffering_size_mib must be from 1 to 128."
  }

  validation {
    condition     = var.destination.buffering_interval_seconds >= 0 && var.destination.buffering_interval_seconds <= 900
    error_message = "destination.buffering_interval_seconds must be from 0 to 900."
  }

  validation {
    condition     = endswith(var.destination.object_prefix, "/") && endswith(var.destination.error_prefix, "/") && var.destination.object_prefix != var.destination.error_prefix
    error_message = "destination.object_prefix and destination.error_prefix must end with '/' and differ."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key that encrypts the Kinesis stream at rest."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[a-f0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a customer-managed KMS key ARN, not an alias or alias/aws/kinesis."
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

variable "stream" {
  description = "Kinesis data stream sizing: provisioned `shard_count` (null = on-demand) and retention in hours."
  type = object({
    shard_count            = optional(number, 1)
    retention_period_hours = optional(number, 24)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.stream.shard_count == null || (coalesce(var.stream.shard_count, 1) >= 1 && coalesce(var.stream.shard_count, 1) <= 500)
    error_message = "stream.shard_count must be from 1 to 500, or null for on-demand capacity."
  }

  validation {
    condition     = var.stream.retention_period_hours >= 24 && var.stream.retention_period_hours <= 8760
    error_message = "stream.retention_period_hours must be from 24 to 8760."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
