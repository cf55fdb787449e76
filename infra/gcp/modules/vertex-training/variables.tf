variable "ingestion" {
  description = "From the ingestion module (../..): its key ring ID and the trainer service account (which holds the data key grant and the accepted-rows BigQuery access)."
  type = object({
    key_ring_id                   = string
    trainer_service_account_email = string
  })
  nullable = false

  validation {
    condition     = can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+$", var.ingestion.key_ring_id)) && can(regex("^[a-z0-9-]+@[a-z0-9-]+\\.iam\\.gserviceaccount\\.com$", var.ingestion.trainer_service_account_email))
    error_message = "ingestion.key_ring_id must be a key ring ID and ingestion.trainer_service_account_email a service account email."
  }
}

variable "key_rotation_period" {
  description = "Rotation period of the Vertex CMEK key (at most 90 days)."
  type        = string
  default     = "7776000s"
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]+s$", var.key_rotation_period)) && try(tonumber(trimsuffix(var.key_rotation_period, "s")) >= 86400 && tonumber(trimsuffix(var.key_rotation_period, "s")) <= 7776000, false)
    error_message = "key_rotation_period must be from 86400s (1 day) to 7776000s (90 days)."
  }
}

variable "network" {
  description = "VPC the training jobs run on (the ingestion module's) and the range reserved for the private service access peering Vertex AI uses."
  type = object({
    self_link                   = string
    peering_range_address       = string
    peering_range_prefix_length = optional(number, 20)
  })
  nullable = false

  validation {
    condition     = can(cidrhost("${var.network.peering_range_address}/${var.network.peering_range_prefix_length}", 0)) && var.network.peering_range_prefix_length >= 16 && var.network.peering_range_prefix_length <= 24
    error_message = "network.peering_range_address must be an IPv4 address and peering_range_prefix_length from 16 to 24."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (the ingestion module's)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "project_id" {
  description = "Project of the ingestion module."
  type        = string
  nullable    = false
}

variable "region" {
  description = "Region of the training jobs, the artifacts bucket and the secret's replica."
  type        = string
  nullable    = false
}
