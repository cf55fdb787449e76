"""GCP backend: Pub/Sub (Avro-schema topic, dead-letter policy) in, BigQuery out.

Classes and functions
---------------------
:func:`ensure_pubsub_resources`
    Creates (or verifies) the Avro schema from :func:`saip_ingestion.schemas.avro_schema` (the
    same definition as ``ingestion/schemas/record.v1.avsc``), the topic bound to it with
    ``BINARY`` encoding, a dead-letter topic with its own retention subscription, and the
    subscription with a dead-letter policy (message ordering optional). Existing resources are
    checked, not silently accepted: a topic bound to another schema raises.
:class:`PubSubStream`
    :class:`~saip_ingestion.backends.base.RecordStream`. ``publish`` transcodes each JSON record
    to Avro binary and publishes it with the partition key as attribute (or ordering key);
    Pub/Sub validates every message against the topic schema at publish time and a rejected
    message raises :class:`~saip_ingestion.backends._cloud_common.PublishError` (it never
    enters the topic).
    ``poll`` uses streaming pull with flow control (bounded outstanding messages and bytes; the
    client library extends leases of outstanding messages) and hands the engine the JSON form;
    ``checkpoint`` acks, which the engine calls only after the durable write.
:class:`BigQueryObjectStore`
    :class:`~saip_ingestion.backends.base.ObjectStore` over a BigQuery table
    ``(key STRING, data BYTES, sha256 STRING, metadata STRING, inserted_at TIMESTAMP)`` written
    with streaming inserts (``tabledata.insertAll``; ``insertId = key:sha256`` for the service's
    best-effort de-duplication) and read with parameterised queries (``jobs.query``).

Idempotence on BigQuery
-----------------------
BigQuery has no conditional insert. ``put`` first looks the key up: same SHA-256 → no-op,
different → :class:`ObjectConflictError`; otherwise it inserts. Two writers racing on one key
can both insert; readers then see identical rows (collapsed) or different rows (conflict raised,
nothing overwritten). The Storage Write API's committed-stream offsets give exactly-once writes
and are the production upgrade path; they need gRPC and have no local stand-in here.

Credentials and TLS
-------------------
Clients built here use Application Default Credentials (workload identity, service-account
attachment, ``gcloud auth application-default``); no credential is an option. Endpoints are
options (Private Service Connect, ``*.p.googleapis.com``); ``PUBSUB_EMULATOR_HOST`` is honoured
by the Google client itself. Injected ``publisher``/``subscriber``/``bigquery_client`` objects
let the ``saip`` CLI pass clients built with ``saip_encryption.tls`` channel credentials (this
package never imports ``saip_encryption``). gRPC and ``requests`` negotiate TLS 1.2+ with
Google front ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from saip_ingestion import schemas
from saip_ingestion.backends._cloud_common import (
    CloudBackendError,
    ObjectConflictError,
    PublishError,
    check_endpoint_url,
    check_metadata,
    check_name,
    check_object_key,
)
from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage

__all__ = [
    "BigQueryObjectStore",
    "PubSubResources",
    "PubSubStream",
    "ensure_pubsub_resources",
    "open_backend",
]

_log = logging.getLogger(__name__)

_PROJECT = r"[a-z][a-z0-9-]{4,28}[a-z0-9]"
_RESOURCE = r"[A-Za-z][A-Za-z0-9._~+%-]{2,254}"
_DATASET = r"[A-Za-z0-9_]{1,1024}"
_TABLE = r"[A-Za-z0-9_-]{1,1024}"
#: Pub/Sub publish limit: 10 MB per message (we keep the record limit of the schema anyway)
MAX_MESSAGE_BYTES = 10 * 1000 * 1000


class PubSubResources:
    """Fully qualified names of the Pub/Sub resources one pipeline uses."""

    def __init__(
        self,
        *,
        project: str,
        topic: str,
        subscription: str,
        dead_letter_topic: str | None = None,
        schema_id: str | None = None,
    ) -> None:
        check_name("project", project, _PROJECT, hint="6-30 of [a-z0-9-]")
        check_name("topic", topic, _RESOURCE, hint="Pub/Sub resource name rules")
        check_name("subscription", subscription, _RESOURCE, hint="Pub/Sub resource name rules")
        dlq = dead_letter_topic or f"{topic}-dead-letter"
        sid = schema_id or f"{topic}-record-v1"
        check_name("dead_letter_topic", dlq, _RESOURCE, hint="Pub/Sub resource name rules")
        check_name("schema_id", sid, _RESOURCE, hint="Pub/Sub resource name rules")
        self.project = project
        self.topic = f"projects/{project}/topics/{topic}"
        self.subscription = f"projects/{project}/subscriptions/{subscription}"
        self.dead_letter_topic = f"projects/{project}/topics/{dlq}"
        self.dead_letter_subscription = f"projects/{project}/subscriptions/{dlq}-retain"
        self.schema = f"projects/{project}/schemas/{sid}"
        self.schema_id = sid


def _avro_definition() -> str:
    return json.dumps(schemas.avro_schema(), sort_keys=True)


def ensure_pubsub_resources(
    names: PubSubResources,
    *,
    publisher: Any,
    subscriber: Any,
    schema_client: Any,
    max_delivery_attempts: int = 5,
    ack_deadline_seconds: int = 60,
    message_ordering: bool = False,
) -> None:
    """Create or verify schema, topic, dead-letter topic (+ retention subscription), subscription.

    Raises
    ------
    ValueError
        ``max_delivery_attempts`` outside 5-100 or ``ack_deadline_seconds`` outside 10-600.
    CloudBackendError
        An existing topic is bound to another schema/encoding, or an existing schema differs.
    """
    from google.api_core.exceptions import AlreadyExists
    from google.pubsub_v1.types import Encoding, Schema

    if not 5 <= max_delivery_attempts <= 100:
        raise ValueError("max_delivery_attempts: Pub/Sub accepts 5-100")
    if not 10 <= ack_deadline_seconds <= 600:
        raise ValueError("ack_deadline_seconds: Pub/Sub accepts 10-600")
    definition = _avro_definition()
    try:
        schema_client.create_schema(
            request={
                "parent": f"projects/{names.project}",
                "schema": Schema(name=names.schema, type_=Schema.Type.AVRO, definition=definition),
                "schema_id": names.schema_id,
            }
        )
    except AlreadyExists:
        existing = schema_client.get_schema(request={"name": names.schema})
        if json.loads(existing.definition) != json.loads(definition):
            raise CloudBackendError(
                f"{names.schema} exists with a different definition: register a new schema "
                "revision or id instead of publishing against a stale one"
            ) from None
    try:
        publisher.create_topic(
            request={
                "name": names.topic,
                "schema_settings": {"schema": names.schema, "encoding": Encoding.BINARY},
            }
        )
    except AlreadyExists:
        topic = publisher.get_topic(request={"topic": names.topic})
        if (
            topic.schema_settings.schema != names.schema
            or topic.schema_settings.encoding != Encoding.BINARY
        ):
            raise CloudBackendError(
                f"{names.topic} exists but is not bound to {names.schema} (BINARY)"
            ) from None
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(request={"name": names.dead_letter_topic})
    with contextlib.suppress(AlreadyExists):  # without a subscription dead letters are dropped
        subscriber.create_subscription(
            request={
                "name": names.dead_letter_subscription,
                "topic": names.dead_letter_topic,
                "ack_deadline_seconds": ack_deadline_seconds,
            }
        )
    try:
        subscriber.create_subscription(
            request={
                "name": names.subscription,
                "topic": names.topic,
                "ack_deadline_seconds": ack_deadline_seconds,
                "enable_message_ordering": message_ordering,
                "dead_letter_policy": {
                    "dead_letter_topic": names.dead_letter_topic,
                    "max_delivery_attempts": max_delivery_attempts,
                },
            }
        )
    except AlreadyExists:
        sub = subscriber.get_subscription(request={"subscription": names.subscription})
        if sub.dead_letter_policy.dead_letter_topic != names.dead_letter_topic:
            raise CloudBackendError(
                f"{names.subscription} exists without the dead-letter policy to "
                f"{names.dead_letter_topic}"
            ) from None


class PubSubStream(RecordStream):
    """A :class:`RecordStream` over a schema-bound Pub/Sub topic and its subscription.

    Parameters
    ----------
    publisher, subscriber:
        ``google.cloud.pubsub_v1`` ``PublisherClient`` (with message ordering enabled) and
        ``SubscriberClient``.
    names:
        The resources (see :class:`PubSubResources`).
    max_outstanding_messages, max_outstanding_bytes:
        Streaming-pull flow control: the client stops pulling while this many un-acked messages
        (or bytes) are held, so a slow consumer never buffers without bound.
    publish_timeout:
        Seconds to wait for each publish to be confirmed.
    max_lease_extension_seconds:
        Cap of each lease extension (10-600 s). The client's default stream ack deadline is
        60 s whatever the subscription says, so a consumer that dies keeps its messages
        invisible for up to a minute; a shorter cap brings them back sooner at the cost of more
        ``ModifyAckDeadline`` traffic.
    message_ordering:
        Publish with the partition key as ordering key (the subscription must have ordering
        on). Off by default: the Python client then releases the next message of a key only
        after the previous one is acked, i.e. one message per key per write round trip. The
        engine's provenance window tolerates reordering, and the partition key still travels
        as the ``partition_key`` attribute.

    Notes
    -----
    Ack happens in :meth:`checkpoint`, i.e. only after the durable write. Messages never acked
    are redelivered after their lease lapses (crash-safe, at-least-once); one redelivered more
    than ``max_delivery_attempts`` times goes to the dead-letter topic. :meth:`reject` nacks
    (immediate redelivery, counted toward the dead-letter threshold).
    """

    def __init__(
        self,
        *,
        publisher: Any,
        subscriber: Any,
        names: PubSubResources,
        max_outstanding_messages: int = 1000,
        max_outstanding_bytes: int = 64 * 1024 * 1024,
        publish_timeout: float = 60.0,
        message_ordering: bool = False,
        max_lease_extension_seconds: int | None = None,
    ) -> None:
        if max_lease_extension_seconds is not None and not (
            isinstance(max_lease_extension_seconds, int)
            and 10 <= max_lease_extension_seconds <= 600
        ):
            raise ValueError("max_lease_extension_seconds: must be an int in 10..600")
        if not isinstance(max_outstanding_messages, int) or max_outstanding_messages < 1:
            raise ValueError("max_outstanding_messages: must be an int >= 1")
        if not isinstance(max_outstanding_bytes, int) or max_outstanding_bytes < 1024:
            raise ValueError("max_outstanding_bytes: must be an int >= 1024")
        if publish_timeout <= 0:
            raise ValueError("publish_timeout: must be > 0")
        self._publisher = publisher
        self._subscriber = subscriber
        self._names = names
        self._flow = (max_outstanding_messages, max_outstanding_bytes)
        self._timeout = publish_timeout
        self._ordering = message_ordering
        self._lease_ext = max_lease_extension_seconds or 0
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending: dict[str, Any] = {}
        self._ids: dict[str, str] = {}  # ack id -> message id (claims, backends.claims)
        self._future: Any = None
        self._lock = threading.Lock()

    # -- producer -------------------------------------------------------------------------

    @staticmethod
    def _encode(payload: bytes) -> bytes:
        """JSON record → Avro binary; bytes that are not a record go out as-is (schema rejects)."""
        try:
            return schemas.avro_encode(json.loads(payload))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            _log.debug("payload is not an Avro-encodable record (%s)", type(exc).__name__)
            return bytes(payload)

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Publish with ``partition_key`` as ordering key; raise if Pub/Sub refused any.

        Raises
        ------
        PublishError
            Pub/Sub rejected some messages (schema validation, size, permission); ``failed``
            lists their indexes, the message names the first reason.
        """
        if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= 1024:
            raise ValueError("partition_key: must be 1-1024 characters")
        encoded = []
        for i, payload in enumerate(payloads):
            data = self._encode(payload)
            if len(data) > MAX_MESSAGE_BYTES:
                raise ValueError(f"payload {i}: {len(data)} bytes exceeds Pub/Sub's 10 MB")
            encoded.append(data)
        failed = self._publish_wait(encoded, range(len(encoded)), partition_key)
        if len(failed) > 1:
            # one Publish RPC carries a whole client-side batch and fails as a unit: retry the
            # failed messages one per RPC so a single bad record does not take others with it
            if self._ordering:
                self._publisher.resume_publish(self._names.topic, partition_key)
            alone: dict[int, str] = {}
            for index in sorted(failed):
                alone.update(self._publish_wait(encoded, [index], partition_key))
            failed = alone
        if failed:
            if self._ordering:  # an ordering key pauses after an error; resume it
                self._publisher.resume_publish(self._names.topic, partition_key)
            first = next(iter(failed.values()))
            raise PublishError(
                f"Pub/Sub refused {len(failed)} of {len(payloads)} messages on "
                f"{self._names.topic}; first: {first[:300]}",
                failed=sorted(failed),
            )

    def _publish_wait(
        self, encoded: Sequence[bytes], indexes: Iterable[int], partition_key: str
    ) -> dict[int, str]:
        futures = {
            i: self._publisher.publish(
                self._names.topic,
                encoded[i],
                ordering_key=partition_key if self._ordering else "",
                partition_key=partition_key,
            )
            for i in indexes
        }
        failed: dict[int, str] = {}
        for i, fut in futures.items():
            try:
                fut.result(timeout=self._timeout)
            except Exception as exc:  # every publish failure is reported, none swallowed
                failed[i] = f"{type(exc).__name__}: {exc}"
        return failed

    # -- consumer -------------------------------------------------------------------------

    def _start(self) -> None:
        from google.cloud.pubsub_v1.types import FlowControl

        with self._lock:
            if self._future is not None:
                return
            self._future = self._subscriber.subscribe(
                self._names.subscription,
                callback=self._queue.put,
                flow_control=FlowControl(
                    max_messages=self._flow[0],
                    max_bytes=self._flow[1],
                    max_lease_duration=3600,
                    max_duration_per_lease_extension=self._lease_ext,
                ),
                await_callbacks_on_shutdown=True,
            )

    def _decode(self, data: bytes) -> bytes:
        try:
            record = schemas.avro_decode(data)
        except ValueError:
            _log.warning("%s: message is not Avro record v1; passed on raw", self._names.topic)
            return bytes(data)
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Up to ``max_messages`` delivered, un-acked messages (JSON record bytes)."""
        if max_messages < 1:
            raise ValueError("max_messages: must be >= 1")
        self._start()
        out: list[StreamMessage] = []
        deadline = time.monotonic() + max(0.0, timeout)
        while len(out) < max_messages:
            if self._future.done():
                exc = self._future.exception()
                raise CloudBackendError(
                    f"streaming pull on {self._names.subscription} stopped: {exc}"
                )
            remaining = deadline - time.monotonic()
            try:
                msg = (
                    self._queue.get(timeout=max(0.0, min(remaining, 0.1)))
                    if not out
                    else (self._queue.get_nowait())
                )
            except queue.Empty:
                if out or remaining <= 0:
                    break
                continue
            self._pending[msg.ack_id] = msg
            self._ids[msg.ack_id] = str(msg.message_id)
            out.append(
                StreamMessage(
                    self._decode(msg.data),
                    msg.ordering_key or msg.attributes.get("partition_key", ""),
                    str(msg.ack_id),
                )
            )
        return out

    def message_id(self, message: StreamMessage) -> str:
        """The Pub/Sub message id of a delivered, not yet acked message (stable across
        redeliveries, unlike the ack id)."""
        return self._ids[message.position]

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Ack ``messages`` (call only after they are durably stored).

        Confirmed only on a subscription with exactly-once delivery
        (``enable_exactly_once_delivery``; ``Message.ack_with_response``, google-cloud-pubsub):
        then this waits for the service's answer and raises :class:`CloudBackendError` when it
        refuses an ack (e.g. a lease that lapsed), after every ack was sent. Neither
        ``infra/gcp`` nor :func:`ensure_pubsub_resources` enables it: there the client answers
        at once and sends the acks in the background, best effort — a lost ack is a redelivery,
        which the engine already takes (at-least-once delivery, idempotent writes; scaled out,
        the claims store of :mod:`saip_ingestion.backends.claims`).

        Raises
        ------
        KeyError
            A message this stream did not deliver, or one already acked, nacked or released.
        CloudBackendError
            Exactly-once delivery only: the service refused (or did not confirm in time) an ack.
        """
        futures = []
        for m in messages:
            self._ids.pop(m.position, None)
            msg = self._pending.pop(m.position, None)
            if msg is None:
                raise KeyError(f"unknown or already acknowledged message {m.position[:16]}...")
            futures.append(msg.ack_with_response())
        refused: list[str] = []
        for fut in futures:
            try:
                fut.result(timeout=self._timeout)
            except Exception as exc:  # AcknowledgeError (with its status) or a timeout
                refused.append(str(getattr(exc, "error_code", None) or type(exc).__name__))
        if refused:
            raise CloudBackendError(
                f"{self._names.subscription} refused {len(refused)} of {len(futures)} acks "
                f"(first: {refused[0]}); they will be redelivered"
            )

    def reject(self, messages: Sequence[StreamMessage]) -> None:
        """Nack ``messages``: redelivered now; counts toward the dead-letter threshold."""
        for m in messages:
            self._ids.pop(m.position, None)
            msg = self._pending.pop(m.position, None)
            if msg is not None:
                msg.nack()

    def close(self) -> None:
        """Stop streaming pull; un-acked messages are redelivered to the next consumer."""
        with self._lock:
            if self._future is not None:
                self._future.cancel()
                with contextlib.suppress(Exception):
                    self._future.result(timeout=10)
                self._future = None
        ack_ids = list(self._pending)
        self._pending.clear()
        self._ids.clear()
        while not self._queue.empty():  # delivered but never polled
            ack_ids.append(self._queue.get_nowait().ack_id)
        for start in range(0, len(ack_ids), 1000):  # deadline 0 = redeliver now (unary RPC)
            try:
                self._subscriber.modify_ack_deadline(
                    request={
                        "subscription": self._names.subscription,
                        "ack_ids": ack_ids[start : start + 1000],
                        "ack_deadline_seconds": 0,
                    }
                )
            except Exception as exc:  # the lease lapses anyway: redelivered later, not lost
                _log.warning("releasing %d leases failed: %s", len(ack_ids), exc)


