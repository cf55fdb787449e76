"""Azure backend: Event Hubs in (Blob checkpoint store), ADLS Gen2 out through the Blob API.

Classes
-------
:class:`EventHubStream`
    :class:`~saip_ingestion.backends.base.RecordStream`. ``publish`` fills ``EventDataBatch``
    objects (the SDK sizes them to the hub's frame limit: 1 MB on Standard) with one partition
    key and sends each; the SDK retries transient errors, any error left raises
    :class:`~saip_ingestion.backends._cloud_common.PublishError` naming the unsent indexes.
    ``poll`` drains events that ``EventHubConsumerClient.receive_batch`` (run on a background
    thread) hands over through a bounded queue (back-pressure: the receive thread blocks when
    the engine falls behind). ``checkpoint`` writes, per partition, the newest event's offset
    and sequence number to the Blob checkpoint store (``azure-eventhub-checkpointstoreblob``):
    the engine calls it only after the durable write. On start the consumer client resumes from
    the stored checkpoints.
:class:`AdlsBlobStore`
    :class:`~saip_ingestion.backends.base.ObjectStore` over a container of an ADLS Gen2 account
    (hierarchical namespace) through the Blob API: ``upload_blob(overwrite=False)`` is a
    conditional create (``If-None-Match: *``); on ``ResourceExistsError`` the stored bytes are
    compared (equal → no-op, different → :class:`ObjectConflictError`). An optional encryption
    scope (customer-managed key) is applied per blob.

Credentials and TLS
-------------------
Clients built here use ``DefaultAzureCredential`` (managed identity, workload identity,
environment, Azure CLI); no key, SAS or connection string is an option. Namespace and account
URLs are options (private endpoints resolve the same names). Injected clients (``producer``,
``consumer``, ``checkpoint_store``, ``container_client``) let the ``saip`` CLI pass transports
built by ``saip_encryption.tls`` (this package never imports it) and let tests use Azurite.
Azure Storage and Event Hubs enforce TLS 1.2 minimum on the service side (``min_tls_version``
in the Terraform modules).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

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

__all__ = ["AdlsBlobStore", "EventHubStream", "open_backend"]

_log = logging.getLogger(__name__)

_NAMESPACE = (
    r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]"
    r"\.servicebus\.(windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)"
)
_HUB = r"[A-Za-z0-9][A-Za-z0-9._-]{0,255}"
_CONSUMER_GROUP = r"(\$Default|[A-Za-z0-9][A-Za-z0-9._-]{0,49})"
_CONTAINER = r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]"
_SCOPE = r"[A-Za-z0-9]{3,63}"


#: an event as received: (ownership session of its partition, PartitionContext, EventData)
_Received = tuple[int, Any, Any]


class EventHubStream(RecordStream):
    """A :class:`RecordStream` over one event hub (producer + consumer group).

    Parameters
    ----------
    producer:
        ``azure.eventhub.EventHubProducerClient``.
    consumer:
        ``azure.eventhub.EventHubConsumerClient`` created with a ``checkpoint_store`` (e.g.
        ``BlobCheckpointStore``); it resumes each partition after its checkpoint.
    prefetch_events:
        Bound of the hand-over queue between the receive thread and :meth:`poll`.
    max_wait_time:
        Seconds the receive thread waits for a batch before looping.
    send_timeout:
        Seconds the SDK may spend sending one batch (including its retries).
    reject_hold:
        Seconds events handed back by :meth:`reject` (a fenced batch) wait, with every later
        event of their partitions, before they are delivered again — long enough for the
        SDK's load balancing to notice a lost partition (more than its interval). If the
        partition was closed meanwhile (``on_partition_close``: ownership lost), they are
        dropped: its owner re-reads them from the checkpoint.

    Notes
    -----
    At-least-once: events after the last checkpoint are received again after a restart; the
    store's idempotent ``put`` absorbs them. One consumer process per consumer group is
    assumed; with several, the SDK's load balancing (ownership blobs in the same container)
    shares partitions between them.
    """

    def __init__(
        self,
        *,
        producer: Any,
        consumer: Any,
        prefetch_events: int = 2000,
        max_wait_time: float = 1.0,
        send_timeout: float = 60.0,
        reject_hold: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(prefetch_events, int) or prefetch_events < 1:
            raise ValueError("prefetch_events: must be an int >= 1")
        if max_wait_time <= 0 or send_timeout <= 0:
            raise ValueError("max_wait_time/send_timeout: must be > 0")
        if not 0 <= float(reject_hold) <= 3600:
            raise ValueError("reject_hold: must be 0-3600 seconds")
        self._producer = producer
        self._consumer = consumer
        self._max_wait = max_wait_time
        self._send_timeout = send_timeout
        self._queue: queue.Queue[_Received] = queue.Queue(maxsize=prefetch_events)
        self._pending: dict[tuple[str, str], _Received] = {}
        #: partition -> ownership session (bumped by the SDK's initialize/close callbacks)
        self._session: dict[str, int] = {}
        #: partitions whose events are held back after a reject: (until, events)
        self._held: dict[str, tuple[float, list[_Received]]] = {}
        self._ready: collections.deque[_Received] = collections.deque()
        self._reject_hold = float(reject_hold)
        self._clock = clock
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._lock = threading.Lock()

    # -- producer -------------------------------------------------------------------------

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Send ``payloads`` in as few size-bounded batches as possible, one partition key.

        Raises
        ------
        ValueError
            One payload alone exceeds the batch size limit of the hub.
        PublishError
            A batch could not be sent; ``failed`` lists the indexes of all unsent payloads.
        """
        from azure.eventhub import EventData

        if not isinstance(partition_key, str) or not partition_key:
            raise ValueError("partition_key: must be a non-empty string")
        batches: list[tuple[Any, list[int]]] = []
        batch = self._producer.create_batch(partition_key=partition_key)
        members: list[int] = []
        for i, payload in enumerate(payloads):
            try:
                batch.add(EventData(bytes(payload)))
            except ValueError:
                if not members:
                    raise ValueError(
                        f"payload {i}: {len(payload)} bytes does not fit one Event Hubs batch "
                        f"({batch.max_size_in_bytes} bytes)"
                    ) from None
                batches.append((batch, members))
                batch = self._producer.create_batch(partition_key=partition_key)
                members = []
                batch.add(EventData(bytes(payload)))
            members.append(i)
        if members:
            batches.append((batch, members))
        for n, (full, _members) in enumerate(batches):
            try:
                self._producer.send_batch(full, timeout=self._send_timeout)
            except Exception as exc:  # the SDK already retried; report, never swallow
                unsent = [i for _, rest in batches[n:] for i in rest]
                raise PublishError(
                    f"Event Hubs send failed for {len(unsent)} of {len(payloads)} events: "
                    f"{type(exc).__name__}: {exc}",
                    failed=unsent,
                ) from exc

    # -- consumer -------------------------------------------------------------------------

    def _on_batch(self, context: Any, events: list[Any]) -> None:
        session = self._session.get(str(context.partition_id), 0)
        for event in events:
            self._queue.put((session, context, event))  # blocks when the engine falls behind

    def _on_session(self, context: Any, *_reason: Any) -> None:
        """``on_partition_initialize`` / ``on_partition_close``: a new ownership session."""
        pid = str(context.partition_id)
        with self._lock:
            self._session[pid] = self._session.get(pid, 0) + 1

    def _receive(self) -> None:
        try:
            self._consumer.receive_batch(
                on_event_batch=self._on_batch,
                on_partition_initialize=self._on_session,
                on_partition_close=self._on_session,
                max_batch_size=300,
                max_wait_time=self._max_wait,
                starting_position="-1",  # partitions without a checkpoint start at the oldest
            )
        except BaseException as exc:  # surfaced by poll(); never lost in the thread
            self._error = exc

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._receive, name="saip-eventhub-receive", daemon=True
                )
                self._thread.start()

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Up to ``max_messages`` received, not yet checkpointed events. While events handed
        back by :meth:`reject` are held, an empty answer waits for them (an empty poll means
        idle: the run must not end with them)."""
        if max_messages < 1:
            raise ValueError("max_messages: must be >= 1")
        self._start()
        out: list[StreamMessage] = []
        deadline = time.monotonic() + max(0.0, timeout)
        while len(out) < max_messages:
            if self._error is not None:
                raise CloudBackendError(f"Event Hubs receive stopped: {self._error}")
            self._release_held()
            remaining = deadline - time.monotonic()
            try:
                if self._ready:
                    item = self._ready.popleft()
                elif out:
                    item = self._queue.get_nowait()
                else:  # events held back after a reject are work, not idleness: wait for them
                    floor = 0.05 if self._held else 0.0
                    item = self._queue.get(timeout=min(max(remaining, floor), 0.1))
            except queue.Empty:
                if out or (remaining <= 0 and not self._held):
                    break
                continue
            _session, context, event = item
            pid = str(context.partition_id)
            if pid in self._held:  # after a reject: this partition's events wait, in order
                self._held[pid][1].append(item)
                continue
            seq = str(event.sequence_number)
            self._pending[(pid, seq)] = item
            out.append(StreamMessage(b"".join(event.body), pid, seq))
        return out

    def reject(self, messages: Sequence[StreamMessage]) -> None:
        """Hand back received, un-checkpointed events (a fenced batch, ``backends.claims``):
        they and every later event of their partitions are held back for ``reject_hold``
        seconds, then delivered again in order if this consumer still owns the partition in
        the same session, or dropped if the SDK closed it meanwhile (another consumer owns it
        and re-reads them from the checkpoint; a re-opened partition re-reads them itself).
        Never checkpointed past: nothing is lost."""
        until = self._clock() + self._reject_hold
        for m in messages:
            item = self._pending.pop((m.partition, m.position))
            self._held.setdefault(m.partition, (until, []))[1].append(item)

    def _release_held(self) -> None:
        now = self._clock()
        for pid in [p for p, (until, _) in self._held.items() if now >= until]:
            _until, items = self._held.pop(pid)
            with self._lock:
                session = self._session.get(pid, 0)
            keep = sorted(
                (it for it in items if it[0] == session), key=lambda it: int(it[2].sequence_number)
            )
            if len(keep) < len(items):
                _log.warning(
                    "partition %s was closed (ownership lost) while %d handed-back event(s) "
                    "waited: dropped here, its owner re-reads them from the checkpoint",
                    pid,
                    len(items) - len(keep),
                )
            self._ready.extend(keep)

    @staticmethod
    def message_id(message: StreamMessage) -> str:
        """Stable id of an event: partition and sequence number (the same on every re-read)."""
        return f"{message.partition}.{message.position}"

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Write, per partition, the newest event of ``messages`` to the checkpoint store."""
        newest: dict[str, tuple[int, Any, Any]] = {}
        for m in messages:
            _session, context, event = self._pending.pop((m.partition, m.position))
            if m.partition not in newest or int(m.position) > newest[m.partition][0]:
                newest[m.partition] = (int(m.position), context, event)
        for _, context, event in newest.values():
            context.update_checkpoint(event)

    def close(self) -> None:
        """Stop receiving and close both clients (un-checkpointed events are re-read later)."""
        self._consumer.close()
        self._producer.close()
        if self._thread is not None:
            while self._thread.is_alive():  # unblock a receive thread waiting on a full queue
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    self._thread.join(timeout=0.1)
            self._thread = None


