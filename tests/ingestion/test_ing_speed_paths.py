"""Issue 12 (speed): every shortcut of the hot path gives exactly what the reference gives.

* the stored line of an image record encoded by msgspec in one call is byte-identical to the
  pydantic-core canonical form, for records decoded by either path; a record with a feature
  whose shortest form has a positive exponent (≥ 1e16, where the two encoders differ) is stored
  in the pydantic-core form (end to end, read back from the sealed object);
* the level-by-level Merkle root is the RFC 6962 recursive definition, for every size;
* ``SeqWindows.accept_new`` decides and changes state exactly as ``lookup`` +
  ``has_record_id`` + ``mark`` (the engine's general path) over random operation sequences;
  ``SeqWindows.accept_run`` (a producer's whole run in one call) either does exactly what
  deciding the run's records one by one does, in any arrival order, after hostile histories
  (legacy and quarantined slots, reused ids, evictions freeing an id the run reuses), or
  nothing.

Adversarial review (correctly signed records with hostile content), end to end:

* the decision loop (``_decide_all`` with ``accept_run`` and ``accept_new``) against
  ``_decide`` alone (both disabled on one of two engines fed the same messages): replays,
  forged rivals on a used ``seq``, exact re-deliveries, ``record_id`` conflicts, duplicates
  inside one batch, ``seq`` gaps and window wrap, ``ts`` exactly at and one past each edge of
  the freshness window, content quarantines, producers reopened from their window files. Same
  outcome and reason per record, same stored bytes, same window files, same counters;
* the stored line for every JSON spelling of a number an attacker may send (negative zero,
  subnormals, ``1E-7`` / ``1e-07`` / ``0.0000001``, ints where floats are due, 17+ significant
  digits, ``2**53 + 1``, both sides of the 1e16 bound), with and without the fast decoder;
* ``decode_any`` routing when a value spells another schema's name;
* the level-wise Merkle root against the RFC 6962 known answers (certificate-transparency test
  vectors) for sizes 1–8, and against the recursive definition with one-byte flips, 1–300.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.engine import ACCEPTED_PREFIX, ImageSpec, IngestEngine, _Candidate
from saip_ingestion.fastdecode import FAST_DECODERS, decode_any
from saip_ingestion.provenance import leaf_hash, merkle_root, merkle_root_recursive
from saip_ingestion.schemas import (
    _B64_32,
    _B64_64,
    KEY_ID_PATTERN,
    PRODUCER_ID_PATTERN,
    RECORD_ADAPTER,
    RECORD_ID_PATTERN,
    canonical_json,
)
from saip_ingestion.sealed import open_lines
from saip_ingestion.window import BELOW, SeqWindows

Env = Any


def reference_line(rec: Any, leaf_hex: str) -> bytes:
    """The stored line as the engine wrote it before the msgspec shortcut (head + pydantic)."""
    head = (
        f'{{"record_id":"{rec["record_id"]}","producer_id":"{rec["producer_id"]}",'
        f'"seq":{rec["seq"]},"ts":{rec["ts"]},"leaf":"{leaf_hex}","audit":'
    ).encode()
    return head + b'[],"record":' + canonical_json(rec) + b"}"


def _rx(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern[:-1] + r"\Z", fullmatch=True)


_PLAIN = st.floats(
    min_value=-9.999999999999998e15, max_value=9.999999999999998e15, allow_nan=False
) | st.sampled_from([0.0, -0.0, 1e-7, -2.5e-300, 5e-324, 9999999999999998.0, 0.1, 1e15])


def _number(floats: st.SearchStrategy[float]) -> st.SearchStrategy[float | int]:
    return floats | st.integers(-(2**40), 2**40)  # an int is stored as a float


@st.composite
def image_record(draw: st.DrawFn, floats: st.SearchStrategy[float] = _PLAIN) -> dict[str, Any]:
    w, h = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    payload = {
        "width": w,
        "height": h,
        "features": draw(st.lists(_number(floats), min_size=w * h, max_size=w * h)),
        "label": draw(st.integers(0, 65535)),
    }
    sig = {
        "alg": "ed25519-merkle-sha256",
        "key_id": draw(_rx(KEY_ID_PATTERN)),
        "tree_size": draw(st.integers(1, 65536)),
        "index": draw(st.integers(0, 65535)),
        "path": draw(st.lists(_rx(_B64_32), max_size=3)),
        "root_sig": draw(_rx(_B64_64)),
    }
    rec = {
        "record_id": draw(_rx(RECORD_ID_PATTERN)),
        "producer_id": draw(_rx(PRODUCER_ID_PATTERN)),
        "seq": draw(st.integers(0, 2**63 - 1)),
        "ts": draw(st.integers(0, 2**53)),
        "schema": {"name": "image-sample", "version": 1},
        "sig": sig,
        "payload": payload,
    }
    items = list(rec.items())
    return dict(draw(st.permutations(items)))  # any key order on the wire


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rec=image_record(), leaf=st.binary(min_size=32, max_size=32))
def test_msgspec_stored_line_is_the_canonical_line(rec: dict[str, Any], leaf: bytes) -> None:
    data = json.dumps(rec, separators=(",", ":")).encode()
    slow = RECORD_ADAPTER.validate_json(data)
    fast = FAST_DECODERS["image-sample/v1"].decode(data)
    msg = StreamMessage(data, "t", "0")
    for decoded in (slow, fast) if fast is not None else (slow,):
        c = _Candidate(0, msg, decoded, leaf)
        c.plain = True
        assert IngestEngine._stored_line(c, leaf.hex()) == reference_line(slow, leaf.hex())


def test_a_feature_with_a_positive_exponent_is_stored_in_the_pydantic_form(env: Env) -> None:
    """msgspec writes ``1e16``, pydantic-core ``1e+16``: the engine must not take the shortcut."""
    p = env.producer("alpha")
    feats = [1e16, -3.5e200, 0.5, 1e22]
    recs = p.sign([p.record({"width": 2, "height": 2, "features": feats, "label": 1}),
                   p.record(label=2)])  # fmt: skip
    eng = env.open(image_spec=ImageSpec(2, 2, -1e300, 1e300, frozenset(range(10))))
    outs = eng.process_and_commit(env.msgs([env.line(r) for r in recs]))
    assert [o for o, _ in outs] == ["accepted", "quarantined"]  # the 8x8 one: shape_mismatch
    (key,) = list(env.store.list(ACCEPTED_PREFIX))
    lines = open_lines(env.encryptor, IngestEngine._context(key), env.store.get(key), digest=None)
    (stored,) = lines
    entry = json.loads(stored)
    rec = RECORD_ADAPTER.validate_json(env.line(recs[0]))
    assert stored == reference_line(rec, entry["leaf"])
    for spelled in (b"1e+16", b"1e+22", b"-3.5e+200"):
        assert spelled in stored


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 600), seed=st.binary(min_size=4, max_size=4))
def test_level_merkle_root_is_the_rfc6962_recursive_root(n: int, seed: bytes) -> None:
    leaves = [hashlib.sha256(seed + i.to_bytes(4, "little")).digest() for i in range(n)]
    assert merkle_root(leaves) == merkle_root_recursive(leaves)


def test_level_merkle_root_every_size_up_to_300() -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(300)]
    for n in range(1, 301):
        assert merkle_root(leaves[:n]) == merkle_root_recursive(leaves[:n]), n


_OP = st.tuples(
    st.sampled_from(["p", "q"]),
    st.integers(0, 40) | st.integers(0, 2**20),
    st.binary(min_size=8, max_size=8) | st.sampled_from([b"L" * 8]),
    st.sampled_from([b"r1r1r1r1", b"r2r2r2r2", b"r3r3r3r3"]) | st.binary(min_size=8, max_size=8),
)


def _general(w: SeqWindows, pid: str, seq: int, leaf8: bytes, rid8: bytes) -> str:
    """The engine's general path (``_decide`` without the ts/content parts)."""
    prev = w.lookup(pid, seq)
    if prev == BELOW:
        return "below"
    if prev is not None:
        return "used"
    if w.has_record_id(pid, rid8):
        return "conflict"
    w.mark(pid, seq, leaf8, rid8, "a")
    return "accepted"


