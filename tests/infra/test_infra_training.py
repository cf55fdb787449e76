"""The training environment modules (Azure ML, Vertex AI): HCL-level checks of the properties
that make them safe, on top of the provider-schema check and checkov (the AWS module is tested by
infra/aws/tests/sagemaker_training.tftest.hcl, whose launcher-policy checks evaluate requests).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA
from test_infra_hcl import _blocks, _of_type, _one


def _ml() -> dict[str, dict[str, Any]]:
    return _blocks(INFRA / "azure" / "modules" / "ml-workspace", "resource")


def test_azure_ml_workspace_is_private_and_allows_only_approved_outbound() -> None:
    ml = _ml()
    ws = ml["azurerm_machine_learning_workspace.this"]
    assert ws["public_network_access_enabled"] is False
    assert ws["high_business_impact"] is True
    assert _one(ws["managed_network"])["isolation_mode"] == "AllowOnlyApprovedOutbound"
    assert "azurerm_key_vault_key.workspace.id" in _one(ws["encryption"])["key_id"]
    # Outbound: private endpoints only, to the ingestion storage and vault; no FQDN/service tag.
    assert not _of_type(ml, "azurerm_machine_learning_workspace_network_outbound_rule_fqdn")
    assert not _of_type(ml, "azurerm_machine_learning_workspace_network_outbound_rule_service_tag")
    cluster = ml["azurerm_machine_learning_compute_cluster.this"]
    assert cluster["node_public_ip_enabled"] is False
    assert cluster["local_auth_enabled"] is False
    assert cluster["ssh_public_access_enabled"] is False
    storage = ml["azurerm_storage_account.workspace"]
    assert storage["shared_access_key_enabled"] is False
    assert storage["public_network_access_enabled"] is False
    datastores = ml["azapi_update_resource.identity_datastores"]["body"]["properties"]
    assert datastores == {"systemDatastoresAuthMode": "identity"}
    key = ml["azurerm_key_vault_key.workspace"]
    assert "time_after_creation" in _one(_one(key["rotation_policy"])["automatic"])
    # The training identity: read accepted batches, write artifacts, wrap/unwrap, read secrets.
    training = '${azurerm_user_assigned_identity.this["training"].principal_id}'
    roles = {
        (r.get("role_definition_name") or "custom", r["scope"])
        for r in _of_type(ml, "azurerm_role_assignment").values()
        if r["principal_id"] == training
    }
    assert roles == {
        ("Storage Blob Data Reader", "${var.ingestion.landing_container_id}"),
        ("Storage Blob Data Contributor", "${var.ingestion.artifacts_container_id}"),
        ("custom", "${var.ingestion.data_key_resource_id}"),
        ("Key Vault Secrets User", "${var.ingestion.key_vault_id}"),
    }
    reader = ml["azurerm_role_assignment.read_accepted"]
    assert "StringStartsWith 'accepted/'" in reader["condition"]


def test_vertex_training_cmek_private_and_least_privilege() -> None:
    vx = _blocks(INFRA / "gcp" / "modules" / "vertex-training", "resource")
    bucket = vx["google_storage_bucket.artifacts"]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert "google_kms_crypto_key.vertex.id" in _one(bucket["encryption"])["default_kms_key_name"]
    key = vx["google_kms_crypto_key.vertex"]
    assert _one(key["version_template"])["protection_level"] == "HSM"
    secret = vx["google_secret_manager_secret.training"]
    replica = _one(_one(_one(secret["replication"])["user_managed"])["replicas"])
    assert (
        "google_kms_crypto_key.vertex.id"
        in _one(replica["customer_managed_encryption"])["kms_key_name"]
    )
    assert vx["google_service_networking_connection.vertex"]["service"] == (
        "servicenetworking.googleapis.com"
    )
    text = "\n".join(
        p.read_text() for p in (INFRA / "gcp" / "modules" / "vertex-training").glob("*.tf")
    )
    assert "google_project_iam_member" not in text  # no project-level role for the trainer
    trainer_roles = {
        b["role"]
        if isinstance(b.get("role"), str) and not b["role"].startswith("${")
        else str(b.get("for_each"))
        for b in vx.values()
        if b.get("member") == "${local.trainer}"
    }
    assert trainer_roles == {
        '${toset(["roles/storage.objectCreator", "roles/storage.objectViewer"])}',
        "roles/secretmanager.secretAccessor",
    }
    outputs = (INFRA / "gcp" / "modules" / "vertex-training" / "outputs.tf").read_text()
    for field in ("encryption_spec_key_name", "network", "service_account", "enable_web_access"):
        assert field in outputs, field