class AdlsBlobStore(ObjectStore):
    """An :class:`ObjectStore` over an ADLS Gen2 container through the Blob API.

    Parameters
    ----------
    container_client:
        ``azure.storage.blob.ContainerClient``.
    prefix:
        Directory prefix inside the container (``""`` or ending in ``/``).
    encryption_scope:
        Encryption scope (customer-managed key) applied to each blob; ``None`` uses the
        account's default encryption.
    """

    def __init__(
        self, *, container_client: Any, prefix: str = "", encryption_scope: str | None = None
    ) -> None:
        if prefix:
            check_name("prefix", prefix, r"([A-Za-z0-9_.=-]+/)+", hint="ends with '/'")
        if encryption_scope is not None:
            check_name("encryption_scope", encryption_scope, _SCOPE, hint="3-63 alphanumerics")
        self._container = container_client
        self._prefix = prefix
        self._scope = encryption_scope

    def _name(self, key: str) -> str:
        return self._prefix + check_object_key(key, max_bytes=1024 - len(self._prefix))

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Create the blob unless it exists; same bytes → no-op, different → conflict."""
        from azure.core.exceptions import ResourceExistsError

        name = self._name(key)
        meta = check_metadata(metadata)
        kwargs: dict[str, Any] = {"overwrite": False, "metadata": meta or None}
        if self._scope is not None:
            kwargs["encryption_scope"] = self._scope
        try:
            self._container.upload_blob(name, bytes(data), **kwargs)
        except ResourceExistsError:
            if self.get(key) == bytes(data):
                return
            raise ObjectConflictError(
                f"{self._container.container_name}/{name}: different content already stored"
            ) from None

    def get(self, key: str) -> bytes:
        """Bytes of ``key``; KeyError if absent."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self._container.download_blob(self._name(key)).readall())
        except ResourceNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""
        return bool(self._container.get_blob_client(self._name(key)).exists())

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in lexicographic order (the Blob API lists them sorted)."""
        cut = len(self._prefix)
        for name in self._container.list_blob_names(name_starts_with=self._prefix + prefix):
            yield str(name)[cut:]


def open_backend(
    *,
    namespace: str | None = None,
    eventhub: str | None = None,
    stream: str | None = None,
    consumer_group: str = "$Default",
    account_url: str | None = None,
    endpoint_url: str | None = None,
    container: str | None = None,
    bucket: str | None = None,
    checkpoint_container: str | None = None,
    prefix: str = "",
    encryption_scope: str | None = None,
    prefetch_events: int = 2000,
    producer: Any = None,
    consumer: Any = None,
    checkpoint_store: Any = None,
    container_client: Any = None,
    consumer_name: str | None = None,
    commit_store: str | None = None,
    commit_container_client: Any = None,
    load_balancing_interval: float = 10.0,
    ownership_expiration: float | None = None,
    **unsupported: Any,
) -> tuple[RecordStream, ObjectStore]:
    """Build the Azure stream and store (options validated eagerly; ValueError names them).

    Parameters
    ----------
    namespace:
        Event Hubs namespace FQDN (``<name>.servicebus.windows.net``).
    eventhub / stream:
        Event hub name (``stream`` is the CLI's generic name).
    consumer_group:
        Default ``$Default``.
    account_url / endpoint_url:
        Storage account blob endpoint (``https://<acct>.blob.core.windows.net``).
    container / bucket:
        Landing container of the ADLS Gen2 account.
    checkpoint_container:
        Container of the Blob checkpoint store (default ``<container>-checkpoints``).
    prefix, encryption_scope:
        Directory prefix and encryption scope for landed blobs.
    producer, consumer, checkpoint_store, container_client:
        Injected clients (TLS transports from the ``saip`` CLI, Azurite/fakes in tests).
        ``consumer`` given as a string is this consumer's name (the CLI's ``--consumer-name``).
    consumer_name, commit_store, commit_container_client:
        Scale-out (several processes in one consumer group, ingestion README "Scale-out"):
        ``az://CONTAINER[/PREFIX]`` on the same account, the create-only store of claims and
        batch decisions (:mod:`saip_ingestion.backends.claims`); needs the consumer name. The
        container client may be injected (tests).
    load_balancing_interval, ownership_expiration:
        The SDK's partition load balancing: seconds between ownership rounds (1-300) and
        after which a dead consumer's partitions are taken over (default 6 x the interval).
    """
    unsupported.pop("data_dir", None)
    if isinstance(consumer, str):  # the CLI passes --consumer-name as `consumer`
        consumer_name, consumer = consumer, None
    if consumer_name is not None:
        check_name(
            "consumer", consumer_name, r"[A-Za-z0-9_.-]{1,64}", hint="1-64 of [A-Za-z0-9_.-]"
        )
    if (consumer_name is None) != (commit_store is None):
        raise ValueError(
            "commit_store: scale-out on Event Hubs needs both --consumer-name and --commit-store"
        )
    commit_container = commit_prefix = ""
    if commit_store is not None:
        if not isinstance(commit_store, str) or not commit_store.startswith("az://"):
            raise ValueError("commit_store: must be az://CONTAINER[/PREFIX] on the same account")
        commit_container, _, rest = commit_store[len("az://") :].partition("/")
        check_name("commit_store", commit_container, _CONTAINER, hint="3-63 of [a-z0-9-]")
        commit_prefix = f"{rest.strip('/')}/" if rest.strip("/") else ""
    if not 1.0 <= float(load_balancing_interval) <= 300.0:
        raise ValueError("load_balancing_interval: must be 1-300 seconds")
    expiry = (
        6 * float(load_balancing_interval)
        if ownership_expiration is None
        else float(ownership_expiration)
    )
    if not float(load_balancing_interval) < expiry <= 3600.0:
        raise ValueError("ownership_expiration: must exceed load_balancing_interval, <= 3600 s")
    if unsupported:
        raise ValueError(f"azure backend: unsupported option(s) {', '.join(sorted(unsupported))}")
    if eventhub is not None and stream is not None and eventhub != stream:
        raise ValueError("stream: conflicts with eventhub")
    hub = eventhub or stream
    landing = container or bucket
    if hub is None:
        raise ValueError("eventhub: required for the azure backend (or pass stream)")
    if landing is None:
        raise ValueError("container: required for the azure backend (or pass bucket)")
    check_name("eventhub", hub, _HUB, hint="Event Hubs entity name rules")
    check_name("consumer_group", consumer_group, _CONSUMER_GROUP, hint="$Default or a name")
    check_name("container", landing, _CONTAINER, hint="3-63 of [a-z0-9-]")
    cp_container = checkpoint_container or f"{landing}-checkpoints"[:63]
    check_name("checkpoint_container", cp_container, _CONTAINER, hint="3-63 of [a-z0-9-]")
    url = check_endpoint_url("account_url", account_url) or check_endpoint_url(
        "endpoint_url", endpoint_url
    )
    needs_ns = producer is None or consumer is None
    if needs_ns:
        if namespace is None:
            raise ValueError("namespace: required for the azure backend")
        check_name("namespace", namespace, _NAMESPACE, hint="<name>.servicebus.windows.net")
    if url is None and (
        container_client is None or (consumer is None and checkpoint_store is None)
    ):
        raise ValueError("account_url: required for the azure backend (storage blob endpoint)")
    namespace = namespace or ""
    url = url or ""
    credential: Any = None
    if producer is None or consumer is None or checkpoint_store is None or container_client is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    if container_client is None:
        from azure.storage.blob import ContainerClient

        container_client = ContainerClient(url, landing, credential=credential)
    if consumer is None:
        from azure.eventhub import EventHubConsumerClient

        if checkpoint_store is None:
            from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore

            checkpoint_store = BlobCheckpointStore(url, cp_container, credential=credential)
        consumer = EventHubConsumerClient(
            fully_qualified_namespace=namespace,
            eventhub_name=hub,
            consumer_group=consumer_group,
            credential=credential,
            checkpoint_store=checkpoint_store,
            load_balancing_interval=float(load_balancing_interval),
            partition_ownership_expiration_interval=expiry,
        )
    if producer is None:
        from azure.eventhub import EventHubProducerClient

        producer = EventHubProducerClient(
            fully_qualified_namespace=namespace, eventhub_name=hub, credential=credential
        )
    store = AdlsBlobStore(
        container_client=container_client, prefix=prefix, encryption_scope=encryption_scope
    )
    rs = EventHubStream(
        producer=producer,
        consumer=consumer,
        prefetch_events=prefetch_events,
        reject_hold=1.5 * float(load_balancing_interval),  # the SDK notices a lost partition
    )
    if consumer_name is None:
        return rs, store
    from saip_ingestion.backends.claims import (
        BlobCommitStore,
        ClaimedStream,
        ClaimingStore,
        ClaimLog,
        claims_namespace,
    )

    # event ids are unique only within one hub of one namespace: the claims carry both
    fqns = namespace or str(
        getattr(consumer, "fully_qualified_namespace", None)
        or getattr(getattr(consumer, "_address", None), "hostname", "")
    )
    if not fqns:
        raise ValueError("namespace: the claims need the Event Hubs namespace (FQDN)")

    if commit_container_client is None:
        from azure.identity import DefaultAzureCredential
        from azure.storage.blob import ContainerClient

        commit_container_client = ContainerClient(
            url, commit_container, credential=credential or DefaultAzureCredential()
        )
    log = ClaimLog(
        store=BlobCommitStore(container_client=commit_container_client, prefix=commit_prefix),
        namespace=claims_namespace(fqns, hub, consumer_group.lstrip("$")),
        owner=consumer_name,
    )
    claimed = ClaimedStream(rs, log=log, landing=store)
    return claimed, ClaimingStore(store, claimed)
