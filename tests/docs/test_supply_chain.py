"""``make supply-chain``: SBOMs are CycloneDX, a planted secret is found, and an audit that
could not reach a vulnerability source is never reported as clean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import supply_chain as sc

ROOT = Path(__file__).resolve().parents[2]
SUPPLY_BIN = ROOT / ".venv-supply" / "bin"


@pytest.fixture
def tools() -> None:
    if not (SUPPLY_BIN / "detect-secrets").exists():
        pytest.fail(".venv-supply is missing: `make venv` builds it")


def test_unreachable_sources_are_not_clean() -> None:
    """Hostile first: the answers seen from a machine without a vulnerability source."""
    pypi = {
        "dependencies": [
            {
                "name": "a",
                "skip_reason": "Dependency not found on PyPI and could not be audited: a (1)",
            },
            {
                "name": "b",
                "skip_reason": "Dependency not found on PyPI and could not be audited: b (2)",
            },
        ]
    }
    assert sc.classify_pip_audit(pypi)["status"] == "unreachable"
    npm = json.dumps(
        {"message": "405 Method Not Allowed - POST …/advisories/bulk", "statusCode": 405}
    )
    assert sc.classify_npm_audit(1, npm)["status"] == "unreachable"
    assert sc.classify_npm_audit(1, "")["status"] == "unreachable"
    assert sc.classify_npm_audit(1, "<html>proxy</html>")["status"] == "unreachable"


def test_found_vulnerabilities_are_reported() -> None:
    pypi = {
        "dependencies": [
            {"name": "x", "version": "1.0", "vulns": [{"id": "PYSEC-0000-1"}]},
            {"name": "y", "version": "2.0", "vulns": []},
            {"name": "z", "skip_reason": "not on PyPI"},
        ]
    }
    got = sc.classify_pip_audit(pypi)
    assert got["status"] == "vulnerable"
    assert got["vulnerabilities"] == [{"name": "x", "version": "1.0", "ids": ["PYSEC-0000-1"]}]
    assert (got["audited"], got["not_audited"]) == (2, 1)
    npm = {"metadata": {"vulnerabilities": {"info": 0, "low": 0, "high": 2, "total": 2}}}
    assert sc.classify_npm_audit(1, json.dumps(npm))["status"] == "vulnerable"
    clean = {"metadata": {"vulnerabilities": {"info": 0, "high": 0, "total": 0}}}
    assert sc.classify_npm_audit(0, json.dumps(clean))["status"] == "ok"


def _git_repo(path: Path, files: dict[str, str]) -> None:
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    for name, text in files.items():
        (path / name).write_text(text, encoding="utf-8")
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)


def test_planted_secret_is_found_and_baseline_entries_are_not(tmp_path: Path, tools: None) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    # assembled at run time, so this file itself holds no key-shaped literal
    planted = 'aws_access_key_id = "' + "AKIA" + 'Z7QJ3XW4PLMN2B5K"\n'
    _git_repo(repo, {"config.py": planted, "ok.py": "x = 1\n"})
    empty = tmp_path / "empty.baseline"
    empty.write_text(json.dumps({"results": {}}), encoding="utf-8")
    got = sc.secrets(tmp_path, baseline=empty, root=repo)
    assert got["status"] == "new secrets"
    assert {"file": "config.py", "type": "AWS Access Key"} in got["new"]
    # once accepted into the baseline (make secrets-baseline), the same finding is not new,
    # and the new file is marked for review
    reviewed = tmp_path / "reviewed.baseline"
    assert sc.update_baseline(reviewed, root=repo) == ["config.py"]
    assert json.loads(reviewed.read_text())["reviewed"]["config.py"].startswith("REVIEW")
    assert sc.secrets(tmp_path, baseline=reviewed, root=repo)["status"] == "ok"


def test_repository_has_no_secret_outside_the_reviewed_baseline(
    tmp_path: Path, tools: None
) -> None:
    got = sc.secrets(tmp_path)
    assert got["status"] == "ok", got["new"]
    assert got["files_scanned"] > 100


def test_npm_sbom_is_cyclonedx_and_lists_the_pinned_packages(tmp_path: Path) -> None:
    got = sc.sbom_npm(tmp_path)
    assert got["status"] == "ok", got
    doc = json.loads((tmp_path / "sbom-npm.cdx.json").read_text())
    assert doc["bomFormat"] == "CycloneDX"
    names = {(c["name"], c["version"]) for c in doc["components"]}
    lock = json.loads((ROOT / "package.json").read_text())["devDependencies"]
    assert set(lock.items()) <= names
    assert not (ROOT / "package.json").read_text().count('"version"')  # repo files untouched


def test_python_sbom_of_an_environment(tmp_path: Path, tools: None) -> None:
    got = sc.sbom_python(tmp_path, SUPPLY_BIN / "python")
    assert got["status"] == "ok", got
    doc = json.loads((tmp_path / "sbom-python.cdx.json").read_text())
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"].startswith("1.")
    purls = {c.get("purl", "") for c in doc["components"]}
    assert any(p.startswith("pkg:pypi/detect-secrets@1.5.0") for p in purls)


def test_cli_refuses_a_missing_interpreter_before_doing_anything(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "docs" / "tools" / "supply_chain.py"),
            "--out",
            str(tmp_path / "out"),
            "--python",
            str(tmp_path / "nope"),
            "--audit",
            "skip",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "--python" in proc.stderr
    assert not (tmp_path / "out").exists()
