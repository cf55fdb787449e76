"""GCP backend: Pub/Sub on the real emulator; BigQuery through the labelled FAKE REST server."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import InvalidArgument
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, pubsub_v1
from saip_ingestion.backends import gcp
from saip_ingestion.backends._cloud_common import (
    CloudBackendError,
    ObjectConflictError,
    PublishError,
)
from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage
from saip_ingestion.schemas import RECORD_ADAPTER


def _load_fake(name: str) -> Any:
    """Import a sibling FAKE module by path (pytest runs with --import-mode=importlib)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"saip_tests_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FakeBigQuery = _load_fake("fake_bigquery").FakeBigQuery

PROJECT = "saip-test"


def record(i: int, *, producer: str = "cam-1") -> dict[str, Any]:
    """A schema-valid record (signature fields well-formed; not cryptographically valid)."""
    return {
        "record_id": f"r{i:05d}",
        "producer_id": producer,
        "seq": i,
        "ts": 1764100000000 + i,
        "schema": {"name": "image-sample", "version": 1},
        "payload": {"width": 2, "height": 2, "features": [0.0, 1.5, 2.0, 16.0], "label": i % 10},
        "sig": {
            "alg": "ed25519-merkle-sha256",
            "key_id": "0123456789abcdef",
            "tree_size": 1,
            "index": 0,
            "path": [],
            "root_sig": "A" * 86 + "==",
        },
    }


def line(i: int) -> bytes:
    return json.dumps(record(i)).encode()


@pytest.fixture
def bq() -> Iterator[tuple[FakeBigQuery, Any]]:
    with FakeBigQuery() as fake:
        client = bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # test only: the FAKE needs no auth
            client_options=ClientOptions(api_endpoint=fake.url),
        )
        yield fake, client


@pytest.fixture
def pubsub(pubsub_emulator: str, bq: tuple[FakeBigQuery, Any]) -> dict[str, Any]:
    topic = f"t-{uuid.uuid4().hex[:10]}"
    publisher = pubsub_v1.PublisherClient(
        publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
    )
    stream, store = gcp.open_backend(
        project=PROJECT,
        topic=topic,
        bigquery_table="ds.landing",
        create=True,
        publisher=publisher,
        bigquery_client=bq[1],
        data_dir="/tmp/unused",
    )
    assert isinstance(store, gcp.BigQueryObjectStore)
    store.ensure_table()
    return {"topic": topic, "stream": stream, "store": store, "publisher": publisher, "fake": bq[0]}


def _drain(stream: RecordStream, want: int, rounds: int = 40) -> list[StreamMessage]:
    got: list[StreamMessage] = []
    for _ in range(rounds):
        got += stream.poll(max_messages=100, timeout=0.5)
        if len(got) >= want:
            break
    return got


def test_resources_created_with_schema_and_dead_letter_policy(pubsub: dict[str, Any]) -> None:
    names = gcp.PubSubResources(
        project=PROJECT, topic=pubsub["topic"], subscription=f"{pubsub['topic']}-saip"
    )
    topic = pubsub["publisher"].get_topic(request={"topic": names.topic})
    assert topic.schema_settings.schema == names.schema
    subscriber = pubsub_v1.SubscriberClient()
    sub = subscriber.get_subscription(request={"subscription": names.subscription})
    assert sub.dead_letter_policy.dead_letter_topic == names.dead_letter_topic
    assert sub.dead_letter_policy.max_delivery_attempts == 5
    assert not sub.enable_message_ordering  # see PubSubStream notes
    schema = pubsub_v1.SchemaServiceClient().get_schema(request={"name": names.schema})
    with open("ingestion/schemas/record.v1.avsc", encoding="utf-8") as fh:
        assert json.loads(schema.definition) == json.load(fh)  # registry == committed file


