"""Every kind of bad input lands in quarantine with the right reason; counts are conserved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from saip_ingestion.quarantine import QuarantineStore

NOW_MS = 1_764_100_000_000
Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def _one(env: Env, raw: bytes) -> tuple[str, str | None]:
    out = env.ingest([raw])
    assert len(out) == 1
    return out[0]


def _signed(env: Env, **over: Any) -> bytes:
    p = env.producer("alpha")
    rec = p.record(**over)
    return line(p.sign([rec])[0])


def test_valid_record_is_accepted_and_stored_encrypted(env: Env) -> None:
    raw = _signed(env)
    assert _one(env, raw) == ("accepted", None)
    keys = list(env.store.list("accepted/"))
    assert len(keys) == 1
    blob = env.store.get(keys[0])
    assert b"alpha-000000" not in blob  # encrypted at rest
    assert b"features" not in blob


def _mutate(raw: bytes, fn: Any) -> bytes:
    doc = json.loads(raw)
    fn(doc)
    return json.dumps(doc).encode()


CASES: list[tuple[str, Any, str]] = [
    ("truncated json", lambda raw: raw[: len(raw) // 2], "malformed_json"),
    ("not utf-8", lambda raw: b"\xff\xfe" + raw, "malformed_json"),
    ("json array", lambda raw: b"[1, 2, 3]", "schema_invalid"),
    ("empty object", lambda raw: b"{}", "unknown_schema"),
    (
        "unknown schema",
        lambda raw: _mutate(raw, lambda d: d.update(schema={"name": "audio", "version": 1})),
        "unknown_schema",
    ),
    (
        "schema version 2",
        lambda raw: _mutate(raw, lambda d: d["schema"].update(version=2)),
        "unknown_schema",
    ),
    ("seq as string", lambda raw: _mutate(raw, lambda d: d.update(seq="1")), "schema_invalid"),
    ("ts as float", lambda raw: _mutate(raw, lambda d: d.update(ts=1.5)), "schema_invalid"),
    (
        "label as string",
        lambda raw: _mutate(raw, lambda d: d["payload"].update(label="1")),
        "schema_invalid",
    ),
    (
        "features as strings",
        lambda raw: _mutate(raw, lambda d: d["payload"].update(features=["1"] * 64)),
        "schema_invalid",
    ),
    ("missing ts", lambda raw: _mutate(raw, lambda d: d.pop("ts")), "schema_invalid"),
    ("missing payload", lambda raw: _mutate(raw, lambda d: d.pop("payload")), "schema_invalid"),
    ("extra field", lambda raw: _mutate(raw, lambda d: d.update(note="x")), "schema_invalid"),
    (
        "extra payload field",
        lambda raw: _mutate(raw, lambda d: d["payload"].update(channels=1)),
        "schema_invalid",
    ),
    (
        "extra sig field",
        lambda raw: _mutate(raw, lambda d: d["sig"].update(hint="x")),
        "schema_invalid",
    ),
    (
        "shape mismatch 64 features for 8x9",
        lambda raw: _mutate(raw, lambda d: d["payload"].update(height=9)),
        "schema_invalid",
    ),
    (
        "NaN literal",
        lambda raw: raw.replace(b'"features":[0.0', b'"features":[NaN', 1),
        "non_finite",
    ),
    (
        "Infinity literal",
        lambda raw: raw.replace(b'"features":[0.0', b'"features":[Infinity', 1),
        "non_finite",
    ),
    (
        "1e400 overflows",
        lambda raw: raw.replace(b'"features":[0.0', b'"features":[1e400', 1),
        "non_finite",
    ),
    ("missing sig", lambda raw: _mutate(raw, lambda d: d.pop("sig")), "missing_signature"),
    (
        "producer id with Cyrillic a (confusable)",
        lambda raw: _mutate(raw, lambda d: d.update(producer_id="\u0430lpha")),
        "bad_identifier",
    ),
    (
        "record id with full-width digit",
        lambda raw: _mutate(raw, lambda d: d.update(record_id="alpha-\uff10")),
        "bad_identifier",
    ),
    (
        "record id with zero-width space",
        lambda raw: _mutate(raw, lambda d: d.update(record_id="alpha\u200b-1")),
        "bad_identifier",
    ),
    (
        "record id with newline",
        lambda raw: _mutate(raw, lambda d: d.update(record_id="alpha-1\n")),
        "bad_identifier",
    ),
    (
        "record id path traversal",
        lambda raw: _mutate(raw, lambda d: d.update(record_id="../../etc")),
        "bad_identifier",
    ),
    (
        "tampered feature",
        lambda raw: _mutate(raw, lambda d: d["payload"]["features"].__setitem__(5, 3.0)),
        "bad_signature",
    ),
    (
        "tampered label",
        lambda raw: _mutate(raw, lambda d: d["payload"].update(label=7)),
        "bad_signature",
    ),
    (
        "tampered seq",
        lambda raw: _mutate(raw, lambda d: d.update(seq=99)),
        "bad_signature",
    ),
    (
        "signature bytes flipped",
        lambda raw: _mutate(
            raw,
            lambda d: d["sig"].update(
                root_sig=("B" if d["sig"]["root_sig"][0] != "B" else "C") + d["sig"]["root_sig"][1:]
            ),
        ),
        "bad_signature",
    ),
    (
        "index beyond tree",
        lambda raw: _mutate(raw, lambda d: d["sig"].update(index=5)),
        "bad_leaf_index",  # a one-leaf batch without a path is checked as v2 first
    ),
    (
        "key id of nobody",
        lambda raw: _mutate(raw, lambda d: d["sig"].update(key_id="0123456789abcdef")),
        "unknown_key",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "reason"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_quarantined_with_reason(env: Env, mutate: Any, reason: str) -> None:
    raw = mutate(_signed(env))
    outcome = _one(env, raw)
    assert outcome == ("quarantined", reason)
    entries = list(QuarantineStore(env.store, env.encryptor).entries())
    assert [e.reason for e in entries] == [reason]
    assert entries[0].raw == raw  # kept as received
    summary = env.engine.finish()  # type: ignore[union-attr]
    assert summary.received == summary.accepted + summary.quarantined == 1


def test_oversized_line(env: Env) -> None:
    env.open(max_line_bytes=2000)
    outcome = _one(env, _signed(env) + b" " * 2000)
    assert outcome == ("quarantined", "oversized")


def test_out_of_range_and_label_are_rejected_not_clamped(env: Env) -> None:
    p = env.producer("alpha")
    feats = [0.0] * 64
    feats[10] = 16.5
    negative = [0.0] * 64
    negative[0] = -0.001
    recs = p.sign(
        [
            p.record({"width": 8, "height": 8, "features": feats, "label": 1}),
            p.record({"width": 8, "height": 8, "features": negative, "label": 1}),
            p.record({"width": 8, "height": 8, "features": [0.0] * 64, "label": 10}),
            p.record({"width": 4, "height": 16, "features": [0.0] * 64, "label": 1}),
            p.record({"width": 8, "height": 8, "features": [16.0] * 64, "label": 9}),
        ]
    )
    out = env.ingest([line(r) for r in recs])
    assert out == [
        ("quarantined", "out_of_range"),
        ("quarantined", "out_of_range"),
        ("quarantined", "label_invalid"),
        ("quarantined", "shape_mismatch"),
        ("accepted", None),
    ]
    details = sorted(
        e.detail
        for e in QuarantineStore(env.store, env.encryptor).entries()
        if e.reason == "out_of_range"
    )
    # each rejection names the offending index and its value, so nothing is silently clamped
    assert len(details) == 2, details
    assert any(d.startswith("payload.features[10] = 16.5 outside") for d in details), details
    assert any(d.startswith("payload.features[0] = -0.001 outside") for d in details), details


def test_unknown_producer(env: Env) -> None:
    stranger = env.producer("stranger", register=False)
    raw = line(stranger.sign([stranger.record()])[0])
    assert _one(env, raw) == ("quarantined", "unknown_producer")


def test_duplicate_is_counted_and_stored_once(env: Env) -> None:
    raw = _signed(env)
    assert env.ingest([raw, raw]) == [("accepted", None), ("duplicate", None)]
    assert env.ingest([raw]) == [("duplicate", None)]
    s = env.engine.finish()  # type: ignore[union-attr]
    assert (s.received, s.accepted, s.duplicates, s.stored, s.quarantined) == (3, 3, 2, 1, 0)
    assert len(list(env.store.list("accepted/"))) == 1


def test_conflict_same_record_id_other_content(env: Env) -> None:
    p = env.producer("alpha")
    a = p.record(label=1)
    b = dict(a, seq=a["seq"] + 1, payload=dict(a["payload"], label=2))
    a, b = p.sign([a, b])
    assert env.ingest([line(a), line(b)]) == [("accepted", None), ("quarantined", "conflict")]


def test_replay_of_seq_with_new_record_id(env: Env) -> None:
    p = env.producer("alpha")
    a = p.record()
    b = dict(a, record_id="alpha-other")
    a, b = p.sign([a, b])
    assert env.ingest([line(a), line(b)]) == [("accepted", None), ("quarantined", "replay")]


def test_ts_window_and_seq_window(env: Env) -> None:
    env.open(max_age_ms=60_000, max_skew_ms=5_000, seq_window=10)
    p = env.producer("alpha")
    old = p.record(ts=NOW_MS - 61_000)
    future = p.record(ts=NOW_MS + 6_000)
    edge = p.record(ts=NOW_MS + 5_000)
    high = p.record(seq=100)
    late_ok = p.record(seq=95)
    too_late = p.record(seq=80)
    recs = p.sign([old, future, edge, high, late_ok, too_late])
    assert env.ingest([line(r) for r in recs]) == [
        ("quarantined", "ts_out_of_window"),
        ("quarantined", "ts_out_of_window"),
        ("accepted", None),
        ("accepted", None),
        ("accepted", None),
        ("quarantined", "seq_out_of_window"),
    ]


def test_clock_is_injected(env: Env) -> None:
    raw = _signed(env, ts=NOW_MS)
    env.now = NOW_MS + 2 * 24 * 3600 * 1000  # two days later: stale under the default window
    assert _one(env, raw) == ("quarantined", "ts_out_of_window")


def test_bad_signature_does_not_burn_the_seq(env: Env) -> None:
    p = env.producer("alpha")
    good = p.sign([p.record()])[0]
    forged = _mutate(line(good), lambda d: d["payload"].update(label=5))
    assert env.ingest([forged, line(good)]) == [
        ("quarantined", "bad_signature"),
        ("accepted", None),
    ]


def test_mixed_batch_conserves_counts(env: Env) -> None:
    p = env.producer("alpha")
    recs = p.sign([p.record(label=i % 10) for i in range(50)])
    lines = [line(r) for r in recs]
    bad = [b"{", b"[]", lines[0][:-5], lines[3], _mutate(lines[4], lambda d: d.update(x=1))]
    out = env.ingest(lines + bad)
    s = env.engine.finish()  # type: ignore[union-attr]
    assert s.received == len(out) == 55
    assert s.received == s.accepted + s.quarantined
    assert (s.accepted, s.duplicates, s.stored) == (51, 1, 50)
    assert sum(s.reasons.values()) == s.quarantined == 4
    assert len(list(QuarantineStore(env.store, env.encryptor).keys())) == 4


def test_oversized_text_field(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.record({"instruction": "x" * 8193, "response": "ok"}, schema="text-sample")
    raw = line(
        rec
        | {
            "sig": p.sign(
                [p.record(schema="text-sample", payload={"instruction": "a", "response": "b"})]
            )[0]["sig"]
        }
    )
    assert _one(env, raw) == ("quarantined", "oversized_field")


def test_complete_merkle_batch_is_verified_at_once_and_falls_back_on_tampering(env: Env) -> None:
    p = env.producer("alpha")
    recs = p.sign([p.record(label=i % 10) for i in range(32)])
    lines = [line(r) for r in recs]
    assert env.ingest(lines[:16] + lines[16:]) == [("accepted", None)] * 32
    assert env.engine.verifier.signature_checks == 1  # type: ignore[union-attr]
    # a complete batch with one tampered payload and one swapped path entry: per-record verdicts
    recs = p.sign([p.record(label=i % 10) for i in range(8)])
    tampered = _mutate(line(recs[2]), lambda d: d["payload"].update(label=9))
    swapped = _mutate(
        line(recs[5]), lambda d: d["sig"].update(path=list(reversed(d["sig"]["path"])))
    )
    batch = [line(r) for r in recs]
    batch[2], batch[5] = tampered, swapped
    out = env.ingest(batch)
    assert out[2] == ("quarantined", "bad_signature")
    assert out[5] == ("quarantined", "bad_signature")
    assert [o for k, o in enumerate(out) if k not in (2, 5)] == [("accepted", None)] * 6


def test_pretty_printed_record_is_stored_readably(env: Env) -> None:
    """JSON line breaks are outside the signed bytes: such a record is accepted, and the stored
    batch (newline-delimited) stays readable — it used to break export and restart."""
    import json

    from saip_ingestion.engine import iter_accepted

    raw = _signed(env)
    pretty = json.dumps(json.loads(raw), indent=1).encode()
    assert b"\n" in pretty
    assert _one(env, pretty) == ("accepted", None)
    entries = iter_accepted(env.store, env.encryptor)
    assert [e["record_id"] for e in entries] == [json.loads(raw)["record_id"]]
