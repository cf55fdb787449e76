"""Text sanitization: NFKC, control/zero-width/bidi removal, markup stripping, audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from saip_ingestion.engine import iter_accepted
from saip_ingestion.quarantine import QuarantineStore
from saip_ingestion.sanitize import sanitize_text


def _ops(result: Any) -> list[str]:
    return [a.op for a in result.audit]


@pytest.mark.parametrize(
    ("text", "expected", "ops"),
    [
        ("plain text", "plain text", []),
        ("ＡＢＣ ｆｕｌｌ", "ABC full", ["nfkc"]),
        ("\U0001d400\U0001d401 math", "AB math", ["nfkc"]),
        ("ﬁle", "file", ["nfkc"]),
        ("zero\u200bwidth\u200d join\ufeff", "zerowidth join", ["strip_format"]),
        ("bidi \u202etxt.exe\u202c", "bidi txt.exe", ["strip_format"]),
        ("bell\x07 and \x1b[31mansi", "bell and [31mansi", ["strip_control"]),
        ("line\r\nbreak\ttab", "line\nbreak\ttab", ["normalize_newlines"]),
        ("<b>bold</b> text", "bold text", ["strip_markup"]),
        ("<script>alert(1)</script>hello", "hello", ["strip_markup"]),
        ("a <!-- hidden --> b", "a  b", ["strip_markup"]),
        ("&lt;b&gt;x&lt;/b&gt;", "x", ["strip_markup", "strip_markup"]),
        ("＜script＞alert(1)＜/script＞ok", "ok", ["nfkc", "strip_markup"]),
        ("  padded  ", "padded", ["trim"]),
    ],
)
def test_sanitize_text(text: str, expected: str, ops: list[str]) -> None:
    result = sanitize_text(text, field="payload.instruction", max_length=100)
    assert result.error is None
    assert result.text == expected
    assert _ops(result) == ops
    assert all(a.field == "payload.instruction" for a in result.audit)


def test_line_breaks_are_kept_but_normalised() -> None:
    result = sanitize_text("a\r\nb\u2028c", field="f", max_length=100)
    assert result.text == "a\nb\nc"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<p></p>", "unsanitizable"),
        ("\u200b\u200c", "unsanitizable"),
        ("p\u0430ypal login", "confusable_text"),  # Cyrillic а inside a Latin word
        ("\u03bfpen the door", "confusable_text"),  # Greek omicron
        ("x" * 101, "oversized_field"),
    ],
)
def test_unfixable_text(text: str, reason: str) -> None:
    result = sanitize_text(text, field="payload.response", max_length=100)
    assert result.error is not None
    assert result.error[0] == reason


def test_other_scripts_alone_are_fine() -> None:
    result = sanitize_text("Привет мир and hello", field="f", max_length=100)
    assert result.error is None


def _text(p: Any, instruction: str, response: str = "fine") -> dict[str, Any]:
    return p.record({"instruction": instruction, "response": response}, schema="text-sample")


def test_sanitized_record_is_stored_with_audit_and_original(env: Any) -> None:
    p = env.producer("alpha")
    recs = p.sign(
        [
            _text(p, "Say <b>hi</b>\u200b please"),
            _text(p, "clean"),
            _text(p, "p\u0430ypal"),
            _text(p, "<i></i>"),
        ]
    )
    out = env.ingest([env.line(r) for r in recs])
    assert out == [
        ("accepted", None),
        ("accepted", None),
        ("quarantined", "confusable_text"),
        ("quarantined", "unsanitizable"),
    ]
    stored = {e["record_id"]: e for e in iter_accepted(env.store, env.encryptor)}
    changed = stored[recs[0]["record_id"]]
    assert changed["record"]["payload"]["instruction"] == "Say hi please"
    assert [a["op"] for a in changed["audit"]] == ["strip_markup", "strip_format"]
    assert changed["original"] == recs[0]  # the signed original (canonical form) stays verifiable
    assert stored[recs[1]["record_id"]]["audit"] == []
    reasons = sorted(e.reason for e in QuarantineStore(env.store, env.encryptor).entries())
    assert reasons == ["confusable_text", "unsanitizable"]
