"""The INF rows of docs/controls.md point at things that exist: every path, every Python test
function, every `terraform test` run block and every named resource (`type.name` in parentheses
after a .tf path). The matrix-wide test (tests/docs) follows only back-quoted references; the INF
rows use plain ones, separated by `;` and `,`.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from infra_tf_helpers import ROOT

CONTROLS = ROOT / "docs" / "controls.md"
_REF = re.compile(
    r"([\w./*-]+\.(?:py|tf|hcl|sh|yaml|in)|infra/[\w./-]+)(?:::([\w\[\]-]+))?(?: \(([^)]*)\))?"
)


def _inf_rows() -> list[list[str]]:
    rows = []
    for line in CONTROLS.read_text().splitlines():
        if line.startswith("| INF-"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    return rows


def _problems_of(row: list[str]) -> list[str]:
    problems: list[str] = []
    for cell in (row[3], row[4], row[5]):
        for path, name, resources in _REF.findall(cell):
            target = ROOT / path
            if "*" in path:
                continue
            if not target.exists():
                problems.append(f"{row[0]}: {path} does not exist")
                continue
            text = "\n".join(
                p.read_text() for p in ([target] if target.is_file() else target.glob("*.tf"))
            )
            if name:
                if path.endswith(".tftest.hcl"):
                    if f'run "{name}"' not in text:
                        problems.append(f"{row[0]}: run {name} not in {path}")
                elif not re.search(rf"\bdef {re.escape(name.split('[')[0])}\b", text):
                    problems.append(f"{row[0]}: {name} not in {path}")
            for ref in re.findall(r"\b([a-z0-9_]+\.[a-z0-9_*]+)", resources):
                rtype, rname = ref.split(".", 1)
                if rtype == "module" and rname.endswith("*"):
                    if not re.search(rf'module "{rname[:-1]}', text):
                        problems.append(f"{row[0]}: {ref} not in {path}")
                elif rtype == "module":
                    if f'module "{rname}"' not in text:
                        problems.append(f"{row[0]}: {ref} not in {path}")
                elif (
                    not re.search(
                        rf'(resource|data) "{re.escape(rtype)}" "{re.escape(rname)}"', text
                    )
                    and "*" not in rname
                ):
                    problems.append(f"{row[0]}: {ref} not in {path}")
    return problems


def test_inf_rows_reference_existing_code_terraform_and_tests() -> None:
    rows = _inf_rows()
    assert len(rows) >= 15
    problems = [p for row in rows for p in _problems_of(row)]
    assert problems == [], "\n".join(problems)


def test_a_dangling_reference_is_reported() -> None:
    row = ["INF-99", "c", "t", "infra/aws/main.tf", "infra/aws/main.tf (aws_s3_bucket.nope)",
           "infra/aws/tests/root.tftest.hcl::no_such_run; tests/infra/test_infra_hcl.py::test_nope",
           "g"]  # fmt: skip
    problems = _problems_of(row)
    assert len(problems) == 3, problems