def _state(w: SeqWindows, tmp: Path) -> dict[str, bytes]:
    w.dirty.update(w._w)
    w.save(tmp, batch=1)
    return {p.name: p.read_bytes() for p in sorted(tmp.glob("*.win"))}


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=st.lists(_OP, max_size=60), size=st.sampled_from([1, 4, 16, 64]))
def test_accept_new_is_the_general_path(ops: list[Any], size: int, tmp_path: Path) -> None:
    a, b = SeqWindows(window=size), SeqWindows(window=size)
    for pid, seq, leaf8, rid8 in ops:
        expected = _general(a, pid, seq, leaf8, rid8)
        fast = b.accept_new(pid, seq, leaf8, rid8)
        got = "accepted" if fast else _general(b, pid, seq, leaf8, rid8)
        assert got == expected
        assert b.highest(pid) == a.highest(pid)
    d = tmp_path / str(len(list(tmp_path.iterdir())))
    assert _state(a, d / "a") == _state(b, d / "b")
    assert {p: w.rids for p, w in a._w.items()} == {p: w.rids for p, w in b._w.items()}


# ------------------------------------------------------ one window call for a producer's run


_RID = st.sampled_from([b"r1r1r1r1", b"r2r2r2r2", b"r3r3r3r3"]) | st.binary(min_size=8, max_size=8)
_PRE_OP = st.tuples(
    st.sampled_from(["p", "q"]),
    st.integers(0, 80),
    st.binary(min_size=8, max_size=8),
    _RID,
    st.sampled_from(["a", "a", "legacy", "out_of_range", "replay"]),
)