def test_publish_poll_ack_roundtrip_in_order(pubsub: dict[str, Any]) -> None:
    stream = pubsub["stream"]
    assert isinstance(stream, RecordStream)
    stream.publish([line(i) for i in range(20)], partition_key="cam-1")
    got = _drain(stream, 20)
    assert sorted(json.loads(m.data)["seq"] for m in got) == list(range(20))
    assert {m.partition for m in got} == {"cam-1"}
    for m in got:  # what the engine receives validates against the same pydantic models
        RECORD_ADAPTER.validate_json(m.data)
    assert json.loads(got[3].data) == record(3)
    stream.checkpoint(got)
    stream.close()


def test_publish_time_schema_rejection(pubsub: dict[str, Any]) -> None:
    stream = pubsub["stream"]
    bad_json = json.dumps({"record_id": "x", "not": "a record"}).encode()
    with pytest.raises(PublishError, match="refused 2 of 3") as info:
        stream.publish([line(1), b"\xff\x00garbage", bad_json], partition_key="cam-2")
    assert info.value.failed == [1, 2]
    # the same raw bytes published directly with the real client are refused by the topic too
    names = gcp.PubSubResources(project=PROJECT, topic=pubsub["topic"], subscription="x-sub")
    raw = pubsub_v1.PublisherClient()
    with pytest.raises(InvalidArgument, match="Could not parse message"):
        raw.publish(names.topic, b"\xff\x00garbage").result(timeout=30)
    got = _drain(stream, 1, rounds=4)
    assert [json.loads(m.data)["record_id"] for m in got] == ["r00001"]  # only the good one


class RecordingSubscriber:
    """Wraps the REAL SubscriberClient (talking to the emulator); records unary modacks."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.modacks: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def modify_ack_deadline(self, *, request: dict[str, Any]) -> None:
        self.modacks.append(request)
        self._real.modify_ack_deadline(request=request)


def test_close_releases_exactly_the_unacked_leases(pubsub: dict[str, Any], bq: Any) -> None:
    """Crash-restart redelivery itself is proven with a SIGKILLed process in
    test_ing_gcp_e2e.py; in-process release timing on the emulator was not reliable."""
    pubsub["stream"].close()
    spy = RecordingSubscriber(pubsub_v1.SubscriberClient())
    stream, _ = gcp.open_backend(
        project=PROJECT,
        topic=pubsub["topic"],
        bigquery_table="ds.landing",
        subscriber=spy,
        bigquery_client=bq[1],
    )
    stream.publish([line(i) for i in range(6)], partition_key="cam-1")
    got = _drain(stream, 6)
    assert len(got) == 6
    stream.checkpoint(got[:4])  # stop before the last two were durably written
    stream.close()  # type: ignore[attr-defined]
    released = [a for r in spy.modacks if r["ack_deadline_seconds"] == 0 for a in r["ack_ids"]]
    assert sorted(released) == sorted(m.position for m in got[4:])
    with pytest.raises(KeyError, match="unknown or already acknowledged"):
        stream.checkpoint(got[4:])  # released leases cannot be acked afterwards by mistake


def _stale_ack(pubsub: dict[str, Any], *, exactly_once: bool) -> list[StreamMessage]:
    """One delivered message whose lease was released behind the stream's back (ack deadline
    0, as another consumer's takeover or a lapsed lease would): its ack id is stale."""
    from google.protobuf.field_mask_pb2 import FieldMask

    stream = pubsub["stream"]
    name = f"projects/{PROJECT}/subscriptions/{pubsub['topic']}-saip"
    subscriber = pubsub_v1.SubscriberClient()
    if exactly_once:
        subscriber.update_subscription(
            request={
                "subscription": {"name": name, "enable_exactly_once_delivery": True},
                "update_mask": FieldMask(paths=["enable_exactly_once_delivery"]),
            }
        )
    got_sub = subscriber.get_subscription(request={"subscription": name})
    assert got_sub.enable_exactly_once_delivery is exactly_once
    stream.publish([line(7)], partition_key="cam-1")
    got = _drain(stream, 1)
    assert len(got) == 1
    subscriber.modify_ack_deadline(
        request={"subscription": name, "ack_ids": [got[0].position], "ack_deadline_seconds": 0}
    )
    return got


