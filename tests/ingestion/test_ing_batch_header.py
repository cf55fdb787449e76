"""Per-batch provenance (format v2): a producer signs one batch header (root, producer, seq
range, count); records carry their leaf index; the consumer recomputes the root from all leaves
and stores the leaf list. Attacker cases first, then the happy path, v1 fixtures, the header
parser (hypothesis) and streams that split a batch across polls."""

from __future__ import annotations

import base64
import copy
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.backends.local import LocalStream
from saip_ingestion.engine import PROVENANCE_PREFIX, iter_accepted
from saip_ingestion.errors import ProvenanceError
from saip_ingestion.provenance import (
    BatchHeader,
    Verifier,
    header_message,
    leaf_hash,
    load_public_key,
    merkle_root,
    record_leaf_data,
)
from saip_ingestion.schemas import PAYLOAD_ADAPTERS
from saip_ingestion.verify import verify_stored_record

NOW_MS = 1_764_100_000_000
FIXTURE = Path(__file__).parent / "fixtures" / "records.v1.jsonl"
# the frozen fixture producer's Ed25519 PUBLIC key (base64 raw 32 bytes), not a secret
FIXTURE_PUBLIC_KEY = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="  # pragma: allowlist secret
Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def _leaf_data(r: dict[str, Any]) -> bytes:
    payload = PAYLOAD_ADAPTERS[f"{r['schema']['name']}/v1"].validate_python(r["payload"])
    return record_leaf_data({**r, "payload": payload})


def sign_v2(p: Any, records: list[dict[str, Any]], *, seq_first: int | None = None) -> BatchHeader:
    """Sign ``records`` as one v2 batch (header once; each record gets its index, no path)."""
    first = records[0]["seq"] if seq_first is None else seq_first
    header, sigs = p.signer.sign_header([_leaf_data(r) for r in records], seq_first=first)
    for r, s in zip(records, sigs, strict=True):
        r["sig"] = s
    return header  # type: ignore[no-any-return]


def batch(p: Any, n: int, **over: Any) -> list[dict[str, Any]]:
    recs = [p.record(label=i % 10, **over) for i in range(n)]
    sign_v2(p, recs)
    return recs


def reasons(outcomes: Sequence[tuple[str, str | None]]) -> list[str | None]:
    return [r if o == "quarantined" else o for o, r in outcomes]


# ----------------------------------------------------------------------------- attacker first


def test_a_swapped_payload_fails_the_whole_batch(env: Env) -> None:
    p = env.producer("alpha")
    recs = batch(p, 6)
    recs[1]["payload"], recs[4]["payload"] = recs[4]["payload"], recs[1]["payload"]
    assert set(reasons(env.ingest([line(r) for r in recs]))) == {"bad_signature"}
    assert iter_accepted(env.store, env.encryptor) == []


def test_swapped_leaf_indexes_fail_as_a_bad_batch(env: Env) -> None:
    """Two records trade their ``index`` (not in the leaf): their seqs no longer follow the
    header's range in leaf order."""
    p = env.producer("alpha")
    recs = batch(p, 6)
    recs[0]["sig"]["index"], recs[3]["sig"]["index"] = 3, 0
    assert set(reasons(env.ingest([line(r) for r in recs]))) == {"bad_batch"}


def test_a_record_duplicated_with_other_content_does_not_displace_the_genuine_one(
    env: Env,
) -> None:
    p = env.producer("alpha")
    recs = batch(p, 4)
    forged = copy.deepcopy(recs[2])
    forged["payload"]["label"] = 9
    exact = copy.deepcopy(recs[1])
    out = reasons(
        env.ingest([line(r) for r in [recs[0], recs[1], exact, recs[2], forged, recs[3]]])
    )
    assert out == ["accepted", "accepted", "duplicate", "accepted", "bad_signature", "accepted"]
    assert len(iter_accepted(env.store, env.encryptor)) == 4


