# Event Hubs scale-out commit store (saip --commit-store, output `commit_store`): one claim blob
# per event and one decision blob per batch under checkpoints/saip-commits/. Without expiry they
# would grow forever; an event is never re-read after the hub's retention, so its claims are
# deleted one day after that (ingestion/src/saip_ingestion/backends/claims.py).

resource "azurerm_storage_management_policy" "commits" {
  storage_account_id = azurerm_storage_account.this.id

  rule {
    name    = "saip-commits-expire"
    enabled = true

    filters {
      blob_types   = ["blockBlob"]
      prefix_match = ["${azurerm_storage_container.this["checkpoints"].name}/saip-commits/"]
    }

    actions {
      base_blob {
        delete_after_days_since_creation_greater_than = var.event_hub.message_retention_days + 1
      }
    }
  }
}
