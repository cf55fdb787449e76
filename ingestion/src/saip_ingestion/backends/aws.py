"""AWS backend: Kinesis Data Streams in, S3 (SSE-KMS) or Firehose DirectPut out.

Classes
-------
:class:`KinesisStream`
    :class:`~saip_ingestion.backends.base.RecordStream` over one Kinesis data stream. The
    producer batches ``PutRecords`` within the service limits (500 records and 5 MiB per call,
    1 MiB per record, partition keys included) and retries *only* the entries a call reports as
    failed, with exponential backoff and full jitter; a record still failing after the last
    attempt raises :class:`~saip_ingestion.backends._cloud_common.PublishError` (nothing is
    dropped silently). The consumer reads every shard (children only after their parents are
    drained) and stores per-shard checkpoints as S3 objects (:class:`S3CheckpointStore`).
:class:`S3ObjectStore`
    :class:`~saip_ingestion.backends.base.ObjectStore` over an S3 bucket. Objects arrive already
    envelope-encrypted by the engine's ``Encryptor``; every ``PutObject`` also asks for SSE-KMS
    (configurable key, S3 Bucket Key on by default) and checks the response says so. Writes are
    conditional (``If-None-Match: *``, RFC 9110 §13.1.2); on a conflict the stored bytes are
    compared: equal bytes make the write a no-op, different bytes raise
    :class:`~saip_ingestion.backends._cloud_common.ObjectConflictError` and nothing is overwritten.
:class:`FirehoseObjectStore`
    Alternative sink through Firehose ``DirectPut`` (Firehose buffers and writes to S3). Firehose
    is at-least-once and cannot refuse a duplicate, so idempotence moves to the read side: each
    record is framed with its key and SHA-256 and readers collapse identical duplicates and
    raise on conflicting ones.

Checkpoints: why S3 and not DynamoDB
------------------------------------
One object per shard under the bucket's own prefix, written with S3 conditional writes
(``If-None-Match``/``If-Match`` on the ETag) so a checkpoint only moves forward even if two
consumers race. This needs no second service, no extra IAM principal or table, and inherits the
bucket's SSE-KMS and TLS-only policy. The Kinesis Client Library uses a DynamoDB lease table
because it also balances shards *between* workers; a single consumer reads all shards itself, so
it needs only compare-and-set, which S3 now provides. Several consumers sharing one stream
(``lease_table=``) use DynamoDB leases instead: :mod:`saip_ingestion.backends.kinesis_leases`.

Credentials and TLS
-------------------
Credentials come only from botocore's default chain (environment, profile, SSO, container/instance
role, IRSA web identity); nothing here accepts keys. Endpoint URLs (VPC interface endpoints, FIPS
endpoints, a local moto server) are options; ``http://`` is refused except for loopback. The
caller may inject a ``boto3.session.Session`` and a ``botocore.config.Config`` (e.g. built by
``saip_encryption.tls`` with a client certificate or a pinned CA bundle via ``verify``): this
package does not import ``saip_encryption``; the ``saip`` CLI composes the two.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from saip_ingestion.backends._cloud_common import (
    Backoff,
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
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_RECORD_BYTES",
    "FirehoseObjectStore",
    "KinesisStream",
    "S3CheckpointStore",
    "S3ObjectStore",
    "open_backend",
]

_log = logging.getLogger(__name__)

#: PutRecords limits (Kinesis Data Streams API reference, PutRecords): per call and per record.
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
#: Firehose PutRecord: 1,000 KiB per record before base64 (Firehose API reference).
MAX_FIREHOSE_RECORD_BYTES = 1000 * 1024
#: Kinesis GetRecords: at most 10,000 records per call and 5 calls/s per shard.
_GET_RECORDS_LIMIT = 10_000
_MIN_SHARD_POLL_INTERVAL = 0.2

_STREAM_NAME = r"[a-zA-Z0-9_.-]{1,128}"
_BUCKET_NAME = r"(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
_REGION = r"[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d"
_PREFIX = r"([A-Za-z0-9!_.*'()-]+/)*"
_CONSUMER = r"[A-Za-z0-9_.-]{1,64}"


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _client(
    service: str,
    *,
    session: Any,
    region: str | None,
    endpoint_url: str | None,
    config: Config | None,
) -> Any:
    base = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
        user_agent_extra="saip-ingestion",
    )
    merged = base.merge(config) if config is not None else base
    return session.client(service, region_name=region, endpoint_url=endpoint_url, config=merged)


# --------------------------------------------------------------------------- checkpoints


class S3CheckpointStore:
    """Per-shard Kinesis checkpoints, one small JSON object each, moved forward only.

    Objects live at ``{prefix}{stream}/{consumer}/{shard_id}.json`` and hold the last
    sequence number whose record is durably stored. Writes use S3 conditional requests
    (``If-None-Match: *`` on first write, ``If-Match: <etag>`` after) so a slower consumer can
    never move a checkpoint backwards; on a lost race the stored value is re-read and kept if it
    is already ahead.

    Parameters
    ----------
    s3:
        A boto3 S3 client.
    bucket, prefix:
        Where checkpoints are kept (default prefix ``_checkpoints/``).
    stream, consumer:
        Stream name and consumer name (several independent consumers may read one stream).
    sse_kms_key_id, bucket_key:
        Server-side encryption requested for the checkpoint objects.
    """

    def __init__(
        self,
        *,
        s3: Any,
        bucket: str,
        prefix: str,
        stream: str,
        consumer: str,
        sse_kms_key_id: str | None,
        bucket_key: bool,
    ) -> None:
        self._s3 = s3
        self._bucket = bucket
        self._base = f"{prefix}{stream}/{consumer}/"
        self._sse = _sse_args(sse_kms_key_id, bucket_key)
        self._etags: dict[str, str] = {}
        self._values: dict[str, int] = {}

    def _key(self, shard_id: str) -> str:
        return f"{self._base}{shard_id}.json"

    def load(self, shard_id: str) -> str | None:
        """The checkpointed sequence number of ``shard_id``, or None if it has none."""
        try:
            resp = self._s3.get_object(Bucket=self._bucket, Key=self._key(shard_id))
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                self._etags.pop(shard_id, None)
                return None
            raise
        body = json.loads(resp["Body"].read())
        seq = str(body["sequence_number"])
        self._etags[shard_id] = str(resp["ETag"])
        self._values[shard_id] = int(seq)
        return seq

    def save(self, shard_id: str, sequence_number: str) -> None:
        """Move the checkpoint of ``shard_id`` forward to ``sequence_number`` (never back)."""
        new = int(sequence_number)
        for _ in range(5):
            if shard_id not in self._values:
                self.load(shard_id)
            current = self._values.get(shard_id)
            if current is not None and current >= new:
                return
            body = json.dumps({"sequence_number": sequence_number, "updated": time.time()}).encode()
            cond = (
                {"IfMatch": self._etags[shard_id]}
                if shard_id in self._etags
                else {"IfNoneMatch": "*"}
            )
            try:
                resp = self._s3.put_object(
                    Bucket=self._bucket,
                    Key=self._key(shard_id),
                    Body=body,
                    ContentType="application/json",
                    **cond,
                    **self._sse,
                )
            except ClientError as exc:
                if _error_code(exc) in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                    self._values.pop(shard_id, None)  # someone else wrote: re-read, retry
                    continue
                raise
            self._etags[shard_id] = str(resp["ETag"])
            self._values[shard_id] = new
            return
        raise CloudBackendError(f"checkpoint of shard {shard_id}: lost 5 races in a row")


class CheckpointStore(Protocol):
    """Per-shard checkpoints as :class:`KinesisStream` uses them (:class:`S3CheckpointStore`,
    or the lease table of :mod:`saip_ingestion.backends.kinesis_leases`)."""

    def load(self, shard_id: str) -> str | None:
        """The checkpointed sequence number of ``shard_id``, or None."""
        ...

    def save(self, shard_id: str, sequence_number: str) -> None:
        """Move the checkpoint of ``shard_id`` forward."""
        ...


def _sse_args(kms_key_id: str | None, bucket_key: bool) -> dict[str, Any]:
    args: dict[str, Any] = {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": bucket_key}
    if kms_key_id is not None:
        args["SSEKMSKeyId"] = kms_key_id
    return args


# --------------------------------------------------------------------------- Kinesis


@dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    iterator: str | None = None
    last_seq: str | None = None
    next_poll: float = 0.0
    closed: bool = False


class KinesisStream(RecordStream):
    """A :class:`RecordStream` over one Kinesis data stream (producer and consumer).

    Parameters
    ----------
    kinesis:
        boto3 Kinesis client (built with the default credential chain by :func:`open_backend`).
    stream:
        Stream name.
    checkpoints:
        Where consumer checkpoints are stored (:class:`S3CheckpointStore`).
    initial_position:
        Where a shard without a checkpoint starts: ``"TRIM_HORIZON"`` (oldest, default) or
        ``"LATEST"``.
    backoff:
        Retry timing for partially failed ``PutRecords`` calls (full jitter).
    clock:
        Monotonic clock (injectable for tests).

    Notes
    -----
    Delivery is at-least-once: :meth:`poll` returns records after the last checkpoint,
    :meth:`checkpoint` must be called only once they are durably stored. After a crash the
    records between the checkpoint and the crash are read again; the object store's idempotent
    ``put`` makes that harmless. One consumer process per ``consumer`` name is assumed (there is
    no lease balancing as in the KCL); concurrent writers cannot move a checkpoint backwards.
    """

    def __init__(
        self,
        *,
        kinesis: Any,
        stream: str,
        checkpoints: CheckpointStore,
        initial_position: str = "TRIM_HORIZON",
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_name("stream", stream, _STREAM_NAME, hint="1-128 of [A-Za-z0-9_.-]")
        if initial_position not in ("TRIM_HORIZON", "LATEST"):
            raise ValueError(
                f"initial_position: must be TRIM_HORIZON or LATEST, got {initial_position!r}"
            )
        self._kinesis = kinesis
        self._stream = stream
        self._checkpoints = checkpoints
        self._initial = initial_position
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._shards: dict[str, _Shard] | None = None
        self._finished: set[str] = set()

    # -- producer -------------------------------------------------------------------------

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        """Publish ``payloads`` with ``PutRecords``, retrying only the failed entries.

        Raises
        ------
        ValueError
            A payload exceeds 1 MiB with its partition key, or the key is not 1-256 chars.
        PublishError
            Some payloads still failed after ``backoff.max_attempts`` attempts; ``failed``
            lists their indexes. The others were written (at-least-once).
        """
        if not isinstance(partition_key, str) or not 1 <= len(partition_key) <= 256:
            raise ValueError("partition_key: must be 1-256 characters")
        pk_len = len(partition_key.encode("utf-8"))
        for i, payload in enumerate(payloads):
            if len(payload) + pk_len > MAX_RECORD_BYTES:
                raise ValueError(
                    f"payload {i}: {len(payload)} bytes with its partition key exceeds the "
                    f"Kinesis record limit of {MAX_RECORD_BYTES} bytes"
                )
        failed: list[int] = []
        for batch in _batches([len(p) + pk_len for p in payloads]):
            failed.extend(self._put_batch(payloads, batch, partition_key))
        if failed:
            raise PublishError(
                f"{len(failed)} of {len(payloads)} records could not be written to Kinesis "
                f"stream {self._stream} after {self._backoff.max_attempts} attempts",
                failed=failed,
            )

    def _put_batch(
        self, payloads: Sequence[bytes], indexes: list[int], partition_key: str
    ) -> list[int]:
        pending = indexes
        last_errors: dict[str, int] = {}
        for attempt in range(1, self._backoff.max_attempts + 1):
            if attempt > 1:
                self._backoff.wait(attempt - 1)
            resp = self._kinesis.put_records(
                StreamName=self._stream,
                Records=[{"Data": payloads[i], "PartitionKey": partition_key} for i in pending],
            )
            if not resp.get("FailedRecordCount"):
                return []
            retry: list[int] = []
            last_errors = {}
            for idx, entry in zip(pending, resp["Records"], strict=True):
                if "ErrorCode" in entry:
                    retry.append(idx)
                    code = str(entry["ErrorCode"])
                    last_errors[code] = last_errors.get(code, 0) + 1
            _log.warning(
                "kinesis %s: %d of %d records failed (attempt %d): %s",
                self._stream,
                len(retry),
                len(pending),
                attempt,
                last_errors,
            )
            pending = retry
        _log.error(
            "kinesis %s: giving up on %d records: %s", self._stream, len(pending), last_errors
        )
        return pending

    # -- consumer -------------------------------------------------------------------------

    def _list_shards(self) -> list[dict[str, Any]]:
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self._stream}
        while True:
            resp = self._kinesis.list_shards(**kwargs)
            shards.extend(resp["Shards"])
            token = resp.get("NextToken")
            if not token:
                return shards
            kwargs = {"NextToken": token}

    def _refresh_shards(self) -> dict[str, _Shard]:
        known = self._shards if self._shards is not None else {}
        for desc in self._list_shards():
            sid = str(desc["ShardId"])
            if sid in known or sid in self._finished:
                continue
            parents = tuple(
                str(desc[k]) for k in ("ParentShardId", "AdjacentParentShardId") if desc.get(k)
            )
            known[sid] = _Shard(sid, parents)
        self._shards = known
        return known

    def _iterator(self, shard: _Shard) -> str | None:
        start = shard.last_seq or self._checkpoints.load(shard.shard_id)
        kwargs: dict[str, Any] = {"StreamName": self._stream, "ShardId": shard.shard_id}
        if start is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=start)
        else:
            kwargs.update(ShardIteratorType=self._initial)
        return str(self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Read up to ``max_messages`` records from all shards, waiting at most ``timeout`` s.

        A shard created by resharding is read only once all its parents are drained, so the
        per-key order Kinesis guarantees is kept across splits and merges.
        """
        if max_messages < 1:
            raise ValueError("max_messages: must be >= 1")
        deadline = self._clock() + max(0.0, timeout)
        out: list[StreamMessage] = []
        shards = self._shards if self._shards is not None else self._refresh_shards()
        while True:
            topology_changed = False
            for shard in list(shards.values()):
                if len(out) >= max_messages:
                    break
                if any(p in shards for p in shard.parents):
                    continue  # a parent still has records: keep order
                now = self._clock()
                if now < shard.next_poll:
                    continue
                if shard.iterator is None:
                    shard.iterator = self._iterator(shard)
                try:
                    resp = self._kinesis.get_records(
                        ShardIterator=shard.iterator,
                        Limit=min(_GET_RECORDS_LIMIT, max_messages - len(out)),
                    )
                except ClientError as exc:
                    if _error_code(exc) == "ExpiredIteratorException":
                        shard.iterator = None
                        continue
                    raise
                shard.next_poll = now + _MIN_SHARD_POLL_INTERVAL
                for rec in resp["Records"]:
                    seq = str(rec["SequenceNumber"])
                    out.append(StreamMessage(bytes(rec["Data"]), shard.shard_id, seq))
                    shard.last_seq = seq
                nxt = resp.get("NextShardIterator")
                if nxt is None:  # closed shard fully read: its children may start
                    del shards[shard.shard_id]
                    self._finished.add(shard.shard_id)
                    topology_changed = True
                else:
                    shard.iterator = str(nxt)
            if topology_changed:
                shards = self._refresh_shards()
            remaining = deadline - self._clock()
            if out or remaining <= 0:
                return out
            wake = min((s.next_poll for s in shards.values()), default=self._clock())
            time.sleep(max(0.0, min(remaining, wake - self._clock(), _MIN_SHARD_POLL_INTERVAL)))

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Store, per shard, the highest sequence number among ``messages``."""
        highest: dict[str, int] = {}
        for msg in messages:
            seq = int(msg.position)
            if seq > highest.get(msg.partition, -1):
                highest[msg.partition] = seq
        for shard_id, seq in highest.items():
            self._checkpoints.save(shard_id, str(seq))


def _batches(sizes: Sequence[int]) -> Iterator[list[int]]:
    """Split indexes into PutRecords calls of <= 500 records and <= 5 MiB."""
    batch: list[int] = []
    total = 0
    for i, size in enumerate(sizes):
        if batch and (len(batch) == MAX_BATCH_RECORDS or total + size > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(i)
        total += size
    if batch:
        yield batch


# --------------------------------------------------------------------------- S3


class S3ObjectStore(ObjectStore):
    """An :class:`ObjectStore` over an S3 bucket, SSE-KMS on every object, conditional writes.

    Parameters
    ----------
    s3:
        boto3 S3 client.
    bucket:
        Bucket name.
    prefix:
        Key prefix inside the bucket (``""`` or ending in ``/``).
    kms_key_id:
        KMS key (ID, ARN or alias) for SSE-KMS; ``None`` uses the bucket's default key.
    bucket_key:
        Enable the S3 Bucket Key (fewer KMS calls, same key) — default True.
    reserved_prefix:
        A prefix of the bucket kept for other uses (the consumer checkpoints): keys under it
        are neither written nor listed through this store.
    """

    def __init__(
        self,
        *,
        s3: Any,
        bucket: str,
        prefix: str = "",
        kms_key_id: str | None = None,
        bucket_key: bool = True,
        reserved_prefix: str | None = None,
    ) -> None:
        check_name("bucket", bucket, _BUCKET_NAME, hint="S3 bucket naming rules")
        if prefix:
            check_name("prefix", prefix, _PREFIX, hint="safe characters, ends with '/'")
        if kms_key_id is not None and (not isinstance(kms_key_id, str) or not kms_key_id):
            raise ValueError("kms_key_id: must be a non-empty key ID, ARN or alias")
        if not isinstance(bucket_key, bool):
            raise TypeError("bucket_key: must be a bool")
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._kms_key_id = kms_key_id
        self._sse = _sse_args(kms_key_id, bucket_key)
        self._reserved = reserved_prefix

    def _full(self, key: str) -> str:
        full = self._prefix + check_object_key(key, max_bytes=1024 - len(self._prefix))
        if self._reserved and full.startswith(self._reserved):
            raise ValueError(f"object key {key!r} falls under the reserved prefix {self._reserved}")
        return full

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write ``data`` unless ``key`` exists; same bytes → no-op, different → conflict.

        Raises
        ------
        ObjectConflictError
            Different bytes are already stored under ``key`` (they are kept).
        CloudBackendError
            The response does not confirm SSE-KMS.
        """
        full = self._full(key)
        meta = check_metadata(metadata)
        try:
            resp = self._s3.put_object(
                Bucket=self._bucket,
                Key=full,
                Body=bytes(data),
                IfNoneMatch="*",
                Metadata=meta,
                ContentType="application/octet-stream",
                ChecksumAlgorithm="SHA256",
                **self._sse,
            )
        except ClientError as exc:
            if _error_code(exc) not in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise
            if self.get(key) == bytes(data):
                _log.debug("s3 put %s: identical object already stored", full)
                return
            raise ObjectConflictError(
                f"s3://{self._bucket}/{full}: different content already stored"
            ) from None
        if resp.get("ServerSideEncryption") != "aws:kms":
            raise CloudBackendError(
                f"s3://{self._bucket}/{full}: response does not confirm SSE-KMS "
                f"(got {resp.get('ServerSideEncryption')!r})"
            )
        if (
            self._kms_key_id is not None
            and self._kms_key_id.startswith("arn:")
            and ":key/" in self._kms_key_id
            and resp.get("SSEKMSKeyId") not in (None, self._kms_key_id)
        ):
            raise CloudBackendError(f"s3://{self._bucket}/{full}: encrypted under another KMS key")

    def get(self, key: str) -> bytes:
        """Bytes stored under ``key``; KeyError if absent."""
        full = self._full(key)
        try:
            resp = self._s3.get_object(Bucket=self._bucket, Key=full)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                raise KeyError(key) from None
            raise
        return bytes(resp["Body"].read())

    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored (``HeadObject``)."""
        full = self._full(key)
        try:
            self._s3.head_object(Bucket=self._bucket, Key=full)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise
        return True

    def head(self, key: str) -> dict[str, Any]:
        """``HeadObject`` of ``key`` (encryption and metadata), for audits and tests."""
        full = self._full(key)
        return dict(self._s3.head_object(Bucket=self._bucket, Key=full))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` in lexicographic (UTF-8 byte) order, as S3 lists them."""
        paginator = self._s3.get_paginator("list_objects_v2")
        cut = len(self._prefix)
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix + prefix):
            for obj in page.get("Contents", []):
                name = str(obj["Key"])
                if self._reserved and name.startswith(self._reserved):
                    continue
                yield name[cut:]


