"""Issue 11 item 11: property tests (hypothesis) of the record parser, validator and sanitizer.

* any byte string is accepted or quarantined with a known reason code — never an exception;
* mutations of a genuine signed record (byte flips, insertions, truncations) likewise;
* the sanitizer terminates on any text, its output holds no markup or invisible characters and
  is a fixed point;
* conservation for any interleaving and batching of genuine records, duplicates and junk:
  ``received == accepted + quarantined`` and every accepted record is stored exactly once.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.engine import iter_accepted
from saip_ingestion.quarantine import REASONS
from saip_ingestion.sanitize import sanitize_text

Env = Any
_REUSE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_OUTCOMES = {"accepted", "duplicate", "quarantined"}


def _check(out: list[tuple[str, str | None]]) -> None:
    for outcome, reason in out:
        assert outcome in _OUTCOMES
        if outcome == "quarantined":
            assert reason in REASONS
        else:
            assert reason is None


@_REUSE
@given(data=st.lists(st.binary(max_size=600), min_size=1, max_size=8))
def test_any_bytes_are_accepted_or_quarantined_with_a_reason(env: Env, data: list[bytes]) -> None:
    engine = env.engine or env.open()
    before = engine.summary.received
    out = engine.process_and_commit(env.msgs(data))
    _check(out)
    s = engine.summary
    assert s.received - before == len(data)
    assert s.received == s.accepted + s.quarantined


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@_REUSE
@given(doc=_JSON)
def test_any_json_value_is_accepted_or_quarantined(env: Env, doc: Any) -> None:
    raw = json.dumps(doc).encode()
    _check((env.engine or env.open()).process_and_commit(env.msgs([raw])))


@_REUSE
@given(
    cut=st.integers(min_value=0, max_value=2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=4),
    insert=st.binary(max_size=8),
)
def test_mutated_genuine_records_never_raise(
    env: Env, cut: int, flips: list[tuple[int, int]], insert: bytes
) -> None:
    engine = env.engine or env.open()
    p = env.producer("alpha")
    raw = bytearray(env.line(p.sign([p.record()])[0]))
    for pos, value in flips:
        raw[pos % len(raw)] = value
    at = cut % (len(raw) + 1)
    mutated = bytes(raw[:at]) + insert + bytes(raw[at:])
    _check(engine.process_and_commit(env.msgs([mutated])))


_TAG = re.compile(r"<[A-Za-z!?]|</[A-Za-z]")


@settings(max_examples=400, deadline=None)
@given(text=st.text(max_size=300) | st.text(alphabet="<>!-/&;ab =\"'\u202e\u200b", max_size=60))
def test_sanitizer_terminates_and_leaves_no_markup_or_invisible_characters(text: str) -> None:
    result = sanitize_text(text, field="f", max_length=10_000)
    if result.error is not None:
        assert result.error[0] in REASONS
        return
    out = result.text
    assert out
    assert not _TAG.search(out)
    assert all(
        ch in "\n\t" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co"} for ch in out
    )
    again = sanitize_text(out, field="f", max_length=10_000)
    assert again.error is None
    assert again.text == out


@_REUSE
@given(
    picks=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
)
def test_conservation_for_any_interleaving_and_batching(
    env: Env, picks: list[int], cuts: list[int]
) -> None:
    engine = env.engine or env.open()
    if not hasattr(env, "pool"):
        a, b = env.producer("alpha"), env.producer("beta")
        genuine = [env.line(r) for r in a.sign([a.record(label=i % 10) for i in range(12)])]
        genuine += [env.line(r) for r in b.sign([b.record(label=i % 10) for i in range(12)])]
        forged = genuine[0].replace(b'"payload":{', b'"payload":{"label":0,', 1)
        env.pool = [*genuine, b"{oops", b"", b"[]", forged, genuine[3][:-5]]
    pool: list[bytes] = env.pool
    lines = [pool[i % len(pool)] for i in picks]
    start = engine.summary.received
    bounds = sorted({c % len(lines) for c in cuts} | {0, len(lines)})
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            _check(engine.process_and_commit(env.msgs(lines[lo:hi])))
    s = engine.summary
    assert s.received - start == len(lines)
    assert s.received == s.accepted + s.quarantined
    stored = [(e["producer_id"], e["record_id"]) for e in iter_accepted(env.store, env.encryptor)]
    assert len(stored) == len(set(stored)) == s.stored
