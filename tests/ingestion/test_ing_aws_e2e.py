"""End to end on moto server: signed records → Kinesis → IngestEngine → S3 (SSE-KMS), with a
crash after a durable write and a restart that neither loses nor duplicates anything."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import pytest
from saip_ingestion.backends import aws, open_backend
from saip_ingestion.backends._cloud_common import Backoff
from saip_ingestion.engine import IngestEngine, iter_accepted
from saip_ingestion.quarantine import QuarantineStore

REGION = "us-east-1"


class _Crash(Exception):
    pass


class CrashAfterAcceptedPut:
    """Wraps the real S3 store: dies right AFTER the n-th accepted batch object is durable."""

    def __init__(self, inner: Any, at: int) -> None:
        self.inner, self.at, self.count = inner, at, 0

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        self.inner.put(key, data, metadata=metadata)
        if key.startswith("accepted/"):
            self.count += 1
            if self.count == self.at:
                raise _Crash(key)

    def get(self, key: str) -> bytes:
        return bytes(self.inner.get(key))

    def exists(self, key: str) -> bool:
        return bool(self.inner.exists(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(self.inner.list(prefix))


def workload(env: Any) -> tuple[list[bytes], int, int]:
    """150 good records from 2 producers + duplicates + 3 malformed lines."""
    a, b = env.producer("alpha"), env.producer("beta")
    lines = [env.line(r) for r in a.sign([a.record(label=i % 10) for i in range(80)])]
    lines += [env.line(r) for r in b.sign([b.record(label=i % 10) for i in range(70)])]
    lines += [lines[3], lines[120], b"{oops", b"[]", lines[7][:-9]]
    return lines, 150, 3


@pytest.mark.slow
def test_kinesis_to_s3_crash_and_restart_exactly_once(
    moto_url: str, env: Any, tmp_path: Path
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_url)
    kinesis.create_stream(StreamName="saip-e2e", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="saip-e2e", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    key_arn = boto3.client("kms", region_name=REGION, endpoint_url=moto_url).create_key()[
        "KeyMetadata"
    ]["Arn"]
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket="saip-e2e")
    opts: dict[str, Any] = {
        "stream": "saip-e2e",
        "bucket": "saip-e2e",
        "region": REGION,
        "endpoint_url": moto_url,
        "kms_key_id": key_arn,
        "prefix": "ingest/",
        "data_dir": tmp_path,
        "backoff": Backoff(rng=random.Random(0), sleep=lambda _s: None),
    }
    stream, store = open_backend("aws", **opts)  # through ing-core's factory
    lines, accepted, quarantined = workload(env)
    for start in range(0, len(lines), 50):
        stream.publish(lines[start : start + 50], partition_key=f"p{start}")

    def engine(on: Any) -> IngestEngine:
        env.registry.reload()
        return IngestEngine(
            store=on,
            encryptor=env.encryptor,
            registry=env.registry,
            state_dir=tmp_path / "state",
            clock=lambda: env.now,
        )

    first = engine(CrashAfterAcceptedPut(store, at=2))
    with pytest.raises(_Crash):
        first.run(stream, batch_size=30, poll_timeout=0.5)
    first.state.close()  # the process died: no snapshot

    stream2, store2 = open_backend("aws", **opts)  # a new process: resumes from S3 checkpoints
    second = engine(store2)
    summary = second.run(stream2, batch_size=30, poll_timeout=0.5, idle_polls=1)
    second.close()
    assert summary.recovered_batches == 1  # the batch written before the crash rolled forward
    entries = iter_accepted(store2, env.encryptor)
    ids = [e["record_id"] for e in entries]
    assert len(ids) == len(set(ids)) == accepted
    assert len(list(QuarantineStore(store2, env.encryptor).keys())) == quarantined
    # every landed object carries SSE-KMS under the configured key, on top of the envelope
    assert isinstance(store2, aws.S3ObjectStore)
    for key in store2.list("accepted/"):
        head = store2.head(key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == key_arn
        assert b'"record_id"' not in store2.get(key)  # ciphertext, not the records
    # nothing left un-checkpointed: a third consumer finds no work
    stream3, _ = open_backend("aws", **opts)
    assert stream3.poll(max_messages=100, timeout=0.5) == []


def test_saip_cli_produce_publish_run_on_moto(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The user path: ``saip ingest produce|publish|run --backend aws`` against moto."""
    import json

    from saip.cli import main
    from saip_ingestion.quarantine import REASONS

    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_url)
    kinesis.create_stream(StreamName="saip-cli", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="saip-cli", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket="saip-cli")
    base = ["--data-dir", str(tmp_path / "data"), "ingest"]
    cloud = ["--backend", "aws", "--endpoint-url", moto_url, "--region", REGION]
    cloud += ["--stream", "saip-cli", "--bucket", "saip-cli"]
    src = tmp_path / "alpha.jsonl"
    produce = ["produce", "--producer", "alpha", "--limit", "300", "--poison", "malformed:n=5"]
    assert main([*base, *produce, str(src)]) == 0
    assert main([*base, "publish", *cloud, str(src)]) == 0
    capsys.readouterr()
    assert main([*base, "run", *cloud, "--source", "stream", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accepted"] == 300
    assert summary["quarantined"] == 5
    assert summary["received"] == 305
    landed = s3.list_objects_v2(Bucket="saip-cli", Prefix="accepted/")["Contents"]
    assert landed
    head = s3.head_object(Bucket="saip-cli", Key=landed[0]["Key"])
    assert head["ServerSideEncryption"] == "aws:kms"
    # the quarantine of the aws backend is reachable from the CLI with the same options
    # (backend, endpoint, region, stream and bucket as options: no config file needed)
    assert main([*base, "quarantine", "list", *cloud, "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 5
    assert all(e["reason"] in REASONS and e["producer_id"] in (None, "alpha") for e in entries)
    assert main([*base, "quarantine", "show", *cloud, entries[0]["qid"]]) == 0
    assert json.loads(capsys.readouterr().out)["qid"] == entries[0]["qid"]
    # a misconfigured backend fails with one line naming the setting, exit 1
    assert main([*base, "run", *cloud[:-2], "--bucket", "Bad_Bucket", "--source", "stream"]) == 1
    assert "bucket" in capsys.readouterr().err