def test_a_forged_record_arriving_first_at_an_index_does_not_sink_the_genuine_batch(
    env: Env,
) -> None:
    p = env.producer("alpha")
    recs = batch(p, 4)
    forged = copy.deepcopy(recs[1])
    forged["payload"]["label"] = 9
    out = reasons(env.ingest([line(r) for r in [forged, *recs]]))
    assert out == ["bad_signature", "accepted", "accepted", "accepted", "accepted"]
    stored = {
        e["seq"]: e["record"]["payload"]["label"] for e in iter_accepted(env.store, env.encryptor)
    }
    assert stored[recs[1]["seq"]] == recs[1]["payload"]["label"]


def test_a_dropped_record_leaves_the_rest_pending_then_quarantined_not_dropped(
    env: Env, tmp_path: Path
) -> None:
    p = env.producer("alpha")
    recs = batch(p, 5)
    del recs[2]
    stream = LocalStream(tmp_path / "stream")
    stream.publish([line(r) for r in recs], partition_key="p")
    summary = env.open().run(stream, batch_size=100)
    assert summary.received == 4
    assert summary.quarantined == 4
    assert summary.pending == 0
    assert summary.reasons == {"incomplete_batch": 4}
    assert summary.as_dict()["conserved"]


def test_a_seq_range_that_lies_about_the_count_is_refused(env: Env) -> None:
    """The producer signs a header for seqs 10..12 (count 3) over records numbered 10, 12, 14:
    the records' seqs do not follow the signed range → ``bad_batch``; a header whose own range
    does not hold ``count`` records is refused before its signature is checked."""
    p = env.producer("alpha")
    recs = [p.record(seq=s) for s in (10, 12, 14)]
    sign_v2(p, recs, seq_first=10)
    assert set(reasons(env.ingest([line(r) for r in recs]))) == {"bad_batch"}
    leaves = [leaf_hash(b"x"), leaf_hash(b"y")]
    root = merkle_root(leaves)
    lying = BatchHeader(
        "alpha", p.signer.key_id, 10, 20, 2, root,
        base64.b64encode(p.key.sign(header_message("alpha", 10, 20, 2, root))).decode(),
    )  # fmt: skip
    verifier = Verifier(env.registry)
    assert verifier.verify_header(lying, leaves) == (
        "bad_batch",
        "seq range 10..20 does not hold 2 records",
    )
    assert verifier.signature_checks == 0


def test_a_header_replayed_with_other_records_is_refused(env: Env) -> None:
    p = env.producer("alpha")
    genuine = batch(p, 4)
    others = [p.record(seq=s) for s in range(100, 104)]
    sign_v2(p, copy.deepcopy(others))
    for r, g in zip(others, genuine, strict=True):
        r["sig"] = dict(g["sig"])  # the genuine header's signature, other leaves
    assert set(reasons(env.ingest([line(r) for r in others]))) == {"bad_signature"}
    assert reasons(env.ingest([line(r) for r in genuine])) == ["accepted"] * 4


def test_a_leaf_index_outside_the_batch_is_refused(env: Env) -> None:
    p = env.producer("alpha")
    recs = batch(p, 3)
    outside = copy.deepcopy(recs[1])
    outside["sig"]["index"] = 3
    assert reasons(env.ingest([line(r) for r in [*recs, outside]])) == [
        "accepted", "accepted", "accepted", "bad_leaf_index",
    ]  # fmt: skip


def test_a_second_batch_reusing_seqs_is_refused_for_those_seqs(env: Env) -> None:
    p = env.producer("alpha")
    first = [p.record(seq=s, label=1) for s in range(4)]
    sign_v2(p, first)
    second = [p.record(seq=s, label=2, record_id=f"again-{s}") for s in range(2, 6)]
    sign_v2(p, second)
    assert reasons(env.ingest([line(r) for r in first])) == ["accepted"] * 4
    assert reasons(env.ingest([line(r) for r in second])) == [
        "replay", "replay", "accepted", "accepted",
    ]  # fmt: skip


def test_a_path_stripped_from_a_v1_record_does_not_make_it_a_v2_record(env: Env) -> None:
    """Domain separation: a v1 root signature never verifies as a v2 header signature."""
    p = env.producer("alpha")
    recs = p.sign([p.record() for _ in range(4)])  # v1
    for r in recs:
        r["sig"]["path"] = []
    assert set(reasons(env.ingest([line(r) for r in recs]))) == {"bad_signature"}


