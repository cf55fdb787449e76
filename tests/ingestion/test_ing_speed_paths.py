"""Issue 12 (speed): every shortcut of the hot path gives exactly what the reference gives.

* the stored line of an image record encoded by msgspec in one call is byte-identical to the
  pydantic-core canonical form, for records decoded by either path; a record with a feature
  whose shortest form has a positive exponent (≥ 1e16, where the two encoders differ) is stored
  in the pydantic-core form (end to end, read back from the sealed object);
* the level-by-level Merkle root is the RFC 6962 recursive definition, for every size;
* ``SeqWindows.accept_new`` decides and changes state exactly as ``lookup`` +
  ``has_record_id`` + ``mark`` (the engine's general path) over random operation sequences.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.engine import ACCEPTED_PREFIX, ImageSpec, IngestEngine, _Candidate
from saip_ingestion.fastdecode import FAST_DECODERS
from saip_ingestion.provenance import merkle_root, merkle_root_recursive
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
