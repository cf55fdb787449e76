"""Azure and GCP Terraform checked offline against the real provider schemas (shipped by the npm
packages @cdktf/provider-azurerm and @cdktf/provider-google; see
infra/scripts/check_provider_schema.py): resource types, argument names, required arguments and
block nesting. A fixture of deliberate mistakes proves each kind of error is reported.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import FIXTURES, INFRA


def _checker() -> ModuleType:
    path = INFRA / "scripts" / "check_provider_schema.py"
    spec = importlib.util.spec_from_file_location("check_provider_schema", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_provider_schema"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    module = _checker()
    for package in module.PACKAGES.values():
        if not (package / "lib").is_dir():
            pytest.fail(f"{package} is missing: run 'make venv' (npm ci)", pytrace=False)
    return module


def test_schemas_are_the_pinned_provider_releases(checker: ModuleType) -> None:
    assert checker.provider_version("azurerm") == "4.55.0"
    assert checker.provider_version("google") == "6.50.0"


@pytest.mark.parametrize("cloud", ["azure", "gcp"])
def test_modules_and_examples_match_the_provider_schema(checker: ModuleType, cloud: str) -> None:
    report = checker.check_paths([INFRA / cloud])
    assert report.errors == []
    assert len(report.checked) >= 10
    # Types of providers without an offline schema: reviewed by hand (see the module README).
    assert report.unchecked <= {"azapi_resource", "azapi_update_resource", "time_sleep"}


def test_deliberate_mistakes_are_reported(checker: ModuleType) -> None:
    report = checker.check_paths([FIXTURES / "schema-bad"])
    text = "\n".join(report.errors)
    expected = [
        "azurerm_key_vault.typo: unknown argument 'enable_rbac_authorisation'",
        "azurerm_key_vault_key.block_as_attribute: 'rotation_policy' is a block",
        "azurerm_eventhub.missing_required: missing required argument 'partition_count'",
        "destination[0]: unknown argument 'storage_authentication_type'",
        "google_pubsub_topic.attribute_as_block: 'kms_key_name' is an attribute",
        "google_bigquery_tabel.no_such_type: no such resource type in google",
    ]
    for needle in expected:
        assert needle in text, f"not reported: {needle}\n{text}"
    assert len(report.errors) == len(expected), text


def test_a_single_wrong_attribute_in_a_real_module_fails(
    checker: ModuleType, tmp_path: Path
) -> None:
    """Mutate the real Azure module: one renamed argument is enough to fail the check."""
    main = (INFRA / "azure" / "main.tf").read_text()
    assert "  rbac_authorization_enabled    = true" in main
    (tmp_path / "main.tf").write_text(
        main.replace(
            "  rbac_authorization_enabled    = true", "  rbac_authorisation_enabled = true"
        )
    )
    report = checker.check_paths([tmp_path])
    assert [e.split(": ", 1)[1] for e in report.errors] == [
        "resource.azurerm_key_vault.this: unknown argument 'rbac_authorisation_enabled'"
    ]
