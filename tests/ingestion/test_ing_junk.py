"""Issue 11 item 6: junk is cheap to reject — one quarantine object per batch, bounded error
lists, a structural pre-screen of large messages, and a size cap on every message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from saip_ingestion.backends.local import LocalStream
from saip_ingestion.engine import MAX_ERRORS, prescreen
from saip_ingestion.quarantine import QuarantineStore

Env = Any


def test_a_batch_of_junk_is_one_quarantine_object(env: Env) -> None:
    junk = [f'{{"n":{i}}}'.encode() for i in range(500)] + [b"{bad"] * 3
    out = env.ingest(junk)
    assert set(out) == {("quarantined", "unknown_schema"), ("quarantined", "malformed_json")}
    keys = list(env.store.list())
    assert len([k for k in keys if k.startswith("quarantine-batches/")]) == 1
    entries = list(QuarantineStore(env.store, env.encryptor).entries())
    assert len(entries) == 501  # the three identical bad lines share one qid
    assert env.engine.summary.quarantined == 503  # …but every line is counted


def test_wrong_typed_features_are_rejected_without_listing_every_error(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.sign([p.record()])[0]
    rec["payload"].update(width=256, height=203, features=["x"] * 52000)
    raw = json.dumps(rec).encode()
    assert prescreen(raw) is not None
    [(outcome, reason)] = env.ingest([raw])
    assert (outcome, reason) == ("quarantined", "schema_invalid")
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    assert "values of type str" in entry.detail


def test_many_errors_in_a_small_record_are_capped(env: Env) -> None:
    p = env.producer("alpha")
    rec = p.sign([p.record()])[0]
    rec["payload"]["features"] = ["x"] * 64  # below the pre-screen size: the validator decides
    raw = json.dumps(rec, separators=(",", ":")).encode()
    assert len(raw) < 16 * 1024
    assert env.ingest([raw]) == [("quarantined", "schema_invalid")]
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    assert f"more than {MAX_ERRORS}" in entry.detail or "…" in entry.detail


def test_oversized_local_message_is_read_bounded_and_kept_as_head(tmp_path: Path, env: Env) -> None:
    stream = LocalStream(tmp_path / "s", max_message_bytes=1000)
    big = b'{"x":"' + b"a" * 5_000_000 + b'"}'
    p = env.producer("alpha")
    good = env.line(p.sign([p.record()])[0])
    stream.publish([big, good], partition_key="p")
    msgs = stream.poll(max_messages=10, timeout=0)
    assert [len(m.data) for m in msgs] == [1001, len(good)]
    env.open(max_line_bytes=1000)
    env.engine.process_and_commit(msgs)
    [entry] = QuarantineStore(env.store, env.encryptor).entries(reason="oversized")
    assert entry.raw == big[:1001]


def test_oversized_message_from_any_backend_is_stored_as_a_bounded_head(env: Env) -> None:
    big = b"[" + b"1," * 400_000 + b"1]"
    env.open(max_line_bytes=4096)
    assert env.ingest([big]) == [("quarantined", "oversized")]
    [entry] = QuarantineStore(env.store, env.encryptor).entries()
    assert len(entry.raw) == 4097
    assert entry.summary()["size"] == len(big)
