"""Gate results as SARIF 2.1.0 and JUnit XML, so CI systems show them natively.

- SARIF: OASIS Static Analysis Results Interchange Format 2.1.0 (``version``, ``$schema``, one
  ``run`` with ``tool.driver.rules`` and ``results`` whose ``ruleId`` names a rule, ``level`` one of
  ``error``/``warning``/``note``, ``message.text``, and the input as the physical location).
- JUnit XML: the de-facto ``<testsuites><testsuite><testcase><failure/>`` layout read by Jenkins,
  GitLab and GitHub test reporters; one test case per check, a ``<failure>`` when it tripped.

Every text comes from the run (producer ids are untrusted): JSON and ``xml.etree`` escape it.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from saip import __version__
from saip.outputs import write_text_output

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

Level = Literal["error", "warning", "note"]

SarifOpt = Annotated[
    Path | None, typer.Option("--sarif", help="Also write the gate's checks as SARIF 2.1.0 here.")
]
JunitOpt = Annotated[
    Path | None, typer.Option("--junit", help="Also write the gate's checks as JUnit XML here.")
]


@dataclass(frozen=True)
class Finding:
    """One check of a gate: passed (``level="note"``) or not, with its rule and message."""

    rule: str
    title: str
    message: str
    level: Level
    properties: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.level != "note"


def to_sarif(tool: str, findings: list[Finding], *, artifact: str) -> str:
    """A SARIF 2.1.0 log with one run of ``tool`` over ``artifact``."""
    rules: dict[str, str] = {}
    for f in findings:
        rules.setdefault(f.rule, f.title)
    results = []
    for f in findings:
        result: dict[str, Any] = {
            "ruleId": f.rule,
            "ruleIndex": list(rules).index(f.rule),
            "level": f.level,
            "message": {"text": f.message},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": artifact}}}],
        }
        if f.properties:
            result["properties"] = f.properties
        results.append(result)
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": tool,
                        "version": __version__,
                        "rules": [
                            {"id": rid, "shortDescription": {"text": title}}
                            for rid, title in rules.items()
                        ],
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2, sort_keys=False) + "\n"


_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str) -> str:
    """``text`` with the characters XML 1.0 cannot hold (controls, lone surrogates) replaced by
    U+FFFD, so a hostile producer id cannot make the whole JUnit file unreadable."""
    return _XML_INVALID.sub("\ufffd", text)


def to_junit(suite: str, findings: list[Finding], *, seconds: float = 0.0) -> str:
    """JUnit XML: one ``testcase`` per finding, a ``failure`` for each that did not pass."""
    suite = xml_safe(suite)
    failures = sum(f.failed for f in findings)
    root = ET.Element("testsuites", tests=str(len(findings)), failures=str(failures))
    ts = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(findings)),
        failures=str(failures),
        errors="0",
        time=f"{seconds:.3f}",
    )
    for f in findings:
        title, message = xml_safe(f.title), xml_safe(f.message)
        case = ET.SubElement(ts, "testcase", classname=f"{suite}.{f.rule}", name=title)
        if f.failed:
            failure = ET.SubElement(case, "failure", message=message, type=f.level)
            failure.text = message
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def scan_findings(report: dict[str, Any], *, max_risk: float) -> list[Finding]:
    """Checks of one ``saip scan``: the risk gate, each class test, each producer."""
    risk = float(report["risk_score"])
    over = risk > max_risk
    findings = [
        Finding(
            rule="saip-scan/risk-gate",
            title=f"poisoning risk within --max-risk {max_risk:g}",
            message=f"poisoning risk {risk:.1f}/100 ({report.get('band', '?')}) "
            f"{'exceeds' if over else 'is within'} --max-risk {max_risk:g}; "
            f"{len(report.get('flagged', []))} samples flagged",
            level="error" if over else "note",
            properties={"risk_score": risk, "max_risk": max_risk},
        )
    ]
    for c, v in report.get("per_class", {}).items():
        tests = list(v.get("class_tests", []))
        findings.append(
            Finding(
                rule="saip-scan/class",
                title=f"class {c}",
                message=f"class {c}: {v.get('flagged', 0)} of {v.get('n', '?')} flagged"
                + (f"; class tests fired: {', '.join(tests)}" if tests else ""),
                level="warning" if tests else "note",
                properties={"risk_score": v.get("risk_score")},
            )
        )
    for p, v in report.get("per_producer", {}).items():
        findings.append(
            Finding(
                rule="saip-scan/producer",
                title=f"producer {p}",
                message=f"producer {p}: risk {float(v.get('risk_score', 0)):.1f}, "
                f"{v.get('flagged', 0)} of {v.get('n', '?')} flagged"
                + ("; named as poisoned" if v.get("named") else ""),
                level="error" if v.get("named") else "note",
                properties={"risk_score": v.get("risk_score"), "p_value": v.get("p_value")},
            )
        )
    return findings


def ingest_findings(summary: dict[str, Any]) -> list[Finding]:
    """Checks of one ``saip ingest run``: conservation, each quarantine reason, each producer."""
    findings = [
        Finding(
            rule="saip-ingest/conservation",
            title="record counts conserved",
            message=f"received {summary.get('received')}, accepted {summary.get('accepted')}, "
            f"quarantined {summary.get('quarantined')}",
            level="note" if summary.get("conserved") else "error",
        )
    ]
    for reason, n in sorted(summary.get("reasons", {}).items()):
        findings.append(
            Finding(
                rule="saip-ingest/quarantine",
                title=f"quarantined: {reason}",
                message=f"{n} record(s) quarantined for {reason}",
                level="warning",
                properties={"count": n},
            )
        )
    for name, p in summary.get("producers", {}).items():
        findings.append(
            Finding(
                rule="saip-ingest/producer-health",
                title=f"producer {name}",
                message=f"producer {name}: {p.get('received')} received, "
                f"{100 * float(p.get('rejection_rate', 0)):.1f}% rejected, "
                f"label drift TV {float(p.get('max_label_tv', 0)):.3f}"
                + ("; FLAGGED" if p.get("flagged") else ""),
                level="error" if p.get("flagged") else "note",
            )
        )
    return findings


def write_gate_files(
    findings: list[Finding],
    *,
    tool: str,
    artifact: str,
    sarif: Path | None,
    junit: Path | None,
    force: bool,
    seconds: float = 0.0,
) -> None:
    """Write the SARIF and/or JUnit files (0600, atomic). Call it *before* raising a gate error,
    so CI shows why the gate refused."""
    if sarif is not None:
        write_text_output(sarif, to_sarif(tool, findings, artifact=artifact), force=force)
    if junit is not None:
        write_text_output(junit, to_junit(tool, findings, seconds=seconds), force=force)