@st.composite
def _contiguous_run(draw: st.DrawFn) -> list[tuple[int, bytes, bytes]]:
    """What a producer sends: seqs from a start (maybe far above) with small gaps, fresh ids
    (sometimes one of the history's)."""
    seq = draw(st.integers(0, 150) | st.sampled_from([2**40]))
    out = []
    for _ in range(draw(st.integers(1, 12))):
        pool = draw(st.integers(0, 9)) == 0
        rid = draw(_RID if pool else st.binary(min_size=8, max_size=8))
        out.append((seq, draw(st.binary(min_size=8, max_size=8)), rid))
        seq += draw(st.sampled_from([1, 1, 1, 2, 5]))
    return out


_RUN = _contiguous_run()


def _one_by_one(w: SeqWindows, pid: str, seq: int, leaf8: bytes, rid8: bytes) -> str:
    """The engine's per-record path: ``accept_new``, else the general path."""
    return "accepted" if w.accept_new(pid, seq, leaf8, rid8) else _general(w, pid, seq, leaf8, rid8)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.lists(_PRE_OP, max_size=40),
    run=st.lists(
        st.tuples(
            st.integers(0, 120) | st.integers(0, 2**40), st.binary(min_size=8, max_size=8), _RID
        ),
        max_size=12,
    )
    | _RUN,
    order=st.sampled_from(["as drawn", "ascending", "carried"]),
    size=st.sampled_from([1, 4, 16, 64, 64, 64]),
    lift=st.none() | st.integers(0, 70),
)
# a legacy slot keeps an id outside the id set; one by one, the run's record at 5 takes that
# id, and the advance to 7 evicts the legacy slot, discarding the id again: only declining
# the run (an evicted slot holds one of its ids) leaves the same id set
@example(
    before=[("p", 3, b"L" * 8, b"r1r1r1r1", "legacy")],
    run=[(5, b"M" * 8, b"r1r1r1r1"), (7, b"N" * 8, b"r2r2r2r2")],
    order="as drawn",
    size=4,
    lift=None,
)
def test_accept_run_is_the_one_by_one_path(
    before: list[Any], run: list[Any], order: str, size: int, lift: int | None, tmp_path: Path
) -> None:
    """Hostile histories first (legacy slots, quarantined slots, reused record ids, evictions
    that free an id the run reuses), then a run in any order (ascending; a carried v2 batch
    after the poll's records; shuffled): ``accept_run`` either does exactly what deciding the
    records one by one does (all accepted) or nothing."""
    a, b = SeqWindows(window=size), SeqWindows(window=size)
    for pid, seq, leaf8, rid8, outcome in before:
        for w in (a, b):
            if outcome == "replay":  # the general path's mark of an accepted record
                w.accept_new(pid, seq, leaf8, rid8)
            else:
                w.mark(pid, seq, leaf8, rid8, outcome)
    if lift is not None and run:  # the run starts ``lift`` above the producer's highest
        low = min(x[0] for x in run)
        run = [(sq - low + a.highest("p") + 1 + lift, lf, r) for sq, lf, r in run]
    if order != "as drawn":
        run = sorted({s: (s, lf, r) for s, lf, r in run}.values())
    if order == "carried" and run:  # the lower half arrives after the upper half
        run = run[len(run) // 2 :] + run[: len(run) // 2]
    seqs = [s for s, _, _ in run]
    leaves = [lf for _, lf, _ in run]
    rids = [r for _, _, r in run]
    answers = [_one_by_one(a, "p", s, lf, r) for s, lf, r in run]
    d = tmp_path / str(len(list(tmp_path.iterdir())))
    if b.accept_run("p", seqs, leaves, rids):
        assert answers == ["accepted"] * len(run)
        assert run
    else:  # nothing changed: the caller decides record by record, as ``a`` just did
        for s, lf, r in run:
            _one_by_one(b, "p", s, lf, r)
    assert b.highest("p") == a.highest("p")
    assert _state(a, d / "a") == _state(b, d / "b")
    assert {p: w.rids for p, w in a._w.items()} == {p: w.rids for p, w in b._w.items()}


def test_accept_run_takes_the_common_run_and_refuses_a_freed_id() -> None:
    """Not vacuous: a fresh ascending run is taken in one call, and one whose lower half
    arrives last; a run reusing the id of a slot it evicts (which one by one would discard
    again) is left to the per-record path."""
    w = SeqWindows(window=8)
    assert w.accept_run("p", [0, 1, 2], [b"L" * 8] * 3, [b"a" * 8, b"b" * 8, b"c" * 8])
    assert w.lookup("p", 1) == ("a", b"L" * 8)
    assert w.has_record_id("p", b"b" * 8)
    # a v2 batch carried from the last poll arrives after this poll's records: taken too
    assert w.accept_run("p", [5, 6, 3, 4], [b"M" * 8] * 4, [bytes([i]) * 8 for i in range(4)])
    assert w.highest("p") == 6
    assert [w.lookup("p", s) for s in (3, 4, 5, 6)] == [("a", b"M" * 8)] * 4
    w.mark("p", 7, b"L" * 8, b"d" * 8, "legacy")  # legacy slots keep no id in the set
    assert not w.accept_run("p", [14, 15], [b"L" * 8] * 2, [b"e" * 8, b"d" * 8])
    assert w.highest("p") == 7


# --------------------------------------------------- tabular and text records on the fast path


def _tabular_and_text(env: Env) -> tuple[list[bytes], list[bytes]]:
    p = env.producer("alpha")
    recs = p.sign(
        [
            p.record({"features": {"a": 1.0, "b_2": -3.5}, "label": 1}, schema="tabular-sample"),
            p.record({"features": {"z": 1e20, "a": 0.0}}, schema="tabular-sample"),
            p.record({"features": {"a": 2.0}, "label": None}, schema="tabular-sample"),
            p.record({"instruction": "Add 2 and 3.", "response": "5"}, schema="text-sample"),
            p.record({"instruction": "<b>bold</b> move", "response": "ok"}, schema="text-sample"),
            p.record({"instruction": "pаypal", "response": "x"}, schema="text-sample"),
        ]
    )
    good = [env.line(r) for r in recs]
    hostile = [
        good[0].replace(b'"label":1', b'"label":1,"label":2', 1),  # duplicate key
        good[0].replace(b'"a":1.0', b'"a":1.0,"a":1.0', 1),  # duplicate column
        good[0].replace(b'"b_2"', b'"B2"', 1),  # column name pattern
        good[1].replace(b'"a":0.0', b'"a":"0"', 1),  # wrong type
        good[2][:-1] + b',"extra":1}',  # unknown key
        good[3].replace(b'"5"', b'""', 1),  # empty text
        good[3].replace(b'"text-sample"', b'"tabular-sample"', 1),  # other schema's name
        good[3].replace(b'"response":"5"', b'"response":"5","response":"6"', 1),
    ]
    return good, hostile


def test_tabular_and_text_outcomes_and_stored_lines_are_those_of_pydantic(env: Env) -> None:
    """The tabular and text decoders wired into the engine (issue 12): same outcome and reason
    per record, same stored bytes, with and without the fast path."""
    good, hostile = _tabular_and_text(env)
    results = []
    for fast in (True, False):
        env.tmp = env.tmp / f"fast-{fast}"
        env.store = type(env.store)(env.tmp / "objects")
        eng = env.open(fast_decode=fast)
        outs = eng.process_and_commit(env.msgs([*hostile, *good]))
        (key,) = list(env.store.list(ACCEPTED_PREFIX))
        blob = env.store.get(key)
        stored = open_lines(env.encryptor, IngestEngine._context(key), blob, digest=None)
        results.append((outs, stored))
    assert results[0] == results[1]
    outs = results[0][0]
    assert [o for o, _ in outs[: len(hostile)]] == ["quarantined"] * len(hostile)
    assert [o for o, _ in outs[len(hostile) :]] == ["accepted"] * 5 + ["quarantined"]


def test_tabular_and_text_records_take_the_fast_path(env: Env, monkeypatch: Any) -> None:
    good, _ = _tabular_and_text(env)
    eng = env.open()
    calls: list[Any] = []
    monkeypatch.setattr(RECORD_ADAPTER, "validate_json", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(eng, "_validate_image", lambda *a, **k: calls.append(a))
    outs = eng.process_and_commit(env.msgs(good))
    assert [o for o, _ in outs] == ["accepted"] * 5 + ["quarantined"]  # confusable: content
    assert calls == []


# ------------------------------------------------- adversarial review: hostile signed records

_COUNTER = itertools.count()
MAX_AGE, MAX_SKEW, WINDOW = 10_000, 2_000, 4


def _stored(env: Env) -> list[bytes]:
    out: list[bytes] = []
    for key in sorted(env.store.list(ACCEPTED_PREFIX)):
        blob = env.store.get(key)
        out.extend(open_lines(env.encryptor, IngestEngine._context(key), blob, digest=None))
    return out


def _windows(env: Env) -> dict[str, bytes]:
    d = env.tmp / "state" / "windows"
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.win"))}


# ----------------------------------------------------------- decision loop vs _decide alone

_TS = st.sampled_from([0, -MAX_AGE, -MAX_AGE - 1, MAX_SKEW, MAX_SKEW + 1, -1, 1])
_ENGINE_OP = st.one_of(
    st.tuples(
        st.just("new"),
        st.sampled_from(["alpha", "beta"]),
        # -1: the producer's next seq (the common case); else gaps, wrap, far jumps
        st.sampled_from([-1, -1, -1]) | st.integers(0, 14) | st.sampled_from([2**63 - 1, 2**40]),
        st.integers(0, 3),  # record_id pool: conflicts across seqs
        _TS,
        st.sampled_from(["good", "good", "good", "rival", "label", "range", "tabular"]),
    ),
    st.tuples(st.just("again"), st.integers(0, 1000)),  # exact re-delivery of an earlier line
    st.tuples(st.just("cut")),  # batch boundary
    st.tuples(st.just("reopen")),  # close (windows to files) and reopen
)


def _payload(kind: str, seq: int) -> tuple[dict[str, Any], str]:
    feats = [float((i + seq) % 17) for i in range(64)]
    if kind == "rival":  # another record on the same seq: a different leaf
        feats[0] = 16.5 if feats[0] != 16.5 else 0.5
    label = 99 if kind == "label" else 3
    if kind == "range":
        feats[5] = 1e300
    if kind == "tabular":
        return {"features": {"a": float(seq), "b": -0.0}, "label": 1}, "tabular-sample"
    return {"width": 8, "height": 8, "features": feats, "label": label}, "image-sample"


def _build(env: Env, ops: list[Any], reference: Env) -> list[list[bytes]]:
    producers = {name: env.producer(name) for name in ("alpha", "beta")}
    for name, p in producers.items():  # the same producer keys in the reference's registry
        reference.registry.register(name, p.key.public_key())
    batches: list[list[bytes]] = [[]]
    sent: list[bytes] = []
    top = {"alpha": -1, "beta": -1}
    for op in ops:
        if op[0] in ("cut", "reopen"):
            batches.append([op[0].encode()] if op[0] == "reopen" else [])
            continue
        if op[0] == "again":
            if sent:
                batches[-1].append(sent[op[1] % len(sent)])
            continue
        _, name, seq, rid, dts, kind = op
        seq = top[name] + 1 if seq == -1 else seq
        top[name] = max(top[name], seq)
        p = producers[name]
        payload, schema = _payload(kind, seq)
        rec = p.record(payload, schema=schema, ts=env.NOW + dts, seq=seq, record_id=f"r{rid}")
        line = env.line(p.sign([rec])[0])
        batches[-1].append(line)
        sent.append(line)
    return batches


def _run(env: Env, batches: list[list[bytes]], *, shortcut: bool) -> Any:
    kw = {"max_age_ms": MAX_AGE, "max_skew_ms": MAX_SKEW, "seq_window": WINDOW}
    eng = env.open(**kw)
    outcomes = []
    for batch in batches:
        if batch[:1] == [b"reopen"]:
            env.close()
            batch = batch[1:]
        eng = env.engine or env.open(**kw)
        if not shortcut:  # the reference: every record decided by _decide
            eng.windows.accept_new = lambda *a: False  # type: ignore[method-assign]
            eng.windows.accept_run = lambda *a: False  # type: ignore[method-assign]
        if batch:
            outcomes.append(eng.process_and_commit(env.msgs(batch)))
    summary = dataclasses.asdict(eng.summary)
    env.close()
    return outcomes, _stored(env), _windows(env), summary


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_ENGINE_OP, min_size=1, max_size=30))
def test_decision_loop_decides_and_stores_exactly_as_decide(env: Env, ops: list[Any]) -> None:
    base = env.tmp / f"ex{next(_COUNTER)}"
    fast, slow = type(env)(base / "fast", env.encryptor), type(env)(base / "slow", env.encryptor)
    batches = _build(fast, ops, slow)
    got, expected = _run(fast, batches, shortcut=True), _run(slow, batches, shortcut=False)
    assert got[0] == expected[0]  # outcome and reason of every record
    assert got[1] == expected[1]  # stored bytes
    assert got[2] == expected[2]  # window files
    assert got[3] == expected[3]  # counters


