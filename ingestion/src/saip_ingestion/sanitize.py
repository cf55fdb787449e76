"""Text sanitization with an audit trail.

Each text field goes through, until nothing changes (at most four passes):

1. Unicode NFKC normalisation (UAX #15): folds compatibility look-alikes such as full-width
   ``ＡＢＣ``, ligatures and mathematical alphanumerics ``𝐀`` to their plain forms;
2. markup stripping: HTML/XML tags, comments, declarations and processing instructions removed
   (``script``/``style`` content dropped), character references decoded (:func:`html.unescape`),
   by a linear tokenizer (:func:`_strip_markup`; stdlib ``html.parser`` raised
   ``AssertionError`` on ``<![foo[`` and was superlinear on runs of ``<a``/``<!--``); markup that
   is opened and never closed makes the field ``unsanitizable`` (never guessed);
3. removal of control characters (category Cc except ``\\n`` and ``\\t``; ``\\r\\n``/``\\r``
   become ``\\n``), format characters (Cf: zero-width space/joiners, BOM, bidi overrides
   U+202A–202E, U+2066–2069), surrogates (Cs) and private-use characters (Co); U+2028/U+2029
   become ``\\n``;
4. trimming of leading/trailing whitespace.

Every change is returned as an :class:`AuditEntry` and stored with the record. Afterwards a field
that is empty, longer than its limit, or contains a word mixing Latin letters with another
script outside the UTS #39 §5.2 "highly restrictive" companions (Han, Hiragana, Katakana,
Bopomofo, Hangul) — a homograph/confusable such as Cyrillic ``а``, Greek ``ο`` or Cherokee ``Ꭺ``
inside a Latin word — cannot be made valid: the record is quarantined (``unsanitizable`` /
``confusable_text``); nothing is truncated. A field starting with a spreadsheet formula prefix
(``= + - @``, TAB, CR: OWASP "CSV injection") is stored unchanged and flagged in the audit
(``flag_formula_prefix``): escaping belongs to a CSV export, the store is JSON.

Notes
-----
Markup stripping is lossy for text that legitimately contains ``<tag>``-like sequences (code
snippets); the audit trail records what was removed. A ``>`` inside a quoted attribute value
ends the tag early; the rest stays as text without ``<`` (harmless). NFKC does not fold
cross-script homoglyphs (Cyrillic ``а`` vs Latin ``a``): mixed-script words are detected, not
repaired; a word written entirely in one non-Latin script (whole-script confusable) passes.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
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


_COMMENT_END: Final = re.compile(r"--!?>")
_RAWTEXT_END: Final = {
    "script": re.compile(r"</script[\t\n\f />]", re.IGNORECASE),
    "style": re.compile(r"</style[\t\n\f />]", re.IGNORECASE),
}
_TAG_NAME: Final = re.compile(r"[A-Za-z][^\t\n\f />]*")


class _UnclosedError(Exception):
    """Markup opened but never closed (the policy is to reject, never to guess)."""

    def __init__(self, what: str, at: int) -> None:
        super().__init__(f"unclosed {what} at character {at}")


def _strip_markup(text: str) -> tuple[str, list[str]]:
    """Remove tags, comments, declarations and ``script``/``style`` content; decode references.

    A linear tokenizer (each character is examined a bounded number of times, every search
    moves forward): ``<`` starts markup only when followed by an ASCII letter (start tag),
    ``/`` + letter (end tag), ``!`` (comment ``<!-- … -->`` — ``--!>`` also closes it, as in the
    WHATWG HTML tokenizer — or a declaration/CDATA, which ends at the next ``>``) or ``?``
    (processing instruction, ends at ``>``); any other ``<`` is text. A tag ends at the first
    ``>`` (quotes are not honoured: a ``>`` inside an attribute value ends the tag early and the
    rest stays as harmless text without ``<``). Markup that is opened and never closed raises
    :class:`_UnclosedError`: the field is quarantined, nothing is guessed.
    """
    if "<" not in text and "&" not in text:
        return text, []
    parts: list[str] = []
    tags: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        p = text.find("<", pos)
        if p < 0:
            parts.append(text[pos:])
            break
        parts.append(text[pos:p])
        nxt = text[p + 1 : p + 2]
        if text.startswith("<!--", p):
            m = _COMMENT_END.search(text, p + 2)
            if m is None:
                raise _UnclosedError("comment", p)
            tags.append("!--")
            pos = m.end()
        elif nxt in ("!", "?"):
            end = text.find(">", p + 2)
            if end < 0:
                raise _UnclosedError("declaration", p)
            tags.append(nxt if nxt == "?" else "!" + text[p + 2 : min(end, p + 10)].split(" ")[0])
            pos = end + 1
        elif nxt == "/" and text[p + 2 : p + 3].isascii() and text[p + 2 : p + 3].isalpha():
            end = text.find(">", p + 2)
            if end < 0:
                raise _UnclosedError("end tag", p)
            m = _TAG_NAME.match(text, p + 2)
            tags.append("/" + (m.group(0).lower()[:32] if m else ""))
            pos = end + 1
        elif nxt.isascii() and nxt.isalpha():
            end = text.find(">", p + 1)
            if end < 0:
                raise _UnclosedError("tag", p)
            m = _TAG_NAME.match(text, p + 1)
            name = m.group(0).lower()[:32] if m else ""
            tags.append(name)
            pos = end + 1
            raw = _RAWTEXT_END.get(name)
            if raw is not None and not text.startswith("/", end - 1):
                close = raw.search(text, pos)
                if close is None:
                    raise _UnclosedError(f"<{name}> element", p)
                end = text.find(">", close.end() - 1)
                if end < 0:
                    raise _UnclosedError("end tag", close.start())
                tags.append("/" + name)
                pos = end + 1
        else:  # "<" followed by anything else is text ("a < b", "x<3")
            parts.append("<")
            pos = p + 1
    out = "".join(parts)
    if "&" in out:
        out = html.unescape(out)  # linear: one regex pass over bounded references
    return out, tags


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


#: scripts that may share a word with Latin: UTS #39 §5.2 "Highly Restrictive" (Japanese, Chinese
#: with Bopomofo, Korean); any other script mixed with Latin in one word is a confusable risk
_LATIN_COMPANIONS: Final = frozenset({"HAN", "HIRAGANA", "KATAKANA", "BOPOMOFO", "HANGUL"})
_SCRIPT_ALIASES: Final = {"CJK": "HAN", "IDEOGRAPHIC": "HAN", "HALFWIDTH": "KATAKANA"}
_NOT_A_SCRIPT: Final = frozenset(
    {"MODIFIER", "COMBINING", "FULLWIDTH", "MATHEMATICAL", "SUPERSCRIPT"}
)
#: a field starting with one of these is a spreadsheet formula when exported to CSV (OWASP "CSV
#: injection"): flagged in the audit trail, stored unchanged (the store is JSON, not CSV)
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")


def _script(ch: str) -> str | None:
    """Approximate Unicode script of a letter (first word of its name; UAX #24 would be exact)."""
    if not ch.isalpha():
        return None
    if ch.isascii():
        return "LATIN"
    head = unicodedata.name(ch, "").split(" ", 1)[0]
    if not head or head in _NOT_A_SCRIPT:
        return None
    return _SCRIPT_ALIASES.get(head, head)


def _mixed_script_word(text: str) -> tuple[str, str] | None:
    """First word mixing Latin with a script outside :data:`_LATIN_COMPANIONS`, and that script.

    Words written entirely in one non-Latin script (Cherokee, Cyrillic, …) are legitimate text
    and pass; whole-script confusables (a word of Cherokee letters that reads as Latin) are a
    documented limitation, not detected here.
    """
    if text.isascii():
        return None
    for word in text.split():
        if word.isascii():
            continue
        scripts = {s for s in map(_script, word) if s is not None}
        if "LATIN" in scripts:
            others = scripts - {"LATIN"} - _LATIN_COMPANIONS
            if others:
                return word, sorted(others)[0]
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
        try:
            stripped, tags = _strip_markup(text)
        except _UnclosedError as exc:
            return SanitizeResult(text, tuple(audit), ("unsanitizable", f"{field}: {exc}"))
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
    mixed = _mixed_script_word(text)
    if mixed is not None:
        word, script = mixed
        detail = f"{field} mixes Latin with {script.title()} letters in {word[:40]!r}"
        return SanitizeResult(text, tuple(audit), ("confusable_text", detail))
    if text.startswith(FORMULA_PREFIXES):
        audit.append(
            AuditEntry(
                field,
                "flag_formula_prefix",
                f"starts with {text[0]!r}; stored unchanged, escape it when exporting to CSV",
            )
        )
    return SanitizeResult(text, tuple(audit))


def audit_json(entries: tuple[AuditEntry, ...] | list[AuditEntry]) -> list[dict[str, Any]]:
    """Audit entries as JSON-able dicts."""
    return [e.as_dict() for e in entries]
