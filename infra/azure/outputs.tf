output "commit_store" {
  description = "Claims and batch decisions of several consumers in the consumer group, in the checkpoint container (the receiver's only other writable container): `saip ingest run --commit-store VALUE --consumer-name UNIQUE` (or [ingest.azure] commit_store)."
  value       = "az://${azurerm_storage_container.this["checkpoints"].name}/saip-commits"
}

output "data_key_id" {
  description = "Versionless ID of the Key Vault key for saip's envelope encryption (use as azure-kv:ID)."
  value       = azurerm_key_vault_key.this["data"].versionless_id
}

output "event_hub_name" {
  description = "Name of the Event Hub receiving the records."
  value       = azapi_resource.records.name
}

output "eventhub_namespace_fqdn" {
  description = "Fully qualified namespace (resolves to the private endpoint inside the VNet)."
  value       = "${azurerm_eventhub_namespace.this.name}.servicebus.windows.net"
}

output "identity_client_ids" {
  description = "Client IDs of the workload identities (sender, receiver, trainer)."
  value       = { for k, v in azurerm_user_assigned_identity.workload : k => v.client_id }
}

output "key_vault_uri" {
  description = "URI of the Key Vault (reachable only through its private endpoint)."
  value       = azurerm_key_vault.this.vault_uri
}

output "saip_config" {
  description = "saip's --config settings ([ingest], [ingest.azure], [encryption]); turn it into TOML with `terraform output -json saip_config | saip config from-terraform`."
  value = {
    ingest = {
      backend      = "azure"
      endpoint_url = azurerm_storage_account.this.primary_blob_endpoint
      stream       = azapi_resource.records.name
      bucket       = azurerm_storage_container.this["landing"].name
      azure = {
        namespace            = "${azurerm_eventhub_namespace.this.name}.servicebus.windows.net"
        consumer_group       = azurerm_eventhub_consumer_group.ingest.name
        checkpoint_container = azurerm_storage_container.this["checkpoints"].name
      }
    }
    encryption = {
      key = "azure-kv:${azurerm_key_vault_key.this["data"].versionless_id}"
    }
  }
}

output "storage_account_name" {
  description = "Name of the ADLS Gen2 storage account."
  value       = azurerm_storage_account.this.name
}

output "training_inputs" {
  description = "What the training environment (modules/ml-workspace) needs from this module: pass it as its `ingestion` input."
  value = {
    storage_account_id                 = azurerm_storage_account.this.id
    landing_container_id               = azurerm_storage_container.this["landing"].id
    artifacts_container_id             = azurerm_storage_container.this["artifacts"].id
    key_vault_id                       = azurerm_key_vault.this.id
    data_key_resource_id               = azurerm_key_vault_key.this["data"].resource_versionless_id
    key_wrap_unwrap_role_definition_id = azurerm_role_definition.key_wrap_unwrap.role_definition_resource_id
  }
}