def test_checkpoint_with_exactly_once_delivery_raises_on_a_refused_ack(
    pubsub: dict[str, Any],
) -> None:
    # with exactly-once delivery the ack is confirmed: a refused one is a typed error naming
    # the subscription and the service's status (was the client's raw AcknowledgeError)
    got = _stale_ack(pubsub, exactly_once=True)
    with pytest.raises(CloudBackendError, match=r"refused 1 of 1 acks.*INVALID_ACK_ID"):
        pubsub["stream"].checkpoint(got)
    assert len(_drain(pubsub["stream"], 1)) == 1  # refused: it comes back
    pubsub["stream"].close()


def test_checkpoint_without_exactly_once_delivery_is_not_confirmed(
    pubsub: dict[str, Any],
) -> None:
    # the subscription infra/gcp deploys (no exactly-once delivery): the client answers at once
    # and the ack is best effort — the same stale ack "succeeds" and the message comes back,
    # so checkpoint's docstring must not promise a confirmation
    tf = (Path(__file__).resolve().parents[2] / "infra" / "gcp" / "main.tf").read_text()
    assert "enable_exactly_once_delivery" not in tf
    got = _stale_ack(pubsub, exactly_once=False)
    pubsub["stream"].checkpoint(got)  # no error
    assert len(_drain(pubsub["stream"], 1)) == 1
    pubsub["stream"].close()


def test_repeatedly_failing_message_goes_to_dead_letter_topic(pubsub: dict[str, Any]) -> None:
    stream = pubsub["stream"]
    stream.publish([line(42)], partition_key="poison")
    for _ in range(5):  # max_delivery_attempts
        msgs = _drain(stream, 1)
        assert len(msgs) == 1
        stream.reject(msgs)
    names = gcp.PubSubResources(project=PROJECT, topic=pubsub["topic"], subscription="x-sub")
    subscriber = pubsub_v1.SubscriberClient()
    for _ in range(20):
        resp = subscriber.pull(
            request={"subscription": names.dead_letter_subscription, "max_messages": 10},
            timeout=5,
        )
        if resp.received_messages:
            break
    assert len(resp.received_messages) == 1
    stream.close()


def test_flow_control_bounds_outstanding_messages(pubsub_emulator: str, bq: Any) -> None:
    topic = f"t-{uuid.uuid4().hex[:10]}"
    stream, _ = gcp.open_backend(
        project=PROJECT,
        topic=topic,
        bigquery_table="ds.landing",
        create=True,
        max_outstanding_messages=3,
        bigquery_client=bq[1],
    )
    stream.publish([line(i) for i in range(10)], partition_key="k")
    first = _drain(stream, 3, rounds=6)
    assert len(first) == 3
    assert stream.poll(max_messages=10, timeout=1.0) == []  # nothing more until we ack
    stream.checkpoint(first)
    more = _drain(stream, 3, rounds=6)
    assert len(more) == 3
    stream.close()  # type: ignore[attr-defined]


def test_existing_topic_with_other_schema_is_refused(pubsub: dict[str, Any]) -> None:
    publisher = pubsub["publisher"]
    names = gcp.PubSubResources(
        project=PROJECT, topic=f"plain-{uuid.uuid4().hex[:8]}", subscription="s-x"
    )
    publisher.create_topic(request={"name": names.topic})  # no schema bound
    with pytest.raises(CloudBackendError, match="not bound"):
        gcp.ensure_pubsub_resources(
            names,
            publisher=publisher,
            subscriber=pubsub_v1.SubscriberClient(),
            schema_client=pubsub_v1.SchemaServiceClient(),
        )