# ----------------------------------------------------------------------------- happy path


def test_a_v2_batch_costs_one_signature_check_and_every_stored_record_is_provable(
    env: Env,
) -> None:
    p = env.producer("alpha")
    recs = batch(p, 11)
    arrival = recs[:]
    random.Random(7).shuffle(arrival)  # the order on the stream does not matter
    assert reasons(env.ingest([line(r) for r in arrival])) == ["accepted"] * 11
    assert env.engine.verifier.signature_checks == 1
    assert all(r["sig"]["path"] == [] for r in recs)
    assert list(env.store.list(PROVENANCE_PREFIX))
    for r in recs:
        proof = verify_stored_record(
            env.store, env.encryptor, env.registry, producer_id="alpha", seq=r["seq"]
        )
        assert proof.format == "v2-batch-header"
        assert proof.record_id == r["record_id"]
    with pytest.raises(ProvenanceError, match="not_found"):
        verify_stored_record(env.store, env.encryptor, env.registry, producer_id="alpha", seq=99)


def test_a_single_record_v2_batch_and_a_single_record_v1_batch_both_verify(env: Env) -> None:
    p = env.producer("alpha")
    v2 = batch(p, 1)
    v1 = p.sign([p.record()])
    assert reasons(env.ingest([line(v2[0]), line(v1[0])])) == ["accepted", "accepted"]


def test_a_revoked_key_refuses_the_stored_proof_later(env: Env) -> None:
    p = env.producer("alpha")
    recs = batch(p, 3)
    env.ingest([line(r) for r in recs])
    env.registry.revoke("alpha")
    with pytest.raises(ProvenanceError, match="revoked_key"):
        verify_stored_record(env.store, env.encryptor, env.registry, producer_id="alpha", seq=0)


def test_frozen_v1_records_stay_readable_and_provable(env: Env) -> None:
    """Records signed by the v1 format (each with its inclusion proof), frozen in a fixture."""
    env.registry.register("fixture", load_public_key(FIXTURE_PUBLIC_KEY.encode()))
    lines = FIXTURE.read_bytes().splitlines()
    assert reasons(env.ingest(lines)) == ["accepted"] * 6
    for seq in range(6):
        proof = verify_stored_record(
            env.store, env.encryptor, env.registry, producer_id="fixture", seq=seq
        )
        assert proof.format == "v1-inclusion-proof"


def test_a_batch_split_across_polls_is_verified_when_complete(env: Env, tmp_path: Path) -> None:
    p = env.producer("alpha")
    recs = batch(p, 10) + batch(p, 7)
    stream = LocalStream(tmp_path / "stream")
    stream.publish([line(r) for r in recs], partition_key="p")
    summary = env.open().run(stream, batch_size=4)
    assert (summary.accepted, summary.quarantined, summary.pending) == (17, 0, 0)
    assert summary.signature_checks == 2


class _Crash(Exception):
    pass


class _CrashOnPoll:
    def __init__(self, inner: LocalStream, at: int) -> None:
        self.inner, self.at, self.polls = inner, at, 0
        self.checkpointed: list[str] = []

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        self.polls += 1
        if self.polls == self.at:
            raise _Crash
        return self.inner.poll(max_messages=max_messages, timeout=timeout)

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        self.checkpointed += [m.position for m in messages]
        self.inner.checkpoint(messages)

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        self.inner.publish(payloads, partition_key=partition_key)


def test_pending_records_are_not_checkpointed_so_a_crash_loses_none(
    env: Env, tmp_path: Path
) -> None:
    p = env.producer("alpha")
    recs = batch(p, 3) + batch(p, 10)
    lines = [line(r) for r in recs]
    stream = _CrashOnPoll(LocalStream(tmp_path / "stream"), at=3)
    stream.publish(lines, partition_key="p")
    engine = env.open()
    with pytest.raises(_Crash):
        engine.run(stream, batch_size=4)  # polls 1, 2 done: 3 accepted, 5 of 10 pending
    assert len(stream.checkpointed) == 3  # only up to the first pending record
    engine.state.close()
    env.engine = None
    summary = env.open().run(LocalStream(tmp_path / "stream"), batch_size=4)
    assert summary.accepted == 10
    assert summary.quarantined == 0
    stored = sorted(e["seq"] for e in iter_accepted(env.store, env.encryptor))
    assert stored == list(range(13))