def test_decision_loop_attacks_are_not_vacuous(env: Env) -> None:
    """The scenario the property test draws from, spelled out: every kind of refusal occurs."""
    ops: list[Any] = [
        ("new", "alpha", 0, 0, 0, "good"),
        ("new", "alpha", 0, 0, 0, "rival"),  # forged rival on a used seq, same batch
        ("again", 0),  # exact re-delivery inside the batch
        ("new", "alpha", 1, 0, 0, "good"),  # record_id of seq 0 on a new seq
        ("new", "alpha", 2, 1, -MAX_AGE - 1, "good"),  # one ms too old
        ("new", "alpha", 2, 1, MAX_SKEW, "good"),  # exactly at the future edge: accepted
        ("new", "alpha", 3, 2, 0, "label"),
        ("cut",),
        ("again", 6),  # re-delivery of a content quarantine
        ("new", "alpha", 9, 3, -MAX_AGE, "good"),  # gap, exactly at the old edge: accepted
        ("reopen",),
        ("new", "alpha", 5, 4, 0, "good"),  # 5 <= 9 - 4: below the window
        ("new", "alpha", 8, 5, 0, "tabular"),  # late but in the window
        ("again", 7),
    ]
    fast = type(env)(env.tmp / "fast", env.encryptor)
    slow = type(env)(env.tmp / "slow", env.encryptor)
    batches = _build(fast, ops, slow)
    got, expected = _run(fast, batches, shortcut=True), _run(slow, batches, shortcut=False)
    assert got == expected
    reasons = [r.split(":")[0] if r else o for batch in got[0] for o, r in batch]
    for want in ("accepted", "duplicate", "replay", "conflict", "ts_out_of_window",
                 "label_invalid", "seq_out_of_window"):  # fmt: skip
        assert any(want in r for r in reasons), (want, reasons)