# --------------------------------------------------------------------------- BigQuery

_BQ_FIELDS = (
    ("key", "STRING", "REQUIRED"),
    ("data", "BYTES", "REQUIRED"),
    ("sha256", "STRING", "REQUIRED"),
    ("metadata", "STRING", "NULLABLE"),
    ("inserted_at", "TIMESTAMP", "REQUIRED"),
)


class BigQueryObjectStore(ObjectStore):
    """An :class:`ObjectStore` over one BigQuery table (see the module notes on idempotence).

    Parameters
    ----------
    client:
        ``google.cloud.bigquery.Client``.
    table:
        ``project.dataset.table``.
    location:
        Dataset location used for queries (e.g. ``EU``).
    clock:
        Wall clock for ``inserted_at`` (injectable).
    """

    def __init__(
        self, *, client: Any, table: str, location: str | None = None, clock: Any = time.time
    ) -> None:
        parts = table.split(".") if isinstance(table, str) else []
        if len(parts) != 3:
            raise ValueError(f"bigquery_table: expected project.dataset.table, got {table!r}")
        check_name("bigquery_table", parts[0], _PROJECT, hint="project id")
        check_name("bigquery_table", parts[1], _DATASET, hint="dataset id")
        check_name("bigquery_table", parts[2], _TABLE, hint="table id")
        self._client = client
        self._table = table
        self._location = location
        self._clock = clock

    def ensure_table(self) -> None:
        """Create the table if it is missing (normally Terraform's job); verify its columns."""
        from google.cloud import bigquery

        schema = [bigquery.SchemaField(n, t, mode=m) for n, t, m in _BQ_FIELDS]
        table = self._client.create_table(
            bigquery.Table(self._table, schema=schema), exists_ok=True
        )
        have = {(f.name, f.field_type, f.mode) for f in table.schema}
        if not set(_BQ_FIELDS) <= have:
            raise CloudBackendError(f"{self._table}: columns {sorted(have)} lack {_BQ_FIELDS}")

    def _query(self, sql: str, **params: str) -> list[Any]:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in params.items()
            ]
        )
        rows = self._client.query_and_wait(sql, job_config=config, location=self._location)
        return list(rows)

    def _rows(self, key: str) -> list[Any]:
        return self._query(
            f"SELECT data, sha256 FROM `{self._table}` WHERE key = @key",  # noqa: S608 - checked name
            key=check_object_key(key),
        )

    def _one(self, key: str, rows: list[Any]) -> bytes | None:
        if not rows:
            return None
        if len({r["sha256"] for r in rows}) > 1:
            raise ObjectConflictError(f"{self._table}: conflicting rows for {key}")
        data = bytes(rows[0]["data"])
        if hashlib.sha256(data).hexdigest() != rows[0]["sha256"]:
            raise CloudBackendError(f"{self._table}: stored bytes of {key} fail their SHA-256")
        return data

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Insert ``data`` under ``key`` unless stored (same SHA-256 → no-op, else conflict)."""
        meta = check_metadata(metadata)
        digest = hashlib.sha256(data).hexdigest()
        existing = self._one(key, self._rows(key))
        if existing is not None:
            if existing == bytes(data):
                return
            raise ObjectConflictError(f"{self._table}: different content already stored for {key}")
        row = {
            "key": key,
            "data": data,
            "sha256": digest,
            "metadata": json.dumps(meta, sort_keys=True) if meta else None,
            "inserted_at": self._clock(),
        }
        from google.cloud import bigquery

        schema = [bigquery.SchemaField(n, t, mode=m) for n, t, m in _BQ_FIELDS]
        errors = self._client.insert_rows(
            self._table, [row], selected_fields=schema, row_ids=[f"{key}:{digest}"]
        )
        if errors:
            raise CloudBackendError(f"{self._table}: insert of {key} failed: {errors}")

    def get(self, key: str) -> bytes:
        """Stored bytes of ``key``; KeyError if absent; conflict error if rows disagree."""
        data = self._one(key, self._rows(key))
        if data is None:
            raise KeyError(key)
        return data

    def exists(self, key: str) -> bool:
        """Whether a row for ``key`` exists."""
        return bool(self._rows(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Distinct keys starting with ``prefix``, sorted."""
        rows = self._query(
            f"SELECT DISTINCT key FROM `{self._table}` "  # noqa: S608 - checked name
            "WHERE STARTS_WITH(key, @prefix) ORDER BY key",
            prefix=prefix,
        )
        return iter([str(r["key"]) for r in rows])


