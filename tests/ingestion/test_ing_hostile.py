"""Regression tests of the adversarial review (issue 11): one record must never stop the consumer,
be stored in a form other readers interpret differently, squat another producer's ids, or be
unreleasable."""

from __future__ import annotations

import json
from typing import Any

import pytest
from saip_ingestion import engine as engine_mod
from saip_ingestion.engine import ImageSpec, iter_accepted
from saip_ingestion.quarantine import QuarantineStore
from saip_ingestion.sanitize import sanitize_text
from saip_ingestion.sealed import open_lines

NOW_MS = 1_764_100_000_000
Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def _text(env: Env, instruction: str, name: str = "alpha") -> bytes:
    p = env.producer(name)
    rec = p.record({"instruction": instruction, "response": "ok"}, schema="text-sample")
    return line(p.sign([rec])[0])


def _outcomes(env: Env, lines: list[bytes]) -> list[tuple[str, str | None]]:
    out = env.ingest(lines)
    s = env.engine.summary
    assert s.received == s.accepted + s.quarantined
    return out


# ---------------------------------------------------------------- item 1: no record stops it


@pytest.mark.parametrize("text", ["a <![foo[ x ]]>", "a <![ b"])
def test_html_parser_assertion_inputs_do_not_halt_the_consumer(env: Env, text: str) -> None:
    # html.parser raised AssertionError on these inside the batch loop: nothing committed, ever
    good = _text(env, "plain", "beta")
    out = _outcomes(env, [_text(env, text), good])
    assert out[1] == ("accepted", None)
    assert out[0][0] in ("accepted", "quarantined")
    env.close()  # a restart does not crash on the same record either
    assert _outcomes(env, [_text(env, text, "gamma")])[0][0] in ("accepted", "quarantined")


