"""HCL-level tests (python-hcl2, no provider needed): secure settings of the Azure and GCP modules
on every resource that needs them, the Terraform conventions on all modules, the Avro schema
reference, and READMEs that cannot drift from variables.tf/outputs.tf.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import fastavro
import hcl2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA, ROOT

MODULE_DIRS = [
    INFRA / "aws",
    *sorted((INFRA / "aws" / "modules").iterdir()),
    INFRA / "azure",
    INFRA / "gcp",
]
CONTROLS = ROOT / "docs" / "controls.md"


def _clean(value: Any) -> Any:
    """python-hcl2 8 keeps the quotes of keys and strings: strip them, recursively."""
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _load(path: Path) -> dict[str, Any]:
    with path.open() as fh:
        return _clean(hcl2.load(fh))  # type: ignore[no-any-return]


def _blocks(directory: Path, kind: str) -> dict[str, dict[str, Any]]:
    """`resource`/`data` blocks of a module as {"type.name": body}."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        for entry in _load(path).get(kind, []):
            for rtype, named in entry.items():
                for name, body in named.items():
                    out[f"{rtype}.{name}"] = body
    return out


def _one(block: Any) -> dict[str, Any]:
    """A nested block (a one-element list in python-hcl2)."""
    assert isinstance(block, list), block
    assert len(block) == 1, block
    return block[0]  # type: ignore[no-any-return]


def _of_type(resources: dict[str, dict[str, Any]], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in resources.items() if k.startswith(f"{rtype}.")}


# ----------------------------------------------------------------------------------- Azure --


@pytest.fixture(scope="module")
def azure() -> dict[str, dict[str, Any]]:
    return _blocks(INFRA / "azure", "resource")


def test_azure_key_vault_locked_down(azure: dict[str, dict[str, Any]]) -> None:
    vaults = _of_type(azure, "azurerm_key_vault")
    assert vaults
    for body in vaults.values():
        assert body["enable_rbac_authorization"] is True
        assert body["purge_protection_enabled"] is True
        assert body["public_network_access_enabled"] is False
        assert body["soft_delete_retention_days"] >= 7
        assert _one(body["network_acls"])["default_action"] == "Deny"


def test_azure_keys_rotate_and_are_hsm_backed(azure: dict[str, dict[str, Any]]) -> None:
    keys = _of_type(azure, "azurerm_key_vault_key")
    assert keys
    for body in keys.values():
        assert body["key_type"] == "RSA-HSM"
        policy = _one(body["rotation_policy"])
        assert policy["expire_after"]
        assert _one(policy["automatic"])["time_before_expiry"]


def test_azure_event_hubs_namespace_secure(azure: dict[str, dict[str, Any]]) -> None:
    namespaces = _of_type(azure, "azurerm_eventhub_namespace")
    assert namespaces
    for body in namespaces.values():
        assert body["minimum_tls_version"] == "1.2"
        assert body["local_authentication_enabled"] is False
        assert body["public_network_access_enabled"] is False
        assert body["sku"] == "Premium"  # customer-managed keys need Premium
        assert _one(body["identity"])["type"] == "UserAssigned"
        assert _one(body["network_rulesets"])["default_action"] == "Deny"
    cmk = _one(list(_of_type(azure, "azurerm_eventhub_namespace_customer_managed_key").values()))
    assert "azurerm_user_assigned_identity.cmk.id" in cmk["user_assigned_identity_id"]
    assert cmk["infrastructure_encryption_enabled"] is True
    hub = azure["azurerm_eventhub.records"]
    capture = _one(hub["capture_description"])
    assert capture["enabled"] is True
    assert "azurerm_storage_account.this.id" in _one(capture["destination"])["storage_account_id"]
    writer = azure["azurerm_role_assignment.capture_write"]
    assert writer["scope"] == '${azurerm_storage_container.this["capture"].id}'
    assert "azurerm_user_assigned_identity.capture.id" in str(
        _one(azure["azurerm_eventhub_namespace.this"]["identity"])["identity_ids"]
    )