def test_bigquery_store_through_fake(bq: tuple[FakeBigQuery, Any]) -> None:
    fake, client = bq
    store = gcp.BigQueryObjectStore(client=client, table=f"{PROJECT}.ds.landing")
    assert isinstance(store, ObjectStore)
    store.ensure_table()
    store.put("accepted/cam-1/r1", b"\x00\x01cipher", metadata={"producer": "cam-1"})
    store.put("accepted/cam-1/r1", b"\x00\x01cipher")  # idempotent
    assert len(fake.tables[f"{PROJECT}.ds.landing"]["rows"]) == 1
    with pytest.raises(ObjectConflictError, match="different content"):
        store.put("accepted/cam-1/r1", b"other")
    store.put("accepted/cam-0/r9", b"c")
    store.put("quarantine/x", b"q")
    assert store.get("accepted/cam-1/r1") == b"\x00\x01cipher"
    assert list(store.list("accepted/")) == ["accepted/cam-0/r9", "accepted/cam-1/r1"]
    assert store.exists("quarantine/x")
    assert not store.exists("quarantine/y")
    with pytest.raises(KeyError):
        store.get("nope")
    row = fake.tables[f"{PROJECT}.ds.landing"]["rows"][0]
    assert row["metadata"] == '{"producer": "cam-1"}'
    assert any("/insertAll" in path for _, path in fake.requests)


def test_bigquery_insert_errors_and_conflicting_rows_surface(bq: tuple[FakeBigQuery, Any]) -> None:
    fake, client = bq
    store = gcp.BigQueryObjectStore(client=client, table=f"{PROJECT}.ds.landing")
    store.ensure_table()
    fake.fail_next_insert = "quota exceeded"
    with pytest.raises(CloudBackendError, match="quota exceeded"):
        store.put("k1", b"x")
    assert not store.exists("k1")
    # two racing writers inserted different bytes for one key: reads refuse to pick one
    store.put("k2", b"a")
    fake.tables[f"{PROJECT}.ds.landing"]["rows"].append(
        {**fake.tables[f"{PROJECT}.ds.landing"]["rows"][-1], "data": "Yg==", "sha256": "f" * 64}
    )
    with pytest.raises(ObjectConflictError, match="conflicting rows"):
        store.get("k2")


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"topic": "topic1", "bigquery_table": "ds.t"}, "project"),
        (
            {
                "project": "saip-test",
                "topic": "topic1",
                "bigquery_table": "ds.t",
                "region": "EU",
                "location": "US",
            },
            "region",
        ),
        ({"project": "saip-test", "bigquery_table": "ds.t"}, "topic"),
        ({"project": "saip-test", "topic": "topic1"}, "bigquery_table"),
        ({"project": "Bad_Project", "topic": "topic1", "bigquery_table": "ds.t"}, "project"),
        (
            {"project": "saip-test", "topic": "topic1", "bigquery_table": "a.b.c.d"},
            "bigquery_table",
        ),
        (
            {"project": "saip-test", "topic": "topic1", "bigquery_table": "ds.t", "shard_count": 2},
            "unsupported",
        ),
        (
            {
                "project": "saip-test",
                "topic": "topic1",
                "bigquery_table": "ds.t",
                "endpoint_url": "http://bq.example",
            },
            "endpoint_url",
        ),
        (
            {
                "project": "saip-test",
                "topic": "topic1",
                "bigquery_table": "ds.t",
                "max_outstanding_messages": 0,
            },
            "max_outstanding_messages",
        ),
    ],
)
def test_options_validated_eagerly(
    opts: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with pytest.raises(ValueError, match=message):
        gcp.open_backend(**opts)


@pytest.mark.live("gcp")
def test_live_gcp_roundtrip() -> None:
    """Needs GOOGLE_CLOUD_PROJECT, SAIP_GCP_TOPIC (schema-bound, from Terraform), SAIP_GCP_TABLE."""
    stream, store = gcp.open_backend(
        project=os.environ["GOOGLE_CLOUD_PROJECT"],
        topic=os.environ["SAIP_GCP_TOPIC"],
        bigquery_table=os.environ["SAIP_GCP_TABLE"],
    )
    marker = record(int.from_bytes(os.urandom(3), "big"))
    stream.publish([json.dumps(marker).encode()], partition_key="live")
    got = _drain(stream, 1)
    assert marker["record_id"] in [json.loads(m.data)["record_id"] for m in got]
    stream.checkpoint(got)
    key = f"live/{marker['record_id']}"
    store.put(key, b"live-bytes")
    assert store.get(key) == b"live-bytes"
