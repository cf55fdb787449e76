"""Bounded dedupe on the authenticated (producer_id, seq): attacker cases first, then the window
model (hypothesis, against a reference that remembers everything), persistence and memory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_ingestion.engine import iter_accepted
from saip_ingestion.errors import IngestError
from saip_ingestion.window import BELOW, OUTCOMES, SeqWindows, rid_hash

LEAF_A, LEAF_B = b"A" * 8, b"B" * 8
NOW_MS = 1_764_100_000_000
Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def _stored(env: Env) -> list[tuple[str, int]]:
    return sorted((e["producer_id"], e["seq"]) for e in iter_accepted(env.store, env.encryptor))


# ----------------------------------------------------------------------------- attacker first


def test_seq_below_the_window_is_refused_even_with_a_valid_signature(env: Env) -> None:
    env.open(seq_window=8)
    p = env.producer("alpha")
    assert env.ingest([line(r) for r in p.sign([p.record(seq=100)])]) == [("accepted", None)]
    old = p.sign([p.record(seq=92), p.record(seq=93)])
    assert env.ingest([line(r) for r in old]) == [
        ("quarantined", "seq_out_of_window"),  # 92 <= 100 - 8
        ("accepted", None),  # 93: late but inside the window
    ]
    assert _stored(env) == [("alpha", 93), ("alpha", 100)]


def test_replay_of_an_old_seq_with_new_content(env: Env) -> None:
    """A signed record re-using a seq: inside the window its leaf differs → ``replay``; an exact
    re-delivery is a duplicate (stored once); below the window both are refused, never stored."""
    env.open(seq_window=4)
    p = env.producer("alpha")
    first = p.sign([p.record(seq=10, label=1)])[0]
    again = p.sign([p.record(seq=10, label=2, record_id="alpha-new")])[0]
    assert env.ingest([line(first), line(again), line(first)]) == [
        ("accepted", None),
        ("quarantined", "replay"),
        ("duplicate", None),
    ]
    env.ingest([line(r) for r in p.sign([p.record(seq=20)])])  # slides 10 out of the window
    assert env.ingest([line(first), line(again)]) == [
        ("quarantined", "seq_out_of_window"),
        ("quarantined", "seq_out_of_window"),
    ]
    assert _stored(env) == [("alpha", 10), ("alpha", 20)]


def test_jumping_far_ahead_evicts_only_the_producers_own_window(env: Env) -> None:
    """A (compromised) producer jumps its seq by 2^40: its own earlier seqs are now below the
    window (refused, not stored twice), another producer's window is untouched."""
    env.open(seq_window=16)
    a, b = env.producer("alpha"), env.producer("beta")
    a_recs = a.sign([a.record(seq=s) for s in range(5)])
    b_recs = b.sign([b.record(seq=s) for s in range(5)])
    assert {o for o, _ in env.ingest([line(r) for r in a_recs + b_recs])} == {"accepted"}
    jump = a.sign([a.record(seq=2**40)])[0]
    assert env.ingest([line(jump)]) == [("accepted", None)]
    outcomes = env.ingest([line(a_recs[0]), line(b_recs[0]), line(b_recs[4])])
    assert outcomes == [
        ("quarantined", "seq_out_of_window"),
        ("duplicate", None),  # beta's window still recognises its records
        ("duplicate", None),
    ]
    late_b = b.sign([b.record(seq=6)])[0]
    assert env.ingest([line(late_b)]) == [("accepted", None)]
    assert len(_stored(env)) == 5 + 5 + 1 + 1


def test_one_producer_cannot_use_another_producers_seq_or_record_id(env: Env) -> None:
    env.open(seq_window=8)
    a, b = env.producer("alpha"), env.producer("beta")
    ra = a.sign([a.record(seq=3, record_id="shared-id")])[0]
    rb = b.sign([b.record(seq=3, record_id="shared-id")])[0]
    assert env.ingest([line(ra), line(rb)]) == [("accepted", None), ("accepted", None)]
    assert _stored(env) == [("alpha", 3), ("beta", 3)]


def test_record_id_is_unique_within_the_window_only(env: Env) -> None:
    """The decision (README Limits): records are identified by (producer_id, seq); a record_id
    reused by another seq is a ``conflict`` while the first seq is in the window, and is a new
    record once it has slid out (both stored, both exported, told apart by seq)."""
    env.open(seq_window=4)
    p = env.producer("alpha")
    first = p.sign([p.record(seq=1, record_id="photo-1", label=1)])[0]
    reuse = p.sign([p.record(seq=2, record_id="photo-1", label=2)])[0]
    assert env.ingest([line(first), line(reuse)]) == [
        ("accepted", None),
        ("quarantined", "conflict"),
    ]
    env.ingest([line(r) for r in p.sign([p.record(seq=9)])])
    later = p.sign([p.record(seq=10, record_id="photo-1", label=3)])[0]
    assert env.ingest([line(later)]) == [("accepted", None)]
    ids = [(e["seq"], e["record_id"]) for e in iter_accepted(env.store, env.encryptor)]
    assert sorted(ids) == [(1, "photo-1"), (9, "alpha-000002"), (10, "photo-1")]