def test_azure_storage_account_secure(azure: dict[str, dict[str, Any]]) -> None:
    accounts = _of_type(azure, "azurerm_storage_account")
    assert accounts
    for body in accounts.values():
        assert body["is_hns_enabled"] is True
        assert body["min_tls_version"] == "TLS1_2"
        assert body["https_traffic_only_enabled"] is True
        assert body["shared_access_key_enabled"] is False
        assert body["public_network_access_enabled"] is False
        assert body["allow_nested_items_to_be_public"] is False
        assert body["infrastructure_encryption_enabled"] is True
        assert (
            "azurerm_key_vault_key.this" in _one(body["customer_managed_key"])["key_vault_key_id"]
        )
        assert _one(body["network_rules"])["default_action"] == "Deny"
    for container in _of_type(azure, "azurerm_storage_container").values():
        assert container["container_access_type"] == "private"


def test_azure_private_endpoint_for_each_data_plane_service(
    azure: dict[str, dict[str, Any]],
) -> None:
    targets = {
        (
            _one(pe["private_service_connection"])["private_connection_resource_id"],
            tuple(_one(pe["private_service_connection"])["subresource_names"]),
        )
        for pe in _of_type(azure, "azurerm_private_endpoint").values()
    }
    assert ("${azurerm_key_vault.this.id}", ("vault",)) in targets
    assert ("${azurerm_eventhub_namespace.this.id}", ("namespace",)) in targets
    assert ("${azurerm_storage_account.this.id}", ("${each.key}",)) in targets
    assert set(
        azure["azurerm_private_endpoint.storage"]["for_each"]
        .strip("${}")
        .replace("toset(", "")
        .replace(")", "")
        .replace('"', "")
        .strip("[]")
        .split(", ")
    ) == {"blob", "dfs"}


def test_azure_roles_are_data_plane_and_scoped(azure: dict[str, dict[str, Any]]) -> None:
    roles = _of_type(azure, "azurerm_role_assignment")
    assert roles
    allowed = {
        "Azure Event Hubs Data Sender", "Azure Event Hubs Data Receiver",
        "Storage Blob Data Contributor", "Storage Blob Data Reader", "Key Vault Crypto User",
        "Key Vault Crypto Service Encryption User",
        "Key Vault Crypto Officer",
    }  # fmt: skip
    for name, body in roles.items():
        assert body["role_definition_name"] in allowed, name
        assert "subscriptions/" not in body["scope"], name
        assert "resource_group" not in body["scope"], name


def test_azure_diagnostic_settings_on_every_service(azure: dict[str, dict[str, Any]]) -> None:
    targets = {
        d["target_resource_id"]
        for d in _of_type(azure, "azurerm_monitor_diagnostic_setting").values()
    }
    assert "${azurerm_key_vault.this.id}" in targets
    assert "${azurerm_eventhub_namespace.this.id}" in targets
    assert any("azurerm_storage_account.this.id" in t for t in targets)


# ------------------------------------------------------------------------------------- GCP --


@pytest.fixture(scope="module")
def gcp() -> dict[str, dict[str, Any]]:
    return _blocks(INFRA / "gcp", "resource")


def _variable_default(directory: Path, name: str) -> Any:
    for path in sorted(directory.glob("*.tf")):
        for entry in _load(path).get("variable", []):
            if name in entry:
                return entry[name]["default"]
    raise KeyError(name)


def test_gcp_keys_rotate_within_90_days(gcp: dict[str, dict[str, Any]]) -> None:
    period = _variable_default(INFRA / "gcp", "key_rotation_period")
    assert int(period.rstrip("s")) <= 90 * 86400
    keys = _of_type(gcp, "google_kms_crypto_key")
    assert keys
    for body in keys.values():
        assert body["rotation_period"] == "${var.key_rotation_period}"
        assert _one(body["version_template"])["protection_level"] == "HSM"
        assert _one(body["lifecycle"])["prevent_destroy"] is True


