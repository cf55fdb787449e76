"""Supply-chain checks: CycloneDX SBOMs (Python environment, npm lock file), a dependency audit
against whichever vulnerability source answers, and a secrets scan of the tracked tree.

Run by ``make supply-chain`` with the tools of ``.venv-supply`` (pinned in
``make/supply-chain-requirements.txt``)::

    python docs/tools/supply_chain.py --out .run/supply-chain [--audit required|skip]

Writes ``sbom-python.cdx.json``, ``sbom-npm.cdx.json``, ``pip-audit.json``, ``npm-audit.json``,
``secrets.json`` and ``summary.json`` to ``--out``. Exit 0 only when both SBOMs were written, no
secret outside the reviewed baseline (``.secrets.baseline``) was found, and each audit either ran
clean or was explicitly skipped (``--audit skip``). An audit whose vulnerability source cannot be
reached is reported as ``unreachable`` and fails the run unless skipped: an audit that did not
happen is never reported as a clean one. Exit 1 otherwise, naming the reason; exit 2 on a bad
argument, before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / ".secrets.baseline"


def _tool(name: str) -> str:
    """A tool from the interpreter's own venv, else ``.venv-supply/bin``, else PATH."""
    for here in (Path(sys.executable).parent / name, ROOT / ".venv-supply" / "bin" / name):
        if here.exists():
            return str(here)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"supply-chain: {name} not found (run `make supply-chain-venv`)")
    return found


def _run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)


def sbom_python(out: Path, python: Path) -> dict[str, Any]:
    target = out / "sbom-python.cdx.json"
    proc = _run(
        [
            _tool("cyclonedx-py"),
            "environment",
            "--output-reproducible",
            "--of",
            "JSON",
            "--pyproject",
            str(ROOT / "pyproject.toml"),
            "-o",
            str(target),
            str(python),
        ]
    )
    if proc.returncode != 0 or not target.is_file():
        return {"status": "failed", "detail": proc.stderr.strip()[-500:]}
    doc = json.loads(target.read_text(encoding="utf-8"))
    return {"status": "ok", "file": target.name, "components": len(doc.get("components", []))}


def sbom_npm(out: Path) -> dict[str, Any]:
    """``npm sbom`` needs a root version; the lock file is copied to a scratch directory and a
    placeholder version added there (the repository's files are not touched)."""
    target = out / "sbom-npm.cdx.json"
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("package.json", "package-lock.json"):
            data = json.loads((ROOT / name).read_text(encoding="utf-8"))
            data.setdefault("version", "0.0.0")
            if name == "package-lock.json":
                data["packages"][""].setdefault("version", "0.0.0")
            (Path(tmp) / name).write_text(json.dumps(data), encoding="utf-8")
        proc = _run(["npm", "sbom", "--sbom-format", "cyclonedx", "--package-lock-only"], cwd=tmp)
    if proc.returncode != 0:
        return {"status": "failed", "detail": proc.stderr.strip()[-500:]}
    doc = json.loads(proc.stdout)
    target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"status": "ok", "file": target.name, "components": len(doc.get("components", []))}


def classify_pip_audit(report: dict[str, Any]) -> dict[str, Any]:
    """``ok``/``vulnerable``, or ``unreachable`` when the source could look up no package."""
    deps = report.get("dependencies", [])
    audited = [d for d in deps if "skip_reason" not in d]
    vulns = [
        {"name": d["name"], "version": d["version"], "ids": [v["id"] for v in d["vulns"]]}
        for d in audited
        if d.get("vulns")
    ]
    if deps and not audited:
        return {
            "status": "unreachable",
            "detail": f"the vulnerability source answered for none of {len(deps)} packages "
            f"(first: {deps[0].get('skip_reason', '')})",
        }
    return {
        "status": "vulnerable" if vulns else "ok",
        "audited": len(audited),
        "not_audited": len(deps) - len(audited),
        "vulnerabilities": vulns,
    }


def pip_audit(out: Path, python: Path) -> dict[str, Any]:
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    target = out / "pip-audit.json"
    proc = _run(
        [
            _tool("pip-audit"),
            "--path",
            site.stdout.strip(),
            "-s",
            "pypi",
            "-f",
            "json",
            "-o",
            str(target),
            "--progress-spinner",
            "off",
        ]
    )
    if not target.is_file():
        return {"status": "unreachable", "detail": proc.stderr.strip()[-300:]}
    return classify_pip_audit(json.loads(target.read_text(encoding="utf-8")))


