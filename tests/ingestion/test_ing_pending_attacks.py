"""Attacks on the v2 pending batches (records of an incomplete signed batch wait for the rest).

A v2 record cannot be authenticated before its whole batch is here, so whatever waits is chosen
by whoever can write to the stream. These tests hold the engine to: a record whose producer or
key can never verify does not wait at all; what waits is bounded in bytes, not only in records;
forged records placed first at several leaf indexes do not sink the genuine batch.
"""

from __future__ import annotations

import json
from typing import Any

from saip_ingestion.engine import iter_accepted
from saip_ingestion.provenance import record_leaf_data
from saip_ingestion.schemas import PAYLOAD_ADAPTERS

Env = Any


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def signed_v2(p: Any, n: int, **over: Any) -> list[dict[str, Any]]:
    recs = [p.record(label=i % 10, **over) for i in range(n)]
    datas = [
        record_leaf_data(
            {**r, "payload": PAYLOAD_ADAPTERS["image-sample/v1"].validate_python(r["payload"])}
        )
        for r in recs
    ]
    _header, sigs = p.signer.sign_header(datas, seq_first=recs[0]["seq"])
    for r, s in zip(recs, sigs, strict=True):
        r["sig"] = s
    return recs


def reasons(outcomes: list[tuple[str, str | None]]) -> list[str | None]:
    return [r if o == "quarantined" else o for o, r in outcomes]


def test_records_whose_producer_or_key_cannot_verify_never_wait(env: Env) -> None:
    """Unregistered producer, unknown key, revoked key: the batch could never verify, so its
    records are refused at once with the typed reason instead of holding pending slots (and
    evicting a genuine batch that spans polls)."""
    alpha = env.producer("alpha")
    mallory = env.producer("mallory", register=False)
    beta = env.producer("beta")
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
    assert beta.name == "beta"
