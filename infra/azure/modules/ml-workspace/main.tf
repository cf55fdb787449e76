# Training environment on Azure: an Azure Machine Learning workspace with no public network access,
# a managed virtual network that allows only approved outbound traffic (private endpoints to the
# ingestion storage account and Key Vault, nothing else), customer-managed-key encryption
# (high-business-impact mode), identity-based access to its own storage (shared keys off), and a
# compute cluster without public IPs, SSH or local auth. The cluster runs as the `training`
# identity, whose only data roles are: read accepted batches (accepted/...) of the landing
# container, write the artifacts container, wrap/unwrap with saip's data key, and read secrets of
# the Key Vault. Applied from inside the VNet, like the ingestion module.

data "azurerm_client_config" "current" {}

locals {
  tags = merge(var.tags, { "saip-prefix" = var.prefix, "saip-managed-by" = "terraform" })

  # Approved outbound destinations of the managed network (private endpoints only).
  outbound = {
    landing-blob = { id = var.ingestion.storage_account_id, target = "blob" }
    landing-dfs  = { id = var.ingestion.storage_account_id, target = "dfs" }
    vault        = { id = var.ingestion.key_vault_id, target = "vault" }
  }
}

resource "azurerm_user_assigned_identity" "this" {
  for_each = toset(["workspace", "training"])

  name                = "${var.prefix}-ml-${each.key}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.tags
}

# ------------------------------------------------------------------------------ encryption --

resource "azurerm_key_vault_key" "workspace" {
  # checkov:skip=CKV_AZURE_40:expiration_date is deliberately unset: Terraform would rewrite a fixed date on every rotated version. Rotation fires time_after_creation after each version is created (it needs no expiry), and every rotated version gets its expiry from rotation_policy.expire_after.
  name         = "${var.prefix}-ml-workspace"
  key_vault_id = var.ingestion.key_vault_id
  key_type     = "RSA-HSM"
  key_size     = 3072
  key_opts     = ["unwrapKey", "wrapKey"]

  rotation_policy {
    expire_after         = "P180D"
    notify_before_expiry = "P30D"

    automatic {
      time_after_creation = "P90D"
    }
  }

  tags = merge(local.tags, { purpose = "Azure ML workspace and its storage: encryption at rest" })
}

resource "azurerm_role_assignment" "workspace_key" {
  scope                = azurerm_key_vault_key.workspace.resource_versionless_id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.this["workspace"].principal_id
}

resource "time_sleep" "rbac" {
  create_duration = var.rbac_propagation_wait

  triggers = {
    key = azurerm_role_assignment.workspace_key.id
  }
}

# ------------------------------------------------------------------- workspace dependencies --

resource "azurerm_storage_account" "workspace" {
  # checkov:skip=CKV_AZURE_33:Queue service logging: the workspace's account serves no saip queues; blob logs go to Log Analytics through azurerm_monitor_diagnostic_setting.workspace_storage.
  # checkov:skip=CKV2_AZURE_1:The customer-managed key is configured in the customer_managed_key block, which this checkov rule does not read for user-assigned identities.
  name                              = "${var.prefix}mlws"
  location                          = var.location
  resource_group_name               = var.resource_group_name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "GZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  public_network_access_enabled     = false
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this["workspace"].id]
  }

  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.workspace.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.this["workspace"].id
  }

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
  }

  blob_properties {
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }

  sas_policy {
    expiration_period = "00.01:00:00"
    expiration_action = "Block"
  }

  tags       = local.tags
  depends_on = [time_sleep.rbac]
}

# Private endpoints of the workspace's storage in the VNet (the managed network gets its own).
resource "azurerm_private_endpoint" "workspace_storage" {
  for_each = toset(["blob", "file"])

  name                = "${var.prefix}-mlws-${each.key}-pe"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoints.subnet_id

  private_service_connection {
    name                           = "${var.prefix}-mlws-${each.key}"
    private_connection_resource_id = azurerm_storage_account.workspace.id
    subresource_names              = [each.key]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = each.key
    private_dns_zone_ids = [var.private_endpoints.private_dns_zone_ids[each.key]]
  }

  tags = local.tags
}

