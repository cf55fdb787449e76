"""Helpers of the infra tests (imported by conftest.py and the test modules).

Run Terraform through infra/scripts/tf.sh (project-owned CLI
config, provider mirror only, state under .run/tf) and checkov from its own venv (.venv-checkov).

checkov takes tens of seconds, so both scans (the modules, and the bad fixtures) start in the
background as soon as the first infra test asks for them and run while Terraform works.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TF = INFRA / "scripts" / "tf.sh"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CUSTOM_CHECKS = "CKV_SAIP_1,CKV_SAIP_2,CKV2_SAIP_3,CKV_SAIP_4,CKV2_SAIP_6"


def tf(directory: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``terraform -chdir=directory args`` through tf.sh; output captured as text."""
    return subprocess.run(
        [str(TF), str(directory), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TF_IN_AUTOMATION": "1"},
    )


@pytest.fixture(scope="session")
def tf_mirror() -> Path:
    """The provider mirror; the Terraform tests skip, saying why, only when there is none."""
    proc = subprocess.run([str(TF), "--mirror"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no Terraform provider mirror here: {proc.stderr.strip()}")
    return Path(proc.stdout.strip())


#: Where the modules scan writes its reports (JSON, SARIF, JUnit XML) for CI to keep.
CHECKOV_REPORTS = ROOT / os.environ.get("RUN_DIR", ".run") / "checkov"


@dataclass
class CheckovScan:
    """A checkov run started in the background; ``report()`` waits and parses its JSON (from
    stdout, or from ``report_dir``/results_json.json when the scan writes report files)."""

    proc: subprocess.Popen[str]
    target: Path
    report_dir: Path | None = None
    _report: list[dict[str, Any]] | None = None

    def report(self) -> list[dict[str, Any]]:
        if self._report is None:
            out, err = self.proc.communicate(timeout=600)
            if self.report_dir is not None:
                path = self.report_dir / "results_json.json"
                out = path.read_text() if path.exists() else ""
            try:
                data = json.loads(out)
            except ValueError:
                pytest.fail(
                    f"checkov on {self.target} printed no JSON "
                    f"(rc={self.proc.returncode}):\n{err[-3000:]}"
                )
            self._report = data if isinstance(data, list) else [data]
        return self._report

    def failed(self) -> list[dict[str, Any]]:
        return [c for r in self.report() for c in r["results"].get("failed_checks", [])]

    def passed(self) -> list[dict[str, Any]]:
        return [c for r in self.report() for c in r["results"].get("passed_checks", [])]

    def skipped(self) -> list[dict[str, Any]]:
        return [c for r in self.report() for c in r["results"].get("skipped_checks", [])]


def _start_checkov(target: Path, *extra: str, report_dir: Path | None = None) -> CheckovScan:
    if not CHECKOV.exists():
        pytest.fail(
            f"checkov is not installed in {CHECKOV.parent.parent}: run 'make venv'", pytrace=False
        )
    # checkov runs in its own venv: nothing from this interpreter's path may leak into it
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env |= {"BC_SKIP_MAPPING": "TRUE", "LOG_LEVEL": "WARNING", "PYTHONNOUSERSITE": "1"}
    cmd = [
        str(CHECKOV), "-d", str(target), "--framework", "terraform", "--skip-download",
        "--external-checks-dir", str(INFRA / "policies"), "-o", "json", *extra,
    ]  # fmt: skip
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        for stale in report_dir.glob("results_*"):
            stale.unlink()
        cmd += ["-o", "sarif", "-o", "junitxml", "--output-file-path", str(report_dir)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    return CheckovScan(proc, target, report_dir)


@pytest.fixture(scope="session")
def checkov_scans() -> Iterator[dict[str, CheckovScan]]:
    """Both checkov scans, started now: ``modules`` (infra/) and ``bad`` (the bad fixtures)."""
    scans = {
        "modules": _start_checkov(INFRA, report_dir=CHECKOV_REPORTS),
        "bad": _start_checkov(FIXTURES / "bad", "-c", CUSTOM_CHECKS),
    }
    yield scans
    for scan in scans.values():
        if scan.proc.poll() is None:
            scan.proc.kill()
            scan.proc.communicate()
