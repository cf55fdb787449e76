# Secure ingestion on Azure: Key Vault (RBAC, purge protection, no public network) with rotated
# HSM-backed keys; an Event Hubs Premium namespace (TLS 1.2, local/SAS auth off, no public network,
# customer-managed key through a user-assigned identity) whose hub captures to ADLS Gen2; an ADLS Gen2
# storage account (CMK, TLS 1.2, shared keys off, no public network); private endpoints for all
# three; sender / receiver / trainer identities with data-plane roles scoped to one resource each;
# diagnostic settings to Log Analytics. Nothing here is a switch.
#
# Data-plane calls (Key Vault keys, storage containers) go through the private endpoints created
# here, so `terraform apply` must run from inside the VNet (see examples/secure-ingestion: stage 1
# builds the network and a runner, stage 2 applies this module from the runner). Every data-plane
# resource depends on its private endpoint (DNS zone group included) and on `time_sleep.rbac`,
# which waits for role assignments to propagate before they are used.

data "azurerm_client_config" "current" {}

locals {
  tags = merge(var.tags, { "saip-prefix" = var.prefix, "saip-managed-by" = "terraform" })

  keys = {
    eventhubs = "Event Hubs namespace encryption at rest"
    storage   = "ADLS Gen2 storage account encryption at rest"
    data      = "saip envelope encryption of records and model artifacts"
  }

  containers = toset(["landing", "quarantine", "artifacts", "capture", "checkpoints"])

  workloads = toset(["sender", "receiver", "trainer"])
}

# ------------------------------------------------------------------------------- identities --

# One identity per CMK consumer: the Event Hubs namespace can use only its key, the storage
# account only its own.
resource "azurerm_user_assigned_identity" "cmk" {
  for_each = toset(["eventhubs", "storage"])

  name                = "${var.prefix}-cmk-${each.key}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.tags
}

# Identity the namespace's capture agent writes to the capture container with (shared keys are off).
resource "azurerm_user_assigned_identity" "capture" {
  name                = "${var.prefix}-capture"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "workload" {
  for_each = local.workloads

  name                = "${var.prefix}-${each.key}"
  location            = var.location
  resource_group_name = var.resource_group_name
  tags                = local.tags
}

# -------------------------------------------------------------------------------- key vault --

resource "azurerm_key_vault" "this" {
  name                          = "${var.prefix}-kv"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  tenant_id                     = data.azurerm_client_config.current.tenant_id
  sku_name                      = "premium"
  rbac_authorization_enabled    = true
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  public_network_access_enabled = false

  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
  }

  tags = local.tags
}

# The deployer creates the keys, so it needs a key-management data-plane role. It is scoped to
# this vault and is the only standing human-side role here; see README "Deployer access" for
# removing it after the first apply (keys then change only through a re-granted, reviewed apply).
resource "azurerm_role_assignment" "deployer_crypto_officer" {
  count = var.deployer_key_management ? 1 : 0

  scope                = azurerm_key_vault.this.id
  role_definition_name = "Key Vault Crypto Officer"
  principal_id         = data.azurerm_client_config.current.object_id
}

# Azure RBAC is eventually consistent: a fresh role assignment can take minutes to apply. Every
# resource that relies on one (key creation, CMK binding, capture, containers) waits here first.
resource "time_sleep" "rbac" {
  create_duration = var.rbac_propagation_wait

  triggers = {
    deployer = join(",", [for a in azurerm_role_assignment.deployer_crypto_officer : a.id])
  }
}

resource "time_sleep" "rbac_workloads" {
  create_duration = var.rbac_propagation_wait

  triggers = {
    cmk     = join(",", [for a in azurerm_role_assignment.cmk_key_use : a.id])
    capture = azurerm_role_assignment.capture_write.id
  }
}

resource "azurerm_key_vault_key" "this" {
  # checkov:skip=CKV_AZURE_40:expiration_date is deliberately unset: Terraform would rewrite a fixed date on every rotated version. Rotation fires time_after_creation after each version is created (it needs no expiry), and every rotated version gets its expiry from rotation_policy.expire_after.
  for_each = local.keys

  name         = "${var.prefix}-${each.key}"
  key_vault_id = azurerm_key_vault.this.id
  key_type     = "RSA-HSM"
  key_size     = 3072
  key_opts     = ["unwrapKey", "wrapKey"]

  # Key Vault's `time_before_expiry` trigger needs an expiry on the current version, and the
  # version Terraform creates has none (expire_after applies to rotated versions only): it would
  # never fire. `time_after_creation` fires on every version, including the first.
  rotation_policy {
    expire_after         = var.key_rotation.expire_after
    notify_before_expiry = var.key_rotation.notify_before_expiry

    automatic {
      time_after_creation = var.key_rotation.rotate_after_creation
    }
  }

  tags = merge(local.tags, { purpose = each.value })

  # Keys are created through the vault's data plane: only through its private endpoint (public
  # access is off), once the private DNS record exists and the deployer's role has propagated.
  depends_on = [azurerm_private_endpoint.vault, time_sleep.rbac]
}