resource "azurerm_monitor_diagnostic_setting" "workspace_storage" {
  name                       = "${var.prefix}-mlws-diagnostics"
  target_resource_id         = "${azurerm_storage_account.workspace.id}/blobServices/default"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "StorageRead"
  }

  enabled_log {
    category = "StorageWrite"
  }

  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_application_insights" "this" {
  name                          = "${var.prefix}-ml-insights"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  application_type              = "other"
  workspace_id                  = var.log_analytics_workspace_id
  local_authentication_disabled = true
  internet_ingestion_enabled    = false
  internet_query_enabled        = false
  tags                          = local.tags
}

# ------------------------------------------------------------------------------- workspace --

resource "azurerm_machine_learning_workspace" "this" {
  name                           = "${var.prefix}-ml"
  location                       = var.location
  resource_group_name            = var.resource_group_name
  application_insights_id        = azurerm_application_insights.this.id
  key_vault_id                   = var.ingestion.key_vault_id
  storage_account_id             = azurerm_storage_account.workspace.id
  public_network_access_enabled  = false
  high_business_impact           = true
  primary_user_assigned_identity = azurerm_user_assigned_identity.this["workspace"].id

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this["workspace"].id]
  }

  encryption {
    key_vault_id              = var.ingestion.key_vault_id
    key_id                    = azurerm_key_vault_key.workspace.id
    user_assigned_identity_id = azurerm_user_assigned_identity.this["workspace"].id
  }

  managed_network {
    isolation_mode = "AllowOnlyApprovedOutbound"
  }

  tags       = local.tags
  depends_on = [time_sleep.rbac]
}

# The workspace's system datastores use its identity, never the storage account key (which is off).
resource "azapi_update_resource" "identity_datastores" {
  type        = "Microsoft.MachineLearningServices/workspaces@2024-10-01"
  resource_id = azurerm_machine_learning_workspace.this.id

  body = {
    properties = {
      systemDatastoresAuthMode = "identity"
    }
  }
}

resource "azurerm_machine_learning_workspace_network_outbound_rule_private_endpoint" "this" {
  for_each = local.outbound

  name                = "${var.prefix}-${each.key}"
  workspace_id        = azurerm_machine_learning_workspace.this.id
  service_resource_id = each.value.id
  sub_resource_target = each.value.target
}

resource "azurerm_private_endpoint" "workspace" {
  name                = "${var.prefix}-ml-pe"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoints.subnet_id

  private_service_connection {
    name                           = "${var.prefix}-ml"
    private_connection_resource_id = azurerm_machine_learning_workspace.this.id
    subresource_names              = ["amlworkspace"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "amlworkspace"
    private_dns_zone_ids = [var.private_endpoints.private_dns_zone_ids.api, var.private_endpoints.private_dns_zone_ids.notebooks]
  }

  tags = local.tags
}

resource "azurerm_machine_learning_compute_cluster" "this" {
  name                          = "${var.prefix}-train"
  location                      = var.location
  machine_learning_workspace_id = azurerm_machine_learning_workspace.this.id
  vm_priority                   = "Dedicated"
  vm_size                       = var.compute.vm_size
  node_public_ip_enabled        = false
  local_auth_enabled            = false
  ssh_public_access_enabled     = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.this["training"].id]
  }

  scale_settings {
    min_node_count                       = 0
    max_node_count                       = var.compute.max_nodes
    scale_down_nodes_after_idle_duration = "PT15M"
  }

  tags       = local.tags
  depends_on = [azurerm_machine_learning_workspace_network_outbound_rule_private_endpoint.this]
}

# ----------------------------------------------------------------------- training data roles --

resource "azurerm_role_assignment" "read_accepted" {
  scope                = var.ingestion.landing_container_id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.this["training"].principal_id
  condition_version    = "2.0"
  condition            = <<-EOT
    (
      !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})
      OR
      @Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith 'accepted/'
    )
  EOT
}

resource "azurerm_role_assignment" "write_artifacts" {
  scope                = var.ingestion.artifacts_container_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.this["training"].principal_id
}

resource "azurerm_role_assignment" "data_key" {
  scope              = var.ingestion.data_key_resource_id
  role_definition_id = var.ingestion.key_wrap_unwrap_role_definition_id
  principal_id       = azurerm_user_assigned_identity.this["training"].principal_id
}

resource "azurerm_role_assignment" "secrets" {
  scope                = var.ingestion.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.this["training"].principal_id
}