# --------------------------------------------------------------------------- factory


def open_backend(
    *,
    project: str | None = None,
    topic: str | None = None,
    subscription: str | None = None,
    stream: str | None = None,
    dead_letter_topic: str | None = None,
    schema_id: str | None = None,
    bigquery_table: str | None = None,
    bucket: str | None = None,
    location: str | None = None,
    create: bool = False,
    message_ordering: bool = False,
    max_delivery_attempts: int = 5,
    ack_deadline_seconds: int = 60,
    max_outstanding_messages: int = 1000,
    max_outstanding_bytes: int = 64 * 1024 * 1024,
    max_lease_extension_seconds: int | None = None,
    consumer: str | None = None,
    commit_store: str | None = None,
    pubsub_endpoint: str | None = None,
    bigquery_endpoint_url: str | None = None,
    endpoint_url: str | None = None,
    publisher: Any = None,
    subscriber: Any = None,
    schema_client: Any = None,
    bigquery_client: Any = None,
    **unsupported: Any,
) -> tuple[RecordStream, ObjectStore]:
    """Build the GCP stream and store (options validated eagerly, ValueError names them).

    Parameters
    ----------
    project:
        GCP project id (default: ``GOOGLE_CLOUD_PROJECT``, as Application Default Credentials
        use it).
    topic / stream, subscription:
        Topic (``stream`` is the CLI's generic name for it) and subscription; subscription
        defaults to ``<topic>-saip``.
    dead_letter_topic, schema_id:
        Defaults ``<topic>-dead-letter`` and ``<topic>-record-v1``.
    bigquery_table / bucket:
        ``project.dataset.table`` (``bucket`` is the CLI's generic name; a bare ``dataset.table``
        gets ``project`` prepended).
    location / region:
        BigQuery location (``region`` is the CLI's generic name).
    create:
        Create/verify the Pub/Sub resources at start (otherwise Terraform made them).
    message_ordering, max_delivery_attempts, ack_deadline_seconds:
        Subscription settings used when ``create`` is true.
    max_outstanding_messages, max_outstanding_bytes, max_lease_extension_seconds:
        Streaming-pull flow control and lease extension cap (see :class:`PubSubStream`).
    consumer, commit_store:
        Scale-out (several consumers on one subscription, ingestion README "Scale-out"): this
        consumer's unique name and the shared create-only store of claims and batch decisions
        (:mod:`saip_ingestion.backends.claims`): ``gs://BUCKET[/PREFIX]`` (GCS,
        ``ifGenerationMatch=0``) or ``file:///DIR`` (consumers on one host). Both or neither.
    pubsub_endpoint:
        ``host:port`` of a private Pub/Sub endpoint (PSC); ``PUBSUB_EMULATOR_HOST`` wins.
    bigquery_endpoint_url / endpoint_url:
        BigQuery API root (https; http only for loopback).
    publisher, subscriber, schema_client, bigquery_client:
        Injected clients (e.g. built with TLS channel credentials by the ``saip`` CLI).
    """
    unsupported.pop("data_dir", None)  # accepted by every backend; nothing kept locally here
    region = unsupported.pop("region", None)  # the CLI's generic name for the data location
    if unsupported:
        raise ValueError(f"gcp backend: unsupported option(s) {', '.join(sorted(unsupported))}")
    if region is not None and location is not None and region != location:
        raise ValueError("region: conflicts with location")
    location = location or region
    project = project or os.environ.get("GOOGLE_CLOUD_PROJECT")  # the ADC project variable
    if project is None:
        raise ValueError("project: required for the gcp backend (or set GOOGLE_CLOUD_PROJECT)")
    if topic is not None and stream is not None and topic != stream:
        raise ValueError("stream: conflicts with topic")
    topic = topic or stream
    if topic is None:
        raise ValueError("topic: required for the gcp backend (or pass stream)")
    table = bigquery_table or bucket
    if table is None:
        raise ValueError("bigquery_table: required for the gcp backend (or pass bucket)")
    if table.count(".") == 1:
        table = f"{project}.{table}"
    if pubsub_endpoint is not None and not isinstance(pubsub_endpoint, str):
        raise TypeError("pubsub_endpoint: must be host:port")
    bq_url = check_endpoint_url("bigquery_endpoint_url", bigquery_endpoint_url) or (
        check_endpoint_url("endpoint_url", endpoint_url)
    )
    names = PubSubResources(
        project=project,
        topic=topic,
        subscription=subscription or f"{topic}-saip",
        dead_letter_topic=dead_letter_topic,
        schema_id=schema_id,
    )
    store = BigQueryObjectStore(client=None, table=table, location=location)  # validates name
    stream_kw: dict[str, Any] = {
        "message_ordering": message_ordering,
        "max_outstanding_messages": max_outstanding_messages,
        "max_outstanding_bytes": max_outstanding_bytes,
        "max_lease_extension_seconds": max_lease_extension_seconds,
    }
    PubSubStream(publisher=None, subscriber=None, names=names, **stream_kw)  # validates flow
    if (consumer is None) != (commit_store is None):
        raise ValueError(
            "commit_store: scale-out on Pub/Sub needs both --consumer-name and --commit-store"
        )
    if consumer is not None:
        check_name("consumer", consumer, r"[A-Za-z0-9_.-]{1,64}", hint="1-64 of [A-Za-z0-9_.-]")
    commits = None if commit_store is None else _commit_store(commit_store)

    from google.cloud import pubsub_v1  # type: ignore[attr-defined]

    opts = {"api_endpoint": pubsub_endpoint} if pubsub_endpoint else None
    if publisher is None:
        publisher = pubsub_v1.PublisherClient(
            publisher_options=pubsub_v1.types.PublisherOptions(
                enable_message_ordering=message_ordering
            ),
            client_options=opts,
        )
    if subscriber is None:
        subscriber = pubsub_v1.SubscriberClient(client_options=opts)
    if create:
        if schema_client is None:
            schema_client = pubsub_v1.SchemaServiceClient(client_options=opts)
        ensure_pubsub_resources(
            names,
            publisher=publisher,
            subscriber=subscriber,
            schema_client=schema_client,
            max_delivery_attempts=max_delivery_attempts,
            ack_deadline_seconds=ack_deadline_seconds,
            message_ordering=message_ordering,
        )
    if bigquery_client is None:
        from google.cloud import bigquery

        creds = None
        if bq_url is not None and bq_url.startswith("http://"):  # loopback stand-in only
            from google.auth.credentials import AnonymousCredentials

            creds = AnonymousCredentials()  # type: ignore[no-untyped-call]  # never send a bearer token over plain http
        bigquery_client = bigquery.Client(
            project=project,
            credentials=creds,
            client_options={"api_endpoint": bq_url} if bq_url else None,
        )
    store = BigQueryObjectStore(client=bigquery_client, table=table, location=location)
    rs = PubSubStream(publisher=publisher, subscriber=subscriber, names=names, **stream_kw)
    if commits is None or consumer is None:
        return rs, store
    from saip_ingestion.backends.claims import (
        ClaimedStream,
        ClaimingStore,
        ClaimLog,
        claims_namespace,
    )

    # message ids are unique only within a topic: the claims carry project and subscription
    _p, proj, _s, sub_id = names.subscription.split("/", 3)
    log = ClaimLog(store=commits, namespace=claims_namespace(proj, sub_id), owner=consumer)
    claimed = ClaimedStream(rs, log=log, landing=store)
    return claimed, ClaimingStore(store, claimed)


def _commit_store(uri: str) -> Any:
    """``gs://BUCKET[/PREFIX]`` or ``file:///DIR`` → a create-only commit store."""
    from pathlib import Path

    from saip_ingestion.backends.claims import GcsCommitStore, LocalCommitStore

    if not isinstance(uri, str):
        raise TypeError("commit_store: must be a gs:// or file:// URI")
    if uri.startswith("file://"):
        path = uri[len("file://") :]
        if not path.startswith("/"):
            raise ValueError("commit_store: file:// needs an absolute path (file:///DIR)")
        return LocalCommitStore(Path(path))
    if uri.startswith("gs://"):
        bucket, _, prefix = uri[len("gs://") :].partition("/")
        from google.auth import default
        from google.auth.transport.requests import AuthorizedSession

        creds, _project = default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
        return GcsCommitStore(
            session=AuthorizedSession(creds),  # type: ignore[no-untyped-call]
            bucket=bucket,
            prefix=f"{prefix.strip('/')}/" if prefix.strip("/") else "",
        )
    raise ValueError(f"commit_store: {uri[:80]!r} is not gs://BUCKET[/PREFIX] or file:///DIR")
