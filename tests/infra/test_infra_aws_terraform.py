"""Terraform checks run by pytest (so `make test` covers them): fmt, AWS init/validate from the
local provider mirror, and the `terraform test` unit tests (mock_provider "aws") of every AWS
module. Skipped, with the reason, only where no provider mirror exists.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA, CheckovScan, tf

pytestmark = pytest.mark.slow

AWS_DIRS = [INFRA / "aws", INFRA / "aws" / "examples" / "secure-ingestion"]


@pytest.fixture(scope="module", autouse=True)
def _start_checkov_early(checkov_scans: dict[str, CheckovScan]) -> None:
    """Start the checkov scans now so they overlap with Terraform below."""


def test_fmt_check_recursive(tf_mirror: object) -> None:
    proc = tf(
        INFRA.parent, "fmt", "-check", "-recursive", "-no-color", "infra", "tests/infra/fixtures"
    )
    assert proc.returncode == 0, (
        f"terraform fmt -check found unformatted files:\n{proc.stdout}{proc.stderr}"
    )


@pytest.fixture(scope="module")
def aws_initialised(tf_mirror: object) -> None:
    """`init -backend=false` of the AWS root module and example, concurrently, from the mirror."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(
                lambda d: (d, tf(d, "init", "-backend=false", "-input=false", "-no-color")),
                AWS_DIRS,
            )
        )
    for directory, proc in results:
        assert proc.returncode == 0, f"init failed in {directory}:\n{proc.stdout}{proc.stderr}"
        assert "hashicorp/aws" in proc.stdout
        assert "registry.terraform.io" not in proc.stderr


@pytest.mark.parametrize("directory", AWS_DIRS, ids=["module", "example"])
def test_aws_validate(aws_initialised: None, directory: object) -> None:
    proc = tf(directory, "validate", "-no-color")  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success! The configuration is valid." in proc.stdout


def test_aws_terraform_test_unit_tests(aws_initialised: None) -> None:
    """Secure defaults hold; every validation block rejects bad input (infra/aws/tests)."""
    proc = tf(INFRA / "aws", "test", "-no-color", timeout=420)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = re.search(r"Success! (\d+) passed, 0 failed", out)
    assert summary, out[-3000:]
    files = set(re.findall(r"^(tests/\w+\.tftest\.hcl)\.\.\. pass$", proc.stdout, re.M))
    assert files == {f"tests/{p.name}" for p in (INFRA / "aws" / "tests").glob("*.tftest.hcl")}
    assert int(summary.group(1)) >= 30


def test_every_validation_block_has_a_rejecting_run() -> None:
    """Each variable with a validation block is named in some expect_failures of the unit tests."""
    tests = "\n".join(p.read_text() for p in (INFRA / "aws" / "tests").glob("*.tftest.hcl"))
    expected = set(
        re.findall(
            r"var\.([a-z_]+)", " ".join(re.findall(r"expect_failures = \[([^\]]*)\]", tests))
        )
    )
    validated = set()
    for vf in [INFRA / "aws" / "variables.tf", *(INFRA / "aws" / "modules").glob("*/variables.tf")]:
        for name, body in re.findall(r'variable "(\w+)" \{(.*?)\n\}', vf.read_text(), re.S):
            if "validation {" in body:
                validated.add(name)
    assert validated - expected == set(), (
        f"validated variables never rejected in a test: {validated - expected}"
    )
