"""FAKE Event Hubs clients for tests — NOT Event Hubs (no emulator runs here without Docker).

``FakeEventHub`` is an in-memory partitioned log. ``FakeProducerClient`` and
``FakeConsumerClient`` stand in for ``azure.eventhub.EventHubProducerClient`` /
``EventHubConsumerClient`` at the client boundary, but everything that crosses it is the REAL
SDK's: batches are real ``EventDataBatch`` objects (the SDK's own AMQP size accounting decides
when a batch is full), received events are real ``EventData`` with the broker annotations
(sequence number, offset, partition key), callbacks get a real ``PartitionContext``, and
checkpoints go through the REAL ``BlobCheckpointStore`` (on Azurite in the tests), from which the
fake consumer resumes exactly as the SDK does (``list_checkpoints`` → next sequence number).

Not covered: AMQP, partition load balancing/ownership, service retries, throttling, auth.
The ``live`` test covers the real service.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Any

from azure.eventhub import EventData, EventDataBatch
from azure.eventhub._eventprocessor.partition_context import PartitionContext
from azure.eventhub.exceptions import EventHubError


class FakeEventHub:
    """FAKE in-memory event hub with ``partitions`` partitions."""

    def __init__(
        self,
        *,
        partitions: int = 2,
        namespace: str = "fake-ns.servicebus.windows.net",
        name: str = "saip-hub",
        max_batch_bytes: int = 1024 * 1024,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.max_batch_bytes = max_batch_bytes
        self.log: dict[str, list[tuple[bytes, str | None]]] = {
            str(p): [] for p in range(partitions)
        }
        self.sent_batches: list[int] = []
        self.fail_sends = 0
        self.lock = threading.Lock()

    def partition_for(self, key: str | None) -> str:
        return str(zlib.crc32((key or "").encode()) % len(self.log))


class FakeProducerClient:
    """FAKE ``EventHubProducerClient``: real ``EventDataBatch`` in, in-memory log out."""

    def __init__(self, hub: FakeEventHub) -> None:
        self._hub = hub
        self.closed = False

    def create_batch(
        self, *, partition_key: str | None = None, max_size_in_bytes: int | None = None
    ) -> EventDataBatch:
        return EventDataBatch(
            max_size_in_bytes=max_size_in_bytes or self._hub.max_batch_bytes,
            partition_key=partition_key,
        )

    def send_batch(self, batch: EventDataBatch, **_kw: Any) -> None:
        if self._hub.fail_sends > 0:
            self._hub.fail_sends -= 1
            raise EventHubError("FAKE: service unavailable after retries")
        key = batch._partition_key
        key_str = key.decode() if isinstance(key, bytes) else key
        with self._hub.lock:
            part = self._hub.log[self._hub.partition_for(key_str)]
            for event in batch._internal_events:
                part.append((b"".join(event.body), key_str))
            self._hub.sent_batches.append(len(batch))

    def close(self) -> None:
        self.closed = True


class FakeConsumerClient:
    """FAKE ``EventHubConsumerClient.receive_batch`` resuming from a real checkpoint store."""

    def __init__(self, hub: FakeEventHub, *, consumer_group: str, checkpoint_store: Any) -> None:
        self._hub = hub
        self._group = consumer_group
        self._store = checkpoint_store
        self._closed = threading.Event()

    def _event(self, partition: str, seq: int) -> EventData:
        body, key = self._hub.log[partition][seq]
        event = EventData(body)
        event._raw_amqp_message.annotations = {
            b"x-opt-sequence-number": seq,
            b"x-opt-offset": str(seq * 1000).encode(),  # offsets are opaque strings
            b"x-opt-partition-key": key.encode() if key else None,
            b"x-opt-enqueued-time": int(time.time() * 1000),
        }
        return event

    def receive_batch(
        self,
        on_event_batch: Any,
        *,
        max_batch_size: int = 300,
        max_wait_time: float | None = None,
        starting_position: str = "-1",
        **_kw: Any,
    ) -> None:
        assert starting_position == "-1", "FAKE supports only starting from the oldest event"
        nxt = dict.fromkeys(self._hub.log, 0)
        for cp in self._store.list_checkpoints(self._hub.namespace, self._hub.name, self._group):
            nxt[str(cp["partition_id"])] = int(cp["sequence_number"]) + 1
        while not self._closed.is_set():
            delivered = False
            for pid in sorted(self._hub.log):
                with self._hub.lock:
                    end = min(len(self._hub.log[pid]), nxt[pid] + max_batch_size)
                    events = [self._event(pid, s) for s in range(nxt[pid], end)]
                if not events:
                    continue
                context = PartitionContext(
                    self._hub.namespace, self._hub.name, self._group, pid, self._store
                )
                on_event_batch(context, events)
                nxt[pid] = end
                delivered = True
            if not delivered:
                self._closed.wait(min(max_wait_time or 0.05, 0.05))

    def close(self) -> None:
        self._closed.set()


# --------------------------------------------------------------------------- shared by processes


class SharedLogHub:
    """FAKE event hub whose partitions are append-only files in a directory, so several
    processes read one hub (line = base64 body + TAB + partition key). Offsets are
    ``str(sequence number * 1000)`` (opaque strings, as on the service)."""

    def __init__(self, root: Any, *, partitions: int, name: str = "saip-hub") -> None:
        from pathlib import Path

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.partitions = [str(p) for p in range(partitions)]
        self.namespace = "fake-ns.servicebus.windows.net"
        self.name = name

    def append(self, partition: str, bodies: list[bytes], key: str) -> None:
        import base64

        with (self.root / f"p{partition}.log").open("ab") as fh:
            for body in bodies:
                fh.write(base64.b64encode(body) + b"\t" + key.encode() + b"\n")

    def read(self, partition: str, start: int, count: int) -> list[tuple[int, bytes, str]]:
        import base64

        path = self.root / f"p{partition}.log"
        if not path.is_file():
            return []
        lines = path.read_bytes().splitlines()[start : start + count]
        out = []
        for n, line in enumerate(lines):
            body, _, key = line.partition(b"\t")
            out.append((start + n, base64.b64decode(body), key.decode()))
        return out

    def size(self, partition: str) -> int:
        path = self.root / f"p{partition}.log"
        return len(path.read_bytes().splitlines()) if path.is_file() else 0


class _SharedPartitionConsumer:
    """FAKE partition receiver (what ``EventHubConsumerClient._create_consumer`` returns)."""

    def __init__(
        self, hub: SharedLogHub, partition: str, position: Any, inclusive: bool, on_events: Any
    ) -> None:
        self.stop = False
        self._hub, self._pid, self._on = hub, partition, on_events
        if position in ("-1", -1):
            self._next = 0
        elif position == "@latest":
            self._next = hub.size(partition)
        else:  # an offset string from a checkpoint
            seq = int(str(position)) // 1000
            self._next = seq if inclusive else seq + 1

    def receive(self, batch: bool, max_batch_size: int, max_wait_time: float | None) -> None:
        got = self._hub.read(self._pid, self._next, max_batch_size)
        if not got:
            time.sleep(0.05)
            return
        events = []
        for seq, body, key in got:
            event = EventData(body)
            event._raw_amqp_message.annotations = {
                b"x-opt-sequence-number": seq,
                b"x-opt-offset": str(seq * 1000).encode(),
                b"x-opt-partition-key": key.encode() if key else None,
                b"x-opt-enqueued-time": int(time.time() * 1000),
            }
            events.append(event)
        self._next = got[-1][0] + 1
        self._on(events)

    def close(self) -> None:
        self.stop = True


class ProcessorFakeConsumerClient:
    """FAKE ``EventHubConsumerClient`` whose ``receive_batch`` runs the SDK's REAL
    ``EventProcessor``: partition load balancing (``OwnershipManager``), etag-conditional
    ownership claims, expiry and takeover, and start positions from checkpoints all go through
    the REAL ``BlobCheckpointStore`` (Azurite in the tests); only the partition receivers (AMQP
    links on the service) read the :class:`SharedLogHub` files instead."""

    def __init__(
        self,
        hub: SharedLogHub,
        *,
        consumer_group: str,
        checkpoint_store: Any,
        load_balancing_interval: float,
        ownership_expiration: float,
    ) -> None:
        import types

        self._hub = hub
        self._group = consumer_group
        self._store = checkpoint_store
        self._interval = load_balancing_interval
        self._expiry = ownership_expiration
        self._address = types.SimpleNamespace(hostname=hub.namespace)
        self.eventhub_name = hub.name
        self._processor: Any = None

    def get_partition_ids(self) -> list[str]:
        return list(self._hub.partitions)

    def _create_consumer(
        self, consumer_group: str, partition_id: str, event_position: Any, on_event_received: Any,
        **kwargs: Any,
    ) -> _SharedPartitionConsumer:  # fmt: skip
        inclusive = bool(kwargs.get("event_position_inclusive", False))
        return _SharedPartitionConsumer(
            self._hub, partition_id, event_position, inclusive, on_event_received
        )

    def receive_batch(
        self, on_event_batch: Any, *, max_batch_size: int = 300,
        max_wait_time: float | None = None, starting_position: str = "-1",
        on_partition_initialize: Any = None, on_partition_close: Any = None, **_kw: Any,
    ) -> None:  # fmt: skip
        from azure.eventhub._eventprocessor.event_processor import EventProcessor

        self._processor = EventProcessor(
            self,  # type: ignore[arg-type]
            self._group,
            on_event_batch,
            batch=True,
            max_batch_size=max_batch_size,
            max_wait_time=max_wait_time,
            checkpoint_store=self._store,
            load_balancing_interval=self._interval,
            partition_ownership_expiration_interval=self._expiry,
            initial_event_position=starting_position,
            on_partition_initialize=on_partition_initialize,  # as EventHubConsumerClient does
            on_partition_close=on_partition_close,
        )
        self._processor.start()

    def close(self) -> None:
        if self._processor is not None:
            self._processor.stop()
