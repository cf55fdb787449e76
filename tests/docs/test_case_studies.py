"""Executable case studies: the output embedded in each document is what its script prints now.

Each script is re-run (each takes well under a minute); a difference means the code changed under
the document: run ``make case-studies`` and review the new output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import case_studies as cs
import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = ["kinesis-ingestion-poisoning", "azure-key-vault-rotation-failure", "fl-client-poisoning"]
FORM = [
    "## Attack vector",
    "## Detection method",
    "## Mitigation strategy",
    "## Cloud-specific implications",
]


def test_stale_or_missing_blocks_are_detected(tmp_path: Path) -> None:
    """Hostile first: an edited block is stale; a document without a block is an error."""
    doc = tmp_path / "x.md"
    doc.write_text(f"# x\n\n{cs.block('risk: 10')}\n", encoding="utf-8")
    assert not cs.is_stale(doc, "risk: 10\n")
    assert cs.is_stale(doc, "risk: 11\n")
    assert cs.write(doc, "risk: 11\n")
    assert not cs.is_stale(doc, "risk: 11\n")
    assert not cs.write(doc, "risk: 11\n")  # unchanged on a second write
    (tmp_path / "none.md").write_text("# no block\n", encoding="utf-8")
    with pytest.raises(cs.CaseStudyError, match="generated-output block"):
        cs.embedded(tmp_path / "none.md")


def test_a_failing_or_unknown_case_study_is_an_error_and_writes_nothing() -> None:
    with pytest.raises(cs.CaseStudyError, match="no case study named"):
        cs.script_of("does-not-exist")
    before = {c: (ROOT / "docs" / "case_studies" / f"{c}.md").read_bytes() for c in CASES}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "tools" / "case_studies.py"), "--write", "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "no case study named" in proc.stderr
    assert before == {c: (ROOT / "docs" / "case_studies" / f"{c}.md").read_bytes() for c in CASES}


@pytest.mark.parametrize("name", CASES)
def test_case_study_has_the_four_part_form_and_a_make_target(name: str) -> None:
    text = (ROOT / "docs" / "case_studies" / f"{name}.md").read_text(encoding="utf-8")
    positions = [text.find(h) for h in FORM]
    assert all(p >= 0 for p in positions), f"{name}: missing one of {FORM}"
    assert positions == sorted(positions), f"{name}: sections out of order"
    assert f"make case-{name}" in text
    mk = (ROOT / "make" / "docs.mk").read_text(encoding="utf-8")
    assert re.search(rf"^CASE_STUDIES :=.*\b{re.escape(name)}\b", mk, flags=re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_embedded_output_is_current(name: str) -> None:
    doc = ROOT / "docs" / "case_studies" / f"{name}.md"
    output = cs.run(name)
    assert "not generated yet" not in cs.embedded(doc), f"run `make case-studies` ({name})"
    assert not cs.is_stale(doc, output), (
        f"docs/case_studies/{name}.md embeds stale output: run `make case-studies` and review"
    )