def classify_npm_audit(code: int, stdout: str) -> dict[str, Any]:
    try:
        report = json.loads(stdout) if stdout.strip() else {}
    except json.JSONDecodeError:
        return {"status": "unreachable", "detail": stdout[:300]}
    if "metadata" in report and "vulnerabilities" in report["metadata"]:
        counts = report["metadata"]["vulnerabilities"]
        found = {k: v for k, v in counts.items() if k != "total" and v}
        return {"status": "vulnerable" if found else "ok", "counts": counts}
    detail = report.get("message") or report.get("error", {}).get("summary") or f"exit {code}"
    return {"status": "unreachable", "detail": str(detail)[:300]}


def npm_audit(out: Path) -> dict[str, Any]:
    proc = _run(["npm", "audit", "--json", "--package-lock-only"], cwd=ROOT)
    (out / "npm-audit.json").write_text(proc.stdout or "{}", encoding="utf-8")
    return classify_npm_audit(proc.returncode, proc.stdout)


def _findings(results: dict[str, list[dict[str, Any]]]) -> set[tuple[str, str, str]]:
    return {(f, s["type"], s["hashed_secret"]) for f, items in results.items() for s in items}


def secrets(out: Path, baseline: Path = BASELINE, root: Path = ROOT) -> dict[str, Any]:
    """Scan every tracked file; findings not in the reviewed baseline are ``new``."""
    files = [
        f
        for f in _run(["git", "ls-files"], cwd=root).stdout.splitlines()
        if f != baseline.name and (root / f).is_file()
    ]
    proc = _run([_tool("detect-secrets"), "scan", *files], cwd=root)
    if proc.returncode != 0:
        return {"status": "failed", "detail": proc.stderr.strip()[-300:]}
    found = json.loads(proc.stdout)["results"]
    (out / "secrets.json").write_text(json.dumps(found, indent=2, sort_keys=True) + "\n")
    known = _findings(json.loads(baseline.read_text())["results"]) if baseline.is_file() else set()
    new = sorted(_findings(found) - known)
    return {
        "status": "new secrets" if new else "ok",
        "files_scanned": len(files),
        "baseline_findings": len(known),
        "new": [{"file": f, "type": t} for f, t, _ in new],
    }


def update_baseline(baseline: Path = BASELINE, root: Path = ROOT) -> list[str]:
    """Rewrite the baseline with every current finding; keep the review notes of known files and
    mark new files ``REVIEW`` (the diff of ``.secrets.baseline`` is what a reviewer reads)."""
    with tempfile.TemporaryDirectory() as tmp:
        secrets(Path(tmp), baseline=baseline, root=root)
        found = json.loads((Path(tmp) / "secrets.json").read_text(encoding="utf-8"))
    old = json.loads(baseline.read_text(encoding="utf-8")) if baseline.is_file() else {}
    notes = old.get("reviewed", {})
    for items in found.values():
        for item in items:
            item["is_secret"] = False
    doc = {**{k: v for k, v in old.items() if k not in ("results", "reviewed")}, "results": found}
    doc["reviewed"] = {f: notes.get(f, "REVIEW: confirm this is not a secret") for f in found}
    baseline.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sorted(f for f in found if f not in notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    ap.add_argument("--audit", choices=("required", "skip"), default="required")
    ap.add_argument(
        "--update-baseline",
        action="store_true",
        help="rewrite .secrets.baseline with the current findings, then stop",
    )
    args = ap.parse_args(argv)
    if args.update_baseline:
        new = update_baseline()
        print(f"supply-chain: baseline rewritten; files to review: {', '.join(new) or 'none'}")
        return 0
    if not args.python.is_file():
        print(f"supply-chain: --python {args.python} is not an interpreter", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "sbom_python": sbom_python(args.out, args.python),
        "sbom_npm": sbom_npm(args.out),
        "secrets": secrets(args.out),
    }
    if args.audit == "skip":
        summary["pip_audit"] = summary["npm_audit"] = {"status": "skipped (--audit skip)"}
    else:
        summary["pip_audit"] = pip_audit(args.out, args.python)
        summary["npm_audit"] = npm_audit(args.out)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    problems = [
        f"{name}: {part['status']}" + (f" ({part['detail']})" if "detail" in part else "")
        for name, part in summary.items()
        if part["status"] not in ("ok", "skipped (--audit skip)")
    ]
    for name, part in summary.items():
        print(f"supply-chain: {name}: {part['status']}", file=sys.stderr)
    if problems:
        print("supply-chain: FAILED —\n  " + "\n  ".join(problems), file=sys.stderr)
        if any("unreachable" in p for p in problems):
            print(
                "supply-chain: no vulnerability source answered from this machine; "
                "`make supply-chain AUDIT=skip` writes the SBOMs and the secrets scan without "
                "claiming an audit",
                file=sys.stderr,
            )
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    raise SystemExit(main())