def test_pending_is_bounded_and_given_up_with_a_reason(env: Env) -> None:
    """An attacker's lone records claiming huge batches cannot hold the checkpoint forever."""
    eng = env.open(max_pending=8)
    p = env.producer("alpha")
    big = batch(p, 20)
    out = eng.process_and_commit(env.msgs([line(r) for r in big[:12]]))
    assert reasons(out).count("incomplete_batch") == 12
    assert eng.summary.pending == 0


def test_release_of_a_content_quarantined_v2_record(env: Env) -> None:
    p = env.producer("alpha")
    recs = [p.record(label=1), p.record(label=11), p.record(label=2)]
    sign_v2(p, recs)
    eng = env.open()
    assert reasons(env.ingest([line(r) for r in recs])) == ["accepted", "label_invalid", "accepted"]
    from saip_ingestion.engine import DATASET_SPECS, ImageSpec
    from saip_ingestion.quarantine import QuarantineStore

    qid = next(iter(QuarantineStore(env.store, env.encryptor).keys()))[0]
    eng.close()
    env.engine = None
    spec = ImageSpec(8, 8, 0.0, 16.0, frozenset(range(12)))
    assert DATASET_SPECS["digits"] != spec
    assert env.open(image_spec=spec).release(qid) == ("accepted", None)


# ----------------------------------------------------------------------------- the header parser


@settings(max_examples=300, deadline=None)
@given(
    seq_first=st.integers(-(2**64), 2**64),
    seq_last=st.integers(-(2**64), 2**64),
    count=st.integers(-5, 70_000),
)
def test_header_range_check_is_exact(seq_first: int, seq_last: int, count: int) -> None:
    header = BatchHeader("alpha", "0" * 16, seq_first, seq_last, count, b"\0" * 32, "")
    ok = 1 <= count <= 65536 and seq_first >= 0 and seq_last - seq_first + 1 == count
    assert (header.check() is None) == ok


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_mutation_of_a_signed_batch_gets_a_typed_outcome(env: Env, data: Any) -> None:
    """Drop, duplicate, reorder records, rewrite ``index``/``tree_size``/``seq`` or a payload
    value: every line ends accepted only if it is a genuine record, and nothing is lost."""
    p = env.producer(f"p{data.draw(st.integers(0, 10**9))}")
    env.open()
    recs = batch(p, data.draw(st.integers(1, 6)))
    genuine = {line(r) for r in recs}
    lines = [line(r) for r in recs]
    for _ in range(data.draw(st.integers(0, 4))):
        op = data.draw(st.sampled_from(["drop", "dup", "swap", "index", "size", "seq", "value"]))
        k = data.draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            break
        doc = json.loads(lines[k])
        if op == "drop":
            del lines[k]
            continue
        if op == "dup":
            lines.insert(k, lines[k])
            continue
        if op == "swap":
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
            continue
        if op == "index":
            doc["sig"]["index"] = data.draw(st.integers(0, 7))
        elif op == "size":
            doc["sig"]["tree_size"] = data.draw(st.integers(1, 7))
        elif op == "seq":
            doc["seq"] = data.draw(st.integers(0, 20))
        else:
            doc["payload"]["features"][0] = float(data.draw(st.integers(0, 16)))
        lines[k] = line(doc)
    out = env.engine.process_and_commit(env.msgs(lines))
    out += env.engine.flush_pending()
    decided = [o for o in out if o[0] != "pending"]
    assert len(decided) == len(lines)
    known = {"bad_signature", "bad_batch", "bad_leaf_index", "incomplete_batch", "replay",
             "conflict", "schema_invalid"}  # fmt: skip
    for (outcome, reason), raw in zip(out[: len(lines)], lines, strict=False):
        if outcome in ("accepted", "duplicate"):
            assert raw in genuine
        elif outcome == "quarantined":
            assert reason in known
    assert env.engine.summary.pending == 0
