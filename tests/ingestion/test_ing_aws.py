"""AWS backend against moto server over HTTP: Kinesis, S3 (SSE-KMS), Firehose DirectPut."""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

import boto3
import pytest
from botocore.config import Config
from saip_ingestion.backends import aws
from saip_ingestion.backends._cloud_common import Backoff, ObjectConflictError, PublishError
from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage

REGION = "us-east-1"


def _client(service: str, url: str) -> Any:
    return boto3.client(service, region_name=REGION, endpoint_url=url)


@pytest.fixture
def aws_setup(moto_url: str) -> dict[str, Any]:
    """A 2-shard stream, a KMS key and a bucket on moto."""
    kinesis = _client("kinesis", moto_url)
    kinesis.create_stream(StreamName="saip-in", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="saip-in", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    kms = _client("kms", moto_url)
    key_arn = kms.create_key(Description="saip landing")["KeyMetadata"]["Arn"]
    s3 = _client("s3", moto_url)
    s3.create_bucket(Bucket="saip-landing")
    return {"url": moto_url, "kinesis": kinesis, "s3": s3, "key_arn": key_arn}


def _open(setup: dict[str, Any], **extra: Any) -> tuple[RecordStream, ObjectStore]:
    opts: dict[str, Any] = {
        "stream": "saip-in",
        "bucket": "saip-landing",
        "region": REGION,
        "endpoint_url": setup["url"],
        "kms_key_id": setup["key_arn"],
        "prefix": "landing/",
        "backoff": Backoff(rng=random.Random(0), sleep=lambda _s: None),
    }
    opts.update(extra)
    return aws.open_backend(**opts)


def _drain(stream: RecordStream, want: int, *, rounds: int = 30) -> list[StreamMessage]:
    got: list[StreamMessage] = []
    for _ in range(rounds):
        got += stream.poll(max_messages=1000, timeout=0.5)
        if len(got) >= want:
            break
    return got


def test_protocols_and_roundtrip_over_all_shards(aws_setup: dict[str, Any]) -> None:
    stream, store = _open(aws_setup)
    assert isinstance(stream, RecordStream)
    assert isinstance(store, ObjectStore)
    for i in range(40):
        stream.publish([f"rec-{i}-{j}".encode() for j in range(5)], partition_key=f"p{i}")
    got = _drain(stream, 200)
    assert sorted(m.data for m in got) == sorted(
        f"rec-{i}-{j}".encode() for i in range(40) for j in range(5)
    )
    assert len({m.partition for m in got}) == 2  # both shards were read
    # order within a partition key is kept
    per_key = [int(m.data.split(b"-")[2]) for m in got if m.data.startswith(b"rec-7-")]
    assert per_key == [0, 1, 2, 3, 4]


def test_restart_resumes_after_checkpoint_and_redelivers_the_rest(
    aws_setup: dict[str, Any],
) -> None:
    stream, _ = _open(aws_setup)
    stream.publish([f"a{i}".encode() for i in range(10)], partition_key="k")
    first = _drain(stream, 10)
    assert len(first) == 10
    stream.checkpoint(first[:6])  # only these were durably written before the "crash"
    restarted, _ = _open(aws_setup)
    again = _drain(restarted, 4)
    assert [m.data for m in again] == [f"a{i}".encode() for i in range(6, 10)]
    restarted.checkpoint(again)
    third, _ = _open(aws_setup)
    assert third.poll(max_messages=10, timeout=0.3) == []
    # checkpoints are S3 objects outside the landing prefix, encrypted with the KMS key
    head = aws_setup["s3"].head_object(
        Bucket="saip-landing", Key=f"_checkpoints/saip-in/saip/{first[0].partition}.json"
    )
    assert head["ServerSideEncryption"] == "aws:kms"


def test_checkpoint_never_moves_backwards(aws_setup: dict[str, Any]) -> None:
    s3 = aws_setup["s3"]
    cps = [
        aws.S3CheckpointStore(
            s3=s3,
            bucket="saip-landing",
            prefix="_checkpoints/",
            stream="saip-in",
            consumer="c1",
            sse_kms_key_id=None,
            bucket_key=True,
        )
        for _ in range(2)
    ]
    cps[0].save("shardId-000000000000", "200")
    cps[1].save("shardId-000000000000", "100")  # a slower consumer: stale value ignored
    assert cps[0].load("shardId-000000000000") == "200"
    cps[1].save("shardId-000000000000", "300")
    cps[0].save("shardId-000000000000", "250")  # stale ETag → 412 → re-read → 300 kept
    assert cps[1].load("shardId-000000000000") == "300"


def test_putrecords_batches_within_service_limits(aws_setup: dict[str, Any]) -> None:
    stream, _ = _open(aws_setup)
    calls: list[tuple[int, int]] = []

    def spy(params: dict[str, Any], **_kw: Any) -> None:
        recs = params["Records"]
        calls.append((len(recs), sum(len(r["Data"]) + len(r["PartitionKey"]) for r in recs)))

    kinesis = stream._kinesis  # type: ignore[attr-defined]
    kinesis.meta.events.register("provide-client-params.kinesis.PutRecords", spy)
    stream.publish([b"x" * 10] * 1201, partition_key="small")
    assert [n for n, _ in calls] == [500, 500, 201]
    calls.clear()
    big = b"y" * (1024 * 1024 - 3)  # exactly 1 MiB with the 3-byte key
    stream.publish([big] * 11, partition_key="big")
    assert [n for n, _ in calls] == [5, 5, 1]
    assert all(size <= aws.MAX_BATCH_BYTES for _, size in calls)
    with pytest.raises(ValueError, match="exceeds the Kinesis record limit"):
        stream.publish([big + b"!"], partition_key="big")
    with pytest.raises(ValueError, match="partition_key"):
        stream.publish([b"x"], partition_key="")


class FlakyKinesis:
    """Test double around the REAL boto3 Kinesis client talking to moto: for chosen records it
    withholds them from the request and reports them back as ``ProvisionedThroughputExceeded``
    in the response (moto never produces partial failures itself)."""

    def __init__(self, real: Any, fail: dict[bytes, int]) -> None:
        self._real = real
        self.fail = fail  # payload -> how many more times it fails
        self.requests: list[list[bytes]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_records(self, *, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        self.requests.append([r["Data"] for r in Records])
        ok = [r for r in Records if self.fail.get(r["Data"], 0) == 0]
        resp = self._real.put_records(StreamName=StreamName, Records=ok) if ok else {}
        real_entries = iter(resp.get("Records", []))
        out = []
        for r in Records:
            if self.fail.get(r["Data"], 0) > 0:
                self.fail[r["Data"]] -= 1
                out.append({"ErrorCode": "ProvisionedThroughputExceededException"})
            else:
                out.append(next(real_entries))
        return {"FailedRecordCount": sum("ErrorCode" in e for e in out), "Records": out}


def _stream_with(setup: dict[str, Any], fake: Any, delays: list[float]) -> aws.KinesisStream:
    cps = aws.S3CheckpointStore(
        s3=setup["s3"],
        bucket="saip-landing",
        prefix="_checkpoints/",
        stream="saip-in",
        consumer="saip",
        sse_kms_key_id=None,
        bucket_key=True,
    )
    return aws.KinesisStream(
        kinesis=fake,
        stream="saip-in",
        checkpoints=cps,
        backoff=Backoff(max_attempts=4, rng=random.Random(1), sleep=delays.append),
    )


def test_only_failed_records_are_retried_with_jittered_backoff(aws_setup: dict[str, Any]) -> None:
    payloads = [f"r{i}".encode() for i in range(10)]
    fake = FlakyKinesis(aws_setup["kinesis"], {b"r3": 1, b"r7": 2})
    delays: list[float] = []
    stream = _stream_with(aws_setup, fake, delays)
    stream.publish(payloads, partition_key="k")
    assert fake.requests == [payloads, [b"r3", b"r7"], [b"r7"]]
    assert len(delays) == 2
    assert 0 <= delays[0] <= 0.05
    assert 0 <= delays[1] <= 0.10  # cap doubles, jitter draws below it
    got = _drain(stream, 10)
    assert sorted(m.data for m in got) == sorted(payloads)  # each exactly once


def test_record_lost_after_last_attempt_raises_with_its_index(aws_setup: dict[str, Any]) -> None:
    payloads = [f"r{i}".encode() for i in range(5)]
    fake = FlakyKinesis(aws_setup["kinesis"], {b"r2": 99})
    stream = _stream_with(aws_setup, fake, [])
    with pytest.raises(PublishError, match="1 of 5 records") as info:
        stream.publish(payloads, partition_key="k")
    assert info.value.failed == [2]
    assert len(fake.requests) == 4  # max_attempts
    assert sorted(m.data for m in _drain(stream, 4)) == [b"r0", b"r1", b"r3", b"r4"]


def test_resharded_stream_reads_parents_before_children(aws_setup: dict[str, Any]) -> None:
    kinesis = aws_setup["kinesis"]
    stream, _ = _open(aws_setup)
    stream.publish([b"before-0", b"before-1"], partition_key="key")
    kinesis.update_shard_count(
        StreamName="saip-in", TargetShardCount=4, ScalingType="UNIFORM_SCALING"
    )
    stream.publish([b"after-0", b"after-1"], partition_key="key")
    closed = [
        s
        for s in kinesis.list_shards(StreamName="saip-in")["Shards"]
        if "EndingSequenceNumber" in s["SequenceNumberRange"]
    ]
    assert closed  # moto really resharded: parents closed, children opened
    got = _drain(stream, 4)
    data = [m.data for m in got]
    assert sorted(data) == [b"after-0", b"after-1", b"before-0", b"before-1"]
    assert data.index(b"before-1") < data.index(b"after-0")


def test_s3_store_sse_kms_idempotent_and_conflict_safe(aws_setup: dict[str, Any]) -> None:
    _, store = _open(aws_setup)
    assert isinstance(store, aws.S3ObjectStore)
    store.put("accepted/p1/r1.bin", b"cipher-1", metadata={"schema": "image-sample-v1"})
    head = store.head("accepted/p1/r1.bin")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == aws_setup["key_arn"]
    assert head["BucketKeyEnabled"] is True
    assert head["Metadata"] == {"schema": "image-sample-v1"}
    store.put("accepted/p1/r1.bin", b"cipher-1")  # same bytes: no-op
    with pytest.raises(ObjectConflictError, match="different content"):
        store.put("accepted/p1/r1.bin", b"other")
    assert store.get("accepted/p1/r1.bin") == b"cipher-1"  # never overwritten
    store.put("accepted/p0/r9.bin", b"c")
    store.put("quarantine/x.bin", b"q")
    assert list(store.list("accepted/")) == ["accepted/p0/r9.bin", "accepted/p1/r1.bin"]
    assert store.exists("quarantine/x.bin")
    assert not store.exists("quarantine/y.bin")
    with pytest.raises(KeyError):
        store.get("nope")
    # objects really sit under the configured prefix
    keys = [o["Key"] for o in aws_setup["s3"].list_objects_v2(Bucket="saip-landing")["Contents"]]
    assert "landing/accepted/p1/r1.bin" in keys


def test_s3_store_rejects_unsafe_keys(aws_setup: dict[str, Any]) -> None:
    _, store = _open(aws_setup)
    for key in ["", "../etc", "a//b", "/abs", "a\nb", "x" * 1100]:
        with pytest.raises(ValueError, match="object key"):
            store.put(key, b"x")
    raw = aws.S3ObjectStore(s3=aws_setup["s3"], bucket="saip-landing", reserved_prefix="_cp/")
    with pytest.raises(ValueError, match="reserved prefix"):
        raw.put("_cp/shard.json", b"x")


def test_s3_store_rejects_bad_metadata(aws_setup: dict[str, Any]) -> None:
    _, store = _open(aws_setup)
    with pytest.raises(ValueError, match="metadata"):
        store.put("k", b"x", metadata={"Bad Key": "v"})
    with pytest.raises(ValueError, match="metadata"):
        store.put("k", b"x", metadata={"k": "é"})


def test_store_refuses_a_response_without_sse_kms(aws_setup: dict[str, Any]) -> None:
    class NoSse:
        """Wraps the real S3 client; strips the SSE header as a misbehaving endpoint would."""

        def __init__(self, real: Any) -> None:
            self._real = real

        def __getattr__(self, name: str) -> Any:
            return getattr(self._real, name)

        def put_object(self, **kw: Any) -> dict[str, Any]:
            resp = dict(self._real.put_object(**kw))
            resp.pop("ServerSideEncryption", None)
            return resp

    store = aws.S3ObjectStore(s3=NoSse(aws_setup["s3"]), bucket="saip-landing")
    with pytest.raises(aws.CloudBackendError, match="SSE-KMS"):
        store.put("k", b"x")


def test_firehose_directput_sink(aws_setup: dict[str, Any]) -> None:
    iam_role = "arn:aws:iam::123456789012:role/firehose"
    firehose = _client("firehose", aws_setup["url"])
    firehose.create_delivery_stream(
        DeliveryStreamName="saip-fh",
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": iam_role,
            "BucketARN": "arn:aws:s3:::saip-landing",
            "Prefix": "firehose/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 60},
        },
    )
    _, store = _open(
        aws_setup, sink="firehose", delivery_stream="saip-fh", firehose_s3_prefix="firehose/"
    )
    assert isinstance(store, aws.FirehoseObjectStore)
    store.put("accepted/r1", b"\x00cipher-1", metadata={"producer": "p1"})
    store.put("accepted/r2", b"cipher-2")
    store.put("accepted/r1", b"\x00cipher-1")  # at-least-once retry: collapses on read
    assert list(store.list("accepted/")) == ["accepted/r1", "accepted/r2"]
    assert store.get("accepted/r1") == b"\x00cipher-1"
    assert store.exists("accepted/r2")
    assert not store.exists("accepted/r3")
    store.put("accepted/r2", b"tampered")
    fresh = aws.FirehoseObjectStore(
        firehose=firehose,
        s3=aws_setup["s3"],
        delivery_stream="saip-fh",
        bucket="saip-landing",
        s3_prefix="firehose/",
    )
    with pytest.raises(ObjectConflictError, match="accepted/r2"):
        fresh.get("accepted/r1")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"region": "mars"}, "region"),
        ({"endpoint_url": "http://kinesis.example.com"}, "endpoint_url: plain http"),
        ({"s3_endpoint_url": "ftp://x"}, "s3_endpoint_url"),
        ({"kinesis_endpoint_url": "https://u:p@h"}, "credentials"),
        ({"stream": "bad name"}, "stream"),
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"sink": "sqs"}, "sink"),
        ({"sink": "firehose"}, "delivery_stream"),
        ({"consumer": "a/b"}, "consumer"),
        ({"checkpoint_prefix": "landing/cp/"}, "checkpoint_prefix"),
        ({"initial_position": "AT_TIMESTAMP"}, "initial_position"),
    ],
)
def test_options_are_validated_eagerly(
    aws_env: None, override: dict[str, Any], message: str
) -> None:
    offline = {"url": "http://127.0.0.1:9", "key_arn": None}  # never contacted
    with pytest.raises(ValueError, match=message):
        _open(offline, **override)


