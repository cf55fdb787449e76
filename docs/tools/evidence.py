"""Evidence report: each control row of docs/controls.md with the outcome of the tests it names.

Reads a pytest JUnit XML file and writes ``controls.json`` and ``controls.html``: per row, each
named test with ``passed``/``failed``/``skipped``/``not run`` (a skip with its reason, e.g. a live
test that needs a real account), and a row verdict: ``proven`` (every named test passed),
``failed`` (any failed), ``partial`` (some passed, others skipped or not run) or ``not proven
here`` (none passed). ``terraform test`` runs named by the INF rows are proven through the pytest
test that runs ``terraform test`` (``TERRAFORM_RUNNER``).

Usage: ``python docs/tools/evidence.py --junit JUNIT.xml --out DIR`` (``make evidence`` runs the
suite first). Output is deterministic for a given JUnit file (rows in matrix order, no clock).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import controls_matrix as cm

ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_RUNNER = "tests/infra/test_infra_aws_terraform.py::test_aws_terraform_test_unit_tests"
_RANK = {"failed": 3, "passed": 2, "skipped": 1}


def _node_id(classname: str, name: str) -> str:
    """JUnit ``classname``/``name`` → ``path.py::function`` (parameters and classes folded)."""
    parts = classname.split(".")
    for i in range(len(parts), 0, -1):
        candidate = "/".join(parts[:i]) + ".py"
        if (ROOT / candidate).is_file():
            return f"{candidate}::{name.split('[')[0]}"
    return f"{classname}::{name.split('[')[0]}"


def read_junit(path: Path) -> dict[str, dict[str, object]]:
    """``{node_id: {"outcome", "reasons", "cases"}}``; parametrised cases are folded into one."""
    out: dict[str, dict[str, object]] = {}
    cases: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for case in ET.parse(path).getroot().iter("testcase"):  # noqa: S314
        node = _node_id(case.get("classname", ""), case.get("name", ""))
        if case.find("failure") is not None or case.find("error") is not None:
            cases[node].append(("failed", ""))
        elif (skip := case.find("skipped")) is not None:
            cases[node].append(("skipped", skip.get("message", "") or (skip.text or "").strip()))
        else:
            cases[node].append(("passed", ""))
    for node, results in cases.items():
        outcomes = {o for o, _ in results}
        outcome = (
            "failed" if "failed" in outcomes else "passed" if "passed" in outcomes else "skipped"
        )
        reasons = sorted({r for o, r in results if o == "skipped" and r})
        out[node] = {"outcome": outcome, "reasons": reasons, "cases": len(results)}
    return out


def build(matrix: Path, junit: dict[str, dict[str, object]]) -> dict[str, object]:
    rows = []
    totals: dict[str, int] = defaultdict(int)
    for row in cm.parse(matrix):
        tests = []
        for node in cm.pytest_ids(row):
            found = junit.get(node)
            tests.append(
                {
                    "test": node,
                    "outcome": found["outcome"] if found else "not run",
                    "skip_reasons": found["reasons"] if found else [],
                }
            )
        runner = junit.get(TERRAFORM_RUNNER)
        for run in cm.terraform_runs(row):
            tests.append(
                {
                    "test": run,
                    "outcome": runner["outcome"] if runner else "not run",
                    "skip_reasons": runner["reasons"] if runner else [],
                    "via": TERRAFORM_RUNNER,
                }
            )
        outcomes = [t["outcome"] for t in tests]
        if "failed" in outcomes:
            verdict = "failed"
        elif outcomes and all(o == "passed" for o in outcomes):
            verdict = "proven"
        elif "passed" in outcomes:
            verdict = "partial"
        else:
            verdict = "not proven here"
        totals[verdict] += 1
        rows.append(
            {
                "id": row.id,
                "section": row.section,
                "control": row.cells["control"],
                "governance": row.cells["governance"],
                "verdict": verdict,
                "tests": tests,
            }
        )
    skipped = [
        {"test": node, "skip_reasons": r["reasons"]}
        for node, r in sorted(junit.items())
        if r["outcome"] == "skipped"
    ]
    return {
        "matrix": str(matrix.relative_to(ROOT)) if matrix.is_relative_to(ROOT) else str(matrix),
        "verdicts": dict(sorted(totals.items())),
        "rows": rows,
        "skipped_tests": skipped,
    }


_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
    "td,th{border:1px solid #999;padding:4px 8px;vertical-align:top}"
    ".passed,.proven{background:#dfd}.failed{background:#fdd}"
    ".skipped,.partial{background:#ffd}.not{background:#eee}"
)


def render_html(report: dict[str, object]) -> str:
    esc = html.escape
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Control evidence</title>",
        f"<style>{_STYLE}</style></head><body><h1>Control evidence</h1>",
        f"<p>Source: {esc(str(report['matrix']))}. Verdicts: "
        + ", ".join(f"{esc(k)} {v}" for k, v in dict(report["verdicts"]).items())  # type: ignore[call-overload]
        + "</p><table><tr><th>ID</th><th>Control</th><th>Verdict</th><th>Tests</th></tr>",
    ]
    for row in report["rows"]:  # type: ignore[attr-defined]
        cells = []
        for t in row["tests"]:
            cls = t["outcome"].split()[0]
            why = "; ".join(t["skip_reasons"])
            via = f" (via {t['via']})" if "via" in t else ""
            cells.append(
                f"<div class='{cls}'>{esc(t['outcome'])}: <code>{esc(t['test'])}</code>{esc(via)}"
                + (f"<br><small>{esc(why)}</small>" if why else "")
                + "</div>"
            )
        verdict_cls = row["verdict"].split()[0]
        out.append(
            f"<tr><td>{esc(row['id'])}</td><td>{esc(row['control'])}</td>"
            f"<td class='{verdict_cls}'>{esc(row['verdict'])}</td><td>{''.join(cells)}</td></tr>"
        )
    out.append("</table><h2>Every skipped test (needs a real account or a missing tool)</h2><ul>")
    for t in report["skipped_tests"]:  # type: ignore[attr-defined]
        why = "; ".join(t["skip_reasons"])
        out.append(f"<li><code>{esc(t['test'])}</code>: {esc(why)}</li>")
    out.append("</ul></body></html>\n")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--junit", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--matrix", type=Path, default=ROOT / "docs" / "controls.md")
    args = ap.parse_args(argv)
    if not args.junit.is_file():
        print(
            f"evidence: JUnit file {args.junit} not found (run pytest --junitxml first)",
            file=sys.stderr,
        )
        return 1
    report = build(args.matrix, read_junit(args.junit))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "controls.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "controls.html").write_text(render_html(report), encoding="utf-8")
    print(
        f"evidence: {len(report['rows'])} rows → {args.out}/controls.{{json,html}}: "  # type: ignore[arg-type]
        + ", ".join(f"{k} {v}" for k, v in report["verdicts"].items())
    )  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
