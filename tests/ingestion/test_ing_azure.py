"""Azure backend: ADLS landing and Blob checkpoints on Azurite; Event Hubs through the FAKE."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import BlobServiceClient
from saip_ingestion.backends import azure
from saip_ingestion.backends._cloud_common import ObjectConflictError, PublishError
from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage


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


fake = _load_fake("fake_eventhubs")


@pytest.fixture
def az(azurite: Any) -> Iterator[dict[str, Any]]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"landing-{uuid.uuid4().hex[:8]}"
    landing = service.create_container(name)
    service.create_container(f"{name}-checkpoints")
    hub = fake.FakeEventHub(partitions=2)
    yield {"service": service, "name": name, "landing": landing, "hub": hub, "azurite": azurite}
    service.delete_container(name)
    service.delete_container(f"{name}-checkpoints")


def _open(az: dict[str, Any], **extra: Any) -> tuple[azure.EventHubStream, ObjectStore]:
    store = BlobCheckpointStore.from_connection_string(
        az["azurite"].connection_string, f"{az['name']}-checkpoints"
    )
    hub = az["hub"]
    opts: dict[str, Any] = {
        "eventhub": hub.name,
        "container": az["name"],
        "prefix": "landing/",
        "producer": fake.FakeProducerClient(hub),
        "consumer": fake.FakeConsumerClient(hub, consumer_group="$Default", checkpoint_store=store),
        "checkpoint_store": store,
        "container_client": az["landing"],
        "data_dir": "/tmp/unused",
    }
    opts.update(extra)
    stream, obj = azure.open_backend(**opts)
    assert isinstance(stream, azure.EventHubStream)
    return stream, obj


def _drain(stream: RecordStream, want: int, rounds: int = 40) -> list[StreamMessage]:
    got: list[StreamMessage] = []
    for _ in range(rounds):
        got += stream.poll(max_messages=500, timeout=0.25)
        if len(got) >= want:
            break
    return got


class _NoCheckpoints:
    """FAKE checkpoint store for a consumer that never checkpoints (no Azurite needed)."""

    def list_checkpoints(self, *_args: Any) -> list[dict[str, Any]]:
        return []


class _CountingConsumer(fake.FakeConsumerClient):  # type: ignore[misc,name-defined]
    """FAKE consumer that counts the events it has handed to the stream's callback."""

    handed = 0

    def receive_batch(self, on_event_batch: Any, **kw: Any) -> None:
        def counting(context: Any, events: list[Any]) -> None:
            def each() -> Iterator[Any]:
                for event in events:
                    self.handed += 1
                    yield event

            on_event_batch(context, each())

        super().receive_batch(counting, **kw)


def test_a_slow_engine_applies_back_pressure_to_the_receive_thread() -> None:
    # attacker/fault: a producer floods the hub while the engine is slow; the consumer must not
    # buffer the whole backlog in memory: the receive thread blocks on the bounded queue
    hub = fake.FakeEventHub(partitions=1)
    consumer = _CountingConsumer(hub, consumer_group="$Default", checkpoint_store=_NoCheckpoints())
    stream = azure.EventHubStream(
        producer=fake.FakeProducerClient(hub), consumer=consumer, prefetch_events=3
    )
    stream.publish([b"e%d" % i for i in range(20)], partition_key="k")
    first = stream.poll(max_messages=1, timeout=5.0)
    assert len(first) == 1
    time.sleep(0.5)  # give the receive thread every chance to run ahead
    # 1 taken + 3 queued + 1 blocked in put(); never the 20 the hub holds
    assert consumer.handed == 5
    got = first + _drain(stream, 20)
    assert sorted(m.data for m in got) == sorted(b"e%d" % i for i in range(20))
    stream.close()


def test_publish_batches_by_real_sdk_size_accounting(az: dict[str, Any]) -> None:
    az["hub"].max_batch_bytes = 64 * 1024
    stream, _ = _open(az)
    assert isinstance(stream, RecordStream)
    stream.publish([os.urandom(1000) for _ in range(200)], partition_key="cam-1")
    batches = az["hub"].sent_batches
    assert sum(batches) == 200
    assert len(batches) >= 4  # 200 KB cannot fit in 64 KiB batches
    with pytest.raises(ValueError, match="does not fit one Event Hubs batch"):
        stream.publish([b"x" * 70_000], partition_key="cam-1")
    stream.close()


def test_send_failure_raises_with_unsent_indexes(az: dict[str, Any]) -> None:
    az["hub"].max_batch_bytes = 8 * 1024
    stream, _ = _open(az)
    az["hub"].fail_sends = 1
    with pytest.raises(PublishError, match="send failed") as info:
        stream.publish([b"y" * 1000 for _ in range(20)], partition_key="k")
    assert info.value.failed == list(range(20))  # first batch failed: nothing after it sent
    stream.close()


