"""Every AWS variable that has a ``validation`` block is exercised by a ``terraform test`` run
that expects it to reject bad input (``expect_failures = [var.<name>]``), in the root module and
in each module. The runs themselves pass or fail in
``test_infra_aws_terraform.py::test_aws_terraform_test_unit_tests``; this test makes sure no
validated variable is left without one.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import INFRA

AWS = INFRA / "aws"
RUN = re.compile(r'^run "(\w+)" \{\n(.*?)^\}', re.S | re.M)


def _validated() -> dict[str, set[str]]:
    """{module ("." for the root): names of variables with at least one validation block}."""
    out: dict[str, set[str]] = {}
    for path in sorted({*AWS.glob("*.tf"), *AWS.glob("modules/*/*.tf")}):
        module = "." if path.parent == AWS else path.parent.name
        with path.open(encoding="utf-8") as fh:
            doc = hcl2.load(fh)
        for block in doc.get("variable", []):
            for name, body in block.items():
                if body.get("validation"):
                    out.setdefault(module, set()).add(name.strip('"'))
    return out


def _expected_failures() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for path in sorted((AWS / "tests").glob("*.tftest.hcl")):
        for _name, body in RUN.findall(path.read_text(encoding="utf-8")):
            source = re.search(r'source\s*=\s*"\./modules/([\w-]+)"', body)
            module = source.group(1) if source else "."
            for listed in re.findall(r"expect_failures\s*=\s*\[([^\]]*)\]", body):
                out.setdefault(module, set()).update(re.findall(r"var\.(\w+)", listed))
    return out


def test_every_validated_variable_has_a_run_expecting_it_to_reject() -> None:
    validated, covered = _validated(), _expected_failures()
    assert set(validated) >= {".", "kms-key", "s3-bucket", "sagemaker-training"}
    missing = {m: sorted(v - covered.get(m, set())) for m, v in validated.items()}
    missing = {m: v for m, v in missing.items() if v}
    assert not missing, f"validated variables no terraform test run expects to fail: {missing}"
