"""The ingestion engine: stream → validate → sanitize → verify → dedupe → encrypt → store.

For each polled batch of raw records the engine

1. rejects oversized lines, then parses and validates each line with the one schema
   (:data:`saip_ingestion.schemas.RECORD_ADAPTER`, pydantic-core's JSON parser);
2. computes the record's signing input and RFC 6962 leaf hash and verifies provenance: a v2
   batch from all its leaves and one signed header (carried across polls until complete, its
   messages not checkpointed before), a v1 record by its inclusion proof (Ed25519 cached per
   batch);
3. checks content against the declared dataset spec — vectorised over the batch with NumPy for
   images (range, label set, shape) — and sanitizes text fields with an audit trail;
4. decides in arrival order on the producer's ``seq`` window (:mod:`saip_ingestion.window`):
   below it, exact duplicate (counted, stored once), ``replay``, ``record_id`` ``conflict``
   within the window, ``ts`` window;
5. commits: quarantined records to the encrypted dead-letter store (one object per batch),
   accepted records as ONE batch object ``accepted/<consumer>/<batch>-<content id>`` whose
   records are sealed with one ``seal_many`` call of the encryptor's bound-context batch API
   (:mod:`saip_ingestion.sealed`), then a journal line, then the stream checkpoint.

Crash safety (at-least-once delivery + idempotent writes): the checkpoint follows the durable
writes; on start the engine rolls forward a batch object written before a crash whose journal
line is missing; re-delivered records are then recognised as duplicates, so nothing is lost and
nothing is stored twice. Conservation: every received record ends as exactly one of accepted
(``duplicates`` included) or quarantined.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from pydantic_core import from_json

from saip_ingestion.backends.base import ObjectStore, RecordStream, StreamMessage
from saip_ingestion.backends.local import atomic_write
from saip_ingestion.errors import FencedBatchError, IngestError
from saip_ingestion.fastdecode import decode_any_many
from saip_ingestion.health import HealthTracker
from saip_ingestion.protocols import Encryptor
from saip_ingestion.provenance import (
    BatchHeader,
    ProducerRegistry,
    ReplayGuard,
    Verifier,
    image_leaf,
    leaf_data,
    leaf_hash,
    merkle_root,
    payload_bytes,
)
from saip_ingestion.quarantine import QuarantineStore
from saip_ingestion.sanitize import AuditEntry, sanitize_text
from saip_ingestion.schemas import (
    IMAGE_MAX_SIDE,
    IMAGE_RECORD_ADAPTER,
    MAX_LINE_BYTES,
    PRODUCER_ID_PATTERN,
    RECORD_ADAPTER,
    RECORD_ID_PATTERN,
    TABULAR_MAX_FEATURES,
    TEXT_INSTRUCTION_MAX,
    TEXT_RESPONSE_MAX,
    AnyRecord,
    TabularSampleV1,
    canonical_json,
    duplicate_key,
)
from saip_ingestion.sealed import SealedBatchError, content_id, open_lines, seal_lines
from saip_ingestion.state import ConsumerState
from saip_ingestion.window import BELOW, SeqWindows, rid_hash

__all__ = ["DATASET_SPECS", "ImageSpec", "IngestEngine", "IngestSummary", "TabularSpec"]

_log = logging.getLogger(__name__)
#: messages longer than this are pre-screened (:func:`prescreen`) before validation
_PRESCREEN_BYTES: Final = 16 * 1024
_PRODUCER_RE: Final = re.compile(PRODUCER_ID_PATTERN[1:-1])
_RECORD_RE: Final = re.compile(RECORD_ID_PATTERN[1:-1])
#: at most this many validation errors are materialised for one record
MAX_ERRORS: Final = 64
#: combinations of the records claiming contested leaf indexes tried for one v2 batch
_RIVAL_TRIES: Final = 16
_TAGS: Final = frozenset({"image-sample/v1", "tabular-sample/v1", "text-sample/v1"})
ACCEPTED_PREFIX: Final = "accepted/"
#: v2 batch headers and their leaf lists, one sealed object per committed batch that has any
PROVENANCE_PREFIX: Final = "provenance/"
_CONTENT_ID: Final = re.compile(r"-([0-9a-f]{16})$")
#: below this magnitude a float has no positive exponent in its shortest form (``1e16`` has)
_PLAIN_FLOAT: Final = 1e16
_encode_json: Final = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class ImageSpec:
    """What the consumer accepts for ``image-sample/v1``: shape, value range, class set."""

    width: int
    height: int
    value_min: float
    value_max: float
    classes: frozenset[int]

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError("width and height must be >= 1")
        if not np.isfinite([self.value_min, self.value_max]).all():
            raise ValueError("value_min/value_max must be finite")
        if self.value_min > self.value_max:
            raise ValueError("value_min must be <= value_max")
        if not self.classes:
            raise ValueError("classes must not be empty")


@dataclass(frozen=True)
class TabularSpec:
    """What the consumer accepts for ``tabular-sample/v1`` (``None`` = no constraint)."""

    columns: frozenset[str] | None = None
    value_min: float | None = None
    value_max: float | None = None
    classes: frozenset[int] | None = None


#: built-in dataset specs (``--dataset``)
DATASET_SPECS: Final[dict[str, ImageSpec]] = {
    "digits": ImageSpec(8, 8, 0.0, 16.0, frozenset(range(10))),
    "mnist": ImageSpec(28, 28, 0.0, 1.0, frozenset(range(10))),
}


@dataclass
class IngestSummary:
    """Counts of one run; ``received == accepted + quarantined`` (duplicates are accepted)."""

    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    stored: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    seconds: float = 0.0
    signature_checks: int = 0
    producers: dict[str, Any] = field(default_factory=dict)
    recovered_batches: int = 0
    pending: int = 0
    #: batches a scale-out stream fenced (rewound, their messages handed back; not counted)
    fenced_batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form (the ``--json`` summary)."""
        return {
            "received": self.received,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "stored": self.stored,
            "reasons": dict(sorted(self.reasons.items())),
            "producers": self.producers,
            "batches": self.batches,
            "recovered_batches": self.recovered_batches,
            "fenced_batches": self.fenced_batches,
            "pending": self.pending,
            "signature_checks": self.signature_checks,
            "seconds": round(self.seconds, 3),
            "rec_per_s": round(self.received / self.seconds, 1) if self.seconds else None,
            "conserved": self.received == self.accepted + self.quarantined + self.pending,
        }


@dataclass(slots=True)
class _Candidate:
    i: int
    msg: StreamMessage
    rec: Any
    leaf: bytes
    pixels: bytes | None = None
    verdict: tuple[str, str] | None = None
    audit: tuple[AuditEntry, ...] = ()
    sanitized: Any = None
    #: every feature of this image record is below 1e16 in magnitude (see :func:`_stored_line`)
    plain: bool = False


@dataclass
class _Batch:
    stored: list[bytes] = field(default_factory=list)
    marks: list[list[Any]] = field(default_factory=list)
    headers: list[tuple[BatchHeader, list[bytes]]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)


def _pending_cost(c: _Candidate) -> int:
    """Estimated resident bytes of a waiting record: its line, the decoded record and, for an
    image, its canonical pixels (measured with ``tracemalloc``: an image record ≈ its line +
    5 x its pixel bytes + 1 KiB; a tabular record up to ≈ 17 x its line, text ≈ 3 x)."""
    n = len(c.msg.data)
    return n + 5 * len(c.pixels) + 1024 if c.pixels is not None else 18 * n


def _ms_clock() -> int:
    return time.time_ns() // 1_000_000


def _claimed(data: bytes) -> tuple[str | None, str | None]:
    """Best-effort (producer_id, record_id) of an invalid record, only if they match patterns."""
    try:
        doc = from_json(data)
    except ValueError:
        return None, None
    return _claimed_in(doc)


