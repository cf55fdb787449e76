variable "buckets" {
  description = "Retention of the buckets: non-current object versions of the data buckets, and the S3 server access logs."
  type = object({
    noncurrent_version_expiration_days = optional(number, 90)
    access_log_expiration_days         = optional(number, 365)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.buckets.noncurrent_version_expiration_days >= 1 && var.buckets.noncurrent_version_expiration_days <= 3650
    error_message = "buckets.noncurrent_version_expiration_days must be from 1 to 3650."
  }

  validation {
    condition     = var.buckets.access_log_expiration_days >= 90 && var.buckets.access_log_expiration_days <= 3650
    error_message = "buckets.access_log_expiration_days must be from 90 to 3650 (access logs are audit evidence)."
  }
}

variable "encryption_context" {
  description = "Encryption context every use of the data key must carry (saip passes it as AAD and to KMS); the key policy requires each pair (kms:EncryptionContext:<key>)."
  type        = map(string)
  nullable    = false

  validation {
    condition     = length(var.encryption_context) > 0 && alltrue([for k, v in var.encryption_context : length(k) > 0 && length(v) > 0 && !startswith(lower(k), "aws")])
    error_message = "encryption_context must hold at least one non-empty key/value pair, and no key may start with \"aws\" (reserved)."
  }
}

variable "firehose" {
  description = "Archive of the stream in the landing bucket: object prefixes and buffering."
  type = object({
    object_prefix              = optional(string, "raw/")
    error_prefix               = optional(string, "firehose-errors/")
    buffering_size_mib         = optional(number, 64)
    buffering_interval_seconds = optional(number, 300)
  })
  default  = {}
  nullable = false

  validation {
    condition     = endswith(var.firehose.object_prefix, "/") && endswith(var.firehose.error_prefix, "/") && var.firehose.object_prefix != var.firehose.error_prefix
    error_message = "firehose.object_prefix and firehose.error_prefix must end with '/' and differ."
  }

  validation {
    condition     = !anytrue([for p in [var.firehose.object_prefix, var.firehose.error_prefix] : startswith(p, "accepted/") || startswith(p, "quarantine/")])
    error_message = "firehose prefixes must not be under accepted/ or quarantine/ (saip's own objects, which the trainer and consumer roles read)."
  }
}

variable "key_administrator_arns" {
  description = "IAM role/user ARNs that administer both KMS keys but cannot use them. Include the identity that runs Terraform."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.key_administrator_arns) > 0 && alltrue([for arn in var.key_administrator_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/[A-Za-z0-9+=,.@_/-]+$", arn))])
    error_message = "key_administrator_arns must be a non-empty list of IAM role or user ARNs."
  }
}

variable "kms" {
  description = "Key lifecycle for both keys (rotation is always on)."
  type = object({
    deletion_window_in_days = optional(number, 30)
    rotation_period_in_days = optional(number) # null: the KMS default, 365 days
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.kms.deletion_window_in_days >= 7 && var.kms.deletion_window_in_days <= 30
    error_message = "kms.deletion_window_in_days must be from 7 to 30."
  }

  validation {
    condition     = var.kms.rotation_period_in_days == null || try(var.kms.rotation_period_in_days >= 90 && var.kms.rotation_period_in_days <= 2560, false)
    error_message = "kms.rotation_period_in_days must be from 90 to 2560, or null for the KMS default (365)."
  }
}

variable "network" {
  description = "Where the workloads run: the VPC, its private subnets and their route tables (for the endpoints), and the CIDR blocks allowed to reach the interface endpoints. `shared_vpc = true` (a VPC other workloads use): no endpoints are created, since restrictive endpoint policies and private DNS would break those workloads; output `vpc_endpoint_policies` is for the VPC owner to merge (opt-in)."
  type = object({
    vpc_id              = string
    subnet_ids          = list(string)
    route_table_ids     = list(string)
    allowed_cidr_blocks = list(string)
    shared_vpc          = optional(bool, false)
  })
  nullable = false

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.network.vpc_id))
    error_message = "network.vpc_id must be a VPC ID (vpc-...)."
  }

  validation {
    condition     = length(var.network.subnet_ids) > 0 && length(var.network.route_table_ids) > 0
    error_message = "network.subnet_ids and network.route_table_ids must not be empty."
  }

  validation {
    condition     = length(var.network.allowed_cidr_blocks) > 0 && alltrue([for c in var.network.allowed_cidr_blocks : can(cidrhost(c, 0)) && tonumber(try(split("/", c)[1], "0")) >= 8])
    error_message = "network.allowed_cidr_blocks must be IPv4 CIDR blocks no wider than /8 (never 0.0.0.0/0)."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (cloud-foundation-fabric convention); no random suffixes are added, so choose one that is globally unique for S3."
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

variable "trusted_principal_arns" {
  description = "Who may assume each workload role: `producer` (publishes records), `consumer` (ingestion: validates, encrypts, stores, quarantines) and `trainer` (reads accepted data, writes sealed models)."
  type = object({
    producer = list(string)
    consumer = list(string)
    trainer  = list(string)
  })
  nullable = false

  validation {
    condition = alltrue([for arns in [var.trusted_principal_arns.producer, var.trusted_principal_arns.consumer, var.trusted_principal_arns.trainer] :
    length(arns) > 0 && alltrue([for p in arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(root|role/[A-Za-z0-9+=,.@_/-]+|user/[A-Za-z0-9+=,.@_/-]+)$", p))])])
    error_message = "trusted_principal_arns.producer/consumer/trainer must each be a non-empty list of IAM role, user or account-root ARNs."
  }
}

variable "unsafe_force_destroy_buckets" {
  description = "UNSAFE - throwaway stacks only. Lets `terraform destroy` delete buckets that still hold data, and turns off the lease table's deletion protection."
  type        = bool
  default     = false
  nullable    = false
}

variable "unsafe_omit_bucket_policies" {
  description = "UNSAFE - local emulators only. Creates the data buckets without their bucket policies and drops the Deny statement from the access-log bucket policy: moto server speaks plain HTTP and applies Deny statements without their conditions. Never set for a real account."
  type        = bool
  default     = false
  nullable    = false
}
