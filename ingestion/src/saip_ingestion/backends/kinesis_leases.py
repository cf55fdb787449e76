"""Scale-out for Kinesis: several consumers split one stream's shards with DynamoDB leases.

The design follows the Kinesis Client Library's lease table (AWS, *Use a lease table to track
the shards processed by the KCL consumer application*, KCL 2.x developer guide): one DynamoDB
item per shard with its ``owner``, a ``counter`` (the KCL's ``leaseCounter``) and the
``checkpoint`` (the last sequence number durably stored). Every change is a conditional write
on the counter the writer last saw, so

* two consumers can never both hold a shard: taking a lease is ``counter = <seen>`` plus
  ``owner := me, counter := counter + 1`` (only one of two racing writers succeeds);
* a lease is **expired** when its counter has not moved for ``lease_duration`` seconds on the
  *observer's* monotonic clock (no wall-clock comparison between hosts, as in the KCL);
* the counter is a **fencing token** (M. Kleppmann, *How to do distributed locking*, 2016):
  every checkpoint and every write intent is conditional on ``owner = me AND counter = mine``,
  so a consumer whose lease was taken over — a paused process, a partitioned host — gets
  :class:`LeaseLostError` instead of moving a checkpoint it no longer owns.

Beyond the KCL (which is at-least-once): before the engine writes a batch object, the consumer
records a **write intent** in each lease row the batch covers (the object keys and the shard's
highest sequence number in the batch), fenced like a checkpoint; the checkpoint clears it. A
consumer that takes over a lease with an intent left by a crashed owner checks the store: if the
intent names the batch's accepted object and every named object exists, the batch was durably
written (the engine writes the accepted object last, after the batch's quarantine object), and
the checkpoint moves to the intent's sequence number — the records are not read and stored
again; otherwise the intent is dropped and the records are read again (a rejected record may
then get a second dead-letter copy; an accepted record is never stored twice). So a consumer
killed between its durable write and its checkpoint leaves no accepted record stored twice.
A stored batch may stay un-checkpointed while the engine holds undecided v2 records (it
checkpoints only up to the first of them, of any shard): the next intent on the shard then
settles it in the same fenced update (checkpoint := its sequence number) rather than
overwriting it, else a crash between the next intent and its object would drop the only trace
of the stored batch and the successor would store its records again.

Rows are untrusted input on read: a counter, owner, checkpoint or intent that is not well formed
raises :class:`LeaseTableError` naming the shard and the attribute, and a checkpoint that names
a record the shard does not hold (e.g. an absurd sequence number, which Kinesis would silently
answer with "no records" forever) is refused before any record is read.

Shard topology: a child shard (after a split or merge) is leased only after every parent's row
says ``SHARD_END``, so per-key order holds across resharding between consumers too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError

from saip_ingestion.backends._cloud_common import CloudBackendError, check_name, check_object_key
from saip_ingestion.backends.aws import KinesisStream, _Shard
from saip_ingestion.backends.base import ObjectStore, StreamMessage

#: prefix of the engine's accepted-batch objects (``saip_ingestion.engine.ACCEPTED_PREFIX``;
#: not imported: backends do not import the engine)
ACCEPTED_PREFIX: Final = "accepted/"

__all__ = [
    "LEASE_DURATION_RANGE",
    "LeaseFencedStore",
    "LeaseLostError",
    "LeaseTableError",
    "LeasedKinesisStream",
    "ShardLeaseTable",
]

_log = logging.getLogger(__name__)

#: accepted ``lease_duration`` (seconds): ≥ 1 s so renewals (every third of it) are not a
#: hot loop; ≤ 1 h so a dead consumer's shards do not wait longer than that
LEASE_DURATION_RANGE: Final = (1.0, 3600.0)
#: Kinesis sequence numbers are decimal strings of up to 128 digits (API reference, Record)
_SEQ: Final = re.compile(r"[0-9]{1,128}")
_OWNER: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHARD_ID: Final = re.compile(r"shardId-[0-9]{1,20}")
SHARD_END: Final = "SHARD_END"
_MAX_COUNTER: Final = 2**63 - 1
_MAX_PENDING_KEYS: Final = 16
_PENDING: Final = "pending_keys, pending_seq"
_KNOWN_ATTRS: Final = frozenset(
    {"lease_key", "owner", "counter", "checkpoint", "parents", "pending_keys", "pending_seq"}
)


class LeaseTableError(CloudBackendError):
    """A lease-table row is malformed or names a checkpoint the shard does not hold."""


class LeaseLostError(CloudBackendError):
    """This consumer no longer holds a lease it tried to use (taken over after expiry)."""


@dataclass
class Lease:
    """One shard lease as last read or written by this consumer."""

    shard_id: str
    owner: str | None
    counter: int
    checkpoint: str | None
    parents: tuple[str, ...] = ()
    pending_keys: tuple[str, ...] = ()
    pending_seq: str | None = None


def _s(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"S"} or not isinstance(value["S"], str):
        raise ValueError(f"{name}: expected a string")
    return str(value["S"])


def parse_row(shard_id: str, item: Mapping[str, Any]) -> Lease:
    """Validate one DynamoDB item (wire format) into a :class:`Lease`.

    Raises
    ------
    LeaseTableError
        An attribute is missing, of the wrong type or out of range (named in the message).
    """
    try:
        extra = set(item) - _KNOWN_ATTRS
        if extra:
            raise ValueError(f"unexpected attribute(s) {', '.join(sorted(extra))[:80]}")
        raw_counter = item.get("counter")
        if not isinstance(raw_counter, dict) or set(raw_counter) != {"N"}:
            raise ValueError("counter: expected a number")
        text = str(raw_counter["N"])
        if not re.fullmatch(r"[0-9]{1,19}", text) or int(text) > _MAX_COUNTER:
            raise ValueError("counter: not an integer in 0..2**63-1")
        owner = _s(item, "owner")
        if owner is not None and not _OWNER.fullmatch(owner):
            raise ValueError("owner: not a consumer name")
        checkpoint = _s(item, "checkpoint")
        if checkpoint is not None and checkpoint != SHARD_END and not _SEQ.fullmatch(checkpoint):
            raise ValueError("checkpoint: not a sequence number or SHARD_END")
        parents: tuple[str, ...] = ()
        if "parents" in item:
            plist = item["parents"].get("L") if isinstance(item["parents"], dict) else None
            if not isinstance(plist, list) or len(plist) > 2:
                raise ValueError("parents: expected a list of at most 2 shard ids")
            parents = tuple(_s({"p": p}, "p") or "" for p in plist)
            if not all(_SHARD_ID.fullmatch(p) for p in parents):
                raise ValueError("parents: not shard ids")
        keys: tuple[str, ...] = ()
        if "pending_keys" in item:
            klist = (
                item["pending_keys"].get("L") if isinstance(item["pending_keys"], dict) else None
            )
            if not isinstance(klist, list) or not 1 <= len(klist) <= _MAX_PENDING_KEYS:
                raise ValueError("pending_keys: expected a list of 1-16 object keys")
            try:
                keys = tuple(check_object_key(_s({"k": k}, "k") or "") for k in klist)
            except ValueError as exc:
                raise ValueError(f"pending_keys: {exc}") from None
        pending_seq = _s(item, "pending_seq")
        if pending_seq is not None and not _SEQ.fullmatch(pending_seq):
            raise ValueError("pending_seq: not a sequence number")
        if bool(keys) != (pending_seq is not None):
            raise ValueError("pending_keys/pending_seq: one without the other")
    except (ValueError, TypeError, AttributeError) as exc:
        raise LeaseTableError(f"lease of shard {shard_id}: {exc}") from None
    return Lease(shard_id, owner, int(text), checkpoint, parents, keys, pending_seq)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class ShardLeaseTable:
    """KCL-style shard leases and checkpoints in one DynamoDB table (see the module docstring).

    Parameters
    ----------
    dynamodb:
        A boto3 DynamoDB client.
    table:
        Table name; hash key ``lease_key`` (string). Created by Terraform (``infra/aws``).
    stream:
        Kinesis stream name (rows are ``<stream>/<shard id>``, so one table can serve several
        streams; workers' heartbeats are ``<stream>/worker/<owner>``).
    owner:
        This consumer's name, unique among the consumers of the stream.
    lease_duration:
        Seconds without a counter change after which another consumer takes a lease over.
        Leases are renewed every third of it by a background thread.
    clock:
        Monotonic clock (injectable: expiry is measured on the observer's clock).
    """

    def __init__(
        self,
        *,
        dynamodb: Any,
        table: str,
        stream: str,
        owner: str,
        lease_duration: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_name("lease_table", table, r"[a-zA-Z0-9_.-]{3,255}", hint="3-255 of [A-Za-z0-9_.-]")
        check_name("consumer", owner, _OWNER.pattern, hint="1-64 of [A-Za-z0-9_.-]")
        if isinstance(lease_duration, bool) or not isinstance(lease_duration, int | float):
            raise TypeError("lease_duration: must be a number of seconds")
        lo, hi = LEASE_DURATION_RANGE
        if not lo <= float(lease_duration) <= hi:
            raise ValueError(f"lease_duration: must be in {lo:g}..{hi:g} seconds")
        self._ddb = dynamodb
        self.table = table
        self.stream = stream
        self.owner = owner
        self.lease_duration = float(lease_duration)
        self._clock = clock
        self._lock = threading.RLock()
        self.owned: dict[str, Lease] = {}
        self.lost: set[str] = set()
        #: other owners' leases: shard → (counter seen, when first seen with that counter)
        self._seen: dict[str, tuple[int, float]] = {}
        self._workers_seen: dict[str, tuple[int, float]] = {}
        self._heartbeat = 0
        #: accepted objects this owner wrote that a held lease's intent still names
        self._written: set[str] = set()

    # ------------------------------------------------------------------ low level

    def _key(self, shard_id: str) -> dict[str, Any]:
        return {"lease_key": {"S": f"{self.stream}/{shard_id}"}}

    def _update(
        self, lease: Lease, set_expr: str, values: dict[str, Any], *, remove: str = ""
    ) -> Lease:
        """Conditional update fenced on ``owner = me AND counter = mine``; counter + 1."""
        expr = f"SET #c = #c + :one{', ' + set_expr if set_expr else ''}"
        if remove:
            expr += f" REMOVE {remove}"
        try:
            resp = self._ddb.update_item(
                TableName=self.table,
                Key=self._key(lease.shard_id),
                UpdateExpression=expr,
                ConditionExpression="#o = :me AND #c = :mine",
                ExpressionAttributeNames={"#o": "owner", "#c": "counter"},
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":me": {"S": self.owner},
                    ":mine": {"N": str(lease.counter)},
                    **values,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            self.owned.pop(lease.shard_id, None)
            self.lost.add(lease.shard_id)
            raise LeaseLostError(
                f"lease of shard {lease.shard_id} on {self.stream} was taken over "
                f"(fencing counter {lease.counter} is stale)"
            ) from None
        fresh = parse_row(lease.shard_id, resp["Attributes"])
        self.owned[lease.shard_id] = fresh
        return fresh

    def rows(self) -> dict[str, Lease]:
        """Every shard lease of the stream (strongly consistent scan)."""
        out: dict[str, Lease] = {}
        workers: dict[str, int] = {}
        prefix = f"{self.stream}/"
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True}
        while True:
            page = self._ddb.scan(**kwargs)
            for item in page.get("Items", []):
                name = str(item.get("lease_key", {}).get("S", ""))
                if not name.startswith(prefix):
                    continue
                rest = name[len(prefix) :]
                if rest.startswith("worker/"):
                    counter = item.get("counter", {}).get("N", "0")
                    workers[rest[len("worker/") :]] = int(counter) if counter.isdigit() else 0
                    continue
                if not _SHARD_ID.fullmatch(rest):
                    raise LeaseTableError(f"lease table {self.table}: unexpected row {rest[:80]!r}")
                out[rest] = parse_row(rest, item)
            last = page.get("LastEvaluatedKey")
            if not last:
                break
            kwargs["ExclusiveStartKey"] = last
        self._note_workers(workers)
        return out

    def _note_workers(self, workers: Mapping[str, int]) -> None:
        now = self._clock()
        for gone in set(self._workers_seen) - set(workers):
            del self._workers_seen[gone]
        for name, counter in workers.items():
            seen = self._workers_seen.get(name)
            if seen is None or seen[0] != counter:
                self._workers_seen[name] = (counter, now)

    def active_workers(self) -> int:
        """Consumers whose heartbeat moved within ``lease_duration`` (this one included)."""
        now = self._clock()
        alive = {
            name
            for name, (_c, since) in self._workers_seen.items()
            if now - since < self.lease_duration
        }
        alive.add(self.owner)
        return len(alive)

    # ------------------------------------------------------------------ lifecycle

    def heartbeat(self) -> None:
        """Advertise this consumer (so the others size their share of the shards)."""
        self._ddb.update_item(
            TableName=self.table,
            Key={"lease_key": {"S": f"{self.stream}/worker/{self.owner}"}},
            UpdateExpression="SET #c = if_not_exists(#c, :zero) + :one",
            ExpressionAttributeNames={"#c": "counter"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"}},
        )

    def retire(self) -> None:
        """Remove this consumer's heartbeat row (graceful shutdown)."""
        self._ddb.delete_item(
            TableName=self.table, Key={"lease_key": {"S": f"{self.stream}/worker/{self.owner}"}}
        )

    def sync(self, shards: Sequence[Mapping[str, Any]]) -> None:
        """Create the rows of shards (from ``ListShards``) that have none (conditional put)."""
        for desc in shards:
            sid = str(desc["ShardId"])
            parents = [
                {"S": str(desc[k])}
                for k in ("ParentShardId", "AdjacentParentShardId")
                if desc.get(k)
            ]
            item: dict[str, Any] = {**self._key(sid), "counter": {"N": "0"}}
            if parents:
                item["parents"] = {"L": parents}
            try:
                self._ddb.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(lease_key)",
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise

    def renew(self) -> set[str]:
        """Renew every owned lease (counter + 1); returns the shards lost since the last call."""
        with self._lock:
            self.heartbeat()
            for lease in list(self.owned.values()):
                try:
                    self._update(lease, "", {})
                except LeaseLostError:
                    _log.warning("lease of %s lost (taken over)", lease.shard_id)
            lost, self.lost = self.lost, set()
            return lost

    def acquire(self, shard_id: str, seen: Lease) -> Lease | None:
        """Take ``shard_id`` if its counter is still ``seen.counter``; None if another won."""
        with self._lock:
            try:
                resp = self._ddb.update_item(
                    TableName=self.table,
                    Key=self._key(shard_id),
                    UpdateExpression="SET #o = :me, #c = #c + :one",
                    ConditionExpression="#c = :seen",
                    ExpressionAttributeNames={"#o": "owner", "#c": "counter"},
                    ExpressionAttributeValues={
                        ":me": {"S": self.owner},
                        ":one": {"N": "1"},
                        ":seen": {"N": str(seen.counter)},
                    },
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if _code(exc) == "ConditionalCheckFailedException":
                    return None
                raise
            lease = parse_row(shard_id, resp["Attributes"])
            self.owned[shard_id] = lease
            self._seen.pop(shard_id, None)
            return lease

    def expired(self, lease: Lease) -> bool:
        """Whether another owner's ``lease`` has not moved for ``lease_duration`` (observed)."""
        if lease.owner is None:
            return True
        now = self._clock()
        seen = self._seen.get(lease.shard_id)
        if seen is None or seen[0] != lease.counter:
            self._seen[lease.shard_id] = (lease.counter, now)
            return False
        return now - seen[1] >= self.lease_duration

    def resolve_intent(self, lease: Lease, exists: Callable[[str], bool]) -> Lease:
        """Settle a write intent left by a previous owner (see the module docstring)."""
        if not lease.pending_keys or lease.pending_seq is None:
            return lease
        with self._lock:
            committed = any(k.startswith(ACCEPTED_PREFIX) for k in lease.pending_keys)
            if committed and all(exists(k) for k in lease.pending_keys):
                _log.warning(
                    "shard %s: batch %s was stored by the previous owner; checkpoint moves to %s",
                    lease.shard_id,
                    lease.pending_keys[-1],
                    lease.pending_seq,
                )
                return self._update(
                    lease,
                    "checkpoint = :cp",
                    {":cp": {"S": lease.pending_seq}},
                    remove="pending_keys, pending_seq",
                )
            return self._update(lease, "", {}, remove="pending_keys, pending_seq")

    def record_intent(self, shard_id: str, key: str, seq: str) -> None:
        """Before writing object ``key`` holding records of ``shard_id`` up to ``seq``.

        An intent left by an earlier batch of this owner whose accepted object was written
        (:meth:`note_written`) is not overwritten but settled in the same fenced update: the
        checkpoint moves to its sequence number, as a successor's :meth:`resolve_intent` would.
        (The engine may leave a stored batch un-checkpointed — it checkpoints only up to the
        first held v2 message of any shard — and a crash between the next batch's intent and
        its object then dropped the only trace of the stored one: stored twice.)
        """
        with self._lock:
            lease = self._owned(shard_id)
            named = {k for held in self.owned.values() for k in held.pending_keys}
            self._written &= named  # forget written keys no held intent names any more
            done = any(
                k.startswith(ACCEPTED_PREFIX) and k in self._written for k in lease.pending_keys
            )
            cp = rolled = lease.checkpoint
            pending = lease.pending_seq
            if done and pending is not None and cp != SHARD_END:
                rolled = pending if cp is None or int(cp) < int(pending) else cp
            if rolled == SHARD_END or (rolled is not None and int(seq) <= int(rolled)):
                # every record of the shard up to seq is settled: no intent is needed
                if rolled != cp:
                    self._update(lease, "checkpoint = :cp", {":cp": {"S": rolled}}, remove=_PENDING)
                elif lease.pending_seq is not None:
                    self._update(lease, "", {}, remove=_PENDING)
                return
            if rolled is not None and rolled != cp:
                self._update(
                    lease,
                    "checkpoint = :cp, pending_keys = :k, pending_seq = :s",
                    {":cp": {"S": rolled}, ":k": {"L": [{"S": key}]}, ":s": {"S": seq}},
                )
                return
            keys = list(lease.pending_keys) if lease.pending_seq == seq else []
            if key not in keys:
                keys.append(key)
            if len(keys) > _MAX_PENDING_KEYS:
                raise LeaseTableError(f"shard {shard_id}: more than 16 objects in one batch")
            self._update(
                lease,
                "pending_keys = :k, pending_seq = :s",
                {":k": {"L": [{"S": k} for k in keys]}, ":s": {"S": seq}},
            )

    def note_written(self, key: str) -> None:
        """``key`` (named by a write intent of this owner) is durably written.

        The engine writes a batch's accepted object last, so an intent naming a written
        accepted object is a stored batch (see :meth:`record_intent`).
        """
        if key.startswith(ACCEPTED_PREFIX):
            with self._lock:
                self._written.add(key)

    def checkpoint(self, shard_id: str, seq: str) -> None:
        """Fenced checkpoint: only the current owner moves it, and only forward."""
        if seq != SHARD_END and not _SEQ.fullmatch(seq):
            raise ValueError(f"checkpoint: {seq[:40]!r} is not a sequence number")
        with self._lock:
            lease = self._owned(shard_id)
            cur = lease.checkpoint
            if cur == SHARD_END or (cur is not None and seq != SHARD_END and int(cur) >= int(seq)):
                stale = lease.pending_seq is not None and (
                    cur == SHARD_END or int(lease.pending_seq) <= int(cur or 0)
                )
                if stale:  # the owner's own roll-forward got there first (record_intent)
                    self._update(lease, "", {}, remove=_PENDING)
                return
            self._update(
                lease, "checkpoint = :cp", {":cp": {"S": seq}}, remove="pending_keys, pending_seq"
            )

    def release(self, shard_id: str) -> None:
        """Give a lease back (owner removed, counter + 1) so another consumer takes it at once."""
        with self._lock:
            lease = self.owned.get(shard_id)
            if lease is None:
                return
            with contextlib.suppress(LeaseLostError):
                self._update(lease, "", {}, remove="#o")
            self.owned.pop(shard_id, None)
            self.lost.discard(shard_id)

    def _owned(self, shard_id: str) -> Lease:
        lease = self.owned.get(shard_id)
        if lease is None:
            raise LeaseLostError(f"lease of shard {shard_id} on {self.stream} is not held")
        return lease

    def target(self, total: int) -> int:
        """This consumer's fair share of ``total`` leases."""
        return max(1, math.ceil(total / self.active_workers())) if total else 0


class _LeaseCheckpoints:
    """The checkpoint view :class:`KinesisStream` expects, backed by the lease table."""

    def __init__(self, leases: ShardLeaseTable) -> None:
        self._leases = leases

    def load(self, shard_id: str) -> str | None:
        lease = self._leases.owned.get(shard_id)
        return lease.checkpoint if lease is not None else None

    def save(self, shard_id: str, sequence_number: str) -> None:
        self._leases.checkpoint(shard_id, sequence_number)


class LeasedKinesisStream(KinesisStream):
    """A :class:`KinesisStream` that reads only the shards it holds leases for.

    Every ``poll`` first (at most every ``lease_duration / 4`` s) lists the shards, creates
    missing lease rows, gives back leases above its fair share, takes free or expired ones up to
    it (settling write intents of crashed owners), and marks drained closed shards
    ``SHARD_END``. A background thread renews the held leases every ``lease_duration / 3``.
    :meth:`checkpoint` is fenced (:class:`LeaseLostError` after a takeover); the store returned
    with it (:class:`LeaseFencedStore`) records a write intent before each object write.
    """

    def __init__(
        self,
        *,
        kinesis: Any,
        stream: str,
        leases: ShardLeaseTable,
        exists: Callable[[str], bool],
        clock: Callable[[], float] = time.monotonic,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            kinesis=kinesis,
            stream=stream,
            checkpoints=_LeaseCheckpoints(leases),
            clock=clock,
            **kwargs,
        )
        self.leases = leases
        self._exists = exists
        self._in_flight: dict[str, set[int]] = {}
        #: the engine's undecided messages (``IngestEngine.held_messages``), wired by the caller
        self.held: Callable[[], Sequence[StreamMessage]] = list
        self._verified: set[str] = set()
        self._next_balance = 0.0
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._shard_desc: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ leases

    def _start_renewer(self) -> None:
        if self._renewer is not None:
            return
        interval = self.leases.lease_duration / 3

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.leases.renew()
                except Exception as exc:
                    _log.warning("lease renewal failed: %s", type(exc).__name__)

        self._renewer = threading.Thread(target=loop, name="saip-lease-renewer", daemon=True)
        self._renewer.start()

    def rebalance(self) -> None:
        """One balancing round (see the class docstring); called by :meth:`poll`."""
        leases = self.leases
        leases.heartbeat()
        descs = self._list_shards()
        self._shard_desc = {str(d["ShardId"]): d for d in descs}
        leases.sync(descs)
        for sid, lease in list(leases.owned.items()):
            ending = self._shard_desc.get(sid, {}).get("SequenceNumberRange", {})
            ending = ending.get("EndingSequenceNumber")
            drained = ending is not None and lease.checkpoint == str(ending)
            if self._in_flight.get(sid):
                continue  # records of it not yet checkpointed: keep it
            if sid in self._finished or drained:  # closed and every record stored
                leases.checkpoint(sid, SHARD_END)
                leases.release(sid)
                self._finished.add(sid)
        rows = leases.rows()
        for sid in list(leases.owned):
            row = rows.get(sid)
            if row is None or row.owner != leases.owner:
                leases.owned.pop(sid, None)  # taken over (the renewer may not have seen it yet)
        open_rows = {sid: r for sid, r in rows.items() if r.checkpoint != SHARD_END}
        target = leases.target(len(open_rows))
        extra = len(leases.owned) - target
        idle = [sid for sid in sorted(leases.owned, reverse=True) if not self._in_flight.get(sid)]
        for sid in idle[: max(0, extra)]:
            _log.info("releasing %s (fair share %d)", sid, target)
            leases.release(sid)
        for sid, row in sorted(open_rows.items()):
            if len(leases.owned) >= target:
                break
            if sid in leases.owned:
                continue
            if any(
                rows.get(p) is not None and rows[p].checkpoint != SHARD_END for p in row.parents
            ):
                continue  # a parent still has records: per-key order first
            if row.owner == leases.owner or leases.expired(row):
                taken = leases.acquire(sid, row)
                if taken is not None:
                    _log.info("took lease of %s (counter %d)", sid, taken.counter)
                    leases.resolve_intent(taken, self._exists)
        for sid in list(self.leases.lost):
            self.leases.lost.discard(sid)
        self._sync_shards()

    def _sync_shards(self) -> None:
        known = self._shards if self._shards is not None else {}
        owned = self.leases.owned
        for sid in list(known):
            if sid not in owned:
                del known[sid]
                self._verified.discard(sid)
        for sid in owned:
            if sid not in known and sid not in self._finished:
                known[sid] = _Shard(sid, ())
        self._shards = known

    def _refresh_shards(self) -> dict[str, _Shard]:
        self._sync_shards()
        assert self._shards is not None
        return self._shards

    def _iterator(self, shard: _Shard) -> str | None:
        if shard.last_seq is None:
            lease = self.leases.owned.get(shard.shard_id)
            cp = lease.checkpoint if lease is not None else None
            if cp is not None and shard.shard_id not in self._verified:
                self._verify_checkpoint(shard.shard_id, cp)
            self._verified.add(shard.shard_id)
            shard.last_seq = cp
        kwargs: dict[str, Any] = {"StreamName": self._stream, "ShardId": shard.shard_id}
        if shard.last_seq is not None:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=shard.last_seq
            )
        else:
            kwargs.update(ShardIteratorType=self._initial)
        return str(self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"])

    def _verify_checkpoint(self, shard_id: str, checkpoint: str) -> None:
        """A checkpoint must name a record of this shard (else: tampered or another stream's)."""
        desc = self._shard_desc.get(shard_id, {})
        rng = desc.get("SequenceNumberRange", {})
        start, end = rng.get("StartingSequenceNumber"), rng.get("EndingSequenceNumber")
        cp = int(checkpoint)
        if (start is not None and cp < int(start)) or (end is not None and cp > int(end)):
            raise LeaseTableError(
                f"lease of shard {shard_id}: checkpoint {checkpoint[:40]} lies outside the "
                f"shard's sequence number range"
            )
        it = self._kinesis.get_shard_iterator(
            StreamName=self._stream,
            ShardId=shard_id,
            ShardIteratorType="AT_SEQUENCE_NUMBER",
            StartingSequenceNumber=checkpoint,
        )["ShardIterator"]
        for _ in range(5):
            resp = self._kinesis.get_records(ShardIterator=it, Limit=1)
            if resp["Records"]:
                if int(resp["Records"][0]["SequenceNumber"]) >= cp:
                    return  # the checkpointed record, or the first one after a retention trim
                break
            if not resp.get("MillisBehindLatest") or resp.get("NextShardIterator") is None:
                break
            it = resp["NextShardIterator"]
        raise LeaseTableError(
            f"lease of shard {shard_id}: checkpoint {checkpoint[:40]} names no record the shard "
            f"holds (tampered row or another stream's checkpoint); refusing to skip records"
        )

    # ------------------------------------------------------------------ RecordStream

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        """Balance leases (periodically), then read up to ``max_messages`` from held shards."""
        self._start_renewer()
        now = self._clock()
        if self.leases.lost or now >= self._next_balance:
            self.rebalance()
            self._next_balance = now + self.leases.lease_duration / 4
        if not self.leases.owned:
            time.sleep(max(0.0, min(timeout, self.leases.lease_duration / 4)))
            return []
        out = super().poll(max_messages=max_messages, timeout=timeout)
        for msg in out:
            self._in_flight.setdefault(msg.partition, set()).add(int(msg.position))
        return out

    def before_put(self, key: str) -> None:
        """Record a write intent for ``key`` in each lease the batch covers (fenced).

        The intent's sequence number per shard is the highest un-checkpointed one below the
        shard's first undecided message (:attr:`held`): a successor that rolls forward to it
        skips only records this batch decided, never one still waiting for its v2 batch.
        """
        first_held: dict[str, int] = {}
        for msg in self.held():
            seq = int(msg.position)
            if seq < first_held.get(msg.partition, seq + 1):
                first_held[msg.partition] = seq
        for sid, seqs in sorted(self._in_flight.items()):
            limit = first_held.get(sid)
            safe = [s for s in seqs if limit is None or s < limit]
            if safe:
                self.leases.record_intent(sid, key, str(max(safe)))

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        """Fenced per-shard checkpoint of the highest sequence number in ``messages``."""
        highest: dict[str, int] = {}
        for msg in messages:
            seq = int(msg.position)
            if seq > highest.get(msg.partition, -1):
                highest[msg.partition] = seq
        lost: list[str] = []
        for sid, seq in sorted(highest.items()):
            try:
                self.leases.checkpoint(sid, str(seq))
            except LeaseLostError:
                lost.append(sid)
        for msg in messages:  # the engine may hold back undecided v2 messages: only these leave
            pending = self._in_flight.get(msg.partition)
            if pending is not None:
                pending.discard(int(msg.position))
                if not pending:
                    del self._in_flight[msg.partition]
        for sid in lost:
            self._in_flight.pop(sid, None)
        if lost:
            raise LeaseLostError(
                f"checkpoint refused for shard(s) {', '.join(lost)}: lease taken over by another "
                "consumer (its records will be read again there; nothing was checkpointed here)"
            )

    def close(self) -> None:
        """Stop renewing and give every lease back (call after the last checkpoint)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self._in_flight:
            return  # un-checkpointed records: let the leases expire, the intents settle them
        try:
            for sid in list(self.leases.owned):
                self.leases.release(sid)
            self.leases.retire()
        except ClientError as exc:
            _log.warning("giving leases back failed (they expire instead): %s", _code(exc))


class LeaseFencedStore(ObjectStore):
    """An :class:`ObjectStore` that records a fenced write intent before every ``put``.

    Wraps the landing store of a :class:`LeasedKinesisStream`: a consumer whose lease was taken
    over gets :class:`LeaseLostError` *before* it writes, so it cannot store a batch the new
    owner will read again.
    """

    def __init__(self, inner: ObjectStore, stream: LeasedKinesisStream) -> None:
        self.inner = inner
        self.stream = stream

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        """Write intent (fenced), then the object."""
        self.stream.before_put(key)
        started = time.monotonic()
        self.inner.put(key, data, metadata=metadata)
        self.stream.leases.note_written(key)
        if time.monotonic() - started > self.stream.leases.lease_duration:
            _log.error(
                "object %s took longer than the lease to write; a takeover may have read its "
                "records again (readers collapse identical copies)",
                key,
            )

    def get(self, key: str) -> bytes:
        """Read through."""
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        """Read through."""
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Read through."""
        return self.inner.list(prefix)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
