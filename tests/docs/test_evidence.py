"""``make evidence``'s report generator: outcomes per control row from a JUnit file.

The JUnit files here are written by the test (small, hand-made) so each outcome is known."""

# ruff: noqa: E501 (the matrix and JUnit fixtures are long lines on purpose)

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "docs" / "tools" / "evidence.py"

MATRIX = """# m

## Sec

| ID | Control | Threat answered | Code | Terraform | Test that proves it | Governance |
|---|---|---|---|---|---|---|
| AAA-01 | <script>alert(1)</script> | T1 | `docs/tools/evidence.py` | — | `tests/docs/test_evidence.py::test_a`, `::test_b` | — |
| AAA-02 | all pass | T1 | `docs/tools/evidence.py` | — | `tests/docs/test_evidence.py::test_c` | — |
| AAA-03 | skipped live | T1 | `docs/tools/evidence.py` | — | `tests/docs/test_evidence.py::test_live` | — |
| AAA-04 | terraform | T1 | infra/aws/main.tf | — | infra/aws/tests/root.tftest.hcl::composed_stack | — |
| AAA-05 | never run | T1 | `docs/tools/evidence.py` | — | `tests/docs/test_evidence.py::test_missing` | — |
"""

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.docs.test_evidence" name="test_a[x]"/>
<testcase classname="tests.docs.test_evidence" name="test_a[y]"><failure message="boom"/></testcase>
<testcase classname="tests.docs.test_evidence" name="test_b"/>
<testcase classname="tests.docs.test_evidence" name="test_c"/>
<testcase classname="tests.docs.test_evidence" name="test_live">
  <skipped type="pytest.skip" message="SAIP_LIVE=1 and AWS credentials needed"/></testcase>
<testcase classname="tests.infra.test_infra_aws_terraform" name="test_aws_terraform_test_unit_tests"/>
</testsuite></testsuites>"""


def _run(tmp_path: Path, junit: str = JUNIT) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "controls.md").write_text(MATRIX, encoding="utf-8")
    (tmp_path / "junit.xml").write_text(junit, encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--junit",
            str(tmp_path / "junit.xml"),
            "--out",
            str(out),
            "--matrix",
            str(tmp_path / "controls.md"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc, out


def test_one_failed_parametrised_case_fails_the_row(tmp_path: Path) -> None:
    proc, out = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = {r["id"]: r for r in json.loads((out / "controls.json").read_text())["rows"]}
    assert rows["AAA-01"]["verdict"] == "failed"
    assert rows["AAA-01"]["tests"][0] == {
        "test": "tests/docs/test_evidence.py::test_a",
        "outcome": "failed",
        "skip_reasons": [],
    }


def test_skips_keep_their_reason_and_unrun_tests_are_not_proven(tmp_path: Path) -> None:
    _, out = _run(tmp_path)
    report = json.loads((out / "controls.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["AAA-03"]["verdict"] == "not proven here"
    assert rows["AAA-03"]["tests"][0]["skip_reasons"] == ["SAIP_LIVE=1 and AWS credentials needed"]
    assert rows["AAA-05"]["tests"][0]["outcome"] == "not run"
    assert rows["AAA-05"]["verdict"] == "not proven here"
    assert report["skipped_tests"] == [
        {
            "test": "tests/docs/test_evidence.py::test_live",
            "skip_reasons": ["SAIP_LIVE=1 and AWS credentials needed"],
        }
    ]


def test_passing_rows_and_terraform_runs_are_proven(tmp_path: Path) -> None:
    _, out = _run(tmp_path)
    report = json.loads((out / "controls.json").read_text())
    rows = {r["id"]: r for r in report["rows"]}
    assert rows["AAA-02"]["verdict"] == "proven"
    (tf,) = rows["AAA-04"]["tests"]
    assert tf["outcome"] == "passed"
    assert tf["via"].endswith("test_aws_terraform_test_unit_tests")
    assert report["verdicts"] == {"failed": 1, "not proven here": 2, "proven": 2}


def test_html_escapes_cell_text_and_output_is_deterministic(tmp_path: Path) -> None:
    _, out = _run(tmp_path)
    page = (out / "controls.html").read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    first = (out / "controls.json").read_bytes(), page
    _run(tmp_path)
    assert ((out / "controls.json").read_bytes(), (out / "controls.html").read_text()) == first


def test_missing_junit_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "controls.md").write_text(MATRIX, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--junit", str(tmp_path / "nope.xml"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "not found" in proc.stderr
    assert not (tmp_path / "controls.json").exists()
