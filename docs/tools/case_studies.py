"""Run the executable case studies and embed their output in ``docs/case_studies/<name>.md``.

Each case study has a script ``docs/case_studies/scripts/<name with _>.py`` whose standard output
is deterministic (fixed seeds; no timestamps, random key IDs or paths). The markdown holds that
output between the markers ``BEGIN`` and ``END`` below, inside a ``text`` code block.

    python docs/tools/case_studies.py --print NAME        # run one, print its output
    python docs/tools/case_studies.py --write NAME...     # run and re-embed (make case-studies)
    python docs/tools/case_studies.py --check NAME...     # exit 1 if an embedded output is stale

A script that fails, times out or prints nothing is an error (exit 1); nothing is written then.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "case_studies"
BEGIN = "<!-- BEGIN GENERATED OUTPUT: make case-studies rewrites this block; do not edit -->"
END = "<!-- END GENERATED OUTPUT -->"
TIMEOUT = 180.0


class CaseStudyError(RuntimeError):
    """A case study could not be run or its document has no output block."""


def script_of(name: str) -> Path:
    path = DOCS / "scripts" / f"{name.replace('-', '_')}.py"
    if not path.is_file():
        raise CaseStudyError(f"no case study named {name!r} ({path.relative_to(ROOT)} missing)")
    return path


def run(name: str, *, python: str = sys.executable) -> str:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    try:
        proc = subprocess.run(
            [python, str(script_of(name))],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            cwd=ROOT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise CaseStudyError(f"{name}: timed out after {TIMEOUT:.0f} s") from exc
    if proc.returncode != 0 or not proc.stdout.strip():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise CaseStudyError(f"{name}: exit {proc.returncode}\n{tail}")
    return proc.stdout


def block(output: str) -> str:
    return f"{BEGIN}\n\n```text\n{output.rstrip()}\n```\n\n{END}"


def embedded(doc: Path) -> str:
    text = doc.read_text(encoding="utf-8")
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        shown = doc.relative_to(ROOT) if doc.is_relative_to(ROOT) else doc
        raise CaseStudyError(f"{shown}: needs exactly one generated-output block")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def write(doc: Path, output: str) -> bool:
    """Replace the block; True when the document changed."""
    old = embedded(doc)
    new = block(output)
    if old == new:
        return False
    doc.write_text(doc.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return True


def is_stale(doc: Path, output: str) -> bool:
    return embedded(doc) != block(output)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--print", dest="print_", action="store_true")
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    ap.add_argument("names", nargs="+")
    args = ap.parse_args(argv)
    stale = []
    try:
        for name in args.names:
            output = run(name)
            doc = DOCS / f"{name}.md"
            if args.print_:
                sys.stdout.write(output)
            elif args.write:
                changed = write(doc, output)
                print(f"case-studies: {name}: {'updated' if changed else 'unchanged'}")
            elif is_stale(doc, output):
                stale.append(name)
    except CaseStudyError as exc:
        print(f"case-studies: {exc}", file=sys.stderr)
        return 1
    if stale:
        print(
            f"case-studies: stale output in {', '.join(stale)}: run `make case-studies`",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
