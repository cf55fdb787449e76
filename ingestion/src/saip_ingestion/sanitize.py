"""Text sanitization with an audit trail.

Each text field goes through, until nothing changes (at most four passes):

1. Unicode NFKC normalisation (UAX #15): folds compatibility look-alikes such as full-width
   ``ＡＢＣ``, ligatures and mathematical alphanumerics ``𝐀`` to their plain forms;
2. markup stripping: HTML/XML tags and comments removed (``script``/``style`` content dropped),
   character references decoded (stdlib :class:`html.parser.HTMLParser`);
3. removal of control characters (category Cc except ``\\n`` and ``\\t``; ``\\r\\n``/``\\r``
   become ``\\n``), format characters (Cf: zero-width space/joiners, BOM, bidi overrides
   U+202A–202E, U+2066–2069), surrogates (Cs) and private-use characters (Co); U+2028/U+2029
   become ``\\n``;
4. trimming of leading/trailing whitespace.

Every change is returned as an :class:`AuditEntry` and stored with the record. Afterwards a field
that is empty, longer than its limit, or contains a word mixing Latin with Cyrillic or Greek
letters (a homograph/confusable, the "mixed script" check of UTS #39 §5.1) cannot be made valid:
the record is quarantined (``unsanitizable`` / ``confusable_text``); nothing is truncated.

Notes
-----
Markup stripping is lossy for text that legitimately contains ``<tag>``-like sequences (code
snippets); the audit trail records what was removed. NFKC does not fold cross-script homoglyphs
(Cyrillic ``а`` vs Latin ``a``): those are detected, not repaired.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Final

__all__ = ["AuditEntry", "SanitizeResult", "sanitize_text"]

_KEEP_CC: Final = frozenset("\n\t")
_DROP_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co"})
_MAX_PASSES: Final = 4
_MAX_LISTED: Final = 16


@dataclass(frozen=True)
class AuditEntry:
    """One change made to one field of a record."""

    field: str
    op: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"field": self.field, "op": self.op, "detail": self.detail}


@dataclass(frozen=True)
class SanitizeResult:
    """Sanitized text, the changes made, and the reason it is still invalid (if any)."""

    text: str
    audit: tuple[AuditEntry, ...]
    error: tuple[str, str] | None = None


class _Stripper(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("script", "style"):
            self._skip += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        self.tags.append("/" + tag)
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)

    def handle_comment(self, data: str) -> None:
        self.tags.append("!--")

    def handle_decl(self, decl: str) -> None:
        self.tags.append("!" + decl.split(" ", 1)[0])

    def handle_pi(self, data: str) -> None:
        self.tags.append("?")

    def unknown_decl(self, data: str) -> None:
        self.tags.append("![")


def _strip_markup(text: str) -> tuple[str, list[str]]:
    if "<" not in text and "&" not in text:
        return text, []
    parser = _Stripper()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts), parser.tags


def _codepoints(chars: list[str]) -> str:
    shown = ", ".join(f"U+{ord(c):04X}" for c in chars[:_MAX_LISTED])
    return shown + (f", … ({len(chars)} in all)" if len(chars) > _MAX_LISTED else "")


def _strip_controls(text: str) -> tuple[str, list[str]]:
    if text.isprintable():
        return text, []
    kept: list[str] = []
    removed: list[str] = []
    for ch in text:
        if ch in _KEEP_CC or unicodedata.category(ch) not in _DROP_CATEGORIES:
            kept.append(ch)
        else:
            removed.append(ch)
    return "".join(kept), removed


def _script(ch: str) -> str | None:
    if not ch.isalpha() or ch.isascii():
        return "LATIN" if ch.isascii() and ch.isalpha() else None
    name = unicodedata.name(ch, "")
    head = name.split(" ", 1)[0]
    return head if head in ("LATIN", "CYRILLIC", "GREEK") else None


def _mixed_script_word(text: str) -> str | None:
    if text.isascii():
        return None
    for word in text.split():
        scripts = {s for s in map(_script, word) if s is not None}
        if "LATIN" in scripts and len(scripts) > 1:
            return word
    return None


def sanitize_text(value: str, *, field: str, max_length: int) -> SanitizeResult:
    """Sanitize one text field; see the module docstring for the steps and the audit trail.

    Parameters
    ----------
    value:
        The field as received (already schema-valid).
    field:
        Dotted field name recorded in the audit entries (e.g. ``"payload.instruction"``).
    max_length:
        Limit in characters after sanitization.
    """
    audit: list[AuditEntry] = []
    text = value
    for _ in range(_MAX_PASSES):
        before = text
        normalized = unicodedata.normalize("NFKC", text)
        if normalized != text:
            audit.append(
                AuditEntry(field, "nfkc", f"length {len(text)} -> {len(normalized)} characters")
            )
            text = normalized
        stripped, tags = _strip_markup(text)
        if stripped != text:
            shown = ", ".join(dict.fromkeys(tags[:_MAX_LISTED])) or "character references"
            audit.append(AuditEntry(field, "strip_markup", f"removed {shown}"))
            text = stripped
        newlines = (text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n")).replace(
            "\u2029", "\n"
        )
        if newlines != text:
            audit.append(AuditEntry(field, "normalize_newlines", "CR, CRLF, U+2028/9 -> LF"))
            text = newlines
        cleaned, removed = _strip_controls(text)
        if cleaned != text:
            op = "strip_control" if any(unicodedata.category(c) == "Cc" for c in removed) else ""
            op = op or "strip_format"
            audit.append(AuditEntry(field, op, f"removed {_codepoints(removed)}"))
            text = cleaned
        if text == before:
            break
    else:
        return SanitizeResult(text, tuple(audit), ("unsanitizable", f"{field} does not converge"))
    trimmed = text.strip()
    if trimmed != text:
        audit.append(AuditEntry(field, "trim", f"removed {len(text) - len(trimmed)} characters"))
        text = trimmed
    if not text:
        return SanitizeResult(text, tuple(audit), ("unsanitizable", f"{field} is empty"))
    if len(text) > max_length:
        detail = f"{field} has {len(text)} characters after sanitization (limit {max_length})"
        return SanitizeResult(text, tuple(audit), ("oversized_field", detail))
    word = _mixed_script_word(text)
    if word is not None:
        detail = f"{field} mixes Latin with Cyrillic/Greek letters in {word[:40]!r}"
        return SanitizeResult(text, tuple(audit), ("confusable_text", detail))
    return SanitizeResult(text, tuple(audit))


def audit_json(entries: tuple[AuditEntry, ...] | list[AuditEntry]) -> list[dict[str, Any]]:
    """Audit entries as JSON-able dicts."""
    return [e.as_dict() for e in entries]