def test_unknown_option_and_wrong_types_fail(aws_env: None) -> None:
    offline = {"url": "http://127.0.0.1:9", "key_arn": None}
    with pytest.raises(ValueError, match=r"unsupported option.*access_key"):
        _open(offline, access_key="AKIA...")  # credentials are never options
    _open(offline, data_dir="/tmp/ignored")  # every backend accepts data_dir
    with pytest.raises(ValueError, match="stream: required"):
        aws.open_backend(bucket="b-b-b", region=REGION)
    with pytest.raises(TypeError, match="botocore_config"):
        _open(offline, botocore_config={"retries": 3})


def test_injected_session_and_config_are_used(aws_setup: dict[str, Any]) -> None:
    session = boto3.session.Session(region_name=REGION)
    stream, store = aws.open_backend(
        stream="saip-in",
        bucket="saip-landing",
        endpoint_url=aws_setup["url"],
        session=session,
        botocore_config=Config(user_agent_appid="saip-test", connect_timeout=2),
    )
    client = stream._kinesis  # type: ignore[attr-defined]
    assert client.meta.region_name == REGION
    assert client.meta.config.connect_timeout == 2
    assert client.meta.config.retries["mode"] == "standard"
    store.put("k", b"v")
    assert store.get("k") == b"v"