def test_gcp_pubsub_cmek_schema_retention_dead_letter(gcp: dict[str, dict[str, Any]]) -> None:
    topics = _of_type(gcp, "google_pubsub_topic")
    assert set(topics) == {"google_pubsub_topic.records", "google_pubsub_topic.dead_letter"}
    for body in topics.values():
        assert "google_kms_crypto_key.this" in body["kms_key_name"]
        assert body["message_retention_duration"]
        assert _one(body["message_storage_policy"])["enforce_in_transit"] is True
    records = topics["google_pubsub_topic.records"]
    assert _one(records["schema_settings"])["schema"] == "${google_pubsub_schema.record.id}"
    assert gcp["google_pubsub_schema.record"]["type"] == "AVRO"
    for name in ("google_pubsub_subscription.ingest", "google_pubsub_subscription.bigquery"):
        dlp = _one(gcp[name]["dead_letter_policy"])
        assert dlp["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"


def test_gcp_bigquery_cmek_and_subscription(gcp: dict[str, dict[str, Any]]) -> None:
    dataset = gcp["google_bigquery_dataset.this"]
    assert (
        "google_kms_crypto_key.this"
        in _one(dataset["default_encryption_configuration"])["kms_key_name"]
    )
    assert dataset["delete_contents_on_destroy"] is False
    table = gcp["google_bigquery_table.records"]
    assert "google_kms_crypto_key.this" in _one(table["encryption_configuration"])["kms_key_name"]
    assert table["deletion_protection"] is True
    bq = _one(gcp["google_pubsub_subscription.bigquery"]["bigquery_config"])
    assert "google_bigquery_table.records" in bq["table"]


def test_gcp_least_privilege_and_service_agents(gcp: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in (INFRA / "gcp").glob("*.tf"))
    assert not re.search(r'roles/(owner|editor|viewer)"', text), "primitive roles are forbidden"
    assert "google_project_iam_binding" not in text
    assert "google_project_iam_member" not in text
    assert gcp["google_kms_crypto_key_iam_member.pubsub_agent"]["member"] == "${local.pubsub_agent}"
    assert gcp["google_kms_crypto_key_iam_member.bigquery_agent"]["member"] == "${local.bq_agent}"
    for name, body in gcp.items():
        if name.endswith("_iam_member") or ".iam_member" in name:
            assert body["role"].startswith("roles/"), name


def test_gcp_private_google_access_and_optional_perimeter(gcp: dict[str, dict[str, Any]]) -> None:
    rule = gcp["google_compute_global_forwarding_rule.psc"]
    assert rule["target"] == "vpc-sc"  # restricted VIP: only VPC-SC supported APIs
    assert gcp["google_compute_global_address.psc"]["purpose"] == "PRIVATE_SERVICE_CONNECT"
    perimeter = gcp["google_access_context_manager_service_perimeter.this"]
    assert "var.vpc_service_controls.access_policy == null ? 0 : 1" in perimeter["count"]
    services = _one(perimeter["status"])["restricted_services"]
    assert {"pubsub.googleapis.com", "cloudkms.googleapis.com", "bigquery.googleapis.com"} <= set(
        services
    )


def test_gcp_schema_is_the_ingestion_packages_avro_schema() -> None:
    """The example feeds the module the .avsc committed by the ingestion package, via file()."""
    example = INFRA / "gcp" / "examples" / "secure-ingestion"
    main = (example / "main.tf").read_text()
    assert 'avro_schema_definition = file("${path.module}/${var.avro_schema_path}")' in main
    rel = _variable_default(example, "avro_schema_path")
    schema_path = (example / rel).resolve()
    assert schema_path.parent == ROOT / "ingestion" / "schemas"
    assert schema_path.suffix == ".avsc", schema_path
    assert schema_path.exists(), schema_path
    schema = json.loads(schema_path.read_text())
    fastavro.parse_schema(schema)
    assert schema["type"] == "record"
    assert schema["fields"]
    module = (INFRA / "gcp" / "main.tf").read_text()
    assert "definition = var.avro_schema_definition" in module


# ----------------------------------------------------------------------------- conventions --


def _names(directory: Path, kind: str) -> list[str]:
    path = directory / ("variables.tf" if kind == "variable" else "outputs.tf")
    return [name for entry in _load(path).get(kind, []) for name in entry]


@pytest.mark.parametrize("directory", MODULE_DIRS, ids=lambda p: str(p.relative_to(INFRA)))
def test_module_conventions(directory: Path) -> None:
    for kind in ("variable", "output"):
        names = _names(directory, kind)
        assert names == sorted(names), f"{kind}s of {directory} must be alphabetical"
    for name, body in (
        (n, b) for entry in _load(directory / "variables.tf")["variable"] for n, b in entry.items()
    ):
        assert body.get("description"), f"{name}: description"
        assert "any" not in str(body.get("type")), f"{name}: never `any`"
        if not (directory.name == "kms-key" and name == "rotation_period_in_days"):
            assert body.get("nullable") is False, f"{name}: nullable = false"
    for required in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (directory / required).exists(), f"{directory}/{required}"


def _table_names(readme: str, heading: str) -> list[str]:
    section = readme.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.M)


