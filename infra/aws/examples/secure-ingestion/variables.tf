variable "availability_zone_suffixes" {
  description = "Availability zones of the two private subnets, as suffixes of the region (pinned, so the set never grows silently)."
  type        = list(string)
  default     = ["a", "b"]
  nullable    = false

  validation {
    condition     = length(var.availability_zone_suffixes) >= 2 && alltrue([for s in var.availability_zone_suffixes : can(regex("^[a-z]$", s))])
    error_message = "availability_zone_suffixes must list at least two single-letter zone suffixes."
  }
}

variable "encryption_context" {
  description = "Encryption context required on every use of the data key (also written to saip_config.encryption.context)."
  type        = map(string)
  default     = { "saip:pipeline" = "ingest" }
  nullable    = false
}

variable "key_administrator_arns" {
  description = "IAM role/user ARNs administering the keys; empty (the default) means the identity running Terraform (its IAM role or user, from the session)."
  type        = list(string)
  default     = []
  nullable    = false
}

variable "local_endpoint_url" {
  description = "Local emulator only: send every AWS API call to this loopback URL (moto server) with test credentials. Must be http(s)://127.0.0.1:PORT or http(s)://localhost:PORT; null (the default) talks to AWS."
  type        = string
  default     = null

  validation {
    condition     = var.local_endpoint_url == null || can(regex("^https?://(127\\.0\\.0\\.1|localhost):[0-9]{1,5}$", coalesce(var.local_endpoint_url, "x")))
    error_message = "local_endpoint_url must be a loopback URL such as http://127.0.0.1:5000 (never a remote host)."
  }
}

variable "prefix" {
  description = "Prefix of every resource name; must be globally unique for S3 bucket names."
  type        = string
  default     = "saip-demo"
  nullable    = false
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must be an AWS region name such as eu-west-1."
  }
}

variable "unsafe_force_destroy_buckets" {
  description = "UNSAFE - throwaway stacks only: passed to the module (destroy deletes buckets that hold data)."
  type        = bool
  default     = false
  nullable    = false
}

variable "unsafe_omit_bucket_policies" {
  description = "UNSAFE - local emulator only: passed to the module (no bucket policies, since moto speaks plain HTTP and applies Deny statements without their conditions)."
  type        = bool
  default     = false
  nullable    = false

  validation {
    condition     = !var.unsafe_omit_bucket_policies || var.local_endpoint_url != null
    error_message = "unsafe_omit_bucket_policies may only be set together with local_endpoint_url (a loopback emulator)."
  }
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC (two private /24 subnets are carved from it)."
  type        = string
  default     = "10.42.0.0/16"
  nullable    = false

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(try(split("/", var.vpc_cidr)[1], "0")) <= 22 && tonumber(try(split("/", var.vpc_cidr)[1], "0")) >= 16
    error_message = "vpc_cidr must be an IPv4 CIDR block from /16 to /22."
  }
}