def _claimed_in(doc: Any) -> tuple[str | None, str | None]:
    if not isinstance(doc, dict):
        return None, None
    pid, rid = doc.get("producer_id"), doc.get("record_id")
    pid = pid if isinstance(pid, str) and _PRODUCER_RE.fullmatch(pid) else None
    rid = rid if isinstance(rid, str) and _RECORD_RE.fullmatch(rid) else None
    return pid, rid


def classify_validation_error(exc: ValidationError, data: bytes) -> tuple[str, str]:
    """Map a pydantic validation error to a reason code and a short detail."""
    if exc.error_count() > MAX_ERRORS:
        return "schema_invalid", f"{exc.error_count()} validation errors (not listed)"
    return classify_errors(
        exc.errors(include_url=False, include_input=False, include_context=False), data
    )


def classify_errors(errors: Sequence[Any], data: bytes) -> tuple[str, str]:
    """Reason code and detail of a list of pydantic error dicts (union tag stripped)."""
    types = {e["type"] for e in errors}

    def where(e: Any) -> tuple[Any, ...]:
        loc = tuple(e["loc"])
        return loc[1:] if loc and loc[0] in _TAGS else loc

    detail = "; ".join(
        f"{'.'.join(str(x) for x in where(e)) or '<record>'}: {e['msg']}" for e in errors[:3]
    )
    if len(errors) > 3:
        detail += f"; … ({len(errors)} errors)"
    if "json_invalid" in types:
        return "malformed_json", detail
    if "unknown_schema" in types:
        try:
            is_obj = isinstance(from_json(data), dict)
        except ValueError:
            is_obj = False
        return ("unknown_schema" if is_obj else "schema_invalid"), detail
    if "finite_number" in types:
        return "non_finite", detail
    if "string_pattern_mismatch" in types:
        return "bad_identifier", detail
    if any(e["type"] == "missing" and where(e) == ("sig",) for e in errors):
        return "missing_signature", detail
    if types & {"string_too_long", "too_long"}:
        return "oversized_field", detail
    return "schema_invalid", detail


def prescreen(data: bytes) -> tuple[str, str] | None:
    """Cheap structural screen of a large message before full validation (linear, no errors
    materialised): wrong-typed feature values, too many features or keys. ``None`` = go on."""
    try:
        doc = from_json(data)
    except ValueError:
        return None  # the validator reports the exact JSON error
    return prescreen_doc(doc)


def prescreen_doc(doc: Any) -> tuple[str, str] | None:
    """:func:`prescreen` of an already parsed message."""
    if not isinstance(doc, dict):
        return None
    for name in ("", "schema", "sig", "payload"):
        obj = doc if not name else doc.get(name)
        if isinstance(obj, dict) and len(obj) > 16:
            return "schema_invalid", f"{name or '<record>'}: {len(obj)} keys (pre-screen)"
    payload = doc.get("payload")
    feats = payload.get("features") if isinstance(payload, dict) else None
    values: Any = None
    if isinstance(feats, list):
        if len(feats) > IMAGE_MAX_SIDE**2:
            return "oversized_field", f"payload.features: {len(feats)} values (pre-screen)"
        values = feats
    elif isinstance(feats, dict):
        if len(feats) > TABULAR_MAX_FEATURES:
            return "oversized_field", f"payload.features: {len(feats)} columns (pre-screen)"
        values = feats.values()
    if values is not None:
        kinds = set(map(type, values)) - {float, int}  # C-level loop: ~1 ms per 50k values
        if kinds:
            names = ", ".join(sorted(k.__name__ for k in kinds))
            return "schema_invalid", f"payload.features: values of type {names} (pre-screen)"
    return None


