"""Defect 5: each cloud's ``saip_config`` output, with the VALUES Terraform would give it, goes
through ``saip config from-terraform`` (the CLI's config model) and a dry-run construction of the
ingestion backend. Nothing here talks to a cloud.

Terraform cannot evaluate the Azure/GCP outputs here (no azurerm/google provider offline), so the
test resolves each ``${...}`` reference of the output expression itself: names from the
resources' own ``name`` arguments in main.tf (with the example's prefix), computed attributes from
the provider-documented formats (e.g. azurerm ``primary_blob_endpoint`` =
``https://<account>.blob.core.windows.net/``, google ``google_kms_crypto_key.id`` =
``projects/P/locations/L/keyRings/R/cryptoKeys/K``). An unknown reference fails the test, so a
new reference must be given a value here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA, ROOT
from saip.commands.tfconfig import config_from_terraform, dry_run_backend, render
from saip.config import load_config
from saip.errors import ConfigError
from test_infra_hcl import _load

PREFIX = {"aws": "saip-demo", "azure": "saipdemo", "gcp": "saip-demo"}
SAIP = ROOT / ".venv" / "bin" / "saip"


def _output_expr(cloud: str) -> dict[str, Any]:
    doc = _load(INFRA / cloud / "outputs.tf")
    return next(e["saip_config"]["value"] for e in doc["output"] if "saip_config" in e)


def _known_values(cloud: str) -> dict[str, str]:
    p = PREFIX[cloud]
    if cloud == "azure":
        account, ns, kv = f"{p}adls", f"{p}-ehns", f"{p}-kv"
        return {
            "azurerm_storage_account.this.primary_blob_endpoint": f"https://{account}.blob.core.windows.net/",
            'azurerm_storage_container.this["landing"].name': "landing",
            'azurerm_storage_container.this["checkpoints"].name': "checkpoints",
            "azapi_resource.records.name": f"{p}-records",
            "azurerm_eventhub_namespace.this.name": ns,
            "azurerm_eventhub_consumer_group.ingest.name": "saip-ingest",
            'azurerm_key_vault_key.this["data"].versionless_id': f"https://{kv}.vault.azure.net/keys/{p}-data",
        }
    if cloud == "gcp":
        project, region = "saip-demo-project", "europe-west1"
        return {
            "var.region": region,
            "var.project_id": project,
            "google_pubsub_topic.records.name": f"{p}-records",
            "google_pubsub_topic.dead_letter.name": f"{p}-records-dead-letter",
            "google_pubsub_subscription.ingest.name": f"{p}-ingest",
            "google_bigquery_table.records.project": project,
            "google_bigquery_table.records.dataset_id": f"{p}_ingest".replace("-", "_"),
            "google_bigquery_table.records.table_id": "records",
            'google_kms_crypto_key.this["data"].id': (
                f"projects/{project}/locations/{region}/keyRings/{p}-keyring/cryptoKeys/{p}-data"
            ),
        }
    arn = "arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd"
    return {
        "local.region": "eu-west-1",
        "module.stream.stream_name": f"{p}-records",
        'module.bucket["landing"].name': f"{p}-landing",
        "module.storage_key.key_arn": arn.replace("abcd", "beef"),
        "module.data_key.key_arn": arn,
        "var.encryption_context": '{"saip:pipeline": "ingest"}',
    }


def _resolve(value: Any, known: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, known) for k, v in value.items()}
    if value is None or not isinstance(value, str):
        return value
    whole = re.fullmatch(r"\$\{([^}]+)\}", value)
    if whole and whole.group(1) == "var.encryption_context":
        return json.loads(known["var.encryption_context"])

    def sub(m: re.Match[str]) -> str:
        ref = m.group(1)
        assert ref in known, f"saip_config references {ref}: give it a value in this test"
        return known[ref]

    return re.sub(r"\$\{([^}]+)\}", sub, value)


def _values(cloud: str) -> dict[str, Any]:
    return _resolve(_output_expr(cloud), _known_values(cloud))  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # Dummy AWS credentials: the dry run creates boto3 clients but sends nothing.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_saip_config_values_pass_the_cli_model_and_build_the_backend(
    cloud: str, tmp_path: Path
) -> None:
    values = _values(cloud)
    cfg = config_from_terraform({"saip_config": {"value": values, "type": [], "sensitive": False}})
    assert cfg.ingest.backend == cloud
    dry_run_backend(cfg, data_dir=tmp_path)
    # the generated TOML loads back through --config to the same settings
    path = tmp_path / "saip.toml"
    path.write_text(render(cfg))
    assert load_config(path) == cfg


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_cli_pipeline_from_terraform_json(cloud: str, tmp_path: Path) -> None:
    """`terraform output -json saip_config | saip config from-terraform -o saip.toml`."""
    out = tmp_path / "saip.toml"
    proc = subprocess.run(
        [str(SAIP), "config", "from-terraform", "-o", str(out)],
        input=json.dumps(_values(cloud)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "AWS_ACCESS_KEY_ID": "t", "AWS_SECRET_ACCESS_KEY": "t"},
    )
    assert proc.returncode == 0, proc.stderr
    assert load_config(out).ingest.backend == cloud


# The outputs as they were before the fix: each one must be refused, naming the setting.
_OLD_OUTPUTS = {
    "azure": (
        {
            "ingest": {
                "backend": "azure",
                "endpoint_url": "sb://saipdemo-ehns.servicebus.windows.net/",
                "region": "westeurope",
                "stream": "saipdemo-records",
                "bucket": "https://saipdemoadls.blob.core.windows.net/landing",
            },
            "encryption": {
                "key": "azure-kv:https://saipdemo-kv.vault.azure.net/keys/saipdemo-data"
            },
        },
        "region",
    ),
    "gcp": (
        {
            "ingest": {
                "backend": "gcp",
                "endpoint_url": None,
                "region": "europe-west1",
                "stream": "projects/p-123456/subscriptions/saip-demo-ingest",
                "bucket": None,
            },
            "encryption": {"key": "gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k"},
        },
        "project: required|bigquery_table",
    ),
}


_KEY_OF = {
    "aws": "aws-kms:arn:aws:kms:eu-west-1:123456789012:key/0a1b2c3d-0000-4000-8000-00000000abcd",
    "azure": "azure-kv:https://saipdemo-kv.vault.azure.net/keys/saipdemo-data",
    "gcp": "gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
}


@pytest.mark.parametrize("cloud", sorted(_KEY_OF))
def test_a_key_uri_of_another_cloud_is_refused(cloud: str) -> None:
    values = _values(cloud)
    for other, key in _KEY_OF.items():
        if other == cloud:
            continue
        doc = {**values, "encryption": {**values.get("encryption", {}), "key": key}}
        with pytest.raises(ConfigError, match=rf"encryption\.key.*{cloud}"):
            config_from_terraform({"saip_config": {"value": doc}})


@pytest.mark.parametrize("cloud", sorted(_OLD_OUTPUTS))
def test_pre_fix_outputs_are_refused(cloud: str, tmp_path: Path) -> None:
    value, named = _OLD_OUTPUTS[cloud]
    cfg = config_from_terraform(value)  # the generic keys themselves were valid ...
    with pytest.raises(ConfigError, match=named):  # ... the backend refuses the values
        dry_run_backend(cfg, data_dir=tmp_path)


def test_unknown_setting_and_non_config_input_are_refused() -> None:
    value = _values("azure")
    value["ingest"]["azure"]["nmespace"] = "x"
    with pytest.raises(ConfigError, match=r"ingest\.azure\.nmespace"):
        config_from_terraform(value)
    with pytest.raises(ConfigError, match="not a saip_config output"):
        config_from_terraform({"other": {"value": 1}})


# ------------------------------------------------------------------- the TOML writer (hostile)

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_key = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        _key,
        st.one_of(
            _text,
            st.booleans(),
            st.integers(-(2**63), 2**63 - 1),
            st.dictionaries(
                _key, st.one_of(_text, st.dictionaries(_key, _text, max_size=3)), max_size=4
            ),
        ),
        max_size=5,
    )
)
def test_toml_writer_round_trips_any_strings(doc: dict[str, Any]) -> None:
    """Quotes, backslashes, control characters, newlines, DEL and odd keys survive: what is read
    back is exactly what was written (no injection of extra settings through a value)."""
    import tomllib

    from saip.commands.tfconfig import to_toml

    assert tomllib.loads(to_toml(doc)) == doc


def test_injection_through_a_value_stays_a_value(tmp_path: Path) -> None:
    value = _values("azure")
    value["ingest"]["stream"] = 'x"\n[encryption]\nkey = "local:/tmp/evil'
    cfg = config_from_terraform(value)
    path = tmp_path / "saip.toml"
    path.write_text(render(cfg))
    loaded = load_config(path)
    assert loaded.ingest.stream == value["ingest"]["stream"]
    assert loaded.encryption.key == value["encryption"]["key"]


def test_cli_refuses_bad_input_with_exit_1_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "saip.toml"
    for bad in ("not json", json.dumps({"ingest": {"backend": "azure", "region": "westeurope"}})):
        proc = subprocess.run(
            [str(SAIP), "config", "from-terraform", "-o", str(out)],
            input=bad,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith("saip: error:")
        assert not out.exists()
        assert not out.with_name(out.name + ".tmp").exists()
