# Example root: resource group, VNet with a private-endpoint subnet, the four private DNS zones,
# a Log Analytics workspace, and the secure-ingestion module. Run from inside the VNet (or a
# peered network): Key Vault and storage accept no public traffic, including Terraform's own.

terraform {
  required_version = ">= 1.7.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.20.0, < 5.0.0"
    }
  }
}

provider "azurerm" {
  storage_use_azuread = true # shared keys are disabled on the account

  features {
    key_vault {
      purge_soft_delete_on_destroy = false
    }
  }
}

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
  }
}

resource "azurerm_resource_group" "this" {
  name     = "${var.prefix}-rg"
  location = var.location
}

resource "azurerm_virtual_network" "this" {
  name                = "${var.prefix}-vnet"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  address_space       = ["10.60.0.0/16"]
}

resource "azurerm_network_security_group" "endpoints" {
  name                = "${var.prefix}-pe-nsg"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
}

resource "azurerm_subnet" "endpoints" {
  name                              = "private-endpoints"
  resource_group_name               = azurerm_resource_group.this.name
  virtual_network_name              = azurerm_virtual_network.this.name
  address_prefixes                  = ["10.60.1.0/24"]
  private_endpoint_network_policies = "Enabled"
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  subnet_id                 = azurerm_subnet.endpoints.id
  network_security_group_id = azurerm_network_security_group.endpoints.id
}

resource "azurerm_private_dns_zone" "this" {
  for_each = local.zones

  name                = each.value
  resource_group_name = azurerm_resource_group.this.name
}

resource "azurerm_private_dns_zone_virtual_network_link" "this" {
  for_each = local.zones

  name                  = "${var.prefix}-${each.key}"
  resource_group_name   = azurerm_resource_group.this.name
  private_dns_zone_name = azurerm_private_dns_zone.this[each.key].name
  virtual_network_id    = azurerm_virtual_network.this.id
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.prefix}-logs"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
  sku                 = "PerGB2018"
  retention_in_days   = 365
}

module "secure_ingestion" {
  source = "../.."

  prefix                     = var.prefix
  location                   = var.location
  resource_group_name        = azurerm_resource_group.this.name
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  private_endpoints = {
    subnet_id            = azurerm_subnet.endpoints.id
    private_dns_zone_ids = { for k, z in azurerm_private_dns_zone.this : k => z.id }
  }
}

output "saip_config" {
  description = "The [ingest] and [encryption] sections of saip's --config TOML."
  value       = module.secure_ingestion.saip_config
}