def test_any_exception_in_a_record_quarantines_it_as_internal_error(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = engine_mod.sanitize_text

    def boom(value: str, **kw: Any) -> Any:
        if value == "explode":
            raise RecursionError("injected")
        return real(value, **kw)

    monkeypatch.setattr(engine_mod, "sanitize_text", boom)
    bad, good = _text(env, "explode"), _text(env, "fine", "beta")
    assert _outcomes(env, [bad, good]) == [
        ("quarantined", "internal_error"),
        ("accepted", None),
    ]
    [entry] = QuarantineStore(env.store, env.encryptor).entries(reason="internal_error")
    assert "RecursionError" in entry.detail
    assert entry.raw == bad


def test_exception_while_parsing_one_record_does_not_stop_the_batch(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = env.producer("alpha")
    a, b = p.sign([p.record(label=1), p.record(label=2)])
    real = engine_mod.payload_bytes
    monkeypatch.setattr(engine_mod, "image_leaf", lambda record: 1 / 0)
    monkeypatch.setattr(engine_mod, "payload_bytes", real)
    assert _outcomes(env, [line(a), line(b)]) == [("quarantined", "internal_error")] * 2
    monkeypatch.undo()
    env.close()
    assert _outcomes(env, [line(a)]) == [("accepted", None)]  # the store stays usable


@pytest.mark.parametrize("unit", ["<a", "<!--", "<a>", "<!---->", "<![", "</a"])
def test_long_runs_of_markup_get_a_verdict(unit: str) -> None:
    # html.parser took 160–270 ms per 16k-character field of "<a" or "<!--" (timing is measured in
    # benchmarks/ingestion_junk.py, not asserted here)
    text = unit * (16384 // len(unit))
    result = sanitize_text(text, field="f", max_length=20000)
    assert result.error is not None
    assert result.error[0] == "unsanitizable"


@pytest.mark.parametrize(
    ("text", "expected", "reason"),
    [
        ("x <img src=x onerror=alert(1)//", None, "unsanitizable"),  # unclosed tag: refused
        ("<script>alert(1)", None, "unsanitizable"),  # unclosed raw-text element
        ("a <!-- never closed", None, "unsanitizable"),
        ("<!--x--!>y", "y", None),  # "--!>" closes a comment (WHATWG tokenizer)
        ("<!-->visible", "visible", None),
        ("a < b and x<3", "a < b and x<3", None),  # "<" not followed by a letter is text
        ("a <![foo[ x ]]> b", "a  b", None),
        ("\u13aapple pay", None, "confusable_text"),  # Cherokee A inside a Latin word
        ("\u0561pple", None, "confusable_text"),  # Armenian
        ("Tシャツ sale", "Tシャツ sale", None),  # Latin + Katakana: UTS #39 highly restrictive
        ("\u13a0\u13a1\u13a2", "\u13a0\u13a1\u13a2", None),  # whole-word Cherokee is text
    ],
)
def test_markup_and_confusable_policy(text: str, expected: str | None, reason: str | None) -> None:
    result = sanitize_text(text, field="f", max_length=100)
    assert (result.error[0] if result.error else None) == reason
    if expected is not None:
        assert result.text == expected


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@"])
def test_csv_formula_prefix_is_flagged_and_stored_unchanged(prefix: str) -> None:
    text = f'{prefix}HYPERLINK("http://x")'
    result = sanitize_text(text, field="f", max_length=100)
    assert result.error is None
    assert result.text == text
    assert [a.op for a in result.audit] == ["flag_formula_prefix"]


# ---------------------------------------------------------------- item 2: duplicate keys


def _prepend(raw: bytes, where: bytes, extra: bytes) -> bytes:
    i = raw.index(where) + len(where)
    return raw[:i] + extra + raw[i:]


@pytest.mark.parametrize(
    ("where", "extra"),
    [
        (b'"payload":{', b'"label":0,'),  # flips the label for first-wins readers
        (b"{", b'"sig":"' + b"A" * 200_000 + b'",'),  # 200 KB fake signature, last-wins
        (b'"schema":{', b'"name":"text-sample",'),
        (b'"sig":{', b'"index":0,'),
        (b"{", b'"record_id" :"x",'),  # whitespace before the colon
    ],
)
def test_duplicate_keys_are_refused_at_every_level(env: Env, where: bytes, extra: bytes) -> None:
    p = env.producer("alpha")
    genuine = line(p.sign([p.record(label=7)])[0])
    forged = _prepend(genuine, where, extra)
    assert _outcomes(env, [forged, genuine]) == [
        ("quarantined", "schema_invalid"),
        ("accepted", None),
    ]
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    assert "duplicate key" in entry.detail
    assert entry.raw == forged


def test_quotes_and_colons_inside_text_are_not_duplicates(env: Env) -> None:
    assert _outcomes(env, [_text(env, 'he said "a": "b" : c')]) == [("accepted", None)]


def test_stored_record_is_the_canonical_reserialisation(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.sign([p.record(label=3)])[0]
    raw = json.dumps(rec, indent=1, sort_keys=True).replace('"alpha"', '"\\u0061lpha"').encode()
    raw = raw.replace(b"\n", b" ")
    assert _outcomes(env, [raw]) == [("accepted", None)]
    [entry] = iter_accepted(env.store, env.encryptor)
    assert entry["record"] == rec
    keys = list(env.store.list("accepted/"))
    ctx = {"saip:purpose": "ingest-accepted", "saip:object": keys[0]}
    plain = b"\n".join(open_lines(env.encryptor, ctx, env.store.get(keys[0]), digest=None))
    assert b"\\u0061" not in plain
    assert b"  " not in plain


# ---------------------------------------------------------------- item 3: strict integers


@pytest.mark.parametrize("version", ["true", "1.0", '"1"'])
def test_schema_version_must_be_the_integer_1(env: Env, version: str) -> None:
    p = env.producer("alpha")
    raw = line(p.sign([p.record()])[0]).replace(b'"version":1', b'"version":' + version.encode())
    out = _outcomes(env, [raw])
    assert out[0][0] == "quarantined"
    assert out[0][1] in ("unknown_schema", "schema_invalid")


@pytest.mark.parametrize("field", [b'"seq":', b'"width":', b'"label":', b'"tree_size":'])
def test_integers_are_strict(env: Env, field: bytes) -> None:
    p = env.producer("alpha")
    raw = line(p.sign([p.record()])[0])
    i = raw.index(field) + len(field)
    j = i
    while raw[j : j + 1].isdigit():
        j += 1
    for bad in (raw[i:j] + b".0", b"true"):
        assert _outcomes(env, [raw[:i] + bad + raw[j:]])[0][0] == "quarantined"


# ---------------------------------------------------------------- item 4: dedupe per producer


def test_a_producer_cannot_squat_another_producers_record_ids(env: Env) -> None:
    a, b = env.producer("alpha"), env.producer("beta")
    squat = a.sign([a.record(record_id="beta-000000")])[0]
    genuine = b.sign([b.record()])[0]
    assert genuine["record_id"] == "beta-000000"
    assert _outcomes(env, [line(squat), line(genuine)]) == [("accepted", None)] * 2
    assert _outcomes(env, [line(genuine)]) == [("duplicate", None)]
    env.close()  # the index survives a restart keyed by (producer, record)
    assert _outcomes(env, [line(squat), line(genuine)]) == [("duplicate", None)] * 2


# ---------------------------------------------------------------- item 7: release


def test_content_quarantine_can_be_released_after_the_spec_changes_once(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.sign([p.record(label=11)])[0]
    env.open()
    assert _outcomes(env, [line(rec)]) == [("quarantined", "label_invalid")]
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    # the operator widens the class set; release re-runs every check under the new spec
    env.open(image_spec=ImageSpec(8, 8, 0.0, 16.0, frozenset(range(12))))
    assert env.engine.release(entry.qid) == ("accepted", None)
    assert [e["record"] for e in iter_accepted(env.store, env.encryptor)] == [rec]
    with pytest.raises(Exception, match="already released"):
        env.engine.release(entry.qid)
    assert _outcomes(env, [line(rec)]) == [("duplicate", None)]


def test_release_under_the_same_spec_still_fails(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.sign([p.record(label=11)])[0]
    assert _outcomes(env, [line(rec)]) == [("quarantined", "label_invalid")]
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    assert env.engine.release(entry.qid) == ("quarantined", "label_invalid")
    assert not list(env.store.list("accepted/"))
