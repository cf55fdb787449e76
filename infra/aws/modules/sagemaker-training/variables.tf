variable "data" {
  description = "Where training reads (the poisoning-gated export, e.g. the artifacts bucket's training-input/ prefix) and writes (model output prefix). The output is encrypted with kms_key_arn."
  type = object({
    input_bucket_arn  = string
    input_prefix      = optional(string, "training-input/")
    output_bucket_arn = string
    output_prefix     = optional(string, "models/")
  })
  nullable = false

  validation {
    condition     = alltrue([for a in [var.data.input_bucket_arn, var.data.output_bucket_arn] : can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", a))])
    error_message = "data.input_bucket_arn and data.output_bucket_arn must be S3 bucket ARNs."
  }

  validation {
    condition     = alltrue([for p in [var.data.input_prefix, var.data.output_prefix] : can(regex("^[a-z0-9][a-z0-9_-]*/$", p))]) && !anytrue([for p in [var.data.input_prefix, var.data.output_prefix] : contains(["accepted/", "quarantine/", "raw/"], p)])
    error_message = "data prefixes must look like name/ and must not be saip's accepted/ or quarantine/ or the raw archive."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed key for training volumes, model output and the secret (the ingestion module's storage key)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[0-9a-f-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "launcher_principal_arns" {
  description = "IAM roles allowed to assume the launcher role (your pipeline orchestrator)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.launcher_principal_arns) > 0 && alltrue([for a in var.launcher_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", a))])
    error_message = "launcher_principal_arns must be IAM role ARNs (no account roots, no wildcards)."
  }
}

variable "network" {
  description = "VPC, private subnets and VPC CIDR of the training jobs (the ingestion module's VPC, whose endpoints they use)."
  type = object({
    vpc_id     = string
    vpc_cidr   = string
    subnet_ids = list(string)
  })
  nullable = false

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.network.vpc_id)) && can(cidrhost(var.network.vpc_cidr, 0)) && length(var.network.subnet_ids) > 0 && alltrue([for s in var.network.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "network needs a VPC ID, its CIDR and at least one subnet ID."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (the ingestion module's); training jobs must be named <prefix>-*."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,18}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-20 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "training_image_repository_arn" {
  description = "ECR repository of the training image (the only image the execution role can pull)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:ecr:[a-z0-9-]+:[0-9]{12}:repository/[a-z0-9._/-]+$", var.training_image_repository_arn))
    error_message = "training_image_repository_arn must be an ECR repository ARN."
  }
}