@pytest.mark.parametrize("directory", MODULE_DIRS, ids=lambda p: str(p.relative_to(INFRA)))
def test_readme_matches_variables_and_outputs(directory: Path) -> None:
    readme = (directory / "README.md").read_text()
    assert _table_names(readme, "Inputs") == _names(directory, "variable")
    assert _table_names(readme, "Outputs") == _names(directory, "output")


@pytest.mark.parametrize("directory", MODULE_DIRS, ids=lambda p: str(p.relative_to(INFRA)))
def test_readme_cites_existing_controls(directory: Path) -> None:
    readme = (directory / "README.md").read_text()
    cited = set(re.findall(r"\bINF-\d{2}\b", readme))
    assert cited, f"{directory}/README.md cites no control"
    defined = set(re.findall(r"^\| (INF-\d{2}) \|", CONTROLS.read_text(), re.M))
    assert cited <= defined, cited - defined


def test_aws_data_key_mirrors_encryption_policies() -> None:
    """The data key's grants are the least-privilege sets enc-cloud proved with moto IAM enforcement
    (encryption/policies/aws-producer.json: wrap only; aws-consumer.json: unwrap only)."""
    policies = ROOT / "encryption" / "policies"
    wrap = {
        a
        for s in json.loads((policies / "aws-producer.json").read_text())["Statement"]
        for a in s["Action"]
    }
    unwrap = {
        a
        for s in json.loads((policies / "aws-consumer.json").read_text())["Statement"]
        for a in s["Action"]
    }
    main = (INFRA / "aws" / "main.tf").read_text()

    def actions(sid: str) -> set[str]:
        block = main.split(f'sid                = "{sid}"', 1)[1].split("}", 1)[0]
        return set(re.findall(r'"(kms:\w+)"', block.split("actions", 1)[1].split("\n", 1)[0]))

    assert actions("IngestEnvelope") == wrap
    assert actions("TrainerEnvelope") == wrap | unwrap


@pytest.mark.parametrize(
    ("cloud", "backend", "scheme"),
    [("aws", "aws", "aws-kms:"), ("azure", "azure", "azure-kv:"), ("gcp", "gcp", "gcp-kms:")],
)
def test_saip_config_output_matches_saip_config_model(
    cloud: str, backend: str, scheme: str
) -> None:
    """`saip_config` is shaped like saip's [ingest]/[encryption] (pipeline/src/saip/config.py)."""
    from saip.config import EncryptionSection, IngestSection, SaipConfig

    outputs = _load(INFRA / cloud / "outputs.tf")["output"]
    value = next(e["saip_config"]["value"] for e in outputs if "saip_config" in e)
    assert set(value) == {"ingest", "encryption"}
    assert set(value["ingest"]) == set(IngestSection.model_fields)
    assert set(value["encryption"]) <= set(EncryptionSection.model_fields)
    assert value["ingest"]["backend"] == backend
    assert value["encryption"]["key"].startswith(scheme)
    # With placeholders for the values Terraform computes, saip's own model accepts it.
    ingest = {
        k: (v if k == "backend" else (None if v is None else "x"))
        for k, v in value["ingest"].items()
    }
    encryption = {"key": f"{scheme}x"} | (
        {"context": {"k": "v"}} if "context" in value["encryption"] else {}
    )
    SaipConfig.model_validate({"ingest": ingest, "encryption": encryption})