resource "azurerm_role_assignment" "cmk_key_use" {
  for_each = toset(["eventhubs", "storage"])

  scope                = azurerm_key_vault_key.this[each.key].resource_versionless_id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.cmk[each.key].principal_id
}

# The receiver wraps data keys (ingest) and unwraps them only to re-read its own batches after a
# crash and to show/release quarantined records; the trainer unwraps records and wraps the keys
# of sealed models. Neither gets encrypt/decrypt/sign or key management (Key Vault Crypto User
# would grant all of those).
resource "azurerm_role_definition" "key_wrap_unwrap" {
  name        = "${var.prefix} saip key wrap-unwrap"
  scope       = azurerm_key_vault.this.id
  description = "saip envelope encryption: read the key, wrap and unwrap data keys; nothing else."

  permissions {
    data_actions = [
      "Microsoft.KeyVault/vaults/keys/read",
      "Microsoft.KeyVault/vaults/keys/unwrap/action",
      "Microsoft.KeyVault/vaults/keys/wrap/action",
    ]
  }

  assignable_scopes = [azurerm_key_vault.this.id]
}

resource "azurerm_role_assignment" "data_key_use" {
  for_each = toset(["receiver", "trainer"])

  scope              = azurerm_key_vault_key.this["data"].resource_versionless_id
  role_definition_id = azurerm_role_definition.key_wrap_unwrap.role_definition_resource_id
  principal_id       = azurerm_user_assigned_identity.workload[each.key].principal_id
}

resource "azurerm_private_endpoint" "vault" {
  name                = "${var.prefix}-kv-pe"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoints.subnet_id

  private_service_connection {
    name                           = "${var.prefix}-kv"
    private_connection_resource_id = azurerm_key_vault.this.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "vault"
    private_dns_zone_ids = [var.private_endpoints.private_dns_zone_ids.vault]
  }

  tags = local.tags
}

# -------------------------------------------------------------------------------- storage --

resource "azurerm_storage_account" "this" {
  # checkov:skip=CKV_AZURE_33:Queue service logging: the account serves no queues (ADLS Gen2 only); blob/dfs logs go to Log Analytics through azurerm_monitor_diagnostic_setting.storage_blob.
  name                              = "${var.prefix}adls"
  location                          = var.location
  resource_group_name               = var.resource_group_name
  account_kind                      = "StorageV2"
  account_tier                      = "Standard"
  account_replication_type          = "GZRS"
  is_hns_enabled                    = true
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  public_network_access_enabled     = false
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  infrastructure_encryption_enabled = true
  local_user_enabled                = false
  sftp_enabled                      = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cmk["storage"].id]
  }

  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.this["storage"].versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.cmk["storage"].id
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

  tags = local.tags

  depends_on = [time_sleep.rbac_workloads]
}

resource "azurerm_storage_container" "this" {
  # checkov:skip=CKV2_AZURE_21:Blob read logging is configured on the blob service (azurerm_monitor_diagnostic_setting.storage_blob), which checkov does not link to containers.
  for_each = local.containers

  name                  = each.key
  storage_account_id    = azurerm_storage_account.this.id
  container_access_type = "private"

  # Created through Azure Resource Manager (provider feature storage.data_plane_available = false
  # in the example), after the private endpoints so that later data-plane use resolves privately.
  depends_on = [azurerm_private_endpoint.storage]
}

resource "azurerm_private_endpoint" "storage" {
  for_each = toset(["blob", "dfs"])

  name                = "${var.prefix}-adls-${each.key}-pe"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoints.subnet_id

  private_service_connection {
    name                           = "${var.prefix}-adls-${each.key}"
    private_connection_resource_id = azurerm_storage_account.this.id
    subresource_names              = [each.key]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = each.key
    private_dns_zone_ids = [var.private_endpoints.private_dns_zone_ids[each.key]]
  }

  tags = local.tags
}

# ------------------------------------------------------------------------------ event hubs --

resource "azurerm_eventhub_namespace" "this" {
  name                          = "${var.prefix}-ehns"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  sku                           = "Premium"
  capacity                      = var.event_hub.namespace_capacity_units
  minimum_tls_version           = "1.2"
  local_authentication_enabled  = false
  public_network_access_enabled = false

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cmk["eventhubs"].id, azurerm_user_assigned_identity.capture.id]
  }

  network_rulesets {
    default_action                 = "Deny"
    public_network_access_enabled  = false
    trusted_service_access_enabled = true
  }

  tags = local.tags
}

resource "azurerm_eventhub_namespace_customer_managed_key" "this" {
  eventhub_namespace_id             = azurerm_eventhub_namespace.this.id
  key_vault_key_ids                 = [azurerm_key_vault_key.this["eventhubs"].versionless_id]
  user_assigned_identity_id         = azurerm_user_assigned_identity.cmk["eventhubs"].id
  infrastructure_encryption_enabled = true

  depends_on = [time_sleep.rbac_workloads]
}

