"""Read ``docs/controls.md``: its rows and every code, Terraform and test reference in them.

Shared by ``tests/docs/test_docs_consistency.py`` (do the references exist?) and
``docs/tools/evidence.py`` (did the named tests pass?). Two reference styles are in use:

* backticked, with shorthands: ``…/x.py`` lies beside the previous full path, ``::name`` is in the
  previous file, ``a/{b,c}.py`` expands to two paths;
* plain (the INF rows): ``path``, ``path::run_name`` and ``path (type.name, type2.*)`` separated
  by ``;`` or ``,``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROW_ID = re.compile(r"[A-Z]+(?:-[A-Z]+)?-\d{2}")
COLUMNS = ("id", "control", "threat", "code", "terraform", "tests", "governance")
_PLAIN_PATH = re.compile(
    r"(?<![\w./{…-])((?:[\w.-]+/)+[\w.*-]*(?:\.[a-z]+)*/?)(?:::([\w\[\]-]+))?(?:\s*\(([^)]*)\))?"
)


@dataclass(frozen=True)
class Ref:
    """One reference: a path, optionally a test/run name, optionally Terraform addresses."""

    path: str
    name: str = ""
    addresses: tuple[str, ...] = ()


@dataclass
class Row:
    id: str
    section: str
    cells: dict[str, str]
    line: int
    refs: dict[str, list[Ref]] = field(default_factory=dict)


def _expand(ref: str) -> list[str]:
    m = re.search(r"\{([^}]+)\}", ref)
    if not m:
        return [ref]
    return [ref[: m.start()] + alt + ref[m.end() :] for alt in m.group(1).split(",")]


def _backticked(cell: str) -> list[Ref]:
    refs: list[Ref] = []
    last_dir, last_file = "", ""
    for ref in re.findall(r"`([^`]+)`", cell):
        path, _, name = ref.partition("::")
        if not path and name and last_file:
            refs.append(Ref(last_file, name))
            continue
        if path.startswith("…/") and last_dir:
            path = f"{last_dir}/{path[2:]}"
        if "/" not in path or " " in path or path.startswith(("http", "/")):
            continue
        for one in _expand(path):
            refs.append(Ref(one, name))
            last_file = one
        last_dir = str(Path(_expand(path)[0]).parent)
    return refs


def _plain(cell: str) -> list[Ref]:
    refs: list[Ref] = []
    text = re.sub(r"`[^`]*`", " ", cell)
    for m in _PLAIN_PATH.finditer(text):
        path, name, addrs = m.group(1), m.group(2) or "", m.group(3) or ""
        if not re.match(
            r"(infra|tests|encryption|ingestion|pipeline|federated-learning|poisoning-detection|docs|benchmarks|make)/",
            path,
        ):
            continue
        addresses = tuple(
            a.strip() for a in addrs.split(",") if re.fullmatch(r"\s*[\w*]+\.[\w*]+\s*", a)
        )
        refs.append(Ref(path.rstrip("/"), name, addresses))
    return refs


def refs_of(cell: str) -> list[Ref]:
    """Every reference in one cell, in order, both styles."""
    return _backticked(cell) + _plain(cell)


def parse(path: Path) -> list[Row]:
    rows: list[Row] = []
    section = ""
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not ROW_ID.fullmatch(cells[0]):
            continue
        row = Row(cells[0], section, dict(zip(COLUMNS, cells, strict=False)), n)
        row.refs = {col: refs_of(row.cells.get(col, "")) for col in ("code", "terraform", "tests")}
        rows.append(row)
    return rows


def check(root: Path, ref: Ref) -> str | None:
    """``None`` when the reference resolves, else a one-line problem."""
    target = root / ref.path
    if "*" in ref.path:
        return None if list(root.glob(ref.path)) else f"{ref.path} matches nothing"
    if not target.exists():
        return f"{ref.path} does not exist"
    if not target.is_file():
        return None
    text = target.read_text(encoding="utf-8")
    if ref.name:
        func = ref.name.split("::")[-1].split("[")[0]
        if ref.path.endswith(".hcl"):
            if not re.search(rf'^\s*run\s+"{re.escape(func)}"', text, flags=re.MULTILINE):
                return f'run "{func}" not found in {ref.path}'
        elif not re.search(rf"\b(def|class) {re.escape(func)}\b", text):
            return f"{func} not found in {ref.path}"
    for address in ref.addresses:
        kind, _, name = address.partition(".")
        if kind == "module":
            pattern = rf'^module\s+"{_glob_re(name)}"'
        else:
            pattern = rf'^(resource|data)\s+"{_glob_re(kind)}"\s+"{_glob_re(name)}"'
        if not re.search(pattern, text, flags=re.MULTILINE):
            return f"{address} not declared in {ref.path}"
    return None


def _glob_re(part: str) -> str:
    return ".*".join(re.escape(p) for p in part.split("*"))


def pytest_ids(row: Row) -> list[str]:
    """The pytest node IDs (``path::name``) a row names as its proof."""
    return [f"{r.path}::{r.name}" for r in row.refs["tests"] if r.path.endswith(".py") and r.name]


def terraform_runs(row: Row) -> list[str]:
    """The ``terraform test`` runs (``file.tftest.hcl::run``) a row names as its proof."""
    return [f"{r.path}::{r.name}" for r in row.refs["tests"] if r.path.endswith(".hcl") and r.name]
