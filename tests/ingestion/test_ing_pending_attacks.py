"""Attacks on the v2 pending batches (records of an incomplete signed batch wait for the rest).

A v2 record cannot be authenticated before its whole batch is here, so whatever waits is chosen
by whoever can write to the stream. These tests hold the engine to: a record whose producer or
key can never verify does not wait at all; what waits is bounded in bytes, not only in records;
forged records placed first at several leaf indexes do not sink the genuine batch.
"""

from __future__ import annotations

import base64
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from saip_ingestion.backends.local import LocalStream
from saip_ingestion.engine import iter_accepted
from saip_ingestion.errors import IngestError
from saip_ingestion.provenance import record_leaf_data
from saip_ingestion.schemas import PAYLOAD_ADAPTERS

Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def leaf_input(r: dict[str, Any]) -> bytes:
    return record_leaf_data(
        {**r, "payload": PAYLOAD_ADAPTERS["image-sample/v1"].validate_python(r["payload"])}
    )


def sign_v2(p: Any, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sign ``recs`` as one v2 batch (one header signature; each record gets its index)."""
    _header, sigs = p.signer.sign_header(list(map(leaf_input, recs)), seq_first=recs[0]["seq"])
    for r, s in zip(recs, sigs, strict=True):
        r["sig"] = s
    return recs


def signed_v2(p: Any, n: int, **over: Any) -> list[dict[str, Any]]:
    return sign_v2(p, [p.record(label=i % 10, **over) for i in range(n)])


def reasons(outcomes: list[tuple[str, str | None]]) -> list[str | None]:
    return [r if o == "quarantined" else o for o, r in outcomes]


def test_records_whose_producer_or_key_cannot_verify_never_wait(env: Env) -> None:
    """Unregistered producer, unknown key, revoked key: the batch could never verify, so its
    records are refused at once with the typed reason instead of holding pending slots (and
    evicting a genuine batch that spans polls)."""
    alpha = env.producer("alpha")
    mallory = env.producer("mallory", register=False)
    env.producer("beta")  # registered; ``rogue`` below uses beta's name with another key
    rogue = env.producer("beta", register=False)  # beta's name, an unregistered key
    gamma = env.producer("gamma")
    env.registry.revoke("gamma")
    eng = env.open(max_pending=8)
    genuine = signed_v2(alpha, 10)
    hostile = [*signed_v2(mallory, 40)[:20], *signed_v2(rogue, 40)[:5], *signed_v2(gamma, 40)[:5]]
    out = eng.process_and_commit(env.msgs([line(r) for r in [*genuine[:5], *hostile]]))
    assert (
        reasons(out)
        == ["pending"] * 5 + ["unknown_producer"] * 20 + ["unknown_key"] * 5 + ["revoked_key"] * 5
    )
    assert eng.summary.pending == 5
    out = eng.process_and_commit(env.msgs([line(r) for r in genuine[5:]]))
    assert reasons(out) == ["accepted"] * 10
    s = eng.summary
    assert (s.accepted, s.quarantined, s.pending) == (10, 30, 0)
    assert s.received == s.accepted + s.quarantined
    assert len(iter_accepted(env.store, env.encryptor)) == 10


def _big_forged(p: Any, seq: int) -> bytes:
    """A record of a registered producer claiming a 65,536-record batch, with the largest image
    the schema allows (65,536 features) and a made-up header signature."""
    rec = p.record({"width": 256, "height": 256, "features": [0] * 65536, "label": 1}, seq=seq)
    rec["sig"] = {
        "alg": "ed25519-merkle-sha256",
        "key_id": p.signer.key_id,
        "tree_size": 65536,
        "index": 0,
        "path": [],
        "root_sig": base64.b64encode(os.urandom(64)).decode(),
    }
    return line(rec)


def test_pending_records_are_bounded_in_bytes_not_only_in_count(env: Env) -> None:
    """Each forged record above holds ≈ 2.8 MB once decoded (≈ 20x its 131 KB line); counted only
    in records (131,072 by default) the pending set could hold hundreds of GB. A byte budget
    gives the oldest incomplete batches up first, with a typed reason, nothing dropped."""
    alpha = env.producer("alpha")
    budget = 16 * 1024 * 1024
    eng = env.open(max_pending_bytes=budget)
    lines = [_big_forged(alpha, 100 + k) for k in range(12)]
    outs = []
    for k in range(0, 12, 3):
        outs += eng.process_and_commit(env.msgs(lines[k : k + 3]))
        assert eng.pending_bytes <= budget
        assert eng.summary.pending <= 6
    outs += eng.flush_pending()
    decided = [r for r in reasons(outs) if r != "pending"]
    assert decided == ["incomplete_batch"] * 12
    s = eng.summary
    assert (s.accepted, s.quarantined, s.pending) == (0, 12, 0)


def test_forged_records_first_at_two_indexes_do_not_sink_the_genuine_batch(env: Env) -> None:
    p = env.producer("alpha")
    recs = signed_v2(p, 6)
    forged = []
    for j in (1, 4):
        f = copy.deepcopy(recs[j])
        f["payload"]["label"] = 9
        forged.append(f)
    out = reasons(env.ingest([line(r) for r in [*forged, *recs]]))
    assert out == ["bad_signature"] * 2 + ["accepted"] * 6
    stored = {
        e["seq"]: e["record"]["payload"]["label"] for e in iter_accepted(env.store, env.encryptor)
    }
    assert stored == {r["seq"]: r["payload"]["label"] for r in recs}


def test_a_forged_record_with_another_seq_first_at_an_index_does_not_sink_the_batch(
    env: Env,
) -> None:
    """The seq check comes before the signature: a forged record whose seq breaks the
    contiguous range must be tried away like one that only breaks the signature."""
    p = env.producer("alpha")
    recs = signed_v2(p, 4)
    forged = [copy.deepcopy(recs[0]), copy.deepcopy(recs[2])]
    forged[0]["seq"] += 1000
    forged[1]["seq"] += 1000
    out = reasons(env.ingest([line(r) for r in [*forged, *recs]]))
    assert out[2:] == ["accepted"] * 4
    assert set(out[:2]) == {"bad_signature"}
    assert len(iter_accepted(env.store, env.encryptor)) == 4


@pytest.mark.parametrize("seq_shift", [0, 1000])
def test_copies_of_a_forged_record_tried_away_are_never_accepted(env: Env, seq_shift: int) -> None:
    """A forged record sent twice first at an index: the second copy is "the same record
    again" of the first arrival; once the genuine record takes the index, both copies are
    rivals (refused). Before the fix the copy went on as a duplicate of a verified record and,
    decided in arrival order before the genuine one, was stored with the forged content."""
    p = env.producer("alpha")
    recs = signed_v2(p, 4)
    forged = copy.deepcopy(recs[1])
    forged["seq"] += seq_shift
    forged["payload"]["label"] = 9
    out = reasons(env.ingest([line(r) for r in [forged, forged, *recs]]))
    assert out == ["bad_signature", "bad_signature"] + ["accepted"] * 4
    stored = {
        e["seq"]: e["record"]["payload"]["label"] for e in iter_accepted(env.store, env.encryptor)
    }
    assert stored == {r["seq"]: r["payload"]["label"] for r in recs}


def test_stopping_at_max_records_inside_a_batch_leaves_it_to_the_next_run(
    env: Env, tmp_path: Path
) -> None:
    """``run(max_records=…)`` (``saip ingest run --max-records``) that stops inside a v2 batch
    did quarantine its records as ``incomplete_batch`` and checkpoint them, though the rest of
    the batch was still in the stream: the genuine batch was refused for good. Only an idle
    stream gives a batch up; a stop leaves it uncheckpointed for the next run."""
    p = env.producer("alpha")
    lines = [line(r) for r in signed_v2(p, 10)]
    LocalStream(tmp_path / "stream").publish(lines, partition_key="p")
    first = env.open().run(LocalStream(tmp_path / "stream"), batch_size=4, max_records=6)
    assert (first.received, first.accepted, first.quarantined, first.pending) == (6, 0, 0, 6)
    assert first.as_dict()["conserved"]
    env.close()
    second = env.open().run(LocalStream(tmp_path / "stream"), batch_size=4)
    assert (second.accepted, second.quarantined, second.pending) == (10, 0, 0)
    assert len(iter_accepted(env.store, env.encryptor)) == 10


def test_a_genuine_record_replayed_at_another_index_first_does_not_sink_the_batch(
    env: Env,
) -> None:
    """The index is not in the leaf: a copy of record 2 relabelled as leaf 1, sent first,
    breaks the seq range (``bad_batch`` before any signature); it is tried away and refused,
    and record 2 itself is stored once."""
    p = env.producer("alpha")
    recs = signed_v2(p, 4)
    relabelled = copy.deepcopy(recs[2])
    relabelled["sig"]["index"] = 1
    out = reasons(env.ingest([line(r) for r in [relabelled, *recs]]))
    assert out == ["bad_signature"] + ["accepted"] * 4
    assert sorted(e["seq"] for e in iter_accepted(env.store, env.encryptor)) == [
        r["seq"] for r in recs
    ]


def test_release_does_not_authenticate_a_v2_record_by_its_64_bit_leaf_prefix(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A v2 record released alone (its batch is not here) was admitted when its ``seq`` slot
    held its 8-byte leaf prefix with a content reason. A forgery with that prefix (a 2⁶⁴
    second preimage, simulated here) quarantined as ``incomplete_batch`` was then released and
    stored with forged content. Only an entry quarantined for its content on first receipt
    (so authenticated then) is released alone."""
    import saip_ingestion.engine as engine_mod

    p = env.producer("alpha")
    recs = sign_v2(p, [p.record(label=1), p.record(label=11), p.record(label=2)])  # 11: no digit
    eng = env.open()
    assert reasons(env.ingest([line(r) for r in recs])) == ["accepted", "label_invalid", "accepted"]
    genuine_prefix = engine_mod.leaf_hash(leaf_input(recs[1]))[:8]
    forged = copy.deepcopy(recs[1])
    forged["payload"]["label"] = 5
    forged["sig"]["root_sig"] = base64.b64encode(os.urandom(64)).decode()
    forged_data = leaf_input(forged)
    real = engine_mod.leaf_hash
    monkeypatch.setattr(
        engine_mod,
        "leaf_hash",
        lambda d: genuine_prefix + real(d)[8:] if d == forged_data else real(d),
    )
    out = eng.process_and_commit(env.msgs([line(forged)])) + eng.flush_pending()
    assert reasons(out)[-1] == "incomplete_batch"
    from saip_ingestion.quarantine import QuarantineStore

    qs = QuarantineStore(env.store, env.encryptor)
    entries = [qs.get(key[0]) for key in qs.keys()]  # noqa: SIM118 (a method, not a dict)
    forged_qid = next(e.qid for e in entries if e.reason == "incomplete_batch")
    genuine_qid = next(e.qid for e in entries if e.reason == "label_invalid")
    assert eng.release(forged_qid) == ("quarantined", "incomplete_batch")
    stored = {
        e["seq"]: e["record"]["payload"]["label"] for e in iter_accepted(env.store, env.encryptor)
    }
    assert stored == {recs[0]["seq"]: 1, recs[2]["seq"]: 2}
    # the genuine entry is still released record by record (under a spec that allows 11)
    eng.close()
    env.engine = None
    spec = engine_mod.ImageSpec(8, 8, 0.0, 16.0, frozenset(range(12)))
    assert env.open(image_spec=spec).release(genuine_qid) == ("accepted", None)


class _FailingPut:
    """Test fake: an object store whose first ``accepted/`` write fails (a transient error)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.fail = inner, True

    def put(self, key: str, data: bytes, *, metadata: Any = None) -> None:
        if self.fail and key.startswith("accepted/"):
            self.fail = False
            raise OSError("transient store error")
        self.inner.put(key, data, metadata=metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_crash_between_the_provenance_and_the_batch_object_does_not_wedge_the_consumer(
    env: Env,
) -> None:
    """The provenance object (headers + leaves) is written before the batch object. After a
    crash between the two, the restarted consumer writes the same batch number with the same
    content id: the sealed bytes differ (fresh nonces) and stores never overwrite, so every
    restart failed with "already exists with different content". The key is content-derived:
    an existing one already holds these headers."""
    p = env.producer("alpha")
    lines = [line(r) for r in signed_v2(p, 3)]
    store = env.store
    env.store = _FailingPut(store)
    eng = env.open()
    with pytest.raises(OSError):
        eng.process_and_commit(env.msgs(lines))
    eng.state.close()  # a crash: no snapshot, the lock released by the OS
    env.engine = None
    env.store = store
    out = env.open().process_and_commit(env.msgs(lines))
    assert reasons(out) == ["accepted"] * 3
    assert len(iter_accepted(env.store, env.encryptor)) == 3


def test_a_failed_commit_loses_no_record(env: Env) -> None:
    """The seq windows are marked in memory before the batch object is written. A write that
    failed left them marked: the same engine took the re-sent records for duplicates, and
    ``close()`` (run by ``with IngestEngine(...)`` on the way out of the error) saved the marks
    in a snapshot, so after a restart they were duplicates too — stored nowhere. Now the
    engine refuses to go on after a failed commit and does not snapshot; a reopened engine
    (state from the journal) stores them."""
    p = env.producer("alpha")
    lines = [line(r) for r in signed_v2(p, 3)]
    env.store = _FailingPut(env.store)
    eng = env.open()
    with pytest.raises(OSError):
        eng.process_and_commit(env.msgs(lines))
    with pytest.raises(IngestError, match="reopen"):
        eng.process_and_commit(env.msgs(lines))
    env.close()  # what ``with IngestEngine(...)`` does on the way out
    out = env.open().process_and_commit(env.msgs(lines))
    assert reasons(out) == ["accepted"] * 3
    assert len(iter_accepted(env.store, env.encryptor)) == 3