def test_a_content_quarantined_seq_keeps_its_reason_and_cannot_be_reused(env: Env) -> None:
    env.open(seq_window=8)
    p = env.producer("alpha")
    bad = p.sign([p.record(seq=4, label=42)])[0]  # outside the digits class set
    other = p.sign([p.record(seq=4, label=3, record_id="alpha-x")])[0]
    assert env.ingest([line(bad), line(bad), line(other)]) == [
        ("quarantined", "label_invalid"),
        ("quarantined", "label_invalid"),
        ("quarantined", "replay"),
    ]


def test_window_setting_is_validated_at_construction(env: Env) -> None:
    for bad in (0, -1, 2**25, True):
        with pytest.raises(ValueError, match="seq_window"):
            SeqWindows(window=bad)


# ----------------------------------------------------------------------------- the window model


@settings(max_examples=200, deadline=None)
@given(
    window=st.integers(1, 12),
    ops=st.lists(
        st.tuples(st.sampled_from(["p", "q"]), st.integers(0, 40), st.booleans()), max_size=60
    ),
)
def test_window_matches_a_reference_that_remembers_everything(
    window: int, ops: list[tuple[str, int, bool]]
) -> None:
    """Inside the window the bounded structure answers exactly like an unbounded dict; below it
    the answer is BELOW (never "free", so nothing is stored twice)."""
    w = SeqWindows(window=window)
    ref: dict[tuple[str, int], bytes] = {}
    high: dict[str, int] = {}
    for pid, seq, alt in ops:
        got = w.lookup(pid, seq)
        h = high.get(pid, -1)
        if h >= 0 and seq <= h - window:
            assert got == BELOW
            continue
        want = ref.get((pid, seq))
        assert got == (None if want is None else ("a", want))
        if got is None:
            leaf = LEAF_B if alt else LEAF_A
            w.mark(pid, seq, leaf, rid_hash(f"{pid}-{seq}"), "a")
            ref[(pid, seq)] = leaf
            high[pid] = max(h, seq)
            assert w.has_record_id(pid, rid_hash(f"{pid}-{seq}"))
    assert w.memory_bytes() <= 2 * window * 17


def test_memory_is_flat_in_the_number_of_records() -> None:
    w = SeqWindows(window=1024)
    for seq in range(1024):
        w.mark("p", seq, LEAF_A, rid_hash(str(seq)), "a")
    full, ids = w.memory_bytes(), len(w._w["p"].rids)
    for seq in range(1024, 50_000):
        w.mark("p", seq, LEAF_A, rid_hash(str(seq)), "a")
    assert w.memory_bytes() == full == 1024 * 17
    assert len(w._w["p"].rids) == ids == 1024  # record-id map bounded by the window too


# ----------------------------------------------------------------------------- persistence


def test_incremental_snapshot_writes_only_changed_windows(env: Env) -> None:
    eng = env.open(seq_window=64)
    a, b = env.producer("alpha"), env.producer("beta")
    env.ingest([line(r) for r in a.sign([a.record() for _ in range(3)])])
    env.ingest([line(r) for r in b.sign([b.record() for _ in range(3)])])
    assert eng.state.snapshot() == 2
    env.ingest([line(r) for r in a.sign([a.record() for _ in range(3)])])
    before = (env.tmp / "state/windows/beta.win").stat().st_mtime_ns
    assert eng.state.snapshot() == 1  # only alpha changed
    assert (env.tmp / "state/windows/beta.win").stat().st_mtime_ns == before
    assert eng.state.snapshot() == 0
    assert (env.tmp / "state/windows/alpha.win").stat().st_mode & 0o777 == 0o600
    doc = json.loads((env.tmp / "state/snapshot.json").read_text())
    assert set(doc) == {"format", "batch"}  # no index as JSON any more


