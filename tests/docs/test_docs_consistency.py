"""Docs move with the code: links resolve, the control matrix points at real code, tests,
Terraform runs and resources, governance IDs are ones that were checked (and not misapplied),
the playbook links real control rows, no doc points outside the repository, and README commands
and paths exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import controls_matrix as cm
import pytest

ROOT = Path(__file__).resolve().parents[2]
# shared/ sits beside the checkout in CI, and beside the worktrees' parent in developer sessions.
GOVERNANCE = next(
    (
        p / "shared" / "GOVERNANCE.md"
        for p in (ROOT.parent, ROOT.parent.parent)
        if (p / "shared" / "GOVERNANCE.md").exists()
    ),
    ROOT.parent / "shared" / "GOVERNANCE.md",
)
PLAYBOOK = ROOT / "docs" / "training_environment_security_playbook.md"


def _ours(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return not any(p.startswith(".") or p in {"node_modules", "build", "dist"} for p in parts)


DOCS = sorted(
    {
        p
        for p in [
            ROOT / "README.md",
            *ROOT.glob("docs/**/*.md"),
            *ROOT.glob("diagrams/*.md"),
            *ROOT.glob("*/**/README.md"),
            *ROOT.glob("*/docs/*.md"),
        ]
        if _ours(p)
    }
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
ID_PATTERNS = [
    re.compile(r"\bAML\.[TM]\d{4}(?:\.\d{3})?\b"),
    re.compile(r"\bLLM\d{2}:20\d{2}\b"),
    re.compile(r"\bML\d{2}:2023\b"),
]
NIST_ID = re.compile(r"\b(?:GOVERN|MAP|MEASURE|MANAGE) \d+(?:\.\d+)?\b")
ISO_ID = re.compile(r"(?<![\w.])A\.\d{1,2}(?:\.\d+){1,2}\b")


def _rows():  # type: ignore[no-untyped-def]
    return cm.parse(ROOT / "docs" / "controls.md")


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
    rows = _rows()
    assert len(rows) >= 20
    ids = [r.id for r in rows]
    assert len(ids) == len(set(ids)), "duplicate control IDs"
    for row in rows:
        assert len(row.cells) == 7, f"{row.id}: expected 7 columns, got {len(row.cells)}"
        assert cm.pytest_ids(row) or cm.terraform_runs(row), f"{row.id}: names no test"


def test_reference_checker_catches_bad_references() -> None:
    """Hostile case first: each kind of broken reference is reported."""
    bad = [
        cm.Ref("infra/aws/tests/kms_key.tftest.hcl", "no_such_run"),
        cm.Ref("infra/azure/main.tf", "", ("azurerm_key_vault_key.nope",)),
        cm.Ref("infra/aws/main.tf", "", ("module.nothing_*",)),
        cm.Ref("tests/docs/test_docs_consistency.py", "test_that_does_not_exist"),
        cm.Ref("infra/nowhere/main.tf"),
    ]
    assert all(cm.check(ROOT, r) for r in bad), [cm.check(ROOT, r) for r in bad]
    refs = cm.refs_of(
        "infra/aws/main.tf (aws_flow_log.vpc, module.*_role); "
        "infra/aws/tests/root.tftest.hcl::composed_stack"
    )
    assert refs == [
        cm.Ref("infra/aws/main.tf", "", ("aws_flow_log.vpc", "module.*_role")),
        cm.Ref("infra/aws/tests/root.tftest.hcl", "composed_stack"),
    ]


def test_control_matrix_references_exist_including_inf_rows() -> None:
    problems = []
    followed = 0
    for row in _rows():
        for refs in row.refs.values():
            for ref in refs:
                followed += 1
                problem = cm.check(ROOT, ref)
                if problem:
                    problems.append(f"{row.id}: {problem}")
    assert not problems, "\n".join(problems)
    inf = [r for r in _rows() if r.id.startswith("INF-")]
    assert inf
    assert all(cm.terraform_runs(r) or cm.pytest_ids(r) for r in inf)
    assert followed > 300


def _checked_ids() -> tuple[str, set[str], set[str]]:
    if not GOVERNANCE.exists():
        pytest.skip(f"{GOVERNANCE} is not beside the checkout (it is in CI and developer sessions)")
    text = GOVERNANCE.read_text(encoding="utf-8")
    nist = {
        m.group(1)
        for m in re.finditer(r"^\| ((?:GOVERN|MAP|MEASURE|MANAGE) \d+(?:\.\d+)?)", text, re.M)
    }
    iso_part = text.split("## 2.", 1)[1].split("## 3.", 1)[0]
    iso = set(re.findall(r"A\.\d{1,2}(?:\.\d+){1,2}", iso_part))
    return text, nist, iso


def test_governance_ids_were_checked() -> None:
    checked, nist, iso = _checked_ids()
    assert {"MEASURE 2.7", "GOVERN 6", "MAP 4"} <= nist
    assert {"A.7.5", "A.6.2.8", "A.10.3"} <= iso
    unknown = set()
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for pattern in ID_PATTERNS:
            unknown |= {m for m in pattern.findall(text) if m not in checked}
        unknown |= {m for m in NIST_ID.findall(text) if m not in nist}
        unknown |= {f"ISO {m}" for m in ISO_ID.findall(text) if m not in iso}
    assert not unknown, f"IDs cited but not in GOVERNANCE.md: {sorted(unknown)}"


# IDs once misapplied in the matrix; each may come back only where its meaning fits.
MISAPPLIED = {
    "GOVERN 6.1": "third-party entity risk incl. IP (not role separation)",
    "GOVERN 1.6": "the AI-system inventory (not a key-dependency audit)",
    "GOVERN 1.5": "monitoring-plan review (not configuration validation)",
    "A.6.2.3": "documentation of design and development (not configuration validation)",
    "LLM10:2025": "unbounded consumption of an LLM application (nothing here serves an LLM)",
}


def test_misapplied_ids_stay_out_of_the_matrix() -> None:
    for row in _rows():
        text = " ".join(row.cells.values())
        for ident, meaning in MISAPPLIED.items():
            assert ident not in text, f"{row.id} cites {ident}, which is {meaning}"
        if row.id.startswith("INF-"):
            assert not re.search(r"AML\.T0010\b(?!\.)", text), (
                f"{row.id}: AML.T0010 is not IaC review"
            )


def test_measure_2_7_is_not_a_catch_all() -> None:
    rows = _rows()
    cited = [r.id for r in rows if "MEASURE 2.7" in r.cells["governance"]]
    assert len(cited) <= len(rows) // 3, f"MEASURE 2.7 on {len(cited)} of {len(rows)} rows"


def test_playbook_ids_are_used_somewhere_else() -> None:
    """Every ID in the playbook's governance mapping is cited by a control row, the threat model,
    or the playbook's own supply-chain section (no ID listed for decoration)."""
    text = PLAYBOOK.read_text(encoding="utf-8")
    mapping = text.split("## 10. Governance mapping", 1)[1].split("\n## ", 1)[0]
    body = text.split("## 10. Governance mapping", 1)[0]
    elsewhere = "\n".join(
        [
            (ROOT / "docs" / "controls.md").read_text(encoding="utf-8"),
            (ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8"),
            body,
        ]
    )
    table = "\n".join(line for line in mapping.splitlines() if line.startswith("|"))
    listed = set(NIST_ID.findall(table)) | set(ISO_ID.findall(table))
    for pattern in ID_PATTERNS:
        listed |= set(pattern.findall(table))
    unused = sorted(i for i in listed if i not in elsewhere)
    assert not unused, f"listed in the playbook mapping but used nowhere: {unused}"


def test_playbook_has_the_course_sections_and_links_real_rows() -> None:
    text = PLAYBOOK.read_text(encoding="utf-8")
    headings = [h.lower() for h in re.findall(r"^#{2,3} (.+)$", text, flags=re.MULTILINE)]
    for needed in (
        "secure ingestion patterns",
        "encryption best practices",
        "federated learning security",
        "poisoning detection workflows",
        "cloud-specific controls",
        "governance mapping",
        "isolated training networks",
        "secrets management",
        "gpu and compute isolation",
        "just-in-time, break-glass",
        "monitoring and detection",
        "incident response",
        "severity, escalation and communication",
        "aws",
        "azure",
        "gcp",
    ):
        assert any(needed in h for h in headings), f"playbook lacks a section on {needed!r}"
    known = {r.id for r in _rows()}
    cited = set(re.findall(r"\b(?:ING|ENC|POI|FL|INF)-\d{2}\b", text))
    ranges = re.findall(r"\b([A-Z]+)-(\d{2}) … [A-Z]+-(\d{2})\b", text)
    for prefix, lo, hi in ranges:
        cited |= {f"{prefix}-{n:02d}" for n in range(int(lo), int(hi) + 1)}
    assert cited - known == set(), f"playbook cites unknown rows: {sorted(cited - known)}"
    assert len(cited) >= 40


def test_every_numbered_practice_links_a_row_or_says_guidance() -> None:
    text = PLAYBOOK.read_text(encoding="utf-8")
    body = text.split("## 10. Governance mapping", 1)[0]
    items = re.split(r"\n(?=\d+\. )", body)
    practices = [i for i in items if re.match(r"\d+\. ", i)]
    assert len(practices) >= 40
    bad = [
        p.splitlines()[0][:80]
        for p in practices
        if not re.search(r"\(controls\.md#|\*\*Guidance|`make |saip ", p)
    ]
    assert not bad, f"practices without a control row or a Guidance mark: {bad}"


OUTSIDE = re.compile(r"DESIGN\.md|GOVERNANCE\.md|/work/|shared/|HELPERS\.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_reference_nothing_outside_the_repository(doc: Path) -> None:
    hits = OUTSIDE.findall(doc.read_text(encoding="utf-8"))
    assert not hits, f"{doc.relative_to(ROOT)} refers to files users do not have: {hits}"


def test_readme_paths_exist_as_written() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    tops = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    missing = []
    for token in re.findall(r"`([^`\s]+/[^`\s]*)`", readme):
        checkable = token.split("/")[0] in tops and not any(c in token for c in "*{<$")
        if checkable and not (ROOT / token).exists():
            missing.append(token)
    assert not missing, f"README names paths that do not exist: {missing}"


def test_readme_make_targets_exist() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = set(re.findall(r"`?make ([a-z][a-z0-9-]*)", readme))
    listed = subprocess.run(
        ["make", "-pRrq", "-f", "Makefile", ":"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    defined = set(re.findall(r"^([a-z][a-z0-9-]*):", listed, flags=re.MULTILINE))
    assert targets, "README names no make target"
    assert targets <= defined, f"README names undefined targets: {sorted(targets - defined)}"
