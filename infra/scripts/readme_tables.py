"""Regenerate the Inputs/Outputs tables of a module README from variables.tf/outputs.tf.

    .venv/bin/python infra/scripts/readme_tables.py infra/aws/modules/kms-key [...]

Rewrites everything between the `## Inputs` heading and the next `## ` heading after `## Outputs`
(tests/infra/test_infra_hcl.py fails when a README and its module disagree).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import hcl2


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _cell(text: Any) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def tables(module: Path) -> str:
    variables = _clean(hcl2.load((module / "variables.tf").open()))["variable"]
    outputs = _clean(hcl2.load((module / "outputs.tf").open()))["output"]
    lines = ["## Inputs", "", "| Name | Type | Default | Description |", "|---|---|---|---|"]
    for entry in variables:
        for name, body in entry.items():
            default = "required" if "default" not in body else f"`{_cell(body['default'])}`"
            vtype = _cell(body.get("type", "")).replace("${", "").replace("}", "")
            lines.append(
                f"| `{name}` | `{vtype[:60]}` | {default} | {_cell(body.get('description', ''))} |"
            )
    lines += ["", "## Outputs", "", "| Name | Description |", "|---|---|"]
    for entry in outputs:
        for name, body in entry.items():
            lines.append(f"| `{name}` | {_cell(body.get('description', ''))} |")
    return "\n".join(lines) + "\n"


def main(paths: list[str]) -> None:
    for raw in paths:
        module = Path(raw)
        readme = module / "README.md"
        text = readme.read_text() if readme.exists() else "# module\n\n## Inputs\n\n## Outputs\n"
        start = text.index("## Inputs")
        after = text.index("## Outputs")
        rest = text[after + len("## Outputs") :]
        nxt = re.search(r"^## ", rest, re.M)
        tail = rest[nxt.start() :] if nxt else ""
        readme.write_text(text[:start] + tables(module) + ("\n" + tail if tail else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
