variable "alert_notification_channels" {
  description = "Cloud Monitoring notification channel IDs (projects/P/notificationChannels/N) for the key-destruction, dead-letter and delivery alerts; empty: alerts are recorded but notify nobody."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "alert_notification_channels must be notification channel IDs (projects/P/notificationChannels/N)."
  }
}

variable "avro_schema_definition" {
  description = "The Avro schema (JSON text) of a record, as exported by the ingestion package (ingestion/schemas/*.avsc); Pub/Sub rejects non-conforming messages at publish time. Pass it with file()."
  type        = string
  nullable    = false

  validation {
    condition     = can(jsondecode(var.avro_schema_definition)) && try(jsondecode(var.avro_schema_definition).type == "record", false) && length(try(jsondecode(var.avro_schema_definition).fields, [])) > 0
    error_message = "avro_schema_definition must be an Avro record schema (JSON with \"type\": \"record\" and fields)."
  }
}

variable "key_rotation_period" {
  description = "Rotation period of every Cloud KMS key, in seconds with an \"s\" suffix (Cloud KMS format); at most 90 days (7776000s)."
  type        = string
  default     = "7776000s"
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]+s$", var.key_rotation_period)) && try(tonumber(trimsuffix(var.key_rotation_period, "s")) >= 86400 && tonumber(trimsuffix(var.key_rotation_period, "s")) <= 7776000, false)
    error_message = "key_rotation_period must be from 86400s (1 day) to 7776000s (90 days)."
  }
}

variable "network" {
  description = "VPC that reaches Google APIs through a Private Service Connect endpoint on the restricted VIP (`psc_address` is a free internal IP outside every subnet, written without a prefix length)."
  type = object({
    self_link   = string
    psc_address = string
  })
  nullable = false

  validation {
    condition     = can(regex("^(https://www\\.googleapis\\.com/compute/v1/)?projects/[a-z0-9-]+/global/networks/[a-z0-9-]+$", var.network.self_link))
    error_message = "network.self_link must be a VPC network self link (projects/P/global/networks/N)."
  }

  validation {
    condition     = can(cidrhost("${var.network.psc_address}/32", 0))
    error_message = "network.psc_address must be an IPv4 address."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (cloud-foundation-fabric convention); no random suffixes are added."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,14}[a-z0-9]$", var.prefix))
    error_message = "prefix must be 2-16 lowercase letters, digits or hyphens, starting with a letter (service account IDs are limited to 30 characters)."
  }
}

variable "project_id" {
  description = "Project holding every resource."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project ID."
  }
}

variable "pubsub" {
  description = "Topic retention, subscription ack deadline, and delivery attempts before a message goes to the dead-letter topic."
  type = object({
    message_retention_days = optional(number, 7)
    ack_deadline_seconds   = optional(number, 60)
    max_delivery_attempts  = optional(number, 5)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.pubsub.message_retention_days >= 1 && var.pubsub.message_retention_days <= 31
    error_message = "pubsub.message_retention_days must be from 1 to 31."
  }

  validation {
    condition     = var.pubsub.ack_deadline_seconds >= 10 && var.pubsub.ack_deadline_seconds <= 600
    error_message = "pubsub.ack_deadline_seconds must be from 10 to 600."
  }

  validation {
    condition     = var.pubsub.max_delivery_attempts >= 5 && var.pubsub.max_delivery_attempts <= 100
    error_message = "pubsub.max_delivery_attempts must be from 5 to 100 (the Pub/Sub limits)."
  }
}

variable "region" {
  description = "Region of the key ring, the BigQuery dataset and the only region where Pub/Sub may persist messages."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a GCP region such as europe-west1."
  }
}

variable "vpc_service_controls" {
  description = "Optional VPC Service Controls perimeter (needs an organization and an access policy): set `access_policy` (accessPolicies/NUMBER) to create a perimeter around the project restricting Pub/Sub, Cloud KMS, BigQuery and Cloud Storage. It starts as a dry run (violations only logged); set `enforce = true` once the logs show no unexpected denial. `ingress_identities` lists further principals (user:, group:, serviceAccount:) allowed in; `additional_restricted_services` adds services (e.g. the training module's `vpc_sc_restricted_services`). The project number comes from the project itself."
  type = object({
    access_policy                  = optional(string)
    additional_restricted_services = optional(list(string), [])
    enforce                        = optional(bool, false)
    ingress_identities             = optional(list(string), [])
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.vpc_service_controls.access_policy == null || can(regex("^accessPolicies/[0-9]+$", coalesce(var.vpc_service_controls.access_policy, "x")))
    error_message = "vpc_service_controls.access_policy must look like accessPolicies/123456789."
  }

  validation {
    condition     = alltrue([for s in var.vpc_service_controls.additional_restricted_services : can(regex("^[a-z0-9-]+\\.googleapis\\.com$", s))])
    error_message = "vpc_service_controls.additional_restricted_services must be API names such as aiplatform.googleapis.com."
  }

  validation {
    condition     = alltrue([for i in var.vpc_service_controls.ingress_identities : can(regex("^(user|group|serviceAccount):[^@\\s]+@[^@\\s]+$", i))])
    error_message = "vpc_service_controls.ingress_identities must be user:, group: or serviceAccount: principals."
  }
}