@pytest.mark.live("aws")
def test_live_aws_roundtrip() -> None:
    """Needs SAIP_AWS_STREAM, SAIP_AWS_BUCKET, SAIP_AWS_KMS_KEY (and optionally AWS_REGION)."""
    stream, store = aws.open_backend(
        stream=os.environ["SAIP_AWS_STREAM"],
        bucket=os.environ["SAIP_AWS_BUCKET"],
        kms_key_id=os.environ["SAIP_AWS_KMS_KEY"],
        prefix="saip-live-test/",
        consumer=f"live-{uuid.uuid4().hex[:8]}",
        initial_position="LATEST",
    )
    stream.poll(max_messages=1, timeout=1)  # position at LATEST before producing
    marker = uuid.uuid4().hex.encode()
    stream.publish([marker], partition_key="live")
    got = _drain(stream, 1)
    assert marker in [m.data for m in got]
    store.put(f"live/{marker.decode()}", marker)
    assert store.get(f"live/{marker.decode()}") == marker


def test_composes_with_saip_encryption_tls_pinned_session(aws_setup: dict[str, Any]) -> None:
    """How the saip CLI composes the packages: enc-cloud's TLS>=1.2 session is injected here."""
    import ssl

    from saip_encryption import tls

    stream, store = aws.open_backend(
        stream="saip-in",
        bucket="saip-landing",
        region=REGION,
        endpoint_url=aws_setup["url"],
        session=tls.boto3_session(),
    )
    for client in (stream._kinesis, store._s3):  # type: ignore[attr-defined]
        pool_kw = client._endpoint.http_session._manager.connection_pool_kw
        assert pool_kw["ssl_context"].minimum_version >= ssl.TLSVersion.TLSv1_2
    stream.publish([b"pinned"], partition_key="k")
    assert [m.data for m in _drain(stream, 1)] == [b"pinned"]
    store.put("k", b"v")
    assert store.get("k") == b"v"