def test_restart_after_a_crash_between_window_files_and_snapshot(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Window files written, snapshot.json not (crash): the journal replays over the newer
    windows without changing them; duplicates stay duplicates, replays stay replays."""
    import saip_ingestion.state as state_mod

    env.open(seq_window=64)
    p = env.producer("alpha")
    recs = p.sign([p.record() for _ in range(6)])
    env.ingest([line(r) for r in recs[:3]])
    real = state_mod.atomic_write

    def crash(path: Path, data: bytes, **kw: Any) -> None:
        if path.name == "snapshot.json":
            raise KeyboardInterrupt("killed")
        real(path, data, **kw)

    monkeypatch.setattr(state_mod, "atomic_write", crash)
    assert env.engine is not None
    with pytest.raises(KeyboardInterrupt):
        env.engine.state.snapshot()
    monkeypatch.setattr(state_mod, "atomic_write", real)
    env.engine.state.close()
    env.engine = None
    env.open(seq_window=64)
    replayed = p.sign([p.record(seq=1, label=9, record_id="alpha-evil")])[0]
    assert env.ingest([line(r) for r in recs] + [line(replayed)]) == [
        *[("duplicate", None)] * 3,
        *[("accepted", None)] * 3,
        ("quarantined", "replay"),
    ]
    assert len(_stored(env)) == 6


def test_window_size_change_on_restart_keeps_what_still_fits(env: Env) -> None:
    env.open(seq_window=64)
    p = env.producer("alpha")
    recs = p.sign([p.record() for _ in range(10)])
    env.ingest([line(r) for r in recs])
    env.open(seq_window=4)  # closes (snapshot) and reopens with a smaller window
    assert env.ingest([line(recs[9]), line(recs[6]), line(recs[5])]) == [
        ("duplicate", None),
        ("duplicate", None),
        ("quarantined", "seq_out_of_window"),
    ]


def test_first_format_state_is_read_once_and_its_seqs_stay_used(env: Env) -> None:
    """A state directory of the previous format (index + replay as JSON): its used seqs become
    ``legacy`` slots — a re-delivery is refused (never stored twice), new seqs are accepted."""
    state = env.tmp / "state"
    state.mkdir(parents=True)
    (state / "consumer.json").write_text(json.dumps({"consumer_id": "0123456789abcdef"}))
    (state / "snapshot.json").write_text(
        json.dumps(
            {
                "batch": 3,
                "index": {"alpha/alpha-000000": ["00" * 32, NOW_MS, "a"]},
                "replay": {"alpha": {"highest": 1, "seen": [0, 1]}},
            }
        )
    )
    (state / "journal.jsonl").write_text(
        json.dumps({"batch": 4, "key": None, "index": [], "seqs": [["alpha", 2]]}) + "\n"
    )
    env.open()
    p = env.producer("alpha")
    recs = p.sign([p.record() for _ in range(4)])
    assert env.ingest([line(r) for r in recs]) == [
        *[("quarantined", "replay")] * 3,
        ("accepted", None),
    ]
    assert env.engine is not None
    assert env.engine.state.last_batch == 5


def test_a_corrupt_window_file_is_a_clear_error(env: Env) -> None:
    env.open(seq_window=8)
    p = env.producer("alpha")
    env.ingest([line(r) for r in p.sign([p.record()])])
    env.open(seq_window=8)
    assert env.engine is not None
    env.engine.close()
    env.engine = None
    path = env.tmp / "state/windows/alpha.win"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IngestError, match="window file"):
        env.open(seq_window=8)


@settings(max_examples=60, deadline=None)
@given(
    window=st.integers(1, 16),
    marks=st.lists(
        st.tuples(
            st.sampled_from(["p", "q"]),
            st.integers(0, 60),
            st.sampled_from(["a", "label_invalid", "legacy"]),
        ),
        max_size=40,
    ),
    reopen=st.integers(1, 20),
)
def test_window_files_round_trip_and_resize(
    tmp_path_factory: pytest.TempPathFactory,
    window: int,
    marks: list[tuple[str, int, str]],
    reopen: int,
) -> None:
    """What a window file holds reads back exactly (same W), or as the bounded structure of the
    new W would hold it (another W): the parser of the binary format."""
    d = tmp_path_factory.mktemp("win")
    w = SeqWindows(window=window)
    ref = SeqWindows(window=reopen)
    for pid, seq, outcome in marks:
        leaf = seq.to_bytes(8, "little")
        for x in (w, ref):
            if x.lookup(pid, seq) is None:
                x.mark(pid, seq, leaf, rid_hash(f"{pid}{seq}"), outcome)
    w.save(d, batch=1)
    same, other = SeqWindows(window=window), SeqWindows(window=reopen)
    same.load(d)
    other.load(d)
    for pid in ("p", "q"):
        for seq in range(0, 61):
            assert same.lookup(pid, seq) == w.lookup(pid, seq)
            if window == reopen:
                assert other.lookup(pid, seq) == w.lookup(pid, seq)
            elif other.lookup(pid, seq) not in (None, BELOW):
                assert other.lookup(pid, seq) == w.lookup(pid, seq)  # kept slots are exact
            h = w.highest(pid)
            if h >= 0 and h - min(window, reopen) < seq <= h:
                assert other.lookup(pid, seq) == w.lookup(pid, seq)


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=200), keep=st.integers(0, 80))
def test_any_window_file_bytes_load_or_give_the_typed_error(
    tmp_path_factory: pytest.TempPathFactory, blob: bytes, keep: int
) -> None:
    d = tmp_path_factory.mktemp("win")
    good = SeqWindows(window=4)
    good.mark("p", 3, LEAF_A, rid_hash("x"), "a")
    good.save(d, batch=1)
    raw = (d / "p.win").read_bytes()
    (d / "p.win").write_bytes(raw[:keep] + blob)
    loaded = SeqWindows(window=4)
    try:
        loaded.load(d)
    except IngestError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert "window file" in message
        return
    for seq in range(12):  # whatever loaded answers with a known outcome
        got = loaded.lookup("p", seq)
        assert got in (None, BELOW) or (got[0] in OUTCOMES and len(got[1]) == 8)
