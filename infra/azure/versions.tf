terraform {
  required_version = ">= 1.7.0"

  required_providers {
    # 4.55: the schema the module is validated against offline (tests/infra); rbac_authorization_enabled.
    azurerm = {
      source  = "hashicorp/azurerm"
      version = ">= 4.55.0, < 5.0.0"
    }
    # The event hub with an identity-based capture destination (azurerm cannot set it).
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