class IngestEngine:
    """Consume a :class:`RecordStream`; write accepted and quarantined records to a store.

    Parameters
    ----------
    store:
        Where encrypted batch objects and quarantine entries land.
    encryptor:
        Envelope encryption (``saip_encryption``); context bound as AAD.
    registry:
        Producers' public keys.
    state_dir:
        The consumer's durable state (per-producer seq windows, batch counter, lock).
    image_spec, tabular_spec:
        What content is accepted (declared range, class set, shape).
    clock:
        Milliseconds since the epoch; injectable (freshness checks depend on it).
    max_line_bytes, max_age_ms, max_skew_ms:
        Limits (see :class:`~saip_ingestion.provenance.ReplayGuard`).
    seq_window:
        Per-producer dedupe/anti-replay window in sequence numbers
        (:class:`~saip_ingestion.window.SeqWindows`).
    health_window_ms:
        Window of the per-producer health view.
    snapshot_every:
        Batches between state snapshots (the journal is replayed on start).
    max_pending:
        How long (received messages) and how many records an incomplete v2 batch may wait
        before it is quarantined as ``incomplete_batch``.
    max_pending_bytes:
        How much memory the waiting records may hold together (estimated by
        :func:`_pending_cost`; oldest batch given up first). Pending records are chosen by
        whoever writes to the stream (they are not authenticated before their batch is
        complete), so a record count alone does not bound memory: a 131 KB image line holds
        ≈ 2.8 MB once decoded. It must hold the largest batch a producer splits across polls.
    fast_decode:
        Try the msgspec decoder generated from the schemas first
        (:mod:`saip_ingestion.fastdecode`); it only accepts, pydantic decides every rejection.
    """

    def __init__(
        self,
        *,
        store: ObjectStore,
        encryptor: Encryptor,
        registry: ProducerRegistry,
        state_dir: Path,
        image_spec: ImageSpec = DATASET_SPECS["digits"],
        tabular_spec: TabularSpec | None = None,
        clock: Callable[[], int] | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_age_ms: int = 24 * 3600 * 1000,
        max_skew_ms: int = 5 * 60 * 1000,
        seq_window: int = 65536,
        health_window_ms: int = 3_600_000,
        snapshot_every: int = 64,
        max_pending: int = 131072,
        max_pending_bytes: int = 256 * 1024 * 1024,
        fast_decode: bool = True,
    ) -> None:
        if not isinstance(encryptor, Encryptor):
            raise TypeError("encryptor must implement saip_ingestion.protocols.Encryptor")
        if not isinstance(image_spec, ImageSpec):
            raise TypeError("image_spec must be an ImageSpec")
        if not 1 <= max_line_bytes <= 64 * 1024 * 1024:
            raise ValueError("max_line_bytes must be in 1..64 MiB")
        if snapshot_every < 1:
            raise ValueError("snapshot_every must be >= 1")
        if not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError("max_pending must be an int >= 1")
        if not isinstance(max_pending_bytes, int) or max_pending_bytes < 1:
            raise ValueError("max_pending_bytes must be an int >= 1")
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        #: v2 batches not complete yet: group → (received count at first member, members)
        self._carry: dict[tuple[str, str, int, str], tuple[int, list[_Candidate]]] = {}
        self._unckpt: list[StreamMessage] = []
        self._unckpt_stream: RecordStream | None = None
        self._releasing = False
        #: an earlier batch failed between processing and commit (see :meth:`_durable`)
        self._failed = False
        #: reason of the quarantine entry being released (``release``), else ``None``
        self._release_reason: str | None = None
        self.store = store
        self.encryptor = encryptor
        self.registry = registry
        self.verifier = Verifier(registry)
        self.image_spec = image_spec
        self.tabular_spec = tabular_spec or TabularSpec()
        self.clock = clock or _ms_clock
        self.max_line_bytes = max_line_bytes
        # the pydantic-core validator itself: skips TypeAdapter's per-call Python wrapper
        self._validate_image: Callable[[bytes], Any] = getattr(
            IMAGE_RECORD_ADAPTER.validator, "validate_json", IMAGE_RECORD_ADAPTER.validate_json
        )
        self._fast: Callable[[Sequence[bytes]], list[Any]] | None = (
            decode_any_many if fast_decode else None
        )
        self.replay = ReplayGuard(clock=self.clock, max_age_ms=max_age_ms, max_skew_ms=max_skew_ms)
        self.windows = SeqWindows(window=seq_window)
        self.health = HealthTracker(window_ms=health_window_ms)
        self._health_path = Path(state_dir) / "health.json"
        self.quarantine = QuarantineStore(store, encryptor)
        self.snapshot_every = snapshot_every
        self.state = ConsumerState(Path(state_dir), windows=self.windows)
        self._load_health()
        self.summary = IngestSummary()
        self._received_at = self.clock()
        self._classes = np.array(sorted(image_spec.classes), dtype=np.int64)
        self._recover()

    # ------------------------------------------------------------------ lifecycle

    def _load_health(self) -> None:
        """Per-producer health persists across runs (``<state_dir>/health.json``)."""
        if not self._health_path.is_file():
            return
        try:
            self.health.restore(json.loads(self._health_path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise IngestError(f"producer health {self._health_path} is corrupt: {exc}") from None

    def _save_health(self) -> None:
        state = self.health.state(since_ms=self._prune_bound())
        atomic_write(self._health_path, json.dumps(state, separators=(",", ":")).encode())

    def close(self) -> None:
        """Snapshot the state (changed windows, producer health); release the lock.

        After a failed commit nothing is snapshotted: the journal is the state."""
        try:
            if not self._failed:
                self.state.snapshot()
                self._save_health()
        finally:
            self.state.close()

    def __enter__(self) -> IngestEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _prune_bound(self) -> int:
        return self.clock() - self.replay.max_age_ms - self.replay.max_skew_ms

    def _batch_prefix(self, batch: int) -> str:
        return f"{ACCEPTED_PREFIX}{self.state.consumer_id}/{batch:012d}-"

    def _batch_key(self, batch: int, lines: Sequence[bytes]) -> str:
        """``accepted/<consumer>/<batch:012d>-<content id>`` (first 16 hex of SHA-256 of the
        plaintext lines, :func:`~saip_ingestion.sealed.content_id`).

        Content-derived: re-writing the same batch after a crash is the same key (a no-op, or
        collapsed on read by a sink that cannot refuse duplicates, e.g. Firehose); a batch of
        other content can never collide with it.
        """
        return self._batch_prefix(batch) + content_id(lines)

    @staticmethod
    def _context(key: str) -> dict[str, str]:
        return {"saip:purpose": "ingest-accepted", "saip:object": key}

    def _recover(self) -> None:
        """Roll forward batch objects that were written before a crash but not journaled."""
        while True:
            batch = self.state.last_batch + 1
            keys = list(self.store.list(self._batch_prefix(batch)))
            if not keys:
                return
            key = keys[0]
            entries = [e for k in keys for e in read_batch(self.store, self.encryptor, k)]
            marks = [
                [e["producer_id"], e["seq"], e["leaf"][:16], rid_hash(e["record_id"]).hex(), "a"]
                for e in entries
            ]
            self.windows.apply(marks, batch=batch)
            self.state.commit({"batch": batch, "key": key, "marks": marks})
            self.summary.recovered_batches += 1
            _log.warning("recovered batch %s (%d records) written before a crash", key, len(marks))

    # ------------------------------------------------------------------ processing

    def run(
        self,
        stream: RecordStream,
        *,
        batch_size: int = 2000,
        max_records: int | None = None,
        poll_timeout: float = 1.0,
        idle_polls: int = 1,
        on_batch: Callable[[IngestSummary], None] | None = None,
    ) -> IngestSummary:
        """Process ``stream`` until ``idle_polls`` consecutive polls return nothing (then
        incomplete v2 batches are given up) or ``max_records`` are received (then they stay
        pending, their messages uncheckpointed, for the next run).

        Returns the cumulative :class:`IngestSummary` (with per-producer health).
        """
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if idle_polls < 1:
            raise ValueError("idle_polls must be >= 1")
        started = time.perf_counter()
        idle = 0
        went_idle = False
        while True:
            while max_records is None or self.summary.received < max_records:
                want = batch_size
                if max_records is not None:
                    want = min(want, max_records - self.summary.received)
                messages = stream.poll(max_messages=want, timeout=poll_timeout)
                if not messages:
                    idle += 1
                    if idle >= idle_polls:
                        went_idle = True
                        break
                    continue
                idle = 0
                before = replace(self.summary, reasons=Counter(self.summary.reasons))
                try:
                    self.process_and_commit(messages)
                except FencedBatchError as exc:
                    self._rewind(stream, messages, before, exc)
                    continue
                self._checkpoint(stream, messages)
                if on_batch is not None:
                    on_batch(self.summary)
            # the stream is idle: what is still incomplete will not complete here; a stop at
            # max_records leaves it pending and uncheckpointed (the rest may be in the stream)
            if not (self._carry and went_idle):
                break
            before = replace(self.summary, reasons=Counter(self.summary.reasons))
            try:
                self.flush_pending()
            except FencedBatchError as exc:  # its messages are back in the stream: poll on
                self._rewind(stream, [], before, exc)
                idle, went_idle = 0, False
                continue
            self._checkpoint(stream, [])
            break
        self.summary.seconds += time.perf_counter() - started
        return self.finish()

    def _checkpoint(self, stream: RecordStream, messages: Sequence[StreamMessage]) -> None:
        """Checkpoint every message before the first one of an incomplete v2 batch (those stay
        re-deliverable until their batch is decided: at-least-once, re-deliveries are
        duplicates); each message is checkpointed exactly once."""
        if stream is not self._unckpt_stream:  # held messages of another stream stay
            self._unckpt, self._unckpt_stream = [], stream  # re-deliverable there
        todo = self._unckpt + list(messages) if self._unckpt else list(messages)
        held = {id(m) for m in self.held_messages()}
        cut = next((k for k, m in enumerate(todo) if id(m) in held), len(todo))
        if cut:
            stream.checkpoint(todo[:cut])
        self._unckpt = todo[cut:]

    def _rewind(
        self,
        stream: RecordStream,
        messages: Sequence[StreamMessage],
        before: IngestSummary,
        exc: FencedBatchError,
    ) -> None:
        """A scale-out stream fenced this batch (nothing of it was published): hand every
        message not checkpointed yet back to the stream (this batch's and the undecided v2
        messages carried from earlier polls), then re-read the state from the journal — the
        seq windows this batch marked name records stored nowhere — and go on consuming.
        A stream that cannot take messages back stops the run as before (exit 1)."""
        reject = getattr(stream, "reject", None)
        if reject is None:
            raise exc
        redo = list(self._unckpt) if self._unckpt_stream is stream else []
        seen = {id(m) for m in redo}
        redo += [m for m in messages if id(m) not in seen]
        reject(redo)  # raises if the stream cannot: the engine stays failed (exit 1)
        _log.warning(
            "batch fenced (%s): nothing of it was stored; %d message(s) handed back to the "
            "stream, state re-read from the journal, consuming on",
            str(exc)[:300],
            len(redo),
        )
        self.state.close()
        self.windows = SeqWindows(window=self.windows.window)
        self.state = ConsumerState(self.state.directory, windows=self.windows)
        self._carry = {}
        self._unckpt, self._unckpt_stream = [], None
        before.received -= before.pending  # carried messages come back and are counted again
        before.pending = 0
        before.fenced_batches += 1
        self.summary = before
        self._failed = False
        self._recover()

    def held_messages(self) -> list[StreamMessage]:
        """Messages of incomplete v2 batches: processed but not decided, so not stored and not
        to be checkpointed yet (a scale-out stream must not let a successor skip them)."""
        return [c.msg for _, members in self._carry.values() for c in members]

    @contextmanager
    def _durable(self) -> Iterator[None]:
        """Processing marks the seq windows in memory before the commit writes the batch; if
        anything fails in between, those marks name records stored nowhere (a re-sent copy
        would be a "duplicate"). The engine then refuses to go on, and :meth:`close` does not
        snapshot them: a reopened engine re-reads the state from the journal. The producer
        health counts of a batch that did not commit are taken back (a fenced batch's messages
        are re-delivered and counted then)."""
        if self._failed:
            raise IngestError(
                "an earlier batch failed to commit: reopen the engine (its state is re-read "
                "from the journal; the batch's messages were not checkpointed)"
            )
        try:
            with self.health.batch():
                yield
        except BaseException:
            self._failed = True
            raise

    def flush_pending(self, *, now: int | None = None) -> list[tuple[str, str | None]]:
        """Quarantine every incomplete v2 batch (``incomplete_batch``) and commit."""
        received_at = self.clock() if now is None else now
        batch = _Batch()
        self._received_at = received_at
        with self._durable():
            for group in list(self._carry):
                self._give_up(batch, group, "the stream went idle")
            self._commit(batch, received_at)
        return batch.outcomes

    def finish(self) -> IngestSummary:
        """Fill in the derived parts of the summary."""
        self.summary.signature_checks = self.verifier.signature_checks
        self.summary.producers = self.health.summary()
        return self.summary

    def process_and_commit(
        self, messages: Sequence[StreamMessage], *, now: int | None = None
    ) -> list[tuple[str, str | None]]:
        """Process one batch and make it durable (everything but the stream checkpoint).

        Returns the outcome of each message: ``("accepted"|"duplicate"|"quarantined", reason)``.
        """
        received_at = self.clock() if now is None else now
        with self._durable(), gc_paused():
            batch = self._process(messages, received_at)
            self._commit(batch, received_at)
        return batch.outcomes

    def _quarantine(
        self,
        batch: _Batch,
        i: int,
        msg: StreamMessage,
        reason: str,
        detail: str,
        *,
        producer: str | None,
        record_id: str | None,
        authenticated: bool,
    ) -> None:
        raw = bytes(msg.data)
        entry: dict[str, Any] = {}
        if len(raw) > self.max_line_bytes:  # keep a bounded head, its size and its hash
            entry = {"raw_size": len(raw), "raw_sha256": hashlib.sha256(raw).hexdigest()}
            raw = raw[: self.max_line_bytes + 1]
        batch.quarantine.append(
            {
                **entry,
                "raw": raw,
                "reason": reason,
                "detail": detail,
                "producer_id": producer,
                "record_id": record_id,
                "partition": msg.partition,
                "position": msg.position,
            }
        )
        batch.outcomes[i] = ("quarantined", reason)
        self.summary.quarantined += 1
        self.summary.reasons[reason] += 1
        bucket = producer if authenticated and producer else "(unauthenticated)"
        # windowed by receipt time: a rejected record's own ts may be far outside the window
        self.health.observe(bucket, self._received_at, "quarantined", reason=reason)

    def _internal_error(
        self,
        batch: _Batch,
        i: int,
        msg: StreamMessage,
        exc: BaseException,
        *,
        producer: str | None = None,
        record_id: str | None = None,
        authenticated: bool = False,
    ) -> None:
        """No record can stop the consumer: an unexpected exception quarantines that record."""
        _log.warning("record at %s:%s raised %s; quarantined", msg.partition, msg.position,
                     type(exc).__name__)  # fmt: skip
        if batch.outcomes[i][0]:  # already decided before the failure
            return
        self._quarantine(
            batch, i, msg, "internal_error", f"{type(exc).__name__} while processing the record",
            producer=producer, record_id=record_id, authenticated=authenticated,
        )  # fmt: skip

    def _parse(
        self,
        batch: _Batch,
        i: int,
        msg: StreamMessage,
        pending: dict[tuple[str, str, int, str], list[_Candidate]],
        rec: Any,
    ) -> None:
        """``rec``: what the fast decoder accepted for this message (``None``: pydantic decides)."""
        data = msg.data
        max_line = self.max_line_bytes
        if len(data) > max_line:
            self._quarantine(
                batch, i, msg, "oversized", f"{len(data)}+ bytes > limit {max_line}",
                producer=None, record_id=None, authenticated=False,
            )  # fmt: skip
            return
        # the fast path only accepts (no unknown or repeated key); pydantic decides the rest
        if rec is None:
            rec, verdict, doc = self._validate(data)
            if rec is None or verdict is not None:
                pid, rid = _claimed_in(doc) if doc is not None else _claimed(data)
                reason, detail = verdict or ("internal_error", "no verdict")
                self._quarantine(
                    batch, i, msg, reason, detail, producer=pid, record_id=rid, authenticated=False
                )
                return
            dup = duplicate_key(data, rec)
            if dup is not None:
                self._quarantine(
                    batch, i, msg, "schema_invalid", f"duplicate key {dup[:40]!r} in one object",
                    producer=rec["producer_id"], record_id=rec["record_id"], authenticated=False,
                )  # fmt: skip
                return
        ref = rec["schema"]
        name = ref["name"]
        payload = rec["payload"]
        pixels = None
        if name == "image-sample":
            pixels, leaf = image_leaf(rec)
        else:
            leaf = leaf_hash(
                leaf_data(
                    record_id=rec["record_id"],
                    producer_id=rec["producer_id"],
                    seq=rec["seq"],
                    ts=rec["ts"],
                    schema_name=name,
                    schema_version=ref["version"],
                    payload=payload_bytes(name, payload),
                )
            )
        sig = rec["sig"]
        group = (rec["producer_id"], sig["key_id"], sig["tree_size"], sig["root_sig"])
        pending.setdefault(group, []).append(_Candidate(i, msg, rec, leaf, pixels))

    def _validate(self, data: bytes) -> tuple[AnyRecord | None, tuple[str, str] | None, Any]:
        """``(record, None, _)`` or ``(None, (reason, detail), parsed-or-None)``.

        Large messages are pre-screened first; image records are validated once (fast path),
        others by the tagged union.
        """
        if len(data) > _PRESCREEN_BYTES:
            try:
                doc = from_json(data)
            except ValueError:
                doc = None  # the validator reports the exact JSON error
            early = prescreen_doc(doc)
            if early is not None:
                return None, early, doc
        try:
            return self._validate_image(data), None, None
        except ValidationError as fast_exc:
            verdict = self._classify_fast(fast_exc, data)
        if verdict is None:  # not an image record: the tagged union decides
            try:
                return RECORD_ADAPTER.validate_json(data), None, None
            except ValidationError as exc:
                verdict = classify_validation_error(exc, data)
        return None, verdict, None

    @staticmethod
    def _classify_fast(exc: ValidationError, data: bytes) -> tuple[str, str] | None:
        """Reason from the image fast path's errors, or ``None`` when the record is not an image
        record (an error about ``schema``) and must be validated by the tagged union.

        Validating once instead of twice, and never materialising more than
        :data:`MAX_ERRORS` error objects (52k wrong-typed features cost ~360 ms to list).
        """
        count = exc.error_count()
        if count > MAX_ERRORS:
            return (
                "schema_invalid",
                f"{count} validation errors (more than {MAX_ERRORS}; not listed)",
            )
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        if any(e["loc"][:1] == ("schema",) for e in errors):
            return None
        return classify_errors(errors, data)

    def _give_up(self, batch: _Batch, group: tuple[str, str, int, str], why: str) -> None:
        _since, members = self._carry.pop(group)
        n = len({c.rec["sig"]["index"] for c in members})
        for c in members:
            c.i = len(batch.outcomes)
            batch.outcomes.append(("", None))
            self.summary.pending -= 1
            self._quarantine(
                batch, c.i, c.msg, "incomplete_batch",
                f"{n} of the {group[2]} records of its signed batch arrived ({why})",
                producer=group[0], record_id=c.rec["record_id"], authenticated=False,
            )  # fmt: skip

    @property
    def pending_bytes(self) -> int:
        """Estimated memory held by the records waiting in incomplete v2 batches."""
        return sum(_pending_cost(c) for _, members in self._carry.values() for c in members)

    def _bound_carry(self, batch: _Batch) -> None:
        """Incomplete v2 batches wait at most ``max_pending`` received messages, and hold at
        most ``max_pending`` records and ``max_pending_bytes`` together (oldest given up
        first)."""
        received = self.summary.received
        for group, (since, members) in list(self._carry.items()):
            if not members:
                del self._carry[group]
            elif received - since > self.max_pending:
                self._give_up(batch, group, f"not complete within {self.max_pending} messages")
        while self.summary.pending > self.max_pending and self._carry:
            self._give_up(batch, next(iter(self._carry)), "too many records pending")
        costs = {g: sum(map(_pending_cost, m)) for g, (_, m) in self._carry.items()}
        held = sum(costs.values())
        while held > self.max_pending_bytes and self._carry:
            group = next(iter(self._carry))
            held -= costs[group]
            self._give_up(
                batch, group, f"pending records hold more than {self.max_pending_bytes} B"
            )

    def _verify_v2(
        self,
        batch: _Batch,
        group: tuple[str, str, int, str],
        members: list[_Candidate],
        cands: list[_Candidate],
    ) -> bool:
        """A v2 batch (records with an index and no path, ``root_sig`` over a batch header):
        complete → the root is recomputed from all leaves and the header verified once;
        incomplete → carried to the next poll. ``False``: a single record whose v2 header does
        not verify (it may be a v1 record of a one-leaf tree)."""
        pid, key_id, n, _root_sig = group
        by_index: dict[int, _Candidate] = {}
        extras: list[_Candidate] = []  # the same record again (decided after the batch)
        rivals: list[_Candidate] = []  # another record claiming a taken index
        for c in members:
            idx = c.rec["sig"]["index"]
            if idx >= n:
                self._quarantine(
                    batch, c.i, c.msg, "bad_leaf_index",
                    f"leaf index {idx} outside the signed batch of {n}",
                    producer=pid, record_id=c.rec["record_id"], authenticated=False,
                )  # fmt: skip
                continue
            first = by_index.setdefault(idx, c)
            if first is not c:
                (extras if first.leaf == c.leaf else rivals).append(c)
        if len(by_index) < n and self._releasing:
            self._release_v2(batch, pid, [*by_index.values(), *extras, *rivals], cands)
            return True
        if len(by_index) < n:
            waiting = [*by_index.values(), *extras, *rivals]
            # a batch whose producer/key can never verify does not hold pending slots
            refused = self.verifier.key_problem(pid, key_id)
            if refused is not None:
                for c in waiting:
                    self._quarantine(
                        batch, c.i, c.msg, refused[0], refused[1], producer=pid,
                        record_id=c.rec["record_id"], authenticated=False,
                    )  # fmt: skip
                return True  # carried members of earlier polls are among ``waiting``
            since, carried = self._carry.get(group, (self.summary.received, []))
            self._carry[group] = (since, carried + waiting)
            for c in waiting:
                batch.outcomes[c.i] = ("pending", None)
            self.summary.pending += len(waiting)
            return True
        self._carry.pop(group, None)
        ordered = [by_index[j] for j in range(n)]
        err, header, leaves = self._check_v2(group, ordered)
        # forged records that arrived first at one or more indexes must not sink the genuine
        # batch: try the combinations of the records claiming each contested index (bounded:
        # _RIVAL_TRIES tries, at most one Ed25519 verification each; a seq that breaks the
        # range is refused before the signature, so it is tried away the same way)
        if err is not None and err[0] in ("bad_signature", "bad_batch") and rivals:
            options: dict[int, list[_Candidate]] = {}
            for r in rivals:
                idx = r.rec["sig"]["index"]
                options.setdefault(idx, [ordered[idx]]).append(r)
            idxs = sorted(options)
            combos = itertools.product(*(options[i] for i in idxs))
            for combo in itertools.islice(combos, 1, _RIVAL_TRIES + 1):  # 0: the first arrivals
                choice = dict(zip(idxs, combo, strict=True))
                trial = [choice.get(j, c) for j, c in enumerate(ordered)]
                t_err, t_header, t_leaves = self._check_v2(group, trial)
                if t_err is None:
                    kept = {id(c) for c in trial}
                    pool = [c for c in [*extras, *rivals, *ordered] if id(c) not in kept]
                    ordered, err, header, leaves = trial, None, t_header, t_leaves
                    # "the same record again" is judged against the verified record now: a
                    # copy of a displaced forged record is a rival, never a duplicate
                    same = [c.leaf == trial[c.rec["sig"]["index"]].leaf for c in pool]
                    extras = [c for c, ok in zip(pool, same, strict=True) if ok]
                    rivals = [c for c, ok in zip(pool, same, strict=True) if not ok]
                    break
        if err is not None and n == 1 and err[0] == "bad_signature":
            return False
        if err is not None:
            for c in [*ordered, *extras, *rivals]:
                self._quarantine(
                    batch, c.i, c.msg, err[0], err[1], producer=pid,
                    record_id=c.rec["record_id"], authenticated=False,
                )  # fmt: skip
            return True
        batch.headers.append((header, leaves))
        cands.extend(ordered)
        cands.extend(extras)
        for c in rivals:
            self._quarantine(
                batch, c.i, c.msg, "bad_signature",
                f"another record holds leaf {c.rec['sig']['index']} of the verified batch",
                producer=pid, record_id=c.rec["record_id"], authenticated=False,
            )  # fmt: skip
        return True

    def _check_v2(
        self, group: tuple[str, str, int, str], ordered: list[_Candidate]
    ) -> tuple[tuple[str, str] | None, BatchHeader, list[bytes]]:
        """Rebuild the v2 header from the records in leaf order and verify it."""
        pid, key_id, n, root_sig = group
        seq_first = ordered[0].rec["seq"]
        leaves = [c.leaf for c in ordered]
        header = BatchHeader(
            pid, key_id, seq_first, seq_first + n - 1, n, merkle_root(leaves), root_sig
        )
        for j, c in enumerate(ordered):
            if c.rec["seq"] != seq_first + j:
                return (("bad_batch", f"leaf {j} has seq {c.rec['seq']}, the batch starts at "
                         f"{seq_first}: seqs must be contiguous in leaf order"),
                        header, leaves)  # fmt: skip
        return self.verifier.verify_header(header), header, leaves

    def _release_v2(
        self, batch: _Batch, pid: str, members: list[_Candidate], cands: list[_Candidate]
    ) -> None:
        """Release of a v2 record (its batch is not here): only an entry quarantined for its
        content passed the header verification on first receipt (the consumer sealed those
        bytes); its ``seq`` slot must still hold its leaf prefix with that reason. The 8-byte
        prefix alone authenticates nothing (a forged record quarantined as ``incomplete_batch``
        with a colliding prefix would pass)."""
        for c in members:
            slot = self.windows.lookup(pid, c.rec["seq"])
            if (
                isinstance(slot, tuple)
                and slot[1] == c.leaf[:8]
                and slot[0] not in ("a", "legacy")
                and slot[0] == self._release_reason
            ):
                cands.append(c)
            else:
                self._quarantine(
                    batch, c.i, c.msg, "incomplete_batch",
                    "a record of a signed batch is released alone only while its seq is in the"
                    " window with its first receipt's content verdict",
                    producer=pid, record_id=c.rec["record_id"], authenticated=False,
                )  # fmt: skip

    def _verify_group(
        self,
        batch: _Batch,
        group: tuple[str, str, int, str],
        members: list[_Candidate],
        cands: list[_Candidate],
    ) -> None:
        pid, key_id, tree_size, root_sig = group
        v2 = [c for c in members if not c.rec["sig"]["path"]]
        if v2:
            try:
                done = self._verify_v2(batch, group, v2, cands)
            except Exception as exc:
                for c in v2:
                    self._internal_error(batch, c.i, c.msg, exc, producer=pid,
                                         record_id=c.rec["record_id"])  # fmt: skip
                done = True
            if done:
                members = [c for c in members if c.rec["sig"]["path"]]
                if not members:
                    return
        if tree_size > 1 and len(members) == tree_size:
            members.sort(key=lambda c: c.rec["sig"]["index"])
            try:
                whole = all(c.rec["sig"]["index"] == j for j, c in enumerate(members)) and (
                    self.verifier.verify_tree(
                        producer_id=pid,
                        key_id=key_id,
                        root_sig=root_sig,
                        leaves=[c.leaf for c in members],
                        paths=[c.rec["sig"]["path"] for c in members],
                    )
                )
            except Exception:
                whole = False
            if whole:
                cands.extend(members)
                return
        for c in members:
            try:
                sig = c.rec["sig"]
                err = self.verifier.verify(
                    producer_id=pid,
                    key_id=key_id,
                    tree_size=tree_size,
                    index=sig["index"],
                    path=sig["path"],
                    root_sig=root_sig,
                    leaf=c.leaf,
                )
            except Exception as exc:
                self._internal_error(batch, c.i, c.msg, exc, producer=pid,
                                     record_id=c.rec["record_id"])  # fmt: skip
                continue
            if err is None:
                cands.append(c)
            else:
                self._quarantine(
                    batch, c.i, c.msg, err[0], err[1], producer=pid,
                    record_id=c.rec["record_id"], authenticated=False,
                )  # fmt: skip

    def _process(
        self, messages: Sequence[StreamMessage], now: int, *, releasing: bool = False
    ) -> _Batch:
        batch = _Batch(outcomes=[("", None)] * len(messages))
        self._received_at = now
        cands: list[_Candidate] = []
        pending: dict[tuple[str, str, int, str], list[_Candidate]] = {}
        self.summary.received += len(messages)
        # phase 1: size, schema, duplicate keys, signing input (per record); the fast decoder
        # takes the whole batch (identifier patterns checked once per distinct value)
        max_line = self.max_line_bytes
        fast: list[Any] = [None] * len(messages)
        if self._fast is not None:
            try:
                fast = self._fast([m.data if len(m.data) <= max_line else b"" for m in messages])
            except Exception:  # the fast path only accepts: on any failure pydantic decides all
                fast = [None] * len(messages)
        for i, msg in enumerate(messages):
            try:
                self._parse(batch, i, msg, pending, fast[i])
            except Exception as exc:
                self._internal_error(batch, i, msg, exc)
        # carried (incomplete) v2 batches join this batch's members of the same batch
        self._releasing = releasing
        carried, self._carry = ({}, self._carry) if releasing else (self._carry, {})
        for group, (since, members) in carried.items():
            for c in members:
                c.i = len(batch.outcomes)
                batch.outcomes.append(("", None))
                self.summary.pending -= 1
            mine = pending.pop(group, [])
            pending[group] = members + mine
            self._carry[group] = (since, [])
        # phase 1b: provenance — whole Merkle batches at once, the rest record by record
        for group, members in pending.items():
            self._verify_group(batch, group, members, cands)
        if not releasing:
            self._bound_carry(batch)
        cands.sort(key=lambda c: c.i)  # decisions below are made in arrival order
        # phase 2: content checks (vectorised for images), sanitization (text)
        try:
            self._check_content(cands)
        except Exception:
            for c in cands:
                c.verdict = None
                try:
                    self._check_content([c])
                except Exception as exc:
                    c.verdict = ("internal_error", f"{type(exc).__name__} in the content checks")
        # phase 3: dedupe, freshness, anti-replay, decision (arrival order)
        self._decide_all(batch, cands, now, releasing=releasing)
        return batch

    def _decide_all(
        self, batch: _Batch, cands: list[_Candidate], now: int, *, releasing: bool
    ) -> None:
        """Phase 3 for every authenticated candidate, in arrival order."""
        accepted_counts: Counter[tuple[str, int, Any]] = Counter()
        # the common case inline (content passed, ts in the window, seq above the producer's
        # highest, record_id new): the same checks and state changes as ``_decide``, in one
        # window call per producer run (``_accept_runs``) or per record (``accept_new``);
        # anything else, or a release, is decided by ``_decide``
        ts_lo, ts_hi = now - self.replay.max_age_ms, now + self.replay.max_skew_ms
        accept_new = self.windows.accept_new
        window_ms = self.health.window_ms
        summary = self.summary
        marks, stored, outcomes = batch.marks, batch.stored, batch.outcomes
        taken = {} if releasing else self._accept_runs(cands, ts_lo, ts_hi)
        accepted = ("accepted", None)
        for c in cands:
            try:
                rec = c.rec
                ts = rec["ts"]
                pid = rec["producer_id"]
                run = taken.get(c.i)
                if run is not None:  # accepted with its producer's whole run
                    line, leaf8, rid8 = run
                elif c.verdict is None and not releasing and ts_lo <= ts <= ts_hi:
                    leaf = c.leaf
                    line = self._stored_line(c, leaf.hex())
                    rid8 = rid_hash(rec["record_id"])
                    leaf8 = leaf[:8]
                    if not accept_new(pid, rec["seq"], leaf8, rid8):
                        self._decide(batch, c, now, accepted_counts, releasing=releasing)
                        continue
                else:
                    self._decide(batch, c, now, accepted_counts, releasing=releasing)
                    continue
                marks.append([pid, rec["seq"], leaf8.hex(), rid8.hex(), "a"])
                stored.append(line)
                outcomes[c.i] = accepted
                summary.accepted += 1
                summary.stored += 1
                accepted_counts[
                    (pid, ts // window_ms * window_ms, rec["payload"].get("label"))
                ] += 1
            except Exception as exc:
                self._internal_error(batch, c.i, c.msg, exc, producer=c.rec["producer_id"],
                                     record_id=c.rec["record_id"], authenticated=True)  # fmt: skip
        self.health.observe_accepted(accepted_counts)

    def _accept_runs(
        self, cands: list[_Candidate], ts_lo: int, ts_hi: int
    ) -> dict[int, tuple[bytes, bytes, bytes]]:
        """The common case decided per producer: when every candidate of a producer in this
        batch passed its content checks and is fresh, and :meth:`SeqWindows.accept_run` takes
        the whole run (distinct seqs above the window in any arrival order, e.g. with a v2
        batch carried from the last poll; new record ids), all are accepted with one window
        call. Returns ``{candidate index: (stored line, leaf8, rid8)}``; producers with anything
        else (or any exception) are left to the per-record path, which then decides exactly as
        before (the run changed nothing)."""
        runs: dict[str, list[_Candidate]] = {}
        mixed: set[str] = set()
        for c in cands:
            rec = c.rec
            if c.verdict is None and ts_lo <= rec["ts"] <= ts_hi:
                runs.setdefault(rec["producer_id"], []).append(c)
            else:
                mixed.add(rec["producer_id"])
        taken: dict[int, tuple[bytes, bytes, bytes]] = {}
        stored_line = self._stored_line
        accept_run = self.windows.accept_run
        for pid, run in runs.items():
            if pid in mixed:
                continue
            try:
                items = [
                    (stored_line(c, c.leaf.hex()), c.leaf[:8], rid_hash(c.rec["record_id"]))
                    for c in run
                ]
                ok = accept_run(pid, [c.rec["seq"] for c in run], [x[1] for x in items],
                                [x[2] for x in items])  # fmt: skip
            except Exception:  # the per-record path decides (and names the failure)
                ok = False
            if ok:
                taken.update(zip([c.i for c in run], items, strict=True))
        return taken

    def _decide(
        self,
        batch: _Batch,
        c: _Candidate,
        now: int,
        accepted_counts: Counter[tuple[str, int, Any]],
        *,
        releasing: bool,
    ) -> None:
        rec = c.rec
        rid, pid, ts, seq = rec["record_id"], rec["producer_id"], rec["ts"], rec["seq"]
        leaf_hex = c.leaf.hex()
        leaf8 = c.leaf[:8]
        line = self._stored_line(c, leaf_hex) if c.verdict is None else b""
        windows = self.windows
        prev = windows.lookup(pid, seq)  # dedupe and anti-replay on the authenticated seq
        admitted = False
        if prev == BELOW:
            high = windows.highest(pid)
            self._quarantine(
                batch, c.i, c.msg, "seq_out_of_window",
                f"seq {seq} is below the window of {windows.window} (highest {high})",
                producer=pid, record_id=rid, authenticated=True,
            )  # fmt: skip
            return
        if isinstance(prev, tuple):
            outcome, prev_leaf = prev
            if prev_leaf != leaf8 or outcome == "legacy":
                self._quarantine(
                    batch, c.i, c.msg, "replay",
                    f"seq {seq} of {pid} was already used by another record"
                    + (" (before the state upgrade)" if outcome == "legacy" else ""),
                    producer=pid, record_id=rid, authenticated=True,
                )  # fmt: skip
                return
            if outcome == "a":
                batch.outcomes[c.i] = ("duplicate", None)
                self.summary.accepted += 1
                self.summary.duplicates += 1
                self.health.observe(pid, ts, "duplicate")
                return
            if not releasing:  # re-delivery of a record quarantined for its content
                self._quarantine(
                    batch, c.i, c.msg, outcome, f"re-delivered; {outcome} on first receipt",
                    producer=pid, record_id=rid, authenticated=True,
                )  # fmt: skip
                return
            # release of a record quarantined for its content: ts and seq were admitted on
            # first receipt; only the content checks (under the current spec) decide now
            admitted = True
        rid8 = rid_hash(rid)
        if not admitted:
            if windows.has_record_id(pid, rid8):  # the seq is new: another seq has this id
                self._quarantine(
                    batch, c.i, c.msg, "conflict",
                    f"record_id {rid} of {pid} is used by another seq in the window",
                    producer=pid, record_id=rid, authenticated=True,
                )  # fmt: skip
                return
            err = self.replay.check_ts(ts, now)
            if err is not None:
                self._quarantine(
                    batch, c.i, c.msg, err[0], err[1], producer=pid, record_id=rid,
                    authenticated=True,
                )  # fmt: skip
                return
        if c.verdict is not None:
            if not admitted:
                windows.mark(pid, seq, leaf8, rid8, c.verdict[0])
                batch.marks.append([pid, seq, leaf8.hex(), rid8.hex(), c.verdict[0]])
            self._quarantine(
                batch, c.i, c.msg, c.verdict[0], c.verdict[1], producer=pid, record_id=rid,
                authenticated=True,
            )  # fmt: skip
            return
        windows.mark(pid, seq, leaf8, rid8, "a")
        batch.marks.append([pid, seq, leaf8.hex(), rid8.hex(), "a"])
        batch.stored.append(line)
        batch.outcomes[c.i] = ("accepted", None)
        self.summary.accepted += 1
        self.summary.stored += 1
        label = rec["payload"].get("label")
        accepted_counts[(pid, ts // self.health.window_ms * self.health.window_ms, label)] += 1

    def _check_content(self, cands: list[_Candidate]) -> None:
        spec = self.image_spec
        images: list[_Candidate] = []
        for c in cands:
            payload = c.rec["payload"]
            name = c.rec["schema"]["name"]
            if name == "image-sample":
                w, h, label = payload["width"], payload["height"], payload["label"]
                if w != spec.width or h != spec.height:
                    c.verdict = (
                        "shape_mismatch",
                        f"{w}x{h}, declared {spec.width}x{spec.height}",
                    )
                elif label not in spec.classes:
                    c.verdict = ("label_invalid", f"label {label} not in the class set")
                else:
                    images.append(c)
            elif name == "text-sample":
                self._sanitize_text(c)
            else:
                c.verdict = self._check_tabular(payload)
        if images:
            x, ok, plain = image_value_checks([c.pixels for c in images], spec)
            for c, p in zip(images, plain, strict=True):
                c.plain = p
            for i in np.flatnonzero(~ok):
                row = x[i]
                bad = np.flatnonzero((row < spec.value_min) | (row > spec.value_max))
                j = int(bad[0])
                images[i].verdict = (
                    "out_of_range",
                    f"payload.features[{j}] = {float(row[j])!r} outside "
                    f"[{spec.value_min}, {spec.value_max}] ({bad.size} values)",
                )

    def _check_tabular(self, payload: TabularSampleV1) -> tuple[str, str] | None:
        spec = self.tabular_spec
        features = payload["features"]
        label = payload.get("label")
        if spec.columns is not None and set(features) != spec.columns:
            missing = sorted(spec.columns - set(features))
            extra = sorted(set(features) - spec.columns)
            return "schema_invalid", f"columns differ: missing {missing}, unexpected {extra}"
        for name, value in features.items():
            if (spec.value_min is not None and value < spec.value_min) or (
                spec.value_max is not None and value > spec.value_max
            ):
                return "out_of_range", f"payload.features.{name} = {value!r} outside the range"
        if spec.classes is not None and label is not None and label not in spec.classes:
            return "label_invalid", f"label {label} not in the class set"
        return None

    def _sanitize_text(self, c: _Candidate) -> None:
        payload = c.rec["payload"]
        ins = sanitize_text(
            payload["instruction"], field="payload.instruction", max_length=TEXT_INSTRUCTION_MAX
        )
        res = sanitize_text(
            payload["response"], field="payload.response", max_length=TEXT_RESPONSE_MAX
        )
        c.audit = ins.audit + res.audit
        c.verdict = ins.error or res.error
        if c.verdict is None and c.audit:
            c.sanitized = {**c.rec, "payload": {"instruction": ins.text, "response": res.text}}

    @staticmethod
    def _stored_line(c: _Candidate, leaf_hex: str) -> bytes:
        """One stored entry: the canonical re-serialisation, never the producer's raw bytes.

        An image record whose features are all below 1e16 in magnitude (``plain``, set by the
        vectorised content check) is encoded by msgspec in one call: for such a record the
        bytes are identical to pydantic-core's (same shortest round-trip float digits, same
        key order — the record's, which both decode paths put in schema order — and every
        string pattern-constrained to ASCII that JSON writes verbatim), at about half the
        cost; pydantic-core writes a positive exponent as ``1e+16`` where msgspec writes
        ``1e16``, so any other record takes :func:`canonical_json` (differential hypothesis
        test in ``tests/ingestion/test_ing_speed_paths.py``; hostile number spellings on both
        sides of the bound, end to end, in the same file).
        """
        rec = c.rec
        if c.plain and c.sanitized is None:
            return _encode_json(
                {
                    "record_id": rec["record_id"],
                    "producer_id": rec["producer_id"],
                    "seq": rec["seq"],
                    "ts": rec["ts"],
                    "leaf": leaf_hex,
                    "audit": [],
                    "record": rec,
                }
            )
        head = (
            f'{{"record_id":"{rec["record_id"]}","producer_id":"{rec["producer_id"]}",'
            f'"seq":{rec["seq"]},"ts":{rec["ts"]},"leaf":"{leaf_hex}","audit":'
        ).encode()
        if c.sanitized is None:
            return head + b'[],"record":' + canonical_json(rec) + b"}"
        audit = json.dumps([a.as_dict() for a in c.audit], ensure_ascii=False).encode()
        return (
            head + audit + b',"record":' + canonical_json(c.sanitized)
            + b',"original":' + canonical_json(rec) + b"}"
        )  # fmt: skip

    def _commit(self, batch: _Batch, received_at: int) -> None:
        number = self.state.last_batch + 1
        qkey = self.quarantine.put_batch(
            consumer=self.state.consumer_id,
            batch=number,
            entries=batch.quarantine,
            received_at=received_at,
        )
        if batch.headers:  # before the records: every stored v2 record stays verifiable
            lines = [header_line(h, leaves) for h, leaves in batch.headers]
            pkey = f"{PROVENANCE_PREFIX}{self.state.consumer_id}/{number:012d}-{content_id(lines)}"
            if not self.store.exists(pkey):  # content-derived: written before a crash = same
                blob = seal_lines(self.encryptor, provenance_context(pkey), lines)
                self.store.put(pkey, blob, metadata={"format": "saip.batch-headers.v2"})
        key = None
        if batch.stored:
            key = self._batch_key(number, batch.stored)
            blob = seal_lines(self.encryptor, self._context(key), batch.stored)
            self.store.put(
                key,
                blob,
                metadata={
                    "format": "saip.accepted.v3",
                    "records": str(len(batch.stored)),
                    "contentid": key.rsplit("-", 1)[1],
                },
            )
        publish = getattr(self.store, "commit_batch", None)
        if publish is not None:  # a staging store (backends.claims) publishes the batch here,
            publish()  # after its commit point and before the journal names it
        if key is not None or qkey is not None or batch.marks:
            self.state.commit({"batch": number, "key": key, "marks": batch.marks})
            self.summary.batches += 1
            if self.state.last_batch % self.snapshot_every == 0:
                self.state.snapshot()

    # ------------------------------------------------------------------ quarantine release

    def release(self, qid: str) -> tuple[str, str | None]:
        """Re-run every check on a quarantined record (freshness as of its receipt time).

        Nothing is bypassed: a record is released only if it now passes (e.g. its producer was
        registered since). Returns the new outcome; marks the entry released if accepted.
        """
        entry = self.quarantine.get(qid)
        if entry.released:
            raise IngestError(f"quarantine entry {qid} was already released")
        msg = StreamMessage(entry.raw, "quarantine-release", qid)
        received_at = entry.received_at
        self._release_reason = entry.reason
        try:
            with self._durable():
                batch = self._process([msg], received_at, releasing=True)
                self._commit(batch, received_at)
        finally:
            self._release_reason = None
        outcome = batch.outcomes[0]
        if outcome[0] in ("accepted", "duplicate"):
            self.quarantine.mark_released(qid, outcome=outcome[0], at=self.clock())
        return outcome


def image_value_checks(
    pixels: Sequence[bytes | None], spec: ImageSpec
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_], list[bool]]:
    """The vectorised content check of a batch of image records: their packed payloads
    (:func:`~saip_ingestion.provenance.image_leaf`, 12-byte head then the features as ``<f8``)
    as one NumPy matrix, whether each row is inside ``[value_min, value_max]``, and whether
    each row is below 1e16 in magnitude (the ``plain`` flag of :meth:`IngestEngine._stored_line`).
    """
    raw = b"".join(p[12:] for p in pixels if p is not None)
    x: npt.NDArray[np.float64] = np.frombuffer(raw, dtype="<f8").reshape(
        len(pixels), spec.width * spec.height
    )
    ok: npt.NDArray[np.bool_] = np.asarray(
        ((x >= spec.value_min) & (x <= spec.value_max)).all(axis=1)
    )
    small: npt.NDArray[np.bool_] = np.asarray((np.abs(x) < _PLAIN_FLOAT).all(axis=1))
    plain: list[bool] = small.tolist()
    return x, ok, plain


def provenance_context(key: str) -> dict[str, str]:
    """Encryption context of a provenance object (v2 batch headers and leaf lists)."""
    return {"saip:purpose": "ingest-provenance", "saip:object": key}


def header_line(header: BatchHeader, leaves: Sequence[bytes]) -> bytes:
    """One stored v2 batch: its header fields and its leaves (hex, index order)."""
    doc = {
        "format": "saip.batch-header.v2",
        "producer_id": header.producer_id,
        "key_id": header.key_id,
        "seq_first": header.seq_first,
        "seq_last": header.seq_last,
        "count": header.count,
        "root": header.root.hex(),
        "root_sig": header.root_sig,
        "leaves": [leaf.hex() for leaf in leaves],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused for one batch, restored afterwards (also on error).

    A batch allocates many short-lived containers that reference counting frees; with the
    collector on, every 700 allocations trigger a young-generation pass and, as the dedupe index
    grows, full passes over it. Paused per batch, cycles made during the batch are collected
    after it, so memory stays bounded by one batch. Measured: ≈ 1.4× records per CPU-second
    (ingestion README).
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def read_batch(store: ObjectStore, encryptor: Encryptor, key: str) -> list[dict[str, Any]]:
    """Decrypt one accepted batch object into its entries (one dict per record).

    Sealed batches (``saip.accepted.v3``, each line compressed; ``v2`` without) open with one
    ``open_many`` call and their content id
    is checked against the key; whole-object ciphertexts (``saip.accepted.v1``) stay readable.
    Raises :class:`IngestError` naming the records that do not open.
    """
    m = _CONTENT_ID.search(key)
    try:
        lines = open_lines(
            encryptor,
            IngestEngine._context(key),
            store.get(key),
            digest=m.group(1) if m else None,
        )
    except SealedBatchError as exc:
        raise IngestError(f"accepted batch {key}: {exc}") from None
    return [json.loads(line) for line in lines]


def iter_accepted(store: ObjectStore, encryptor: Encryptor) -> list[dict[str, Any]]:
    """Every accepted entry in the store (all consumers), in key order, each record once.

    A record is identified by its authenticated ``(producer_id, seq)`` (``record_id`` is unique
    only within the producer's ``seq`` window, see ``docs/ingestion-format.md``). A sink that
    cannot see its own buffered writes (Firehose) may hold a record in two batch objects after a
    crash and a restart with other batch boundaries: entries with the same ``(producer_id,
    seq)``, leaf and stored record collapse (first wins); the same ids with another leaf or
    another stored record raise :class:`IngestError` (the engine never writes that, so it means
    tampering — a copy edited under the same leaf is not silently dropped).
    """
    out: list[dict[str, Any]] = []
    seen: dict[tuple[str, int], tuple[str, str]] = {}
    for key in store.list(ACCEPTED_PREFIX):
        for entry in read_batch(store, encryptor, key):
            ident = (str(entry["producer_id"]), int(entry["seq"]))
            content = json.dumps(entry.get("record"), sort_keys=True, separators=(",", ":"))
            fingerprint = (str(entry["leaf"]), hashlib.sha256(content.encode()).hexdigest())
            prev = seen.get(ident)
            if prev is None:
                seen[ident] = fingerprint
                out.append(entry)
            elif prev != fingerprint:
                raise IngestError(
                    f"record seq {ident[1]} of {ident[0]} is stored with two contents"
                )
    return out


def export_npz(store: ObjectStore, encryptor: Encryptor, out: Path) -> dict[str, Any]:
    """Write accepted ``image-sample/v1`` records to ``out`` (npz: x, y, producer, record_id).

    Each stored record is re-validated with the schema after decryption. Raises
    :class:`IngestError` if there is nothing to export or the shapes differ.
    """
    xs: list[list[float]] = []
    ys: list[int] = []
    producers: list[str] = []
    ids: list[str] = []
    shapes: set[tuple[int, int]] = set()
    skipped = 0
    # iter_accepted yields each (producer, record id) once and refuses two contents under one
    for entry in iter_accepted(store, encryptor):
        # the same adapter, in the same (JSON) mode, as on ingestion
        rec = RECORD_ADAPTER.validate_json(json.dumps(entry["record"]))
        if rec["schema"]["name"] != "image-sample":
            skipped += 1
            continue
        payload = rec["payload"]
        shapes.add((payload["width"], payload["height"]))
        xs.append(payload["features"])
        ys.append(payload["label"])
        producers.append(rec["producer_id"])
        ids.append(rec["record_id"])
    if not xs:
        raise IngestError("no accepted image records to export")
    if len(shapes) != 1:
        raise IngestError(f"accepted images have different shapes {sorted(shapes)}")
    (width, height) = shapes.pop()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        x=np.asarray(xs, dtype=np.float32),
        y=np.asarray(ys, dtype=np.int64),
        producer=np.asarray(producers),
        record_id=np.asarray(ids),
        width=np.int64(width),
        height=np.int64(height),
    )
    return {"records": len(xs), "skipped_non_image": skipped, "width": width, "height": height}
