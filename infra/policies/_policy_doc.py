"""Helpers shared by the custom checkov checks: read an IAM-style policy document however checkov
hands it over.

checkov evaluates ``jsonencode({...})`` only partly: a literal policy arrives as a dict, a policy
with ``concat``/conditionals as a string holding the rendered Python repr, and one built from a
``local`` or a variable as the bare expression (``jsonencode(local.policy)``). :func:`load_policy`
returns the dict when there is one; :func:`statement_texts` splits a rendered string into one text
per statement (split at each ``Effect`` key) so the checks can still read it; a bare expression is
unreadable and the checks report UNKNOWN for it (the modules keep their policies inline for this
reason, and variable-built policies are guarded by variable validations tested in
``terraform test``).
"""

from __future__ import annotations

import json
import re
from typing import Any

_EFFECT = re.compile(r"""['"]Effect['"]\s*:\s*['"](Allow|Deny)['"]""")
_ACTION = re.compile(r"""['"](Not)?Action['"]\s*:\s*(\[[^\]]*\]|['"][^'"]*['"])""")
_QUOTED = re.compile(r"""['"]([^'"]*)['"]""")


def unwrap(value: Any) -> Any:
    """Strip checkov's one-element list wrapping (``{"policy": [doc]}``)."""
    while isinstance(value, list) and len(value) == 1:
        value = value[0]
    return value


def load_policy(value: Any) -> dict[str, Any] | None:
    """The policy as a dict, or ``None`` when checkov could not evaluate it to one."""
    value = unwrap(value)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, dict) and isinstance(unwrap(value.get("Statement")), str):
        return None  # statements left as an unrendered expression: read them as text
    return value if isinstance(value, dict) else None


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements of a policy document, flattened to a list of dicts."""
    raw = policy.get("Statement", [])
    if isinstance(raw, dict):
        raw = [raw]
    out: list[dict[str, Any]] = []
    for item in raw if isinstance(raw, list) else []:
        item = unwrap(item)
        if isinstance(item, dict):
            out.append(item)
        elif isinstance(item, list):
            out.extend(s for s in item if isinstance(s, dict))
    return out


def as_list(value: Any) -> list[Any]:
    """A scalar or list field (``Action``, ``Resource``) as a flat list."""
    value = unwrap(value)
    if value is None:
        return []
    if isinstance(value, list):
        flat: list[Any] = []
        for v in value:
            flat.extend(as_list(v))
        return flat
    return [value]


def statement_texts(value: Any) -> list[tuple[str, str]]:
    """``(effect, text)`` per statement of a partly rendered policy string; empty if none."""
    text = str(unwrap(value)).replace("\\", "")  # checkov escapes the quotes of nested strings
    marks = list(_EFFECT.finditer(text))
    out = []
    for i, m in enumerate(marks):
        start = text.rfind("{", 0, m.start())
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((m.group(1), text[max(start, 0) : end]))
    return out


def text_actions(text: str) -> tuple[list[str], bool]:
    """Actions named in one statement's text, and whether it uses ``NotAction``."""
    actions: list[str] = []
    not_action = False
    for m in _ACTION.finditer(text):
        not_action = not_action or bool(m.group(1))
        actions.extend(_QUOTED.findall(m.group(2)))
    return actions, not_action
