# Audit and alerting beyond the per-resource diagnostic settings (main.tf): the subscription's
# Activity Log exported to the same Log Analytics workspace, and alerts to one action group for
# Key Vault keys deleted, purged, near expiry or expired (from the vault's AuditEvent logs), and
# for Event Hubs capture falling behind or failing (delivery errors).

resource "azurerm_monitor_diagnostic_setting" "activity_log" {
  name                       = "${var.prefix}-activity-log"
  target_resource_id         = "/subscriptions/${data.azurerm_client_config.current.subscription_id}"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  dynamic "enabled_log" {
    for_each = toset(["Administrative", "Alert", "Policy", "Security"])

    content {
      category = enabled_log.value
    }
  }
}

resource "azurerm_monitor_action_group" "alerts" {
  name                = "${var.prefix}-alerts"
  resource_group_name = var.resource_group_name
  short_name          = substr("${var.prefix}al", 0, 12)
  tags                = local.tags

  dynamic "email_receiver" {
    for_each = toset(var.alert_email_addresses)

    content {
      name                    = "email-${index(var.alert_email_addresses, email_receiver.value)}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

# Key Vault writes key deletion/purge and its Event Grid near-expiry/expired notifications to
# AuditEvent (diagnostic setting key_vault in main.tf).
resource "azurerm_monitor_scheduled_query_rules_alert_v2" "key_danger" {
  name                 = "${var.prefix}-key-vault-key-danger"
  resource_group_name  = var.resource_group_name
  location             = var.location
  description          = "A ${var.prefix} Key Vault key was deleted or purged, or is near expiry / expired (rotation did not happen)."
  severity             = 1
  scopes               = [var.log_analytics_workspace_id]
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  tags                 = local.tags

  criteria {
    query                   = <<-KQL
      AzureDiagnostics
      | where ResourceProvider == "MICROSOFT.KEYVAULT" and Resource =~ "${azurerm_key_vault.this.name}"
      | where OperationName in ("KeyDelete", "KeyPurge", "KeyNearExpiryEventGridNotification", "KeyExpiredEventGridNotification")
    KQL
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0

    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.alerts.id]
  }
}

resource "azurerm_monitor_metric_alert" "capture" {
  for_each = {
    backlog = { metric = "CaptureBacklog", threshold = 0, description = "Event Hubs capture is falling behind (messages not yet written to the capture container)." }
    errors  = { metric = "ServerErrors", threshold = 0, description = "Event Hubs returned server errors (delivery failures)." }
  }

  name                = "${var.prefix}-eventhubs-${each.key}"
  resource_group_name = var.resource_group_name
  scopes              = [azurerm_eventhub_namespace.this.id]
  description         = each.value.description
  severity            = 2
  frequency           = "PT5M"
  window_size         = "PT15M"
  tags                = local.tags

  criteria {
    metric_namespace = "Microsoft.EventHub/namespaces"
    metric_name      = each.value.metric
    aggregation      = "Maximum"
    operator         = "GreaterThan"
    threshold        = each.value.threshold
  }

  action {
    action_group_id = azurerm_monitor_action_group.alerts.id
  }
}
