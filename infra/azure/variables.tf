variable "alert_email_addresses" {
  description = "Email addresses of the action group receiving the key, capture and delivery alerts; empty: alerts fire into the action group with no receiver (add one outside this module)."
  type        = list(string)
  default     = []
  nullable    = false

  validation {
    condition     = alltrue([for a in var.alert_email_addresses : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", a))])
    error_message = "alert_email_addresses must be email addresses."
  }
}

variable "deployer_key_management" {
  description = "Grant the identity running Terraform Key Vault Crypto Officer on the vault (needed to create and change the keys). Set false after the first apply to leave no standing key-management role; set true again only for a reviewed key change."
  type        = bool
  default     = true
  nullable    = false
}

variable "event_hub" {
  description = "Event Hub sizing: partitions, retention (days) and capture window (seconds / bytes) to ADLS Gen2."
  type = object({
    partition_count          = optional(number, 4)
    message_retention_days   = optional(number, 7)
    capture_interval_seconds = optional(number, 300)
    capture_size_limit_bytes = optional(number, 314572800)
    namespace_capacity_units = optional(number, 1)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.event_hub.partition_count >= 1 && var.event_hub.partition_count <= 100
    error_message = "event_hub.partition_count must be from 1 to 100."
  }

  validation {
    condition     = var.event_hub.message_retention_days >= 1 && var.event_hub.message_retention_days <= 90
    error_message = "event_hub.message_retention_days must be from 1 to 90."
  }

  validation {
    condition     = var.event_hub.capture_interval_seconds >= 60 && var.event_hub.capture_interval_seconds <= 900
    error_message = "event_hub.capture_interval_seconds must be from 60 to 900."
  }

  validation {
    condition     = var.event_hub.capture_size_limit_bytes >= 10485760 && var.event_hub.capture_size_limit_bytes <= 524288000
    error_message = "event_hub.capture_size_limit_bytes must be from 10485760 to 524288000."
  }

  validation {
    condition     = contains([1, 2, 4, 8, 16], var.event_hub.namespace_capacity_units)
    error_message = "event_hub.namespace_capacity_units (Premium processing units) must be 1, 2, 4, 8 or 16."
  }
}

variable "key_rotation" {
  description = "Key Vault key rotation policy (ISO 8601 whole days): each key version is rotated `rotate_after_creation` after it is created (this trigger also fires on the first version, which has no expiry), rotated versions expire `expire_after` after creation, and Event Grid notifies `notify_before_expiry` before that."
  type = object({
    expire_after          = optional(string, "P180D")
    rotate_after_creation = optional(string, "P90D")
    notify_before_expiry  = optional(string, "P30D")
  })
  default  = {}
  nullable = false

  validation {
    condition     = alltrue([for d in [var.key_rotation.expire_after, var.key_rotation.rotate_after_creation, var.key_rotation.notify_before_expiry] : can(regex("^P[0-9]+D$", d))])
    error_message = "key_rotation durations must be whole days in ISO 8601 form, e.g. P90D."
  }

  validation {
    condition = (
      tonumber(trim(var.key_rotation.expire_after, "PD")) >= 28 &&
      tonumber(trim(var.key_rotation.expire_after, "PD")) <= 730 &&
      tonumber(trim(var.key_rotation.rotate_after_creation, "PD")) >= 7 &&
      tonumber(trim(var.key_rotation.rotate_after_creation, "PD")) + 7 <= tonumber(trim(var.key_rotation.expire_after, "PD")) &&
      tonumber(trim(var.key_rotation.notify_before_expiry, "PD")) >= 7 &&
      tonumber(trim(var.key_rotation.notify_before_expiry, "PD")) < tonumber(trim(var.key_rotation.expire_after, "PD"))
    )
    error_message = "key_rotation: expire_after must be P28D-P730D, rotate_after_creation at least P7D and at least 7 days before expire_after (a version must be replaced before it expires), notify_before_expiry at least P7D and shorter than expire_after."
  }
}

variable "location" {
  description = "Azure region of every resource."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z]+[a-z0-9]*$", var.location))
    error_message = "location must be an Azure region name such as westeurope."
  }
}

variable "log_analytics_workspace_id" {
  description = "Log Analytics workspace receiving the diagnostic logs and metrics of Key Vault, Event Hubs and the storage account."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("(?i)^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.OperationalInsights/workspaces/[^/]+$", var.log_analytics_workspace_id))
    error_message = "log_analytics_workspace_id must be a Log Analytics workspace resource ID."
  }
}

variable "prefix" {
  description = "Prefix of every resource name (cloud-foundation-fabric convention); no random suffixes are added. Lowercase letters and digits only, since storage account names allow nothing else."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.prefix))
    error_message = "prefix must be 2-12 lowercase letters or digits, starting with a letter (storage account names: 3-24 lowercase alphanumerics)."
  }
}

variable "private_endpoints" {
  description = "Subnet for the private endpoints and the private DNS zones they register in (privatelink.vaultcore.azure.net, privatelink.servicebus.windows.net, privatelink.blob.core.windows.net, privatelink.dfs.core.windows.net)."
  type = object({
    subnet_id = string
    private_dns_zone_ids = object({
      vault      = string
      servicebus = string
      blob       = string
      dfs        = string
    })
  })
  nullable = false

  validation {
    condition     = can(regex("(?i)^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.Network/virtualNetworks/[^/]+/subnets/[^/]+$", var.private_endpoints.subnet_id))
    error_message = "private_endpoints.subnet_id must be a subnet resource ID."
  }

  validation {
    condition     = alltrue([for id in values(var.private_endpoints.private_dns_zone_ids) : can(regex("(?i)^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.Network/privateDnsZones/privatelink\\.[a-z.]+$", id))])
    error_message = "private_endpoints.private_dns_zone_ids must be privatelink.* private DNS zone resource IDs."
  }
}

variable "rbac_propagation_wait" {
  description = "How long to wait after creating role assignments before using them (Azure RBAC propagation; Microsoft documents up to 10 minutes in the worst case)."
  type        = string
  default     = "120s"
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]+s$", var.rbac_propagation_wait)) && try(tonumber(trimsuffix(var.rbac_propagation_wait, "s")) >= 30 && tonumber(trimsuffix(var.rbac_propagation_wait, "s")) <= 900, false)
    error_message = "rbac_propagation_wait must be from 30s to 900s."
  }
}

variable "resource_group_name" {
  description = "Existing resource group for every resource."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[-\\w._()]{1,90}$", var.resource_group_name))
    error_message = "resource_group_name must be a valid resource group name."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