# --------------------------------------------------------------------------- Firehose


class FirehoseObjectStore(ObjectStore):
    """Write-through Firehose ``DirectPut``; read back from the delivery stream's S3 bucket.

    Each ``put`` sends one newline-terminated JSON frame
    ``{"key", "sha256", "metadata", "data"(base64)}`` with ``PutRecord``; Firehose buffers and
    writes objects (possibly several frames each) under ``s3_prefix``. Firehose stores a record
    durably for up to 24 h before delivery, so ``put`` returning means "accepted durably", not
    "visible in S3". Reads (:meth:`get`, :meth:`exists`, :meth:`list`) scan the delivered
    objects: identical duplicates (at-least-once retries) collapse, conflicting ones raise.

    Notes
    -----
    Idempotence is on read, not on write: Firehose cannot refuse a duplicate, and
    :meth:`exists` cannot see records still buffered, so a writer may send a key twice. Two
    frames of one key collapse (the first delivered wins) when their bytes are equal **or** they
    declare the same ``contentid`` metadata — the writer's statement that both hold the same
    logical content (the ingestion engine derives its keys and content ids from the plaintext, so
    a re-encryption of the same batch after a crash differs only in its random nonce/data key).
    Frames of one key with different content ids raise :class:`ObjectConflictError`. Use
    :class:`S3ObjectStore` when you need write-time conflict detection. Encryption at rest is
    configured on the delivery stream and the bucket (SSE-KMS), not per request.
    """

    def __init__(
        self,
        *,
        firehose: Any,
        s3: Any,
        delivery_stream: str,
        bucket: str,
        s3_prefix: str = "",
        backoff: Backoff | None = None,
    ) -> None:
        check_name("delivery_stream", delivery_stream, r"[a-zA-Z0-9_.-]{1,64}", hint="1-64 chars")
        check_name("bucket", bucket, _BUCKET_NAME, hint="S3 bucket naming rules")
        if s3_prefix:
            check_name("firehose_s3_prefix", s3_prefix, _PREFIX, hint="ends with '/'")
        self._firehose = firehose
        self._s3 = s3
        self._stream = delivery_stream
        self._bucket = bucket
        self._s3_prefix = s3_prefix
        self._backoff = backoff or Backoff()
        self._index: dict[str, bytes] = {}
        self._content_ids: dict[str, str] = {}
        self._seen_objects: set[str] = set()

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Send one framed record to Firehose (durable when this returns)."""
        check_object_key(key)
        frame = (
            json.dumps(
                {
                    "key": key,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "metadata": check_metadata(metadata),
                    "data": base64.b64encode(data).decode("ascii"),
                },
                separators=(",", ":"),
            ).encode()
            + b"\n"
        )
        if len(frame) > MAX_FIREHOSE_RECORD_BYTES:
            raise ValueError(
                f"{key}: framed record is {len(frame)} bytes; Firehose accepts "
                f"{MAX_FIREHOSE_RECORD_BYTES}"
            )
        for attempt in range(1, self._backoff.max_attempts + 1):
            try:
                self._firehose.put_record(DeliveryStreamName=self._stream, Record={"Data": frame})
                return
            except ClientError as exc:
                if _error_code(exc) != "ServiceUnavailableException":
                    raise
                if attempt == self._backoff.max_attempts:
                    raise CloudBackendError(
                        f"firehose {self._stream}: {key} not accepted after {attempt} attempts"
                    ) from exc
                self._backoff.wait(attempt)

    def _refresh(self) -> None:
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._s3_prefix):
            for obj in page.get("Contents", []):
                name = str(obj["Key"])
                if name in self._seen_objects:
                    continue
                body = self._s3.get_object(Bucket=self._bucket, Key=name)["Body"].read()
                for line in body.splitlines():
                    if not line.strip():
                        continue
                    frame = json.loads(line)
                    data = base64.b64decode(frame["data"], validate=True)
                    if hashlib.sha256(data).hexdigest() != frame["sha256"]:
                        raise CloudBackendError(f"{name}: frame for {frame['key']} is corrupt")
                    key = str(frame["key"])
                    cid = str((frame.get("metadata") or {}).get("contentid") or frame["sha256"])
                    old = self._index.get(key)
                    if old is not None:
                        if old != data and self._content_ids.get(key) != cid:
                            raise ObjectConflictError(
                                f"firehose delivery holds two different objects for {key}"
                            )
                        continue  # a retry or a re-write of the same content: first one wins
                    self._index[key] = data
                    self._content_ids[key] = cid
                self._seen_objects.add(name)

    def get(self, key: str) -> bytes:
        """The delivered bytes of ``key``; KeyError if not (yet) delivered."""
        if key not in self._index:
            self._refresh()
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        """Whether ``key`` has been delivered to S3 (buffered records are not visible)."""
        if key not in self._index:
            self._refresh()
        return key in self._index

    def list(self, prefix: str = "") -> Iterator[str]:
        """Delivered keys under ``prefix``, sorted, duplicates collapsed."""
        self._refresh()
        return iter(sorted(k for k in self._index if k.startswith(prefix)))


# --------------------------------------------------------------------------- factory


def open_backend(
    *,
    stream: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    prefix: str = "",
    kms_key_id: str | None = None,
    bucket_key: bool = True,
    sink: str = "s3",
    delivery_stream: str | None = None,
    firehose_s3_prefix: str = "",
    checkpoint_prefix: str = "_checkpoints/",
    consumer: str | None = None,
    initial_position: str = "TRIM_HORIZON",
    lease_table: str | None = None,
    lease_duration: float = 10.0,
    endpoint_url: str | None = None,
    kinesis_endpoint_url: str | None = None,
    dynamodb_endpoint_url: str | None = None,
    s3_endpoint_url: str | None = None,
    firehose_endpoint_url: str | None = None,
    session: Any = None,
    botocore_config: Config | None = None,
    backoff: Backoff | None = None,
    **unsupported: Any,
) -> tuple[RecordStream, ObjectStore]:
    """Build the AWS stream and store from keyword options (validated here, eagerly).

    Parameters
    ----------
    stream, bucket:
        Kinesis stream and landing bucket (required).
    region:
        AWS region; default: the session's (``AWS_REGION``/profile). ValueError if none.
    prefix:
        Key prefix for landed objects.
    kms_key_id, bucket_key:
        SSE-KMS key for objects and checkpoints; S3 Bucket Key on by default.
    sink:
        ``"s3"`` (default, write-time idempotence) or ``"firehose"`` (needs
        ``delivery_stream``; ``bucket``/``firehose_s3_prefix`` name the delivery destination).
    checkpoint_prefix, consumer, initial_position:
        Consumer checkpoint location/name (default ``saip``) and start position for shards
        without checkpoint.
    lease_table, lease_duration:
        Scale-out: a DynamoDB lease table shared by several consumers of the stream, each with
        its own unique ``consumer`` name (required then), and the lease duration in seconds
        (1..3600, default 10). Checkpoints then live in the lease table, not in S3
        (:mod:`saip_ingestion.backends.kinesis_leases`).
    endpoint_url, kinesis_endpoint_url, s3_endpoint_url, firehose_endpoint_url,
    dynamodb_endpoint_url:
        Custom endpoints (VPC interface endpoints, FIPS, local moto); the per-service ones win.
    session, botocore_config:
        Injected ``boto3.session.Session`` (default: a new one using the default credential
        chain) and ``botocore.config.Config`` (e.g. TLS settings from ``saip_encryption.tls``).
    backoff:
        Retry timing for partial failures.

    Raises
    ------
    ValueError
        A missing, malformed or unsupported option (named in the message). ``data_dir``, which
        the CLI passes to every backend, is accepted and unused.
    """
    unsupported.pop("data_dir", None)
    if unsupported:
        raise ValueError(f"aws backend: unsupported option(s) {', '.join(sorted(unsupported))}")
    if stream is None:
        raise ValueError("stream: required for the aws backend (Kinesis stream name)")
    if bucket is None:
        raise ValueError("bucket: required for the aws backend (landing S3 bucket)")
    check_name("stream", stream, _STREAM_NAME, hint="1-128 of [A-Za-z0-9_.-]")
    check_name("bucket", bucket, _BUCKET_NAME, hint="S3 bucket naming rules")
    if prefix:
        check_name("prefix", prefix, _PREFIX, hint="safe characters, ends with '/'")
    check_name(
        "checkpoint_prefix", checkpoint_prefix, r"([A-Za-z0-9!_.*'()-]+/)+", hint="ends with '/'"
    )
    if prefix and checkpoint_prefix.startswith(prefix):
        raise ValueError("checkpoint_prefix: must not lie under the landing prefix")
    if lease_table is not None and consumer is None:
        raise ValueError(
            "consumer: required with lease_table (a name unique among the stream's consumers, "
            "e.g. the container or VM name)"
        )
    consumer = consumer if consumer is not None else "saip"
    check_name("consumer", consumer, _CONSUMER, hint="1-64 of [A-Za-z0-9_.-]")
    if lease_table is not None and sink == "firehose":
        raise ValueError("lease_table: needs sink='s3' (Firehose cannot tell a batch is stored)")
    if sink not in ("s3", "firehose"):
        raise ValueError(f"sink: must be 's3' or 'firehose', got {sink!r}")
    if sink == "firehose" and delivery_stream is None:
        raise ValueError("delivery_stream: required when sink='firehose'")
    endpoints = {
        name: check_endpoint_url(name, url)
        for name, url in (
            ("endpoint_url", endpoint_url),
            ("kinesis_endpoint_url", kinesis_endpoint_url),
            ("s3_endpoint_url", s3_endpoint_url),
            ("firehose_endpoint_url", firehose_endpoint_url),
            ("dynamodb_endpoint_url", dynamodb_endpoint_url),
        )
    }
    if botocore_config is not None and not isinstance(botocore_config, Config):
        raise TypeError("botocore_config: must be a botocore.config.Config")
    session = session if session is not None else boto3.session.Session()
    region = region or session.region_name
    if region is None:
        raise ValueError("region: not given and no default region is configured")
    check_name("region", region, _REGION, hint="e.g. eu-west-1")

    def make(service: str) -> Any:
        url = endpoints[f"{service}_endpoint_url"] or endpoints["endpoint_url"]
        return _client(
            service, session=session, region=region, endpoint_url=url, config=botocore_config
        )

    s3 = make("s3")
    if lease_table is not None:
        from saip_ingestion.backends import kinesis_leases as kl

        landing = S3ObjectStore(
            s3=s3, bucket=bucket, prefix=prefix, kms_key_id=kms_key_id, bucket_key=bucket_key
        )
        leases = kl.ShardLeaseTable(
            dynamodb=make("dynamodb"),
            table=lease_table,
            stream=stream,
            owner=consumer,
            lease_duration=lease_duration,
        )
        leased = kl.LeasedKinesisStream(
            kinesis=make("kinesis"),
            stream=stream,
            leases=leases,
            exists=landing.exists,
            initial_position=initial_position,
            backoff=backoff,
        )
        return leased, kl.LeaseFencedStore(landing, leased)
    checkpoints = S3CheckpointStore(
        s3=s3,
        bucket=bucket,
        prefix=checkpoint_prefix,
        stream=stream,
        consumer=consumer,
        sse_kms_key_id=kms_key_id,
        bucket_key=bucket_key,
    )
    record_stream = KinesisStream(
        kinesis=make("kinesis"),
        stream=stream,
        checkpoints=checkpoints,
        initial_position=initial_position,
        backoff=backoff,
    )
    store: ObjectStore
    if sink == "firehose":
        assert delivery_stream is not None
        store = FirehoseObjectStore(
            firehose=make("firehose"),
            s3=s3,
            delivery_stream=delivery_stream,
            bucket=bucket,
            s3_prefix=firehose_s3_prefix,
            backoff=backoff,
        )
    else:
        store = S3ObjectStore(
            s3=s3,
            bucket=bucket,
            prefix=prefix,
            kms_key_id=kms_key_id,
            bucket_key=bucket_key,
            reserved_prefix=checkpoint_prefix,
        )
    return record_stream, store
