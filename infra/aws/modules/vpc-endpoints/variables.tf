variable "allowed_cidr_blocks" {
  description = "Private CIDR blocks allowed to reach the interface endpoints on TCP 443 (the workloads' subnets)."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.allowed_cidr_blocks) > 0 && alltrue([for c in var.allowed_cidr_blocks : can(cidrhost(c, 0))])
    error_message = "allowed_cidr_blocks must be a non-empty list of IPv4 CIDR blocks."
  }

  validation {
    condition     = alltrue([for c in var.allowed_cidr_blocks : tonumber(split("/", c)[1]) >= 8])
    error_message = "allowed_cidr_blocks must not contain 0.0.0.0/0 or any block wider than /8."
  }
}

variable "create_endpoints" {
  description = "Create the endpoints (a VPC dedicated to the pipeline). false for a VPC shared with other workloads: nothing is created, and the `policies` output is merged into the VPC's existing endpoints by their owner (see main.tf)."
  type        = bool
  default     = true
  nullable    = false
}

variable "policies" {
  description = "Endpoint policy statements per service (`kinesis`, `kms`, `firehose`, `s3`, and optionally `dynamodb` for the Kinesis lease table): who may call what on which ARNs through that endpoint. Every service needs at least one statement; actions must belong to the service and name no wildcard; resources must be ARNs."
  type = map(list(object({
    sid            = string
    principal_arns = list(string)
    actions        = list(string)
    resources      = list(string)
  })))
  nullable = false

  validation {
    condition     = length(setsubtract(["firehose", "kinesis", "kms", "s3"], keys(var.policies))) == 0 && length(setsubtract(keys(var.policies), ["dynamodb", "firehose", "kinesis", "kms", "s3"])) == 0
    error_message = "policies must have the keys firehose, kinesis, kms and s3, and may have dynamodb (nothing else)."
  }

  validation {
    condition = alltrue(flatten([for svc, stmts in var.policies : [
      for s in stmts : [for a in s.actions : startswith(a, "${svc == "kinesis" ? "kinesis" : svc == "firehose" ? "firehose" : svc}:") && !strcontains(a, "*")]
    ]])) && alltrue([for svc, stmts in var.policies : length(stmts) > 0])
    error_message = "policies: each service needs statements whose actions belong to it (kinesis:*, kms:*, firehose:*, s3:*, dynamodb:* prefixes) and contain no wildcard."
  }

  validation {
    condition = alltrue(flatten([for svc, stmts in var.policies : [
      for s in stmts : [for r in s.resources : startswith(r, "arn:")]
    ]]))
    error_message = "policies: resources must be ARNs (no \"*\")."
  }

  validation {
    condition = alltrue(flatten([for svc, stmts in var.policies : [
      for s in stmts : length(s.principal_arns) > 0 && alltrue([for p in s.principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", p))])
    ]]))
    error_message = "policies: principal_arns must be a non-empty list of IAM role ARNs."
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

variable "route_table_ids" {
  description = "Route tables of the private subnets; the S3 gateway endpoint is attached to them."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.route_table_ids) > 0 && alltrue([for r in var.route_table_ids : can(regex("^rtb-[0-9a-f]{8,17}$", r))])
    error_message = "route_table_ids must be a non-empty list of route table IDs (rtb-...)."
  }
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone) where the interface endpoints get their network interfaces."
  type        = list(string)
  nullable    = false

  validation {
    condition     = length(var.subnet_ids) > 0 && alltrue([for s in var.subnet_ids : can(regex("^subnet-[0-9a-f]{8,17}$", s))])
    error_message = "subnet_ids must be a non-empty list of subnet IDs (subnet-...)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}

variable "vpc_id" {
  description = "VPC of the workloads."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^vpc-[0-9a-f]{8,17}$", var.vpc_id))
    error_message = "vpc_id must be a VPC ID (vpc-...)."
  }
}