# The hub through azapi: azurerm (4.55, the newest schema checked here) cannot set the capture
# destination's identity, so capture would authenticate with SAS, which the storage account
# refuses (shared keys are off). Capture here writes as the `capture` identity, whose only role is
# Storage Blob Data Contributor on the capture container.
resource "azapi_resource" "records" {
  type      = "Microsoft.EventHub/namespaces/eventhubs@2024-01-01"
  name      = "${var.prefix}-records"
  parent_id = azurerm_eventhub_namespace.this.id

  body = {
    properties = {
      partitionCount         = var.event_hub.partition_count
      messageRetentionInDays = var.event_hub.message_retention_days
      captureDescription = {
        enabled           = true
        encoding          = "Avro"
        intervalInSeconds = var.event_hub.capture_interval_seconds
        sizeLimitInBytes  = var.event_hub.capture_size_limit_bytes
        skipEmptyArchives = true
        destination = {
          name = "EventHubArchive.AzureBlockBlob"
          identity = {
            type                 = "UserAssigned"
            userAssignedIdentity = azurerm_user_assigned_identity.capture.id
          }
          properties = {
            archiveNameFormat        = "{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}"
            blobContainer            = azurerm_storage_container.this["capture"].name
            storageAccountResourceId = azurerm_storage_account.this.id
          }
        }
      }
    }
  }

  depends_on = [azurerm_eventhub_namespace_customer_managed_key.this, time_sleep.rbac_workloads]
}

resource "azurerm_eventhub_consumer_group" "ingest" {
  name                = "saip-ingest"
  namespace_name      = azurerm_eventhub_namespace.this.name
  eventhub_name       = azapi_resource.records.name
  resource_group_name = var.resource_group_name
}

resource "azurerm_private_endpoint" "eventhubs" {
  name                = "${var.prefix}-ehns-pe"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoints.subnet_id

  private_service_connection {
    name                           = "${var.prefix}-ehns"
    private_connection_resource_id = azurerm_eventhub_namespace.this.id
    subresource_names              = ["namespace"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "servicebus"
    private_dns_zone_ids = [var.private_endpoints.private_dns_zone_ids.servicebus]
  }

  tags = local.tags
}

# ----------------------------------------------------------------------- data-plane roles --
# Each identity gets one data-plane role on one resource: no control-plane roles, no SAS keys.

resource "azurerm_role_assignment" "sender" {
  scope                = azapi_resource.records.id
  role_definition_name = "Azure Event Hubs Data Sender"
  principal_id         = azurerm_user_assigned_identity.workload["sender"].principal_id
}

resource "azurerm_role_assignment" "receiver" {
  scope                = azapi_resource.records.id
  role_definition_name = "Azure Event Hubs Data Receiver"
  principal_id         = azurerm_user_assigned_identity.workload["receiver"].principal_id
}

resource "azurerm_role_assignment" "receiver_blobs" {
  for_each = toset(["landing", "quarantine", "checkpoints"])

  scope                = azurerm_storage_container.this[each.key].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.workload["receiver"].principal_id
}

resource "azurerm_role_assignment" "capture_write" {
  scope                = azurerm_storage_container.this["capture"].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.capture.principal_id
}

# The landing container also holds saip's quarantine entries (quarantine/...): an ABAC condition
# lets the trainer read accepted batches (accepted/...) only.
resource "azurerm_role_assignment" "trainer_read" {
  scope                = azurerm_storage_container.this["landing"].id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = azurerm_user_assigned_identity.workload["trainer"].principal_id
  condition_version    = "2.0"
  condition            = <<-EOT
    (
      !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})
      OR
      @Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith 'accepted/'
    )
  EOT
}

resource "azurerm_role_assignment" "trainer_write" {
  scope                = azurerm_storage_container.this["artifacts"].id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.workload["trainer"].principal_id
}

# --------------------------------------------------------------------- diagnostic settings --

resource "azurerm_monitor_diagnostic_setting" "key_vault" {
  name                       = "${var.prefix}-kv-diagnostics"
  target_resource_id         = azurerm_key_vault.this.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category_group = "audit"
  }

  enabled_log {
    category_group = "allLogs"
  }

  metric {
    category = "AllMetrics"
  }
}

resource "azurerm_monitor_diagnostic_setting" "eventhubs" {
  name                       = "${var.prefix}-ehns-diagnostics"
  target_resource_id         = azurerm_eventhub_namespace.this.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category_group = "allLogs"
  }

  metric {
    category = "AllMetrics"
  }
}

resource "azurerm_monitor_diagnostic_setting" "storage_blob" {
  name                       = "${var.prefix}-adls-diagnostics"
  target_resource_id         = "${azurerm_storage_account.this.id}/blobServices/default"
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

  metric {
    category = "Transaction"
  }
}
