"""End to end on Azurite + the FAKE Event Hubs clients: signed records → Event Hubs →
IngestEngine → ADLS Gen2 (Blob API), checkpoints in the real Blob checkpoint store, with a crash
after a durable write and a restart that neither loses nor duplicates anything."""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import BlobServiceClient
from saip_ingestion.backends import open_backend
from saip_ingestion.engine import IngestEngine, iter_accepted
from saip_ingestion.quarantine import QuarantineStore


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
def test_eventhubs_to_adls_crash_and_restart_exactly_once(
    azurite: Any, env: Any, tmp_path: Path
) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    landing = service.create_container(name)
    service.create_container(f"{name}-checkpoints")
    hub = fake.FakeEventHub(partitions=2)

    def backend() -> tuple[Any, Any]:
        cps = BlobCheckpointStore.from_connection_string(
            azurite.connection_string, f"{name}-checkpoints"
        )
        return open_backend(
            "azure",
            eventhub=hub.name,
            container=name,
            prefix="ingest/",
            producer=fake.FakeProducerClient(hub),
            consumer=fake.FakeConsumerClient(hub, consumer_group="$Default", checkpoint_store=cps),
            checkpoint_store=cps,
            container_client=landing,
            data_dir=tmp_path,
        )

    def engine(on: Any) -> IngestEngine:
        env.registry.reload()
        return IngestEngine(
            store=on,
            encryptor=env.encryptor,
            registry=env.registry,
            state_dir=tmp_path / "state",
            clock=lambda: env.now,
        )

    stream, store = backend()
    lines, accepted, quarantined = workload(env)
    for start in range(0, len(lines), 50):
        stream.publish(lines[start : start + 50], partition_key=f"p{start}")
    first = engine(CrashAfterAcceptedPut(store, at=2))
    with pytest.raises(_Crash):  # the crash ends this run; idleness must not end it first
        first.run(stream, batch_size=30, poll_timeout=0.5, idle_polls=20)
    first.state.close()  # the process died: no snapshot
    stream.close()  # its receive thread dies with it

    stream2, store2 = backend()  # resumes from the checkpoints on Azurite
    second = engine(store2)
    # the receive thread reads the checkpoints before its first event: on a loaded machine that
    # can outlast an idle window, so run until every record is stored (the bound only keeps a
    # regression from hanging the suite; it is not a timing claim)
    give_up, ids = time.monotonic() + 60, []
    while len(set(ids)) < accepted and time.monotonic() < give_up:
        summary = second.run(stream2, batch_size=30, poll_timeout=0.5, idle_polls=2)
        ids = [e["record_id"] for e in iter_accepted(store2, env.encryptor)]
    second.close()
    stream2.close()
    assert summary.recovered_batches == 1
    assert len(ids) == len(set(ids)) == accepted
    assert len(list(QuarantineStore(store2, env.encryptor).keys())) == quarantined
    blobs = list(landing.list_blob_names(name_starts_with="ingest/accepted/"))
    assert blobs
    assert b'"record_id"' not in landing.download_blob(blobs[0]).readall()
    stream3, _ = backend()
    assert stream3.poll(max_messages=100, timeout=0.5) == []
    stream3.close()
    service.delete_container(name)
    service.delete_container(f"{name}-checkpoints")
