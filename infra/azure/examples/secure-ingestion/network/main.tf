# Stage 1 of the Azure example (apply from anywhere with Azure credentials): the resource group,
# the VNet with a private-endpoint subnet and a runner subnet, the four private DNS zones linked to
# the VNet, a Log Analytics workspace, and a runner VM with no public IP whose managed identity
# applies stage 2 (../) from inside the VNet. Key Vault and storage accept no public traffic, so
# the data-plane calls of stage 2 (keys, containers) only work from here.

terraform {
  required_version = ">= 1.7.0"

  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.55.0, < 5.0.0"
    }
  }
}

provider "azurerm" {
  features {}
}

variable "location" {
  description = "Azure region."
  type        = string
  default     = "westeurope"
  nullable    = false
}

variable "prefix" {
  description = "Prefix of every resource name (the same as stage 2's)."
  type        = string
  default     = "saipdemo"
  nullable    = false
}

variable "runner_ssh_public_key" {
  description = "OpenSSH public key of the runner's admin user (reach the VM through Azure Bastion or `az vm run-command`; it has no public IP)."
  type        = string
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

resource "azurerm_network_security_group" "this" {
  for_each = toset(["pe", "runner"])

  name                = "${var.prefix}-${each.key}-nsg"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
}

resource "azurerm_subnet" "this" {
  for_each = { endpoints = "10.60.1.0/24", runner = "10.60.2.0/24" }

  name                              = each.key == "endpoints" ? "private-endpoints" : "runner"
  resource_group_name               = azurerm_resource_group.this.name
  virtual_network_name              = azurerm_virtual_network.this.name
  address_prefixes                  = [each.value]
  private_endpoint_network_policies = "Enabled"
}

resource "azurerm_subnet_network_security_group_association" "this" {
  for_each = { endpoints = "pe", runner = "runner" }

  subnet_id                 = azurerm_subnet.this[each.key].id
  network_security_group_id = azurerm_network_security_group.this[each.value].id
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

# ------------------------------------------------------------------------------------ runner --

resource "azurerm_user_assigned_identity" "runner" {
  name                = "${var.prefix}-runner"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name
}

# Stage 2 creates resources and role assignments in this resource group only.
resource "azurerm_role_assignment" "runner" {
  for_each = toset(["Contributor", "Role Based Access Control Administrator"])

  scope                = azurerm_resource_group.this.id
  role_definition_name = each.key
  principal_id         = azurerm_user_assigned_identity.runner.principal_id
}

resource "azurerm_network_interface" "runner" {
  name                = "${var.prefix}-runner-nic"
  location            = var.location
  resource_group_name = azurerm_resource_group.this.name

  ip_configuration {
    name                          = "internal"
    subnet_id                     = azurerm_subnet.this["runner"].id
    private_ip_address_allocation = "Dynamic"
  }
}

resource "azurerm_linux_virtual_machine" "runner" {
  name                            = "${var.prefix}-runner"
  location                        = var.location
  resource_group_name             = azurerm_resource_group.this.name
  size                            = "Standard_D2s_v5"
  admin_username                  = "saip"
  disable_password_authentication = true
  allow_extension_operations      = false
  encryption_at_host_enabled      = true
  network_interface_ids           = [azurerm_network_interface.runner.id]

  admin_ssh_key {
    username   = "saip"
    public_key = var.runner_ssh_public_key
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.runner.id]
  }

  os_disk {
    caching              = "ReadWrite"
    storage_account_type = "Premium_LRS"
  }

  source_image_reference {
    publisher = "Canonical"
    offer     = "ubuntu-24_04-lts"
    sku       = "server"
    version   = "latest"
  }
}

output "runner_identity_client_id" {
  description = "Client ID of the runner's managed identity (ARM_CLIENT_ID with ARM_USE_MSI=true for stage 2)."
  value       = azurerm_user_assigned_identity.runner.client_id
}
