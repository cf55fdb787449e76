"""checkov on all three clouds with the custom policies (infra/policies): zero failed checks, the
reviewed list of inline skips, and each custom policy failing on a bad fixture while passing on
the modules.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import CHECKOV_REPORTS, INFRA, CheckovScan

pytestmark = pytest.mark.slow

#: Every inline `checkov:skip` in infra/, reviewed: (check ID, file relative to infra/) -> count.
#: A new skip fails this test until it is reviewed and added here (justifications are in the .tf).
REVIEWED_SKIPS = {
    ("CKV_AWS_144", "aws/main.tf"): 1,
    ("CKV_AWS_145", "aws/main.tf"): 1,
    ("CKV_AWS_18", "aws/main.tf"): 1,
    ("CKV2_AWS_62", "aws/main.tf"): 1,
    ("CKV_AWS_144", "aws/modules/s3-bucket/main.tf"): 1,
    ("CKV2_AWS_62", "aws/modules/s3-bucket/main.tf"): 1,
    ("CKV_AWS_240", "aws/modules/kinesis-firehose/main.tf"): 1,
    ("CKV_AWS_241", "aws/modules/kinesis-firehose/main.tf"): 1,
    ("CKV_AZURE_40", "azure/main.tf"): 1,
    ("CKV_AZURE_40", "azure/modules/ml-workspace/main.tf"): 1,
    ("CKV_AZURE_33", "azure/modules/ml-workspace/main.tf"): 1,
    ("CKV2_AZURE_1", "azure/modules/ml-workspace/main.tf"): 1,
    ("CKV2_AWS_10", "aws/audit.tf"): 1,
    ("CKV_AWS_252", "aws/audit.tf"): 1,
    ("CKV2_AWS_57", "aws/modules/sagemaker-training/main.tf"): 1,
    ("CKV2_AWS_5", "aws/modules/sagemaker-training/main.tf"): 1,
    ("CKV_GCP_62", "gcp/modules/vertex-training/main.tf"): 1,
    ("CKV_GCP_62", "gcp/commits.tf"): 1,
    ("CKV_AZURE_33", "azure/main.tf"): 1,
    ("CKV2_AZURE_21", "azure/main.tf"): 1,
    ("CKV_GCP_16", "gcp/main.tf"): 1,
    ("CKV_GCP_76", "gcp/examples/secure-ingestion/main.tf"): 1,
}

SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+):(.*)$", re.M)


def _inline_skips() -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for path in INFRA.rglob("*.tf"):
        if ".terraform" in path.parts:
            continue
        for check_id, why in SKIP_RE.findall(path.read_text()):
            assert len(why.strip()) >= 40, f"{path}: skip of {check_id} needs a real justification"
            found[(check_id, str(path.relative_to(INFRA)))] += 1
    return found


def test_inline_skips_are_the_reviewed_ones() -> None:
    assert dict(_inline_skips()) == REVIEWED_SKIPS


def test_checkov_zero_failed_checks_on_all_clouds(checkov_scans: dict[str, CheckovScan]) -> None:
    scan = checkov_scans["modules"]
    failed = [f"{c['check_id']} {c['resource']} {c['file_path']}" for c in scan.failed()]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    files = {c["file_path"] for c in scan.passed()}
    for cloud in ("aws", "azure", "gcp"):
        assert any(f.startswith(f"/{cloud}/") for f in files), (
            f"checkov scanned nothing in infra/{cloud}"
        )
    for report in scan.report():
        assert report["summary"]["parsing_errors"] == 0


def test_checkov_reports_sarif_and_junit_under_run(checkov_scans: dict[str, CheckovScan]) -> None:
    """The modules scan also leaves SARIF (code-scanning upload) and JUnit XML (CI test report)
    under .run/checkov, agreeing with the JSON result."""
    import json
    import xml.etree.ElementTree as ET

    scan = checkov_scans["modules"]
    passed, failed = len(scan.passed()), len(scan.failed())
    sarif = json.loads((CHECKOV_REPORTS / "results_sarif.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    assert sarif["runs"][0]["tool"]["driver"]["name"].lower() == "checkov"
    results = sarif["runs"][0]["results"]
    # checkov writes failed checks as "error" and inline-skipped ones as "warning"
    assert len([r for r in results if r["level"] == "error"]) == failed
    assert len(results) == failed + len(scan.skipped())
    junit = ET.parse(CHECKOV_REPORTS / "results_junitxml.xml").getroot()
    cases = junit.findall(".//testcase")
    failures = [c for c in cases if c.find("failure") is not None]
    assert len(failures) == failed
    assert (
        len(cases) - len(failures) - len([c for c in cases if c.find("skipped") is not None])
        == passed
    )


def test_checkov_skips_are_only_the_inline_ones(checkov_scans: dict[str, CheckovScan]) -> None:
    skipped = {
        (c["check_id"], c["file_path"].lstrip("/")) for c in checkov_scans["modules"].skipped()
    }
    assert skipped <= set(REVIEWED_SKIPS), skipped - set(REVIEWED_SKIPS)
    assert all(
        c.get("check_result", {}).get("suppress_comment")
        for c in checkov_scans["modules"].skipped()
    )


@pytest.mark.parametrize(
    ("check_id", "resource"),
    [
        ("CKV_SAIP_1", "aws_s3_bucket_policy.no_tls_deny"),
        ("CKV_SAIP_1", "aws_s3_bucket_policy.tls_deny_on_objects_only"),
        ("CKV_SAIP_2", "aws_iam_role_policy.wildcard_action"),
        ("CKV_SAIP_2", "aws_iam_policy.not_action"),
        ("CKV_SAIP_2", "aws_kms_key.wildcard_key_policy"),
        ("CKV_SAIP_2", "aws_vpc_endpoint.no_policy"),
        ("CKV_SAIP_2", "azurerm_role_definition.wildcard"),
        ("CKV2_SAIP_3", "azurerm_key_vault.no_private_endpoint"),
        ("CKV2_SAIP_3", "azurerm_storage_account.no_private_endpoint"),
        ("CKV2_SAIP_3", "azurerm_eventhub_namespace.local_auth_default"),
        ("CKV_SAIP_4", "azurerm_eventhub_namespace.local_auth_default"),
        ("CKV_SAIP_4", "azurerm_eventhub_namespace.local_auth_on"),
        ("CKV2_SAIP_6", "google_compute_network.no_psc"),
    ],
)
def test_custom_policy_fails_on_bad_fixture(
    checkov_scans: dict[str, CheckovScan], check_id: str, resource: str
) -> None:
    failed = {(c["check_id"], c["resource"]) for c in checkov_scans["bad"].failed()}
    assert (check_id, resource) in failed


def test_bad_fixtures_pass_nothing_they_should_not(checkov_scans: dict[str, CheckovScan]) -> None:
    """Only the two fixtures built to pass a different check may pass anything."""
    passed = {(c["check_id"], c["resource"]) for c in checkov_scans["bad"].passed()}
    assert passed <= {
        ("CKV_SAIP_2", "aws_s3_bucket_policy.no_tls_deny"),
        ("CKV_SAIP_2", "aws_s3_bucket_policy.tls_deny_on_objects_only"),
    }, passed


@pytest.mark.parametrize(
    ("check_id", "resource_suffix"),
    [
        ("CKV_SAIP_1", 'module.bucket["landing"].aws_s3_bucket_policy.this'),
        ("CKV_SAIP_1", 'module.bucket["quarantine"].aws_s3_bucket_policy.this'),
        ("CKV_SAIP_1", 'module.bucket["artifacts"].aws_s3_bucket_policy.this'),
        ("CKV_SAIP_1", "aws_s3_bucket_policy.access_logs"),
        ("CKV_SAIP_2", "module.producer_role.aws_iam_role_policy.this"),
        ("CKV_SAIP_2", "module.stream.aws_iam_role_policy.firehose"),
        ("CKV_SAIP_2", "module.data_key.aws_kms_key.this"),
        ("CKV_SAIP_2", "module.storage_key.aws_kms_key.this"),
        ("CKV2_SAIP_3", "azurerm_key_vault.this"),
        ("CKV2_SAIP_3", "azurerm_eventhub_namespace.this"),
        ("CKV2_SAIP_3", "azurerm_storage_account.this"),
        ("CKV_SAIP_4", "azurerm_eventhub_namespace.this"),
        ("CKV2_SAIP_6", "google_compute_network.this"),
    ],
)
def test_custom_policy_passes_on_modules(
    checkov_scans: dict[str, CheckovScan], check_id: str, resource_suffix: str
) -> None:
    passed = {(c["check_id"], c["resource"]) for c in checkov_scans["modules"].passed()}
    assert any(cid == check_id and res.endswith(resource_suffix) for cid, res in passed), (
        f"{check_id} did not pass on ...{resource_suffix}"
    )
