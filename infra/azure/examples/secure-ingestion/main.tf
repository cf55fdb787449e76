# Stage 2 of the Azure example: the secure-ingestion module, applied FROM THE RUNNER VM that stage 1
# (./network) created inside the VNet. Key Vault and the storage account have public network access
# off, so their data plane (keys, and anything azurerm reads from it) is reachable only through the
# private endpoints this stage creates in that VNet. Two steps:
#
#   1. cd network && terraform apply -var runner_ssh_public_key="$(cat ~/.ssh/id_ed25519.pub)"
#   2. on the runner (ARM_USE_MSI=true, ARM_CLIENT_ID=<runner_identity_client_id>):
#      terraform apply   (this folder; same prefix and location)
#
# Stage 2 reads stage 1's resources by name (data sources), so the two states stay independent.

terraform {
  required_version = ">= 1.7.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.55.0, < 5.0.0"
    }
    azapi = {
      source  = "Azure/azapi"
      version = ">= 2.0.0, < 3.0.0"
    }
    time = {
      source  = "hashicorp/time"
      version = ">= 0.9.0, < 1.0.0"
    }
  }
}

provider "azurerm" {
  storage_use_azuread = true # shared keys are disabled on the account

  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }

    # Never call the storage data plane for the account's own settings (queue/static website
    # properties): containers and account settings go through Azure Resource Manager.
    storage {
      data_plane_available = false
    }
  }
}

provider "azapi" {}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
  nullable    = false
}

variable "prefix" {
  description = "Prefix of every resource name."
  type        = string
  default     = "saipdemo"
  nullable    = false
}

locals {
  zones = {
    vault      = "privatelink.vaultcore.azure.net"
    servicebus = "privatelink.servicebus.windows.net"
    blob       = "privatelink.blob.core.windows.net"
    dfs        = "privatelink.dfs.core.windows.net"
    file       = "privatelink.file.core.windows.net"
    api        = "privatelink.api.azureml.ms"
    notebooks  = "privatelink.notebooks.azure.net"
  }
  ingestion_zones = ["vault", "servicebus", "blob", "dfs"]
}

data "azurerm_resource_group" "this" {
  name = "${var.prefix}-rg"
}

data "azurerm_subnet" "endpoints" {
  name                 = "private-endpoints"
  virtual_network_name = "${var.prefix}-vnet"
  resource_group_name  = data.azurerm_resource_group.this.name
}

data "azurerm_private_dns_zone" "this" {
  for_each = local.zones

  name                = each.value
  resource_group_name = data.azurerm_resource_group.this.name
}

data "azurerm_log_analytics_workspace" "this" {
  name                = "${var.prefix}-logs"
  resource_group_name = data.azurerm_resource_group.this.name
}

module "secure_ingestion" {
  source = "../.."

  prefix                     = var.prefix
  location                   = var.location
  resource_group_name        = data.azurerm_resource_group.this.name
  log_analytics_workspace_id = data.azurerm_log_analytics_workspace.this.id
  private_endpoints = {
    subnet_id            = data.azurerm_subnet.endpoints.id
    private_dns_zone_ids = { for k in local.ingestion_zones : k => data.azurerm_private_dns_zone.this[k].id }
  }
}

# The training environment: Azure ML workspace (private, managed VNet, CMK) on the same VNet.
module "ml_workspace" {
  source = "../../modules/ml-workspace"

  prefix                     = var.prefix
  location                   = var.location
  resource_group_name        = data.azurerm_resource_group.this.name
  log_analytics_workspace_id = data.azurerm_log_analytics_workspace.this.id
  ingestion                  = module.secure_ingestion.training_inputs
  private_endpoints = {
    subnet_id = data.azurerm_subnet.endpoints.id
    private_dns_zone_ids = {
      api       = data.azurerm_private_dns_zone.this["api"].id
      notebooks = data.azurerm_private_dns_zone.this["notebooks"].id
      blob      = data.azurerm_private_dns_zone.this["blob"].id
      file      = data.azurerm_private_dns_zone.this["file"].id
    }
  }
}

output "saip_config" {
  description = "saip's --config settings: `terraform output -json saip_config | saip config from-terraform > saip.toml`."
  value       = module.secure_ingestion.saip_config
}
