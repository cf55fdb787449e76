variable "compute" {
  description = "Training compute cluster: VM size and maximum node count (it scales to zero when idle)."
  type = object({
    vm_size   = optional(string, "Standard_D4s_v5")
    max_nodes = optional(number, 4)
  })
  default  = {}
  nullable = false

  validation {
    condition     = var.compute.max_nodes >= 1 && var.compute.max_nodes <= 100
    error_message = "compute.max_nodes must be from 1 to 100."
  }
}

variable "ingestion" {
  description = "Outputs of the ingestion module (../..): storage account, landing and artifacts container IDs, Key Vault, the data key's versionless resource ID and the wrap/unwrap role definition."
  type = object({
    storage_account_id                 = string
    landing_container_id               = string
    artifacts_container_id             = string
    key_vault_id                       = string
    data_key_resource_id               = string
    key_wrap_unwrap_role_definition_id = string
  })
  nullable = false

  validation {
    condition     = can(regex("(?i)^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/Microsoft\\.KeyVault/vaults/[^/]+$", var.ingestion.key_vault_id))
    error_message = "ingestion.key_vault_id must be a Key Vault resource ID."
  }
}

variable "location" {
  description = "Azure region of every resource."
  type        = string
  nullable    = false
}

variable "log_analytics_workspace_id" {
  description = "Log Analytics workspace of Application Insights and the diagnostic logs."
  type        = string
  nullable    = false
}

variable "prefix" {
  description = "Prefix of every resource name (the ingestion module's)."
  type        = string
  nullable    = false

  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,11}$", var.prefix))
    error_message = "prefix must be 2-12 lowercase letters or digits, starting with a letter."
  }
}

variable "private_endpoints" {
  description = "Subnet of the private endpoints (workspace, its storage's blob and file) and their private DNS zones (privatelink.api.azureml.ms, privatelink.notebooks.azure.net, privatelink.blob.core.windows.net, privatelink.file.core.windows.net)."
  type = object({
    subnet_id = string
    private_dns_zone_ids = object({
      api       = string
      notebooks = string
      blob      = string
      file      = string
    })
  })
  nullable = false
}

variable "rbac_propagation_wait" {
  description = "Wait after the workspace identity's key role assignment before the key is used."
  type        = string
  default     = "120s"
  nullable    = false

  validation {
    condition     = can(regex("^[0-9]+s$", var.rbac_propagation_wait))
    error_message = "rbac_propagation_wait must be seconds, e.g. 120s."
  }
}

variable "resource_group_name" {
  description = "Existing resource group for every resource."
  type        = string
  nullable    = false
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
  nullable    = false
}
