"""Backend protocols: the only surface through which ingestion touches a cloud.

Core logic (validation, sanitization, provenance, quarantine) never imports boto3, azure or
google; each backend module implements these two protocols with the real SDK, and the local
backend implements them with files under the data directory.

Delivery is at-least-once: a consumer calls :meth:`RecordStream.checkpoint` only after the records
it covers were durably written to the :class:`ObjectStore`, and object writes are idempotent
(same key, same bytes), so a crash at any point loses nothing and stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class StreamMessage:
    """One message read from a stream.

    Attributes
    ----------
    data:
        The raw bytes the producer published (one serialized, signed record).
    partition:
        Shard / partition / subscription the message came from.
    position:
        Sequence number, offset or ack ID: what :meth:`RecordStream.checkpoint` records.
    """

    data: bytes
    partition: str
    position: str


@runtime_checkable
class RecordStream(Protocol):
    """A durable, ordered-per-partition record stream (Kinesis, Event Hubs, Pub/Sub, local)."""

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Publish payloads durably; retries partial failures; raises if any payload is lost."""
        ...

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Return up to ``max_messages`` not yet checkpointed (may be empty after ``timeout``)."""
        ...

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Record that ``messages`` are durably stored; called only after the durable write."""
        ...


@runtime_checkable
class ObjectStore(Protocol):
    """Where accepted and quarantined records land (S3, ADLS Gen2, BigQuery, local directory)."""

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write ``data`` under ``key``; writing the same bytes again is a no-op (idempotent)."""
        ...

    def get(self, key: str) -> bytes:
        """Read the object stored under ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix``, in lexicographic order."""
        ...
