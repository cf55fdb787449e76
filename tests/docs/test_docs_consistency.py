"""Docs move with the code: links resolve, the control matrix points at real code and tests,
governance IDs are ones that were checked, and README commands exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GOVERNANCE = ROOT.parent / "shared" / "GOVERNANCE.md"


def _ours(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return not any(p.startswith(".") or p in {"node_modules", "build", "dist"} for p in parts)


DOCS = sorted(
    {
        p
        for p in [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), *ROOT.glob("*/**/README.md")]
        if _ours(p)
    }
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
ID_PATTERNS = [
    re.compile(r"\bAML\.[TM]\d{4}(?:\.\d{3})?\b"),
    re.compile(r"\bLLM\d{2}:20\d{2}\b"),
    re.compile(r"\bML\d{2}:2023\b"),
]


def _matrix_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "controls.md").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and re.fullmatch(r"[A-Z]+(?:-[A-Z]+)?-\d{2}", cells[0]):
            rows.append(cells)
    return rows


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    missing = []
    for target in LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        if not (doc.parent / target).exists():
            missing.append(target)
    assert not missing, f"{doc.relative_to(ROOT)} links to missing paths: {missing}"


def test_control_matrix_has_rows_with_code_and_tests() -> None:
    rows = _matrix_rows()
    assert len(rows) >= 20
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate control IDs"
    for row in rows:
        assert len(row) == 7, f"{row[0]}: expected 7 columns, got {len(row)}"


def _expand(ref: str) -> list[str]:
    """``a/{b,c}.py`` → ``a/b.py``, ``a/c.py``."""
    m = re.search(r"\{([^}]+)\}", ref)
    if not m:
        return [ref]
    return [ref[: m.start()] + alt + ref[m.end() :] for alt in m.group(1).split(",")]


def _matrix_refs(cell: str) -> list[tuple[str, str]]:
    """(path, test name) pairs of one cell, resolving the matrix's shorthands: ``…/x.py`` is
    beside the previous full path, ``::name`` is in the previous file."""
    refs: list[tuple[str, str]] = []
    last_dir, last_file = "", ""
    for ref in re.findall(r"`([^`]+)`", cell):
        path, _, name = ref.partition("::")
        if not path and name and last_file:
            refs.append((last_file, name))
            continue
        if path.startswith("…/") and last_dir:
            path = f"{last_dir}/{path[2:]}"
        if "/" not in path or " " in path:
            continue
        for one in _expand(path):
            refs.append((one, name))
            last_file = one
        last_dir = str(Path(_expand(path)[0]).parent)
    return refs


def test_control_matrix_paths_and_tests_exist() -> None:
    problems = []
    for row in _matrix_rows():
        for cell in (row[3], row[4], row[5]):
            for path, name in _matrix_refs(cell):
                target = ROOT / path
                if not target.exists():
                    problems.append(f"{row[0]}: {path} does not exist")
                elif name and target.is_file():
                    func = name.split("::")[-1].split("[")[0]
                    if not re.search(rf"\b(def|class) {re.escape(func)}\b", target.read_text()):
                        problems.append(f"{row[0]}: {func} not found in {path}")
    assert not problems, "\n".join(problems)


def test_governance_ids_were_checked() -> None:
    if not GOVERNANCE.exists():
        pytest.skip(f"{GOVERNANCE} is not beside the checkout (it is in CI and developer sessions)")
    checked = GOVERNANCE.read_text(encoding="utf-8")
    unknown = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for pattern in ID_PATTERNS:
            unknown |= {m for m in pattern.findall(text) if m not in checked}
    assert not unknown, f"IDs cited but not in GOVERNANCE.md: {sorted(unknown)}"


def test_readme_make_targets_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(re.findall(r"`?make ([a-z][a-z0-9-]*)", readme))
    listed = subprocess.run(
        ["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", listed, flags=re.MULTILINE))
    assert targets, "README names no make target"
    assert targets <= defined, f"README names undefined targets: {sorted(targets - defined)}"
