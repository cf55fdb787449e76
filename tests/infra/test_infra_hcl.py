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
    *sorted((INFRA / "azure" / "modules").iterdir()),
    INFRA / "gcp",
    *sorted((INFRA / "gcp" / "modules").iterdir()),
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
        assert body["rbac_authorization_enabled"] is True
        assert body["purge_protection_enabled"] is True
        assert body["public_network_access_enabled"] is False
        assert body["soft_delete_retention_days"] >= 7
        assert _one(body["network_acls"])["default_action"] == "Deny"


def _days(duration: str) -> int:
    m = re.fullmatch(r"P(\d+)D", duration)
    assert m, f"not whole days: {duration}"
    return int(m.group(1))


def _optional_defaults(directory: Path, name: str) -> dict[str, str]:
    """The `optional(string, "default")` defaults of an object variable's attributes."""
    for path in sorted(directory.glob("*.tf")):
        for entry in _load(path).get("variable", []):
            if name in entry:
                return dict(
                    re.findall(r'(\w+)\s*=\s*optional\(string,\s*"([^"]+)"\)', entry[name]["type"])
                )
    raise KeyError(name)


def key_vault_rotations(
    *, policy: dict[str, str], expiration_days: int | None, horizon_days: int
) -> list[int]:
    """Days (after the key is created) on which Key Vault's automatic rotation fires.

    Models the documented Key Vault behaviour: a ``timeAfterCreate`` trigger fires that long after
    the current version was created; a ``timeBeforeExpiry`` trigger fires that long before the
    current version's expiry and never when the version has no expiry. The first version gets the
    key's ``expiration_date`` (none unless set); each rotated version expires ``expire_after``
    after it is created.
    """
    fired: list[int] = []
    created, expiry = 0, expiration_days
    while True:
        if "time_after_creation" in policy:
            due: int | None = created + _days(policy["time_after_creation"])
        elif "time_before_expiry" in policy and expiry is not None:
            due = expiry - _days(policy["time_before_expiry"])
        else:
            due = None
        if due is None or due > horizon_days:
            return fired
        fired.append(due)
        created, expiry = due, due + _days(policy["expire_after"])