# ------------------------------------------------------- stored line: hostile number spellings

HOSTILE_NUMBERS = [
    b"-0", b"-0.0", b"0e0", b"-0e-10", b"5e-324", b"4.9406564584124654e-324",
    b"2.2250738585072011e-308", b"2.2250738585072012e-308", b"1E-7", b"1e-07", b"1.0e-7",
    b"0.0000001", b"0.00001", b"1e-5", b"1e-6", b"9007199254740993", b"-9007199254740993",
    b"9007199254740992.5000000000000000001",
    b"1.00000000000000011102230246251565404236316680908203125",
    b"9999999999999998", b"9999999999999999", b"1e16", b"1E+16", b"123456789012345678901234567890",
    b"0." + b"0" * 300 + b"1", b"1" + b"0" * 15, b"1" + b"0" * 300 + b"e-300", b"7", b"-1E0",
]  # fmt: skip


def _image_line(env: Env, p: Any, feats: list[bytes]) -> bytes:
    """A signed image record whose features are spelled ``feats`` on the wire (the signature
    covers the values, not their spelling: the values the line decodes to are signed)."""
    vals = [float(v) for v in json.loads(b"[" + b",".join(feats) + b"]")]
    payload = {"width": len(feats), "height": 1, "features": vals, "label": 1}
    (rec,) = p.sign([p.record(payload)])
    line = env.line(rec)
    start = line.index(b'"features":[') + len(b'"features":')
    end = line.index(b"]", start) + 1
    return line[:start] + b"[" + b",".join(feats) + b"]" + line[end:]


