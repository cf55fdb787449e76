"""Exactly-once storage over an at-least-once subscription: message claims, fenced batch commits.

Why
---
Pub/Sub (and any at-least-once stream without partitions) redelivers a message whose ack
deadline lapsed: a consumer killed between its durable write and its ack has its messages
delivered to another consumer, which would store them again. Pub/Sub's *exactly-once delivery*
does not close that window — it guarantees that an *acknowledged* message is not redelivered,
but a consumer that stored a batch and died before acking never acknowledged it (Google Cloud,
*Exactly-once delivery*, Pub/Sub documentation). Checked on the emulator, which implements it: a
message whose lease lapsed is redelivered, and only the late ack is refused.
So the decision "this message is stored" is kept next to the data, in a **commit store** that
supports create-only writes (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``, Azure Blob
``If-None-Match: *``, ``O_EXCL`` on one host), with the idea of Kinesis write intents
(:mod:`saip_ingestion.backends.kinesis_leases`) and of fencing tokens (M. Kleppmann, *How to do
distributed locking*, 2016).

Protocol (one batch of consumer *A*; ``bid`` is unique per batch: consumer name, run token,
counter)
---------------------------------------------------------------------------------------------
1. The engine's object writes are **staged** in memory (:class:`ClaimingStore`), nothing is
   visible yet.
2. **Claim** every stream message the batch decided: create-only ``claims/<msg id>/<n>`` =
   ``bid`` (``n`` = 0, or the next number after claims whose batch was aborted).
3. **Decide**: create-only ``batches/<bid>`` = ``commit`` + the staged objects (keys, bytes,
   metadata). This single create-only write is the commit point.
4. **Publish** the staged objects to the landing store (idempotent puts), then the engine
   journals the batch and acks the messages.

Any other consumer *B* that gets one of those messages (redelivered after *A*'s lease lapsed)
reads its claims before the engine sees it (:class:`ClaimedStream`):

* claim → committed batch: the message is stored (or about to be): *B* **rolls the batch
  forward** (publishes its objects from the decision record, idempotent — *A* may have died
  before step 4) and acks the message without giving it to its engine;
* claim → no decision yet (*A* died, or is alive but lost its lease): *B* **fences** *A* by
  writing ``batches/<bid>`` = ``abort`` (create-only); *A*'s own step 3 then fails and *A*
  stores nothing (:class:`ClaimConflictError`: *A*'s engine drops the batch, hands its
  messages back to the stream and consumes on); *B* claims ``n + 1``;
* claim → aborted batch: look at claim ``n + 1``;
* claim → a committed batch whose decision does not list the message: forged or corrupt
  (:class:`ClaimError`; never acked as stored).

Trust model: the commit store is trusted like the right to ack the subscription — whoever can
create objects in it can fence every batch (delay) or forge a claim *and* a matching commit
decision and so have a message acked unstored (its forged objects fail authentication on
read, but the message is gone). Grant create+read on it to the consumers only (the Terraform
does), as the subscription's ``subscriber`` role is. Decisions are not signed.

A message can therefore be in at most one committed batch (its claims form a chain in which
only the last may be undecided, and only an undecided one can be aborted), and every committed
batch is published before any of its messages is acked by anyone. A consumer killed at any step
leaves either nothing visible (steps 1-2: its claims are aborted by the next reader) or a
decision that the next reader publishes (steps 3-4).

Records (under ``<namespace>/`` in the commit store)
----------------------------------------------------
``claims/<message id>/<n>``: the ASCII batch id ``<owner>-<16 hex run token>-<counter>``.
``batches/<batch id>``: JSON ``{"v": 1, "state": "abort", "by": owner}`` or ``{"v": 1,
"state": "commit", "by": owner, "messages": [ids], "objects": [{"key", "data" (base64),
"metadata"}]}``; the objects are the engine's sealed batch objects, byte for byte.

Costs: per message one read at poll time and one create-only write at commit; per batch one
write carrying the batch's bytes (the decision) besides the objects themselves. Records that
were never delivered twice pay no more. Rows are untrusted on read (:class:`ClaimError` names
the key); roll-forward publishes only keys under the engine's prefixes, and readers authenticate
every object anyway (sealed, context-bound to its key).

What it does not cover: a producer's *re-send* of a record is a different stream message (new
message id): it is caught by the consumer's ``(producer_id, seq)`` window only if it reaches
the same consumer (see the ingestion README, *Limits*).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from saip_ingestion.backends._cloud_common import CloudBackendError, check_name, check_object_key
from saip_ingestion.backends.base import ObjectStore, StreamMessage
from saip_ingestion.errors import FencedBatchError

__all__ = [
    "BlobCommitStore",
    "ClaimConflictError",
    "ClaimError",
    "ClaimLog",
    "ClaimedStream",
    "ClaimingStore",
    "CommitStore",
    "LocalCommitStore",
    "claims_namespace",
]

_log = logging.getLogger(__name__)

#: object prefixes the engine writes (``saip_ingestion.engine``; backends do not import it)
PUBLISHABLE: Final = ("accepted/", "quarantine-batches/", "quarantine/", "provenance/")
#: a stream message id (Pub/Sub: decimal; Event Hubs: partition.sequence): one key segment
_MSG_ID: Final = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9_.:-]{1,128}")
_BID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}-[0-9a-f]{16}-[0-9]{1,12}")
_OWNER: Final = r"[A-Za-z0-9_.-]{1,64}"
#: claims of one message whose batches were aborted before we give up (each abort is a
#: consumer that lost the message before deciding it; more means something is wrong)
MAX_CLAIMS: Final = 32
#: a decision record holds one batch's objects; refuse absurd ones before decoding
MAX_DECISION_BYTES: Final = 1 << 30
#: decisions remembered per consumer: the message ids of each, never the batch bytes once
#: published (a redelivery storm of big batches must not grow memory)
DECISION_CACHE: Final = 64


_NAMESPACE: Final = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def claims_namespace(*parts: str) -> str:
    """The claims' namespace of one stream: every part that names it globally (Event Hubs:
    fully qualified namespace, hub, consumer group; Pub/Sub: project, subscription), so two
    streams sharing a commit store never see each other's claims (message ids are unique only
    within a stream). Readable when it fits ``[A-Za-z0-9_.-]{1,200}``; else a readable prefix
    and a SHA-256 of the whole (never truncated into another stream's name)."""
    import hashlib

    joined = ".".join(parts)
    if _NAMESPACE.fullmatch(joined) and joined.strip("."):
        return joined
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", joined)[:120]
    return f"{safe}.{hashlib.sha256(joined.encode()).hexdigest()[:40]}"


class ClaimError(CloudBackendError):
    """A claim or decision record is malformed (tampered or foreign), or a claim chain is too
    long."""


class ClaimConflictError(CloudBackendError, FencedBatchError):
    """This consumer's batch was fenced: another consumer aborted it (this one lost a message's
    lease before committing) or committed one of its messages first. Nothing was published;
    the engine rewinds and hands the batch's messages back to the stream (:meth:`ClaimedStream.
    reject`), then goes on consuming."""


@runtime_checkable
class CommitStore(Protocol):
    """A key-value store with **create-only** writes (the one primitive the protocol needs)."""

    def create(self, key: str, data: bytes) -> bool:
        """Write ``data`` under ``key`` only if ``key`` does not exist; False if it did."""
        ...

    def read(self, key: str) -> bytes | None:
        """The bytes under ``key``, or None."""
        ...


class LocalCommitStore:
    """:class:`CommitStore` in a directory shared by consumers on one host (or a file system
    with atomic hard links): ``create`` writes a private temporary file, fsyncs it and
    hard-links it into place — ``link(2)`` fails with ``EEXIST`` if the name exists, so the
    create is atomic and a reader never sees a partly written record.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, key: str) -> Path:
        return self.root / check_object_key(key)

    def create(self, key: str, data: bytes) -> bool:
        """Temporary file + fsync + ``link`` (atomic, fails if ``key`` exists)."""
        path = self._path(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.parent / f".tmp-{secrets.token_hex(8)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink()
        dirfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
        return True

    def read(self, key: str) -> bytes | None:
        """The record's bytes, or None."""
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None


class GcsCommitStore:
    """:class:`CommitStore` in a GCS bucket through the JSON API: ``create`` is a media upload
    with ``ifGenerationMatch=0`` (HTTP 412 when the object exists; Cloud Storage docs,
    *Request preconditions*), ``read`` a ``GET ...?alt=media``.

    ``session`` is an authorised ``requests`` session (``google.auth.transport.requests.
    AuthorizedSession`` over Application Default Credentials); ``endpoint`` the API root
    (Private Service Connect, or a loopback stand-in in tests).
    """

    def __init__(
        self, *, session: Any, bucket: str, prefix: str = "", endpoint: str | None = None
    ) -> None:
        check_name("commit_bucket", bucket, r"[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]", hint="GCS")
        self._session = session
        self._bucket = bucket
        self._prefix = prefix
        self._root = (endpoint or "https://storage.googleapis.com").rstrip("/")

    def _name(self, key: str) -> str:
        return self._prefix + check_object_key(key)

    def create(self, key: str, data: bytes) -> bool:
        """Media upload with ``ifGenerationMatch=0``; False on 412 (already exists)."""
        resp = self._session.post(
            f"{self._root}/upload/storage/v1/b/{self._bucket}/o",
            params={"uploadType": "media", "name": self._name(key), "ifGenerationMatch": "0"},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        if resp.status_code == 412:
            return False
        if resp.status_code != 200:
            raise CloudBackendError(f"GCS create of {key}: HTTP {resp.status_code}")
        return True

    def read(self, key: str) -> bytes | None:
        """``GET`` the object's media; None on 404."""
        from urllib.parse import quote

        resp = self._session.get(
            f"{self._root}/storage/v1/b/{self._bucket}/o/{quote(self._name(key), safe='')}",
            params={"alt": "media"},
            timeout=60,
        )
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise CloudBackendError(f"GCS read of {key}: HTTP {resp.status_code}")
        return bytes(resp.content)


class BlobCommitStore:
    """:class:`CommitStore` in an Azure Blob container: ``create`` is ``upload_blob(overwrite=
    False)``, which the SDK sends as ``If-None-Match: *`` (the service answers 409
    ``BlobAlreadyExists``; Azure Storage docs, *Specifying conditional headers for Blob
    service operations*); ``read`` downloads the blob. Azurite honours the header (tested)."""

    def __init__(self, *, container_client: Any, prefix: str = "") -> None:
        if prefix:
            check_name("commit_store", prefix, r"([A-Za-z0-9_.=-]+/)+", hint="prefix ends with '/'")
        self._container = container_client
        self._prefix = prefix

    def create(self, key: str, data: bytes) -> bool:
        """Conditional create; False if the blob exists."""
        from azure.core.exceptions import ResourceExistsError

        try:
            self._container.upload_blob(self._prefix + check_object_key(key), data, overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def read(self, key: str) -> bytes | None:
        """The blob's bytes, or None."""
        from azure.core.exceptions import ResourceNotFoundError

        try:
            blob = self._container.download_blob(self._prefix + check_object_key(key))
        except ResourceNotFoundError:
            return None
        return bytes(blob.readall())


@dataclass(frozen=True)
class _Decision:
    state: str  # "commit" | "abort"
    #: the batch's objects; None once this consumer published them (bytes not kept)
    objects: tuple[tuple[str, bytes, dict[str, str]], ...] | None = None
    #: the messages a commit settles (a claim naming the batch for another one is forged)
    messages: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Resolved:
    """Where a message's claim chain ends: ``n`` the first free slot (or the undecided one)."""

    n: int
    bid: str | None = None  # the committed or undecided batch
    committed: _Decision | None = None


def _parse_decision(bid: str, raw: bytes) -> _Decision:
    """Decode a decision record (untrusted input: every field checked)."""
    try:
        if len(raw) > MAX_DECISION_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("v") != 1:
            raise ValueError("not a v1 decision")
        state = doc.get("state")
        if state == "abort":
            return _Decision("abort")
        if state != "commit":
            raise ValueError("state")
        objs = []
        for o in doc["objects"]:
            key = check_object_key(str(o["key"]))
            if not key.startswith(PUBLISHABLE):
                raise ValueError(f"object key {key[:60]!r} outside the engine's prefixes")
            meta = o.get("metadata") or {}
            if not isinstance(meta, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
            ):
                raise ValueError("metadata")
            objs.append((key, base64.b64decode(o["data"], validate=True), dict(meta)))
        msgs = doc["messages"]
        if not isinstance(msgs, list) or not all(
            isinstance(m, str) and _MSG_ID.fullmatch(m) for m in msgs
        ):
            raise ValueError("messages")
        return _Decision("commit", tuple(objs), frozenset(msgs))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ClaimError(f"decision record of batch {bid[:80]}: {exc}") from None


class ClaimLog:
    """Claims and batch decisions in a :class:`CommitStore` (see the module docstring).

    Parameters
    ----------
    store:
        The shared commit store.
    namespace:
        Separates streams/subscriptions sharing one store (e.g. the subscription id).
    owner:
        This consumer's name (unique among the consumers: ``--consumer-name``).
    workers:
        Threads for the per-message reads and create-only writes of one batch.
    """

    def __init__(
        self, *, store: CommitStore, namespace: str, owner: str, workers: int = 16
    ) -> None:
        check_name("consumer", owner, _OWNER, hint="1-64 of [A-Za-z0-9_.-]")
        check_name(
            "namespace", namespace, r"(?!\.{1,2}\Z)[A-Za-z0-9_.-]{1,200}", hint="[A-Za-z0-9_.-]"
        )
        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise ValueError("workers: must be an int in 1..64")
        self.store = store
        self.namespace = namespace
        self.owner = owner
        self._run = secrets.token_hex(8)
        self._counter = 0
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="saip-claims")
        #: settled decisions never change: a bounded LRU (own commits kept without their bytes)
        self._decisions: OrderedDict[str, _Decision] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    def new_batch_id(self) -> str:
        """A batch id no other consumer (or earlier run of this one) can produce."""
        with self._lock:
            self._counter += 1
            return f"{self.owner}-{self._run}-{self._counter}"

    # ------------------------------------------------------------------ records

    def _claim_key(self, msg_id: str, n: int) -> str:
        return f"{self.namespace}/claims/{msg_id}/{n}"

    def _batch_key(self, bid: str) -> str:
        return f"{self.namespace}/batches/{bid}"

    def _remember(self, bid: str, decision: _Decision) -> None:
        with self._lock:
            self._decisions[bid] = decision
            self._decisions.move_to_end(bid)
            while len(self._decisions) > DECISION_CACHE:
                self._decisions.popitem(last=False)

    def decision(self, bid: str) -> _Decision | None:
        """The batch's decision, or None while undecided."""
        cached = self._decisions.get(bid)
        if cached is not None:
            return cached
        raw = self.store.read(self._batch_key(bid))
        found = None if raw is None else _parse_decision(bid, raw)
        if found is not None:
            self._remember(bid, found)
        return found

    def resolve(self, msg_id: str) -> _Resolved:
        """Follow ``msg_id``'s claim chain past aborted batches (reads only)."""
        if not _MSG_ID.fullmatch(msg_id):
            raise ClaimError(f"message id {msg_id[:80]!r} is not a stream message id")
        for n in range(MAX_CLAIMS):
            raw = self.store.read(self._claim_key(msg_id, n))
            if raw is None:
                return _Resolved(n)
            bid = raw.decode("ascii", "replace")
            if not _BID.fullmatch(bid):
                raise ClaimError(f"claim {n} of message {msg_id}: not a batch id")
            found = self.decision(bid)
            if found is None:
                return _Resolved(n, bid=bid)
            if found.state == "commit":
                if msg_id not in found.messages:
                    raise ClaimError(
                        f"claim {n} of message {msg_id} names batch {bid}, which does not list "
                        "it (forged or corrupt claim): not acknowledged"
                    )
                return _Resolved(n, bid=bid, committed=found)
        raise ClaimError(f"message {msg_id}: more than {MAX_CLAIMS} aborted claims")

    def abort(self, bid: str) -> _Decision:
        """Fence batch ``bid`` (create-only ``abort``); returns its decision, whoever won."""
        doc = json.dumps({"v": 1, "state": "abort", "by": self.owner}).encode()
        if self.store.create(self._batch_key(bid), doc):
            _log.warning("fenced batch %s (its consumer lost a message before deciding)", bid)
            self._remember(bid, _Decision("abort"))
        found = self.decision(bid)
        if found is None:
            raise ClaimError(f"batch {bid}: neither decided nor decidable")
        return found

    def _claim_one(self, msg_id: str, bid: str, free: int | None = None) -> None:
        # ``free``: the slot this consumer's poll found free (every claim below it names an
        # aborted batch, and aborts are final): claim it without reading the chain again
        if free is not None and self.store.create(self._claim_key(msg_id, free), bid.encode()):
            return
        for _ in range(2 * MAX_CLAIMS):
            got = self.resolve(msg_id)
            if got.committed is not None:
                if got.bid == bid:
                    return
                raise ClaimConflictError(
                    f"message {msg_id} is already stored by batch {got.bid} (this consumer's "
                    f"copy came from a redelivery it received before that batch committed)"
                )
            if got.bid == bid:
                return
            if got.bid is not None:
                self.abort(got.bid)
                continue
            if self.store.create(self._claim_key(msg_id, got.n), bid.encode("ascii")):
                return
        raise ClaimError(f"message {msg_id}: claim race did not settle")

    def commit(
        self,
        bid: str,
        msg_ids: Sequence[str],
        objects: Sequence[tuple[str, bytes, Mapping[str, str]]],
        *,
        free: Mapping[str, int] | None = None,
    ) -> None:
        """Claim every message for ``bid``, then decide ``commit`` with the batch's objects.
        ``free`` maps message ids to the claim slot their poll found free (saves a read).

        Raises
        ------
        ClaimConflictError
            The batch was fenced (aborted by another consumer) or a message is stored elsewhere;
            this consumer's batch is aborted and must not be published.
        """
        for m in msg_ids:  # every id checked before anything is written
            if not _MSG_ID.fullmatch(m):
                raise ClaimError(f"message id {m[:80]!r} is not a stream message id")
        try:
            hints = free or {}
            list(self._pool.map(lambda m: self._claim_one(m, bid, hints.get(m)), msg_ids))
        except ClaimConflictError:
            self.abort(bid)
            raise
        doc = json.dumps(
            {
                "v": 1,
                "state": "commit",
                "by": self.owner,
                "messages": list(msg_ids),
                "objects": [
                    {"key": k, "data": base64.b64encode(d).decode(), "metadata": dict(m)}
                    for k, d, m in objects
                ],
            },
            separators=(",", ":"),
        ).encode()
        if not self.store.create(self._batch_key(bid), doc):
            found = self.decision(bid)
            if found is None or found.state != "commit":
                raise ClaimConflictError(
                    f"batch {bid} was fenced by another consumer before it committed (a "
                    "message's ack deadline lapsed here): nothing of it is published"
                )
        # its objects are published by this consumer before any of its messages is acked, so a
        # redelivery of one of them needs no bytes from the cache (memory stays flat)
        self._remember(bid, _Decision("commit", None, frozenset(msg_ids)))

    def published(self, bid: str) -> None:
        """This consumer published ``bid``'s objects (roll-forward): forget their bytes."""
        with self._lock:
            found = self._decisions.get(bid)
            if found is not None and found.objects is not None:
                self._decisions[bid] = _Decision(found.state, None, found.messages)

    def committed_many(self, msg_ids: Sequence[str]) -> list[_Resolved]:
        """:meth:`resolve` for each id, concurrently."""
        return list(self._pool.map(self.resolve, msg_ids))


class ClaimingStore(ObjectStore):
    """An :class:`ObjectStore` that stages the engine's writes of one batch and publishes them
    only after :meth:`ClaimLog.commit` (see the module docstring). The engine calls
    :meth:`commit_batch` at the end of every batch, before it journals it."""

    def __init__(self, inner: ObjectStore, stream: ClaimedStream) -> None:
        self.inner = inner
        self.stream = stream
        self._staged: dict[str, tuple[bytes, dict[str, str]]] = {}

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Stage (visible to this store's ``get``/``exists``, not to anyone else)."""
        self._staged[key] = (bytes(data), dict(metadata or {}))

    def commit_batch(self) -> None:
        """Claim the batch's messages, decide, publish; a fenced batch raises and publishes
        nothing (the staged objects are dropped)."""
        staged, self._staged = self._staged, {}
        msg_ids = self.stream.take_decided()
        free = self.stream.take_free(msg_ids)  # always: a batch without objects keeps none
        if not staged:
            return
        if not msg_ids:  # e.g. quarantine release: no stream message to claim
            for key, (data, meta) in staged.items():
                self.inner.put(key, data, metadata=meta)
            return
        log = self.stream.log
        bid = log.new_batch_id()
        objects = [(k, d, m) for k, (d, m) in staged.items()]
        log.commit(bid, msg_ids, objects, free=free)
        for key, data, meta in objects:
            self.inner.put(key, data, metadata=meta)

    def get(self, key: str) -> bytes:
        """Staged bytes first, then the landing store."""
        if key in self._staged:
            return self._staged[key][0]
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        """Staged or stored."""
        return key in self._staged or self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """The landing store's keys (staged objects are not listed)."""
        return self.inner.list(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class ClaimedStream:
    """Wraps a stream whose messages carry stable ids (``message_id(msg)``: Pub/Sub's message
    id, Event Hubs' partition and sequence number) so that a message
    already stored by a committed batch never reaches the engine again (rolled forward and
    acked instead), and tracks which delivered messages each batch decided.

    ``held`` is the engine's undecided messages (``IngestEngine.held_messages``), wired by the
    caller like for Kinesis leases: a batch claims only what it decided.
    """

    def __init__(self, inner: Any, *, log: ClaimLog, landing: ObjectStore) -> None:
        if not callable(getattr(inner, "message_id", None)):
            raise TypeError("ClaimedStream: the stream must expose message_id(message)")
        self.inner = inner
        self.log = log
        self._landing = landing
        self.held: Callable[[], Sequence[StreamMessage]] = list
        self._undecided: dict[tuple[str, str], StreamMessage] = {}  # (partition, position)
        #: message id -> the claim slot its poll found free (not claimed by anyone yet)
        self._free: dict[str, int] = {}
        self.rolled_forward = 0

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Publish through the wrapped stream."""
        self.inner.publish(payloads, partition_key=partition_key)

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Poll; settle messages already in a committed batch (publish it, ack them). Polls
        again while everything it got was settled, so an empty answer still means idle."""
        while True:
            got: list[StreamMessage] = self.inner.poll(max_messages=max_messages, timeout=timeout)
            fresh = self._settle(got) if got else got
            if fresh or not got:
                return fresh

    def _settle(self, got: list[StreamMessage]) -> list[StreamMessage]:
        ids = [self.inner.message_id(m) for m in got]
        fresh: list[StreamMessage] = []
        settled: list[StreamMessage] = []
        done: set[str] = set()
        for msg, res in zip(got, self.log.committed_many(ids), strict=True):
            if res.committed is None or res.bid is None:
                fresh.append(msg)
                self._undecided[(msg.partition, msg.position)] = msg
                if res.bid is None:
                    self._free[self.inner.message_id(msg)] = res.n
                continue
            if res.bid not in done:  # each batch once per poll, not once per message
                done.add(res.bid)
                for key, data, meta in res.committed.objects or ():  # idempotent puts
                    self._landing.put(key, data, metadata=meta)
                self.log.published(res.bid)
            settled.append(msg)
        if settled:
            _log.warning(
                "%d redelivered message(s) already stored by a committed batch: "
                "rolled forward and acked, not stored again",
                len(settled),
            )
            self.rolled_forward += len(settled)
            self.inner.checkpoint(settled)
        return fresh

    def take_decided(self) -> list[str]:
        """Message ids of the delivered messages not held (decided by the current batch)."""
        held = {(m.partition, m.position) for m in self.held()}
        out = []
        for at, msg in list(self._undecided.items()):
            if at not in held:
                del self._undecided[at]
                out.append(self.inner.message_id(msg))
        return out

    def take_free(self, msg_ids: Sequence[str]) -> dict[str, int]:
        """The free claim slots the polls found for ``msg_ids`` (forgotten here)."""
        return {m: n for m in msg_ids if (n := self._free.pop(m, None)) is not None}

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Ack through the wrapped stream."""
        self.inner.checkpoint(messages)

    def reject(self, messages: Sequence[StreamMessage]) -> None:
        """Hand ``messages`` back (a fenced batch): forgotten here, re-deliverable by the wrapped
        stream (Pub/Sub: nack; Event Hubs: re-read while the partition is still owned)."""
        fn = getattr(self.inner, "reject", None)
        if fn is None:
            raise CloudBackendError(
                "this stream cannot hand messages back (no reject): a fenced batch stops the run"
            )
        for m in messages:
            if self._undecided.pop((m.partition, m.position), None) is not None:
                self._free.pop(self.inner.message_id(m), None)
        fn(messages)

    def close(self) -> None:
        """Close the wrapped stream and the claim log's threads."""
        with contextlib.suppress(Exception):
            fn = getattr(self.inner, "close", None)
            if fn is not None:
                fn()
        self.log.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