def _rotation_policy(azure: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    key = azure["azurerm_key_vault_key.this"]
    policy = _one(key["rotation_policy"])
    defaults = _optional_defaults(INFRA / "azure", "key_rotation")
    automatic = _one(policy["automatic"])
    resolved = {
        k: defaults[v.removeprefix("${var.key_rotation.").removesuffix("}")]
        if str(v).startswith("${var.key_rotation.")
        else v
        for k, v in automatic.items()
        if k != "__is_block__"
    }
    resolved["expire_after"] = defaults[
        policy["expire_after"].removeprefix("${var.key_rotation.").removesuffix("}")
    ]
    return key, resolved


def test_key_vault_rotation_model_shows_the_old_policy_never_fires() -> None:
    """The seed's failure, reproduced by the model: time_before_expiry without an expiry."""
    old = {"time_before_expiry": "P30D", "expire_after": "P365D"}
    assert key_vault_rotations(policy=old, expiration_days=None, horizon_days=3 * 365) == []


def test_azure_keys_rotate_and_are_hsm_backed(azure: dict[str, dict[str, Any]]) -> None:
    keys = _of_type(azure, "azurerm_key_vault_key")
    assert keys
    for body in keys.values():
        assert body["key_type"] == "RSA-HSM"
    key, policy = _rotation_policy(azure)
    assert "expiration_date" not in key  # the first version has no expiry ...
    fired = key_vault_rotations(policy=policy, expiration_days=None, horizon_days=2 * 365)
    # ... and rotation still fires, at least every expire_after, before each version expires
    assert fired, f"rotation never fires with {policy}"
    assert fired[0] <= _days(policy["expire_after"])
    gaps = [b - a for a, b in zip([0, *fired], fired, strict=False)]
    assert max(gaps) < _days(policy["expire_after"]), "a version would expire before rotation"
    skip = re.search(r"checkov:skip=CKV_AZURE_40:(.*)", (INFRA / "azure" / "main.tf").read_text())
    assert skip
    assert "time_after_creation" in skip.group(1)
    assert "rotation_policy.expire_after (default" not in skip.group(1)


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
    assert (
        cmk["user_assigned_identity_id"] == '${azurerm_user_assigned_identity.cmk["eventhubs"].id}'
    )
    assert cmk["infrastructure_encryption_enabled"] is True
    writer = azure["azurerm_role_assignment.capture_write"]
    assert writer["scope"] == '${azurerm_storage_container.this["capture"].id}'
    assert "azurerm_user_assigned_identity.capture.id" in str(
        _one(azure["azurerm_eventhub_namespace.this"]["identity"])["identity_ids"]
    )


def test_azure_capture_authenticates_as_the_capture_identity(
    azure: dict[str, dict[str, Any]],
) -> None:
    """Shared keys are off on the account, so capture must not use SAS: its destination names
    the `capture` identity, which holds a blob-write role on exactly the capture container and
    is attached to the namespace, and the hub waits for that role to propagate."""
    account = azure["azurerm_storage_account.this"]
    assert account["shared_access_key_enabled"] is False
    hub = azure["azapi_resource.records"]
    capture = hub["body"]["properties"]["captureDescription"]
    assert capture["enabled"] is True
    dest = capture["destination"]
    assert dest["identity"]["type"] == "UserAssigned"
    identity = dest["identity"]["userAssignedIdentity"]
    assert identity == "${azurerm_user_assigned_identity.capture.id}"
    assert dest["properties"]["storageAccountResourceId"] == "${azurerm_storage_account.this.id}"
    container = dest["properties"]["blobContainer"]
    assert container == '${azurerm_storage_container.this["capture"].name}'
    roles = [
        r
        for r in _of_type(azure, "azurerm_role_assignment").values()
        if r["principal_id"] == "${azurerm_user_assigned_identity.capture.principal_id}"
    ]
    assert [r["role_definition_name"] for r in roles] == ["Storage Blob Data Contributor"]
    assert roles[0]["scope"] == '${azurerm_storage_container.this["capture"].id}'
    assert "${time_sleep.rbac_workloads}" in hub["depends_on"]
    sleep = azure["time_sleep.rbac_workloads"]
    assert "azurerm_role_assignment.capture_write.id" in sleep["triggers"]["capture"]
    # no azurerm_eventhub (whose capture can only use SAS) is left
    assert not _of_type(azure, "azurerm_eventhub")


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
        "Storage Blob Data Contributor", "Storage Blob Data Reader",
        "Key Vault Crypto Service Encryption User",
        "Key Vault Crypto Officer",
    }  # fmt: skip
    for name, body in roles.items():
        if "role_definition_id" in body:  # the custom wrap/unwrap role, checked below
            assert "azurerm_role_definition.key_wrap_unwrap" in body["role_definition_id"], name
        else:
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
    dlp = _one(gcp["google_pubsub_subscription.ingest"]["dead_letter_policy"])
    assert dlp["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"


def test_gcp_bigquery_cmek(gcp: dict[str, dict[str, Any]]) -> None:
    dataset = gcp["google_bigquery_dataset.this"]
    assert (
        "google_kms_crypto_key.this"
        in _one(dataset["default_encryption_configuration"])["kms_key_name"]
    )
    assert dataset["delete_contents_on_destroy"] is False
    # authoritative access list: no projectReaders/projectWriters default grants
    assert [(a["role"], a.get("special_group")) for a in dataset["access"]] == [
        ("OWNER", "projectOwners")
    ]
    table = gcp["google_bigquery_table.records"]
    assert "google_kms_crypto_key.this" in _one(table["encryption_configuration"])["kms_key_name"]
    assert table["deletion_protection"] is True


def test_gcp_topic_encoding_is_what_saips_backend_requires(
    gcp: dict[str, dict[str, Any]],
) -> None:
    """The topic as Terraform creates it passes saip's own check of an existing topic."""
    from google.pubsub_v1.types import Encoding
    from saip_ingestion.backends.gcp import PubSubResources, ensure_pubsub_resources

    settings = _one(gcp["google_pubsub_topic.records"]["schema_settings"])
    names = PubSubResources(
        project="saip-demo-project", topic="saip-demo-records", subscription="saip-demo-ingest"
    )

    class FakeTopic:  # fake: the topic Terraform created, as Pub/Sub returns it
        class schema_settings:
            schema = names.schema
            encoding = Encoding[settings["encoding"]]

    class FakeClients:  # fake Pub/Sub clients: every resource already exists
        def __getattr__(self, name: str) -> Any:
            from google.api_core.exceptions import AlreadyExists

            def call(request: dict[str, Any]) -> Any:
                if name == "get_topic":
                    return FakeTopic
                if name == "get_schema":
                    import types

                    return types.SimpleNamespace(definition=_avro())
                if name == "get_subscription":
                    import types

                    dlp = types.SimpleNamespace(dead_letter_topic=names.dead_letter_topic)
                    return types.SimpleNamespace(dead_letter_policy=dlp)
                raise AlreadyExists(name)

            return call

    def _avro() -> str:
        from saip_ingestion.backends.gcp import _avro_definition

        return _avro_definition()

    fake = FakeClients()
    ensure_pubsub_resources(names, publisher=fake, subscriber=fake, schema_client=fake)
    FakeTopic.schema_settings.encoding = Encoding.JSON  # the old module's encoding is refused
    with pytest.raises(Exception, match="BINARY"):
        ensure_pubsub_resources(names, publisher=fake, subscriber=fake, schema_client=fake)


def test_gcp_landing_table_is_saips_and_only_saip_writes_what_the_trainer_reads(
    gcp: dict[str, dict[str, Any]],
) -> None:
    """The only path to the trainer's data is saip's consumer: the table has exactly the schema
    saip's BigQuery store writes; no subscription exports the topic anywhere; the only writer of
    the table is the subscriber; the trainer sees accepted rows only."""
    from saip_ingestion.backends.gcp import _BQ_FIELDS

    table = gcp["google_bigquery_table.records"]
    schema = _hcl_schema(table["schema"])
    assert schema == [list(f) for f in _BQ_FIELDS]
    for name, sub in _of_type(gcp, "google_pubsub_subscription").items():
        assert "bigquery_config" not in sub, name
        assert "cloud_storage_config" not in sub, name
    writers = {
        body["member"]
        for body in _of_type(gcp, "google_bigquery_table_iam_member").values()
        if body["role"]
        in {"roles/bigquery.dataEditor", "roles/bigquery.dataOwner", "roles/bigquery.admin"}
    }
    assert writers == {'serviceAccount:${google_service_account.this["subscriber"].email}'}
    policies = _of_type(gcp, "google_bigquery_row_access_policy")
    trainer = 'serviceAccount:${google_service_account.this["trainer"].email}'
    seen = [p["filter_predicate"] for p in policies.values() if trainer in p["grantees"]]
    assert seen == ["STARTS_WITH(key, 'accepted/')"]
    assert not _of_type(gcp, "google_bigquery_table_iam_member").keys() - {
        "google_bigquery_table_iam_member.subscriber",
        "google_bigquery_table_iam_member.trainer",
    }


def _hcl_schema(expr: str) -> list[list[str]]:
    fields = re.findall(
        r'\{\s*name\s*=\s*"([^"]+)",\s*type\s*=\s*"([^"]+)",\s*mode\s*=\s*"([^"]+)"\s*\}',
        expr,
    )
    return [list(f) for f in fields]


def test_gcp_least_privilege_and_service_agents(gcp: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(p.read_text() for p in (INFRA / "gcp").glob("*.tf"))
    assert not re.search(r'roles/(owner|editor|viewer)"', text), "primitive roles are forbidden"
    assert "google_project_iam_binding" not in text
    project_roles = [
        str(b["for_each"]) for n, b in gcp.items() if n.startswith("google_project_iam_member.")
    ]
    assert len(project_roles) <= 1
    for role in re.findall(r'role\s*=\s*"(roles/[^"]+)"', str(project_roles)):
        assert role in {"roles/bigquery.jobUser", "roles/bigquery.readSessionUser"}, role
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
    assert perimeter["use_explicit_dry_run_spec"] is True  # dry run first
    assert _variable_default(INFRA / "gcp", "vpc_service_controls") == {}
    spec = _one(perimeter["spec"])
    assert spec["ingress_policies"]
    assert spec["egress_policies"]
    assert "data.google_project.this.number" in str(spec["resources"]) or "local." in str(
        spec["resources"]
    )
    services = spec["restricted_services"]
    if isinstance(services, str):
        services = re.findall(
            r'"([a-z]+\.googleapis\.com)"', (INFRA / "gcp" / "main.tf").read_text()
        )
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


# ------------------------------------------------------------------ staging, audit, alerts --


def test_azure_example_is_staged_and_ordered(azure: dict[str, dict[str, Any]]) -> None:
    """Defect 3: the example cannot apply in one go from outside the VNet. Stage 1 (network/)
    builds the VNet, DNS zones and a runner without a public IP; stage 2 reads them and runs on
    the runner. In the module, data-plane resources wait for their private endpoints and for role
    propagation; the provider never reads the storage data plane."""
    example = INFRA / "azure" / "examples" / "secure-ingestion"
    stage1 = _blocks(example / "network", "resource")
    assert "azurerm_linux_virtual_machine.runner" in stage1
    nic = _one(stage1["azurerm_network_interface.runner"]["ip_configuration"])
    assert "public_ip_address_id" not in nic
    assert stage1["azurerm_linux_virtual_machine.runner"]["disable_password_authentication"] is True
    assert set(_of_type(stage1, "azurerm_private_dns_zone_virtual_network_link")) == {
        "azurerm_private_dns_zone_virtual_network_link.this"
    }
    stage2 = _load(example / "main.tf")
    assert not stage2.get("resource"), "stage 2 creates nothing outside the module"
    data = {t for entry in stage2["data"] for t in entry}
    assert {"azurerm_subnet", "azurerm_private_dns_zone", "azurerm_resource_group"} <= data
    provider = next(e["azurerm"] for e in stage2["provider"] if "azurerm" in e)
    storage = _one(_one(provider["features"])["storage"])
    assert storage["data_plane_available"] is False
    assert provider["storage_use_azuread"] is True
    keys = azure["azurerm_key_vault_key.this"]
    assert {"${azurerm_private_endpoint.vault}", "${time_sleep.rbac}"} <= set(keys["depends_on"])
    assert (
        "${azurerm_private_endpoint.storage}"
        in azure["azurerm_storage_container.this"]["depends_on"]
    )
    for name in (
        "azurerm_storage_account.this",
        "azurerm_eventhub_namespace_customer_managed_key.this",
    ):
        assert "${time_sleep.rbac_workloads}" in azure[name]["depends_on"], name
    readme = (INFRA / "azure" / "README.md").read_text()
    assert "network" in readme
    assert "runner" in readme


def test_audit_and_alerts_cover_keys_and_delivery() -> None:
    """Item 8: data-access audit on Azure and GCP, and alerts for key loss/expiry and delivery."""
    azure = _blocks(INFRA / "azure", "resource")
    activity = azure["azurerm_monitor_diagnostic_setting.activity_log"]
    assert activity["target_resource_id"].startswith("/subscriptions/")
    query = _one(azure["azurerm_monitor_scheduled_query_rules_alert_v2.key_danger"]["criteria"])
    for op in ("KeyDelete", "KeyPurge", "KeyNearExpiryEventGridNotification"):
        assert op in query["query"], op
    assert "CaptureBacklog" in str(azure["azurerm_monitor_metric_alert.capture"]["for_each"])
    gcp = _blocks(INFRA / "gcp", "resource")
    audit = gcp["google_project_iam_audit_config.this"]
    for service in ("bigquery.googleapis.com", "cloudkms.googleapis.com", "pubsub.googleapis.com"):
        assert service in audit["for_each"], service
    assert {c["log_type"] for c in audit["audit_log_config"]} == {
        "ADMIN_READ",
        "DATA_READ",
        "DATA_WRITE",
    }
    dead = _one(gcp["google_monitoring_alert_policy.dead_letter"]["conditions"])
    assert (
        "google_pubsub_subscription.dead_letter_triage.name"
        in _one(dead["condition_threshold"])["filter"]
    )
    assert "DestroyCryptoKeyVersion" in gcp["google_logging_metric.key_destruction"]["filter"]
    # capture errors alert too, not only its backlog
    assert "ServerErrors" in str(azure["azurerm_monitor_metric_alert.capture"]["for_each"])
    # GCP delivery lag: the ingest subscription's oldest unacked message age
    lag = _one(gcp["google_monitoring_alert_policy.delivery_errors"]["conditions"])
    lag_filter = _one(lag["condition_threshold"])["filter"]
    assert "oldest_unacked_message_age" in lag_filter
    assert "google_pubsub_subscription.ingest.name" in lag_filter
    # Cloud Storage data access (the training bucket) is audited, reads and writes
    storage = _blocks(INFRA / "gcp" / "modules" / "vertex-training", "resource")[
        "google_project_iam_audit_config.storage"
    ]
    assert storage["service"] == "storage.googleapis.com"
    assert {c["log_type"] for c in storage["audit_log_config"]} == {"DATA_READ", "DATA_WRITE"}
    # the example network logs every flow and every firewall rule's hits
    example = _blocks(INFRA / "gcp" / "examples" / "secure-ingestion", "resource")
    subnets = _of_type(example, "google_compute_subnetwork")
    assert subnets
    for name, body in subnets.items():
        assert _one(body["log_config"])["flow_sampling"] == 1, name
    rules = _of_type(example, "google_compute_firewall")
    assert rules
    for name, body in rules.items():
        assert _one(body["log_config"])["metadata"] == "INCLUDE_ALL_METADATA", name


def test_azure_key_roles_are_minimal_and_cmk_identities_separate(
    azure: dict[str, dict[str, Any]],
) -> None:
    """Item 7: workloads get read/wrap/unwrap on the data key only (no encrypt/decrypt/sign, no
    key management); each service's CMK identity can use only its own key; the deployer's Crypto
    Officer role can be switched off after the first apply."""
    role = azure["azurerm_role_definition.key_wrap_unwrap"]
    actions = set(_one(role["permissions"])["data_actions"])
    assert actions == {
        "Microsoft.KeyVault/vaults/keys/read",
        "Microsoft.KeyVault/vaults/keys/unwrap/action",
        "Microsoft.KeyVault/vaults/keys/wrap/action",
    }
    cmk = azure["azurerm_role_assignment.cmk_key_use"]
    assert cmk["scope"] == "${azurerm_key_vault_key.this[each.key].resource_versionless_id}"
    assert cmk["principal_id"] == "${azurerm_user_assigned_identity.cmk[each.key].principal_id}"
    account = azure["azurerm_storage_account.this"]
    assert _one(account["customer_managed_key"])["user_assigned_identity_id"] == (
        '${azurerm_user_assigned_identity.cmk["storage"].id}'
    )
    ns_ids = _one(azure["azurerm_eventhub_namespace.this"]["identity"])["identity_ids"]
    assert 'azurerm_user_assigned_identity.cmk["storage"]' not in str(ns_ids)
    officer = azure["azurerm_role_assignment.deployer_crypto_officer"]
    assert officer["count"] == "${var.deployer_key_management ? 1 : 0}"


def test_azure_commit_store_claims_expire_after_the_hub_retention(
    azure: dict[str, dict[str, Any]],
) -> None:
    """The Event Hubs scale-out writes one claim blob per event: they expire (hub retention +
    1 day) under exactly the prefix the `commit_store` output hands to `saip`."""
    outputs = (INFRA / "azure" / "outputs.tf").read_text()
    assert '/saip-commits"' in outputs
    policy = azure["azurerm_storage_management_policy.commits"]
    rule = _one(policy["rule"])
    flt = _one(rule["filters"])
    assert flt["prefix_match"] == [
        '${azurerm_storage_container.this["checkpoints"].name}/saip-commits/'
    ]
    age = _one(_one(rule["actions"])["base_blob"])["delete_after_days_since_creation_greater_than"]
    assert "var.event_hub.message_retention_days + 1" in str(age)