def test_every_hostile_number_spelling_is_stored_as_pydantic_core_writes_it(env: Env) -> None:
    """Each spelling alone in a record (so the shortcut's 1e16 bound is probed from both sides)
    and all of them in one record: the stored line is the pydantic-core one, with and without
    the fast decoder."""
    p = env.producer("alpha")
    lines = [_image_line(env, p, [f]) for f in HOSTILE_NUMBERS]
    mixed = _image_line(env, p, HOSTILE_NUMBERS)
    for fast in (True, False):
        for spec_w, batch in ((1, lines), (len(HOSTILE_NUMBERS), [mixed])):
            env.tmp = env.tmp / f"fast-{fast}-{spec_w}"
            env.store = type(env.store)(env.tmp / "objects")
            spec = ImageSpec(spec_w, 1, -1e300, 1e300, frozenset(range(10)))
            eng = env.open(image_spec=spec, fast_decode=fast)
            assert eng.process_and_commit(env.msgs(batch)) == [("accepted", None)] * len(batch)
            stored = _stored(env)
            for line, got in zip(batch, stored, strict=True):
                rec = RECORD_ADAPTER.validate_json(line)
                assert got == reference_line(rec, json.loads(got)["leaf"]), (fast, got)
    feats = HOSTILE_NUMBERS
    # and each below 1e16 alone takes the one-call msgspec line (the ``plain`` shortcut)
    plain = [f for f in feats if abs(float(json.loads(f))) < 1e16]
    line = _image_line(env, p, plain)
    spec = ImageSpec(len(plain), 1, -1e300, 1e300, frozenset(range(10)))
    env.tmp = env.tmp / "plain"
    env.store = type(env.store)(env.tmp / "objects")
    eng = env.open(image_spec=spec)
    assert eng.process_and_commit(env.msgs([line])) == [("accepted", None)]
    (stored,) = _stored(env)
    rec = RECORD_ADAPTER.validate_json(line)
    assert stored == reference_line(rec, json.loads(stored)["leaf"])
    assert b'"features":[0.0,-0.0,0.0,-0.0,5e-324,5e-324,' in stored


