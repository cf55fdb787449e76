"""SARIF 2.1.0 and JUnit XML from ``saip scan`` and ``saip ingest run`` (item: CI shows gates)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip.cli import main
from saip.gate_formats import Finding, to_junit, to_sarif, xml_safe


def _check_sarif(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The SARIF 2.1.0 structure CI readers rely on (required properties of sarifLog/run/result)."""
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-2.1.0.json")
    (run,) = doc["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert len(rule_ids) == len(set(rule_ids))
    for res in run["results"]:
        assert res["ruleId"] in rule_ids
        assert rule_ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note")
        assert res["message"]["text"]
        assert res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    return list(run["results"])


def _check_junit(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("tests", "-1")) == len(cases)
    assert int(suite.get("failures", "-1")) == len(failed)
    return suite


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=80))
def test_hostile_names_survive_both_formats(name: str) -> None:
    """Producer ids are untrusted: markup, JSON or control characters in them stay data and
    never make the file unreadable (property)."""
    f = Finding(rule="r", title=name, message=name, level="error")
    sarif = json.loads(to_sarif("t", [f], artifact="in.npz"))
    assert sarif["runs"][0]["results"][0]["message"]["text"] == name
    suite = _check_junit(to_junit("t", [f]))  # parses, whatever the name held
    failure = suite.find("testcase/failure")
    assert failure is not None
    assert failure.text == xml_safe(name).replace("\r\n", "\n").replace("\r", "\n")


def test_ingest_run_writes_sarif_and_junit(tmp_path: Path) -> None:
    data = str(tmp_path / "d")
    src = tmp_path / "a.jsonl"
    base = ["--data-dir", data, "ingest"]
    assert main([*base, "produce", str(src), "--producer", "alpha", "--limit", "40",
                 "--poison", "malformed:n=3", "--poison", "replay:n=2"]) == 0  # fmt: skip
    sarif, junit = tmp_path / "ingest.sarif", tmp_path / "ingest.xml"
    rc = main([*base, "run", "--source", str(src), "--sarif", str(sarif), "--junit", str(junit)])
    assert rc == 0
    results = _check_sarif(json.loads(sarif.read_text()))
    rules = {r["ruleId"] for r in results}
    assert {"saip-ingest/conservation", "saip-ingest/quarantine"} <= rules
    assert any("replay" in r["message"]["text"] for r in results)
    _check_junit(junit.read_text())
    assert sarif.stat().st_mode & 0o777 == 0o600
    # the overwrite policy applies, checked before anything is ingested
    assert main([*base, "run", "--source", str(src), "--sarif", str(sarif)]) == 1


@pytest.mark.slow
def test_scan_gate_writes_sarif_and_junit_before_refusing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saip_poisoning.attacks import add_patch
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(3)
    producer = np.array([f"p{i}" for i in rng.integers(0, 3, len(y))])
    pick = rng.choice(np.flatnonzero((producer == "p1") & (y != 0)), 120, replace=False)
    x[pick] = add_patch(x[pick])
    y[pick] = 0
    np.savez(tmp_path / "in.npz", x=x, y=y, producer=producer)
    sarif, junit = tmp_path / "scan.sarif", tmp_path / "scan.xml"
    rc = main(["scan", str(tmp_path / "in.npz"), "--max-risk", "40",
               "--sarif", str(sarif), "--junit", str(junit)])  # fmt: skip
    assert rc == 3  # the gate refused, and CI still gets the reasons
    err = capsys.readouterr().err
    for stage in (
        "scan: loading the detectors",
        "scan: 1797 samples: training the probe",
        "scan: risk ",
    ):
        assert stage in err, stage  # named stages, as plain lines when stderr is not a TTY
    assert "\x1b" not in err  # fmt: skip
    results = _check_sarif(json.loads(sarif.read_text()))
    gate = next(r for r in results if r["ruleId"] == "saip-scan/risk-gate")
    assert gate["level"] == "error"
    named = [r for r in results if r["ruleId"] == "saip-scan/producer" and r["level"] == "error"]
    assert [r["message"]["text"].split(":")[0] for r in named] == ["producer p1"]
    suite = _check_junit(junit.read_text())
    assert int(suite.get("failures", "0")) >= 2
