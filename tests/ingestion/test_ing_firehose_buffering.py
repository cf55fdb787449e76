"""Issue 11 item 5: a Firehose sink that buffers must not make the store unreadable.

``exists()`` cannot see buffered records, so after a crash (or a re-delivered bad record) the
engine writes the same key again with fresh ciphertext. Keys and content ids derived from the
plaintext make the two frames collapse on read; batches of other content get other keys. Runs on
moto S3 with ``BufferingFirehoseFake`` from ``conftest.py`` (a FAKE that buffers like the real
service).
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from saip_ingestion.backends import aws
from saip_ingestion.backends.local import LocalStream
from saip_ingestion.engine import iter_accepted
from saip_ingestion.quarantine import QuarantineStore


class _Crash(Exception):
    pass


@pytest.fixture
def firehose(moto_url: str, helpers: Any) -> tuple[Any, Any]:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_url)
    s3.create_bucket(Bucket="saip-fh")
    fake = helpers.BufferingFirehoseFake(s3=s3, bucket="saip-fh", prefix="fh/", stream="saip")
    return fake, s3


def _store(fake: Any, s3: Any) -> aws.FirehoseObjectStore:
    return aws.FirehoseObjectStore(
        firehose=fake, s3=s3, delivery_stream="saip", bucket="saip-fh", s3_prefix="fh/"
    )


def _workload(env: Any) -> list[bytes]:
    p = env.producer("alpha")
    lines = [env.line(r) for r in p.sign([p.record(label=i % 10) for i in range(30)])]
    return [*lines[:10], b"{junk", *lines[10:], b"[]"]


@pytest.mark.parametrize("second_batch_size", [16, 7])
def test_crash_while_buffered_then_restart_stays_readable_and_exactly_once(
    env: Any, tmp_path: Any, firehose: Any, helpers: Any, second_batch_size: int
) -> None:
    fake, s3 = firehose
    stream = LocalStream(tmp_path / "stream")
    stream.publish(_workload(env), partition_key="p")
    env.store = helpers.CrashAfterPut(_store(fake, s3), prefix="accepted/", at=1, crash=_Crash)
    engine = env.open()
    with pytest.raises(_Crash):
        engine.run(stream, batch_size=16)
    engine.state.close()  # the process died
    env.engine = None
    # restart: the first batch is still buffered (invisible), so it is processed and sent again
    env.store = _store(fake, s3)
    summary = env.open().run(LocalStream(tmp_path / "stream"), batch_size=second_batch_size)
    assert summary.received == summary.accepted + summary.quarantined == 32
    fake.flush()  # Firehose delivers everything, both copies of batch 1 included
    reader = _store(fake, s3)
    ids = [e["record_id"] for e in iter_accepted(reader, env.encryptor)]
    assert sorted(ids) == sorted(set(ids))
    assert len(ids) == 30
    reasons = sorted(e.reason for e in QuarantineStore(reader, env.encryptor).entries())
    assert reasons == ["malformed_json", "schema_invalid"]


def test_redelivered_bad_record_while_buffered_does_not_conflict(env: Any, firehose: Any) -> None:
    fake, s3 = firehose
    env.store = _store(fake, s3)
    env.ingest([b"{junk"])
    env.close()
    env.store = _store(fake, s3)
    env.ingest([b"{junk"])  # the same bad record again: exists() cannot see the first copy
    fake.flush()
    [entry] = QuarantineStore(_store(fake, s3), env.encryptor).entries()
    assert entry.raw == b"{junk"


def test_frames_with_different_content_ids_still_conflict(firehose: Any) -> None:
    fake, s3 = firehose
    store = _store(fake, s3)
    store.put("k", b"one", metadata={"contentid": "a"})
    store.put("k", b"two", metadata={"contentid": "a"})  # same declared content: collapses
    store.put("j", b"one", metadata={"contentid": "a"})
    store.put("j", b"two", metadata={"contentid": "b"})
    fake.flush()
    with pytest.raises(aws.ObjectConflictError, match="j"):
        list(_store(fake, s3).list())