@settings(max_examples=300, deadline=None)
@given(
    rec=image_record(),
    x=st.floats(allow_nan=False, allow_infinity=False, width=64),
    spelling=st.sampled_from(["repr", "e", "E+", "zeros", "int"]),
)
def test_fast_decoder_value_and_stored_bytes_equal_pydantic_for_any_spelling(
    rec: dict[str, Any], x: float, spelling: str
) -> None:
    """One feature, any JSON spelling: the fast decoder yields the same float (bit for bit) as
    pydantic, and the record serialises to the same canonical bytes."""
    if spelling == "repr":
        lit = repr(x)
    elif spelling == "e":
        lit = f"{x:.17e}"
    elif spelling == "E+":
        lit = f"{x:.20E}".replace("E", "E+").replace("E+-", "E-").replace("E++", "E+")
    elif spelling == "zeros":
        lit = f"{x:.340f}".rstrip("0") + "0"
    else:
        lit = str(int(x)) if abs(x) < 1e300 else repr(x)
    rec["payload"] = {"width": 1, "height": 1, "features": [1.0], "label": 1}
    data = json.dumps(rec, separators=(",", ":")).encode()
    data = data.replace(b'"features":[1.0]', b'"features":[' + lit.encode() + b"]")
    slow = RECORD_ADAPTER.validate_json(data)
    fast = FAST_DECODERS["image-sample/v1"].decode(data)
    assert fast is not None
    assert fast == slow
    a, b = fast["payload"]["features"][0], slow["payload"]["features"][0]
    assert a.hex() == b.hex()  # -0.0 vs 0.0 too
    assert canonical_json(fast) == canonical_json(slow)


