output "compute_cluster_id" {
  description = "Resource ID of the training compute cluster (no public IP, no SSH, no local auth)."
  value       = azurerm_machine_learning_compute_cluster.this.id
}

output "training_identity_client_id" {
  description = "Client ID of the identity training jobs run as."
  value       = azurerm_user_assigned_identity.this["training"].client_id
}

output "workspace_id" {
  description = "Resource ID of the Azure ML workspace."
  value       = azurerm_machine_learning_workspace.this.id
}