def test_checkpoints_in_blob_store_survive_restart(az: dict[str, Any]) -> None:
    stream, _ = _open(az)
    hub = az["hub"]
    key_a = "p-1"
    key_b = next(
        f"p-{n}" for n in range(2, 99) if hub.partition_for(f"p-{n}") != hub.partition_for(key_a)
    )
    stream.publish([f"a{i}".encode() for i in range(10)], partition_key=key_a)
    stream.publish([f"b{i}".encode() for i in range(10)], partition_key=key_b)
    got = _drain(stream, 20)
    assert sorted(m.data for m in got) == sorted(
        [f"a{i}".encode() for i in range(10)] + [f"b{i}".encode() for i in range(10)]
    )
    assert len({m.partition for m in got}) == 2
    # offsets are checkpointed per partition: the engine checkpoints what it has stored, a
    # prefix of each partition's messages
    done = [m for m in got if m.data in (b"a0", b"a1", b"a2", b"b0")]
    stream.checkpoint(done)
    stream.close()
    # the checkpoints are blobs on Azurite, written by the real BlobCheckpointStore
    cps = az["service"].get_container_client(f"{az['name']}-checkpoints")
    names = list(cps.list_blob_names())
    assert any("/checkpoint/" in n for n in names)
    restarted, _ = _open(az)
    again = _drain(restarted, 16)
    assert sorted(m.data for m in again) == sorted(
        [f"a{i}".encode() for i in range(3, 10)] + [f"b{i}".encode() for i in range(1, 10)]
    )
    restarted.checkpoint(again)
    restarted.close()
    third, _ = _open(az)
    assert third.poll(max_messages=10, timeout=0.5) == []
    third.close()


def test_adls_store_idempotent_conflict_safe_and_listed(az: dict[str, Any]) -> None:
    _, store = _open(az)
    assert isinstance(store, ObjectStore)
    store.put("accepted/cam-1/r1", b"cipher-1", metadata={"producer": "cam-1"})
    store.put("accepted/cam-1/r1", b"cipher-1")
    with pytest.raises(ObjectConflictError, match="different content"):
        store.put("accepted/cam-1/r1", b"evil")
    assert store.get("accepted/cam-1/r1") == b"cipher-1"
    store.put("accepted/cam-0/r2", b"c")
    store.put("quarantine/q1", b"q")
    assert list(store.list("accepted/")) == ["accepted/cam-0/r2", "accepted/cam-1/r1"]
    assert store.exists("quarantine/q1")
    assert not store.exists("quarantine/q2")
    with pytest.raises(KeyError):
        store.get("missing")
    props = az["landing"].get_blob_client("landing/accepted/cam-1/r1").get_blob_properties()
    assert props.metadata == {"producer": "cam-1"}
    with pytest.raises(ValueError, match="object key"):
        store.put("../escape", b"x")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"eventhub": None}, "eventhub"),
        ({"container": None}, "container"),
        ({"container": "Bad_Container"}, "container"),
        ({"consumer_group": "bad group"}, "consumer_group"),
        ({"producer": None}, "namespace"),
        ({"producer": None, "namespace": "evil.example.com"}, "namespace"),
        ({"account_url": "http://acct.blob.core.windows.net"}, "account_url"),
        ({"encryption_scope": "a"}, "encryption_scope"),
        ({"shared_key": "abc"}, "unsupported"),
    ],
)
def test_options_validated_eagerly(
    az: dict[str, Any], override: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _open(az, **override)


@pytest.mark.live("azure")
def test_live_azure_roundtrip() -> None:
    """Needs SAIP_AZ_NAMESPACE, SAIP_AZ_EVENTHUB, SAIP_AZ_ACCOUNT_URL, SAIP_AZ_CONTAINER."""
    stream, store = azure.open_backend(
        namespace=os.environ["SAIP_AZ_NAMESPACE"],
        eventhub=os.environ["SAIP_AZ_EVENTHUB"],
        account_url=os.environ["SAIP_AZ_ACCOUNT_URL"],
        container=os.environ["SAIP_AZ_CONTAINER"],
        prefix="saip-live-test/",
    )
    marker = uuid.uuid4().hex.encode()
    stream.publish([marker], partition_key="live")
    got = _drain(stream, 10_000, rounds=20)
    assert marker in [m.data for m in got]
    stream.checkpoint(got)
    store.put(f"live/{marker.decode()}", marker)
    assert store.get(f"live/{marker.decode()}") == marker
    stream.close()  # type: ignore[attr-defined]