# ---------------------------------------------------------------- decode_any: schema routing


def test_a_value_that_spells_another_schema_name_does_not_steer_decode_any(env: Env) -> None:
    """``decode_any`` routes on the bytes ``"tabular-sample"`` / ``"text-sample"``, which a
    value can carry (a text instruction, a record id): such records still take the fast path."""
    p = env.producer("alpha")
    recs = p.sign(
        [
            p.record({"instruction": "tabular-sample", "response": "image-sample"},
                     schema="text-sample"),
            p.record({"features": {"a": 1.0}}, schema="tabular-sample", record_id="text-sample"),
        ]
    )  # fmt: skip
    for rec in recs:
        data = env.line(rec)
        assert decode_any(data) is not None
        assert decode_any(data) == RECORD_ADAPTER.validate_json(data)


# ------------------------------------------------------------------------------ Merkle root

#: RFC 6962 Merkle Tree Hash of the first n of the certificate-transparency test inputs
CT_INPUTS = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_level_merkle_root_gives_the_rfc6962_known_answers() -> None:
    leaves = [leaf_hash(d) for d in CT_INPUTS]
    for n in range(1, 9):
        assert merkle_root(leaves[:n]).hex() == CT_ROOTS[n - 1], n
        assert merkle_root(tuple(leaves[:n])).hex() == CT_ROOTS[n - 1], n


def test_level_merkle_root_tells_apart_leaves_that_differ_in_one_byte_at_any_size() -> None:
    """Sizes 1–300, a single leaf flipped at every position of the odd-count right edge and the
    left edge: the level-wise root follows the recursive one (no carried node is dropped or
    hashed twice, single leaf returned as itself, no domain-separation byte lost)."""
    base = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(300)]
    for n in range(1, 301):
        leaves = base[:n]
        ref = merkle_root_recursive(leaves)
        assert merkle_root(leaves) == ref, n
        for i in {0, n // 2, n - 1}:
            alt = list(leaves)
            alt[i] = alt[i][:-1] + bytes([alt[i][-1] ^ 1])
            assert merkle_root(alt) == merkle_root_recursive(alt) != ref, (n, i)
    one = hashlib.sha256(b"x").digest()
    assert merkle_root([one]) == one  # a single leaf is the root, not H(0x01 || leaf)
    a, b = base[0], base[1]
    assert merkle_root([a, b]) == hashlib.sha256(b"\x01" + a + b).digest()


def test_merkle_root_of_no_leaves_is_refused() -> None:
    for f in (merkle_root, merkle_root_recursive):
        try:
            f([])
        except ValueError:
            continue
        raise AssertionError(f"{f.__name__}([]) returned")
