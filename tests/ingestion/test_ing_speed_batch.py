"""Issue 12, second speed pass: each batch-level shortcut gives exactly the reference answer.

* identifier patterns checked after decoding, once per distinct value of a batch
  (``FastDecoder.decode_many`` / ``decode_any_many``), against the reference decoder that
  checks every pattern inside msgspec (``defer_patterns=False``) and against pydantic: hostile
  identifiers (a trailing newline, non-ASCII, empty, one character too long, a non-canonical
  base64 tail) mixed into batches whose other records share the same value or a valid one, so a
  bad value that is shared, or hidden among good ones, is refused in every record that holds it
  and in no other;
* the image payload bytes and the RFC 6962 leaf hash built in one pass (``image_leaf``) against
  ``image_payload_bytes`` + ``leaf_hash(record_leaf_data(...))``, for records decoded by either
  path, any float (subnormals, ``-0.0``, the largest finite), ints for floats, every size;
* the decision per producer run (``_accept_runs`` + ``SeqWindows.accept_run``, whose window
  property test is in ``test_ing_speed_paths.py``) against ``_decide`` alone, end to end with
  correctly signed hostile v2 batches: outcomes and reasons, stored bytes, window files,
  counters;
* the file stream's poll (all complete lines of its buffer at once) against the format's
  definition: every line once, in order, with its position, across checkpoints and restarts.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from saip_ingestion import provenance, schemas
from saip_ingestion.backends.local import FileRecordStream
from saip_ingestion.engine import ACCEPTED_PREFIX, IngestEngine
from saip_ingestion.fastdecode import FAST_DECODERS, FastDecoder, decode_any, decode_any_many
from saip_ingestion.provenance import (
    image_leaf,
    image_payload_bytes,
    leaf_hash,
    record_leaf_data,
)
from saip_ingestion.schemas import (
    _B64_64,
    KEY_ID_PATTERN,
    PRODUCER_ID_PATTERN,
    RECORD_ADAPTER,
    RECORD_ID_PATTERN,
    duplicate_key,
)
from saip_ingestion.sealed import open_lines

B64_32 = "A" * 43 + "="
B64_64 = "A" * 86 + "=="

#: the reference: every pattern checked by msgspec itself, as before this pass
REFERENCE = {
    "image-sample/v1": FastDecoder(
        schemas.ImageRecordV1,
        key_count=FAST_DECODERS["image-sample/v1"]._key_count,
        defer_patterns=False,
    ),
    "tabular-sample/v1": FastDecoder(schemas.TabularRecordV1, defer_patterns=False),
    "text-sample/v1": FastDecoder(schemas.TextRecordV1, defer_patterns=False),
}


def reference_any(data: bytes) -> Any:
    rec = REFERENCE["image-sample/v1"].decode(data)
    if rec is None and b'"tabular-sample"' in data:
        rec = REFERENCE["tabular-sample/v1"].decode(data)
    if rec is None and b'"text-sample"' in data:
        rec = REFERENCE["text-sample/v1"].decode(data)
    return rec


def pydantic_accepts(data: bytes) -> bool:
    try:
        rec = RECORD_ADAPTER.validate_json(data)
    except ValidationError:
        return False
    return duplicate_key(data, rec) is None


def test_the_reference_really_checks_patterns_in_msgspec_and_the_fast_one_does_not() -> None:
    """Not vacuous: the two decoders differ in where the patterns are checked."""
    assert REFERENCE["image-sample/v1"].patterns == []
    fast = FAST_DECODERS["image-sample/v1"]
    assert [p for p, _ in fast.patterns] == [
        ("record_id",), ("producer_id",), ("sig", "key_id"), ("sig", "root_sig"),
    ]  # fmt: skip


def _rx(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern[:-1] + r"\Z", fullmatch=True)


def _hostile(pattern: str, good: str) -> st.SearchStrategy[str]:
    return (
        st.sampled_from(
            [
                good + "\n",  # Python's ``$`` would let this through; ``\Z`` must not
                "\n" + good,
                good + " ",
                "",
                good[:-1] + "é",
                good + good,  # too long for most identifier patterns
                good[:-1] + "B" if good.endswith("A==") else good.upper(),
                "x" * 200,
                good * 400,  # very long
                good + "\x00",
                "\u0663" + good[1:],  # an Arabic-Indic digit (``\\d`` would take it)
                good[:-1] + "\u212a",  # KELVIN SIGN (folds to ``k`` under IGNORECASE)
                good[:-1] + "\uff41",  # fullwidth ``a``
                good[:-1] + "\ud800",  # a lone surrogate (escaped, or raw bytes: not UTF-8)
            ]
        )
        | _rx(pattern)
    )


FIELDS = {
    "record_id": (RECORD_ID_PATTERN, "r-1"),
    "producer_id": (PRODUCER_ID_PATTERN, "alpha"),
    "key_id": (KEY_ID_PATTERN, "0123456789abcdef"),
    "root_sig": (_B64_64, B64_64),
}


#: one valid payload per schema (the identifiers are what these tests vary)
_PAYLOADS: dict[str, dict[str, Any]] = {
    "image-sample": {"width": 1, "height": 3, "features": [0.5, 2, 7.0], "label": 0},
    "tabular-sample": {"features": {"x": -1.5}},
    "text-sample": {"instruction": "q", "response": "a"},
}


def _record(schema: str, ids: dict[str, str]) -> dict[str, Any]:
    sig: dict[str, Any] = {"alg": "ed25519-merkle-sha256", "tree_size": 2, "index": 0}
    sig["path"] = [B64_32]
    sig.update(key_id=ids["key_id"], root_sig=ids["root_sig"])
    rec: dict[str, Any] = {k: ids[k] for k in ("record_id", "producer_id")}
    rec.update(seq=3, ts=1_764_100_000_000, schema={"name": schema, "version": 1}, sig=sig)
    rec["payload"] = dict(_PAYLOADS[schema])
    return rec


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """A batch whose records share some identifier values (as a Merkle batch shares its
    producer, key and root signature) and carry hostile ones elsewhere."""
    shared = {k: draw(_hostile(p, g)) for k, (p, g) in FIELDS.items()}
    out = []
    for _ in range(draw(st.integers(1, 12))):
        ids = {}
        for k, (p, g) in FIELDS.items():
            ids[k] = draw(st.sampled_from([shared[k], g]) | _hostile(p, g))
        schema = draw(st.sampled_from(["image-sample"] * 3 + ["tabular-sample", "text-sample"]))
        line = json.dumps(_record(schema, ids), ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:
            line = line[: len(line) // 2]  # garbage among the records
        out.append(line.encode("utf-8", "surrogatepass"))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_batch_pattern_checks_accept_exactly_what_msgspec_patterns_accept(
    batch: list[bytes],
) -> None:
    got = decode_any_many(batch)
    want = [reference_any(d) for d in batch]
    assert got == want
    assert [decode_any(d) for d in batch] == want  # the per-record form too
    for d, rec in zip(batch, got, strict=True):
        if rec is not None:
            assert pydantic_accepts(d), d[:200]


def test_one_bad_identifier_among_good_ones_refuses_only_its_records() -> None:
    good = {k: g for k, (_p, g) in FIELDS.items()}
    lines = []
    for k in FIELDS:
        for bad in (good[k] + "\n", good[k] + "é", ""):
            lines.append(json.dumps(_record("image-sample", {**good, k: bad})).encode())
    genuine = json.dumps(_record("image-sample", good)).encode()
    batch = [genuine, *lines, genuine]
    got = decode_any_many(batch)
    assert got[0] is not None
    assert got[-1] is not None
    assert got[1:-1] == [None] * len(lines)
    assert not any(pydantic_accepts(d) for d in lines)


# ----------------------------------------------------- signing input + leaf hash in one pass

_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, -1.7976931348623157e308, 1e16]
)


@st.composite
def image_records(draw: st.DrawFn) -> dict[str, Any]:
    w, h = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rec = _record("image-sample", {k: draw(_rx(p)) for k, (p, _g) in FIELDS.items()})
    rec["seq"] = draw(st.integers(0, 2**63 - 1))
    rec["ts"] = draw(st.integers(0, 2**53))
    rec["payload"] = {
        "width": w,
        "height": h,
        "features": draw(st.lists(_FLOATS | st.integers(-(2**53), 2**53), min_size=w * h,
                                  max_size=w * h)),
        "label": draw(st.integers(0, 65535)),
    }  # fmt: skip
    return rec


@settings(max_examples=300, deadline=None)
@given(rec=image_records())
def test_image_leaf_is_the_reference_signing_input_and_leaf(rec: dict[str, Any]) -> None:
    data = json.dumps(rec).encode()
    for decoded in (
        RECORD_ADAPTER.validate_json(data),
        FAST_DECODERS["image-sample/v1"].decode(data),
    ):
        assert decoded is not None
        pixels, leaf = image_leaf(decoded)
        assert pixels == image_payload_bytes(decoded["payload"])
        # both share one cached packer: pin the documented layout independently of it
        pay = decoded["payload"]
        feats = pay["features"]
        layout = struct.pack("<III", pay["width"], pay["height"], pay["label"])
        assert pixels == layout + struct.pack(f"<{len(feats)}d", *feats)
        assert leaf == leaf_hash(record_leaf_data(decoded))


def test_image_leaf_packer_cache_is_bounded() -> None:
    for n in range(1, 200):
        rec = _record("image-sample", {k: g for k, (_p, g) in FIELDS.items()})
        rec["payload"] = {"width": n, "height": 1, "features": [1.5] * n, "label": 0}
        assert image_leaf(rec)[1] == leaf_hash(record_leaf_data(rec))
    assert len(provenance._IMAGE_PACKERS) <= 64


def _engine_run(env: Any, batches: list[list[bytes]], *, shortcut: bool) -> Any:
    eng = env.open(seq_window=64)
    taken: list[bool] = []
    if shortcut:
        real = eng.windows.accept_run

        def spy(*a: Any) -> bool:
            taken.append(real(*a))
            return taken[-1]

        eng.windows.accept_run = spy  # type: ignore[method-assign]
    else:  # the reference: every record decided by _decide
        eng.windows.accept_new = lambda *a: False  # type: ignore[method-assign]
        eng.windows.accept_run = lambda *a: False  # type: ignore[method-assign]
    outs = [eng.process_and_commit(env.msgs(b)) for b in batches]
    summary = dataclasses.asdict(eng.summary)
    env.close()
    stored = []
    for key in sorted(env.store.list(ACCEPTED_PREFIX)):
        blob = env.store.get(key)
        stored.extend(open_lines(env.encryptor, IngestEngine._context(key), blob, digest=None))
    wins = {p.name: p.read_bytes() for p in sorted((env.tmp / "state" / "windows").glob("*"))}
    return (outs, stored, wins, summary), taken


def test_engine_with_producer_runs_decides_exactly_as_decide(env: Any) -> None:
    """Correctly signed v2 batches of three producers, interleaved, with hostile records in
    them: a producer whose later batch re-uses its seqs with other content (replay), an exact
    re-delivery of a whole batch, a record id re-used on a new seq (conflict), a batch behind
    the window, a content quarantine inside an otherwise clean run, and stale ``ts``; the
    engine taking whole producer runs decides, stores and remembers exactly what ``_decide``
    alone does."""
    fast, slow = (
        type(env)(env.tmp / "fast", env.encryptor),
        type(env)(env.tmp / "slow", env.encryptor),
    )
    ps = {n: fast.producer(n) for n in ("alpha", "beta", "gamma")}
    for n, p in ps.items():
        slow.registry.register(n, p.key.public_key())

    def batch(name: str, seqs: range, **kw: Any) -> list[bytes]:
        p = ps[name]
        recs = [p.record(seq=s, record_id=f"{name}-{s}", **kw) for s in seqs]
        return [env.line(r) for r in p.sign_v2(recs)]

    a0, b0, g0 = batch("alpha", range(0, 40)), batch("beta", range(0, 30)), batch("gamma", range(5))
    replay = batch("alpha", range(40, 48), label=2)
    replay_again = batch("alpha", range(40, 48), label=3)  # same seqs, other content
    conflict = [
        env.line(r) for r in ps["beta"].sign_v2([ps["beta"].record(seq=30, record_id="beta-3")])
    ]
    label = ps["gamma"].sign_v2(
        [ps["gamma"].record(seq=s, record_id=f"gamma-{s}", label=99 if s == 7 else 1)
         for s in range(5, 10)]
    )  # fmt: skip
    stale = batch("beta", range(31, 35), ts=env.NOW - 10**12)
    behind = batch("gamma", range(0, 3))  # re-delivery: duplicates
    far = batch("alpha", range(500, 510))
    below = batch("alpha", range(100, 104))  # below the window after the jump
    batches = [
        a0[:20] + b0[:15] + g0,
        a0[20:] + b0[15:] + replay,
        replay_again + conflict + [env.line(r) for r in label] + replay,
        stale + behind + far,
        below + b0[:3],
    ]
    got, taken = _engine_run(fast, batches, shortcut=True)
    ref, _ = _engine_run(slow, batches, shortcut=False)
    assert got == ref
    assert True in taken  # not vacuous: whole runs were taken
    assert False in taken  # and others were left to the per-record path
    reasons = {r for outs in got[0] for _, r in outs}
    assert {
        "replay",
        "conflict",
        "label_invalid",
        "ts_out_of_window",
        "seq_out_of_window",
    } <= reasons


def test_a_producer_with_a_quarantined_or_stale_record_in_the_poll_is_decided_one_by_one(
    env: Any,
) -> None:
    """The run shortcut is only for producers whose every record of the poll is clean and
    fresh: a record quarantined for its content, or stale, still claims its ``record_id`` (or
    fails on ``ts``) in arrival order, before the clean record behind it that re-uses the id.
    Taking the clean records first would turn the first record's reason into ``conflict`` and
    store the second: the outcomes must be those of ``_decide`` alone."""
    fast, slow = (
        type(env)(env.tmp / "fast", env.encryptor),
        type(env)(env.tmp / "slow", env.encryptor),
    )
    ps = {n: fast.producer(n) for n in ("alpha", "beta")}
    for n, p in ps.items():
        slow.registry.register(n, p.key.public_key())
    a, b = ps["alpha"], ps["beta"]
    bad_label = a.sign_v2(
        [a.record(seq=0, record_id="dup", label=99), a.record(seq=1, record_id="dup")]
    )
    stale = b.sign_v2(
        [b.record(seq=0, record_id="old", ts=env.NOW - 10**12), b.record(seq=1, record_id="old")]
    )
    batches = [[env.line(r) for r in bad_label + stale]]
    got, taken = _engine_run(fast, batches, shortcut=True)
    ref, _ = _engine_run(slow, batches, shortcut=False)
    assert got == ref
    assert got[0] == [
        [
            ("quarantined", "label_invalid"),
            ("quarantined", "conflict"),
            ("quarantined", "ts_out_of_window"),
            ("accepted", None),
        ]
    ]
    assert taken == []  # neither producer's run was offered whole


# ------------------------------------------------- file stream: all complete lines at once


def _expected_messages(content: bytes, limit: int) -> list[tuple[bytes, str]]:
    """What the file stream must deliver for a small file, from the format's definition: every
    line (blank ones too) with the byte offset after it, one trailing CR dropped, a line longer
    than ``limit`` cut to ``limit + 1`` bytes; a last line without a newline has its CRs
    dropped (or is cut the same way)."""
    out: list[tuple[bytes, str]] = []
    offset = 0
    *lines, tail = content.split(b"\n")
    for line in lines:
        offset += len(line) + 1
        data = line[: limit + 1] if len(line) > limit + 1 else line.removesuffix(b"\r")
        out.append((data, str(offset)))
    if tail:
        offset += len(tail)
        out.append((tail[: limit + 1] if len(tail) > limit else tail.rstrip(b"\r"), str(offset)))
    return out


_LINE = st.sampled_from([b"", b"\r", b"x\r", b"\r\r", b"ab", b"a" * 40, b'{"k":1}']) | st.binary(
    max_size=30
).map(lambda b: b.replace(b"\n", b""))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(_LINE, max_size=40),
    tail=st.booleans(),
    polls=st.lists(st.integers(1, 9), min_size=1, max_size=12),
    limit=st.sampled_from([8, 25, 1000]),
    restart=st.integers(0, 6),
)
def test_file_stream_poll_delivers_every_line_once_with_its_position(
    lines: list[bytes], tail: bool, polls: list[int], limit: int, restart: int, tmp_path: Path
) -> None:
    """Blank lines, CRs, oversized lines (cut to ``limit + 1``), a last line without a newline,
    any poll sizes, a checkpoint and a restart part way: every line once, in order, with its
    position (the poll takes all complete lines of its buffer at once)."""
    d = tmp_path / str(len(list(tmp_path.iterdir())))
    d.mkdir()
    src = d / "in.jsonl"
    content = b"\n".join(lines) + (b"\n" if tail and lines else b"")
    src.write_bytes(content)
    s = FileRecordStream(src, checkpoint_dir=d / "ck", max_line_bytes=limit)
    got: list[tuple[bytes, str]] = []
    for k, n in enumerate([*polls, 10**6]):
        msgs = s.poll(max_messages=n, timeout=0)
        assert len(msgs) <= n
        got.extend((m.data, m.position) for m in msgs)
        if k == restart and msgs:  # everything so far checkpointed: a restart goes on after it
            s.checkpoint(msgs)
            s.close()
            s = FileRecordStream(src, checkpoint_dir=d / "ck", max_line_bytes=limit)
    s.close()
    assert got == _expected_messages(content, limit)
