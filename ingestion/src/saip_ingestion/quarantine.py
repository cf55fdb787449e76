"""Quarantine (dead-letter) store: every rejected record, encrypted, with its reason.

Entries are written **per batch**: one object ``quarantine-batches/<consumer>/<batch:012d>-<d>``
(``d`` = first 16 hex of SHA-256 of the plaintext, so a re-write of the same content is the same
key) holding JSON lines, one per entry. Each entry is addressable by its ``qid`` = first 16
bytes (hex) of ``SHA-256(reason || 0x00 || raw)``: re-delivering the same bad record yields the
same qid, and readers collapse entries with the same qid (first wins), so the store stays
duplicate-free after crashes and re-deliveries. An entry holds the raw bytes as received
(base64; an oversized message is kept as its first ``limit + 1`` bytes plus its full length and
SHA-256), the reason code and detail, the claimed producer and record id, the receipt time and
the stream position. Each entry is sealed with one ``seal_many`` call per batch of the
:class:`~saip_ingestion.protocols.Encryptor`'s batch API (:mod:`saip_ingestion.sealed`; format
``saip.quarantine.v3``); the encryption context binds the key and purpose (AAD); reads use
``open_many`` with a per-entry fallback that names the entries that do not open. Batch objects
of the previous format (one ciphertext of the whole object, ``saip.quarantine.v2``) and
entries of the first format (one object ``quarantine/<reason>/<qid>`` each,
:meth:`QuarantineStore.put`) are still read. Releasing an entry writes
``quarantine-released/<qid>``; entries are never deleted (audit).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from saip_ingestion.backends.base import ObjectStore
from saip_ingestion.errors import QuarantineError
from saip_ingestion.protocols import Encryptor
from saip_ingestion.sealed import SealedBatchError, content_id, open_lines, seal_lines

__all__ = ["REASONS", "QuarantineEntry", "QuarantineStore", "terminal_safe"]

#: reason codes and what they mean (also in docs/ingestion-format.md)
REASONS: Final[dict[str, str]] = {
    "oversized": "the serialized record is longer than the line limit",
    "malformed_json": "not parseable as one JSON object",
    "schema_invalid": "missing, extra or wrongly typed fields, or a shape mismatch",
    "unknown_schema": "schema name/version absent or not supported",
    "bad_identifier": "record_id, producer_id or a field name does not match its pattern",
    "non_finite": "a numeric value is NaN or infinite",
    "oversized_field": "a field is longer than its limit (before or after sanitization)",
    "missing_signature": "no provenance signature",
    "unknown_producer": "the producer has no registered public key",
    "unknown_key": "the signing key is not registered for the producer",
    "revoked_key": "the signing key is revoked",
    "bad_signature": "the inclusion proof or Ed25519 signature does not verify",
    "bad_batch": "a v2 batch's seqs do not follow its signed header's range, or the header's "
    "range does not hold its count",
    "bad_leaf_index": "the record's leaf index lies outside its signed batch",
    "incomplete_batch": "not every record of its signed v2 batch arrived in time",
    "conflict": "the record_id is used by another seq in the producer's window",
    "ts_out_of_window": "ts is too old or too far in the future",
    "replay": "the producer's seq was already used by another record",
    "seq_out_of_window": "seq is below the producer's anti-replay window",
    "out_of_range": "a feature value lies outside the declared range (never clamped)",
    "label_invalid": "the label is not in the declared class set",
    "shape_mismatch": "width/height differ from the declared image shape",
    "unsanitizable": "a text field is empty or unstable after sanitization",
    "confusable_text": "a text field mixes Latin with letters of another script in one word",
    "internal_error": "processing the record raised an unexpected error (type in the detail)",
}

_QID: Final = re.compile(r"[0-9a-f]{32}")
BATCH_PREFIX: Final = "quarantine-batches/"
LEGACY_PREFIX: Final = "quarantine/"
#: categories escaped for display: controls (C0, DEL, C1), format (bidi overrides, zero-width,
#: tags), separators that break lines, surrogates and private use
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def terminal_safe(text: str) -> str:
    """``text`` with every control, format, line-separator, surrogate, private-use or unassigned
    character written as a JSON-style ``\\uXXXX`` escape (astral ones as a surrogate pair).

    Untrusted strings (raw records, claimed ids, details) pass through this before reaching a
    terminal or a log: a U+202E RIGHT-TO-LEFT OVERRIDE or a C1 CSI (U+009B) is shown as
    ``\\u202e`` / ``\\u009b``, never interpreted. Inside a JSON string the result is still valid
    JSON for the same value.
    """
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(json.dumps(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True)
class QuarantineEntry:
    """One quarantined record (decrypted)."""

    qid: str
    key: str
    reason: str
    detail: str
    raw: bytes
    producer_id: str | None
    record_id: str | None
    received_at: int
    partition: str
    position: str
    released: bool = False
    #: length of the message as received (``raw`` holds only a head of an oversized message)
    raw_size: int = 0

    def summary(self) -> dict[str, Any]:
        """JSON-able view without the raw bytes."""
        return {
            "qid": self.qid,
            "reason": self.reason,
            "detail": self.detail,
            "producer_id": self.producer_id,
            "record_id": self.record_id,
            "received_at": self.received_at,
            "partition": self.partition,
            "position": self.position,
            "size": self.raw_size or len(self.raw),
            "released": self.released,
        }


def quarantine_id(reason: str, raw: bytes) -> str:
    """Content-derived quarantine id."""
    return hashlib.sha256(reason.encode() + b"\x00" + raw).hexdigest()[:32]


class QuarantineStore:
    """Encrypted dead-letter entries in an :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore, encryptor: Encryptor) -> None:
        if not isinstance(encryptor, Encryptor):
            raise TypeError("encryptor must implement saip_ingestion.protocols.Encryptor")
        self.store = store
        self.encryptor = encryptor

    @staticmethod
    def _context(key: str) -> dict[str, str]:
        return {"saip:purpose": "ingest-quarantine", "saip:object": key}

    def put(
        self,
        *,
        raw: bytes,
        reason: str,
        detail: str,
        producer_id: str | None,
        record_id: str | None,
        received_at: int,
        partition: str,
        position: str,
    ) -> str:
        """Store one rejected record as its own object (first format; idempotent); return its qid.

        The engine writes :meth:`put_batch` objects; this stays for single entries and tests.
        """
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        qid = quarantine_id(reason, raw)
        key = f"{LEGACY_PREFIX}{reason}/{qid}"
        if self.store.exists(key):
            return qid
        entry = {"raw": raw, "reason": reason, "detail": detail, "producer_id": producer_id,
                 "record_id": record_id, "partition": partition, "position": position}  # fmt: skip
        doc = self._doc(qid, received_at, entry)
        blob = self.encryptor.encrypt(json.dumps(doc).encode(), context=self._context(key))
        self.store.put(key, blob, metadata={"reason": reason})
        return qid

    def put_batch(
        self, *, consumer: str, batch: int, entries: list[dict[str, Any]], received_at: int
    ) -> str | None:
        """Store one batch's rejected records as ONE encrypted object; return its key.

        ``entries`` hold the keyword arguments of :meth:`put` (``received_at`` excepted).
        Idempotent: the key is derived from the content; an existing key is not rewritten.
        """
        docs: dict[str, dict[str, Any]] = {}
        for q in entries:
            if q["reason"] not in REASONS:
                raise ValueError(f"unknown reason code {q['reason']!r}")
            qid = quarantine_id(q["reason"], q["raw"])
            if qid not in docs:
                docs[qid] = self._doc(qid, received_at, q)
        if not docs:
            return None
        lines = [json.dumps(d).encode() for d in docs.values()]
        digest = content_id(lines)
        key = f"{BATCH_PREFIX}{consumer}/{batch:012d}-{digest}"
        if self.store.exists(key):
            return key
        blob = seal_lines(self.encryptor, self._context(key), lines)
        meta = {"format": "saip.quarantine.v3", "entries": str(len(docs)), "contentid": digest}
        self.store.put(key, blob, metadata=meta)
        return key

    @staticmethod
    def _doc(qid: str, received_at: int, entry: Mapping[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "format": "saip.quarantine.v1",
            "qid": qid,
            **{k: entry[k] for k in ("reason", "detail", "producer_id", "record_id")},
            "received_at": received_at,
            "partition": entry["partition"],
            "position": entry["position"],
            "raw": base64.b64encode(entry["raw"]).decode("ascii"),
        }
        if entry.get("raw_size") is not None:
            doc["raw_size"] = entry["raw_size"]
            doc["raw_sha256"] = entry["raw_sha256"]
        return doc

    def _objects(self) -> Iterator[str]:
        yield from self.store.list(LEGACY_PREFIX)
        yield from self.store.list(BATCH_PREFIX)

    def entries(self, *, reason: str | None = None) -> Iterator[QuarantineEntry]:
        """Decrypt every entry (optionally one reason), each qid once."""
        seen: set[str] = set()
        released = {k.rsplit("/", 1)[-1] for k in self.store.list("quarantine-released/")}
        for key in self._objects():
            if key.startswith(LEGACY_PREFIX):
                parts = key.split("/")
                if len(parts) != 3 or not _QID.fullmatch(parts[2]):
                    continue
                if (reason is not None and parts[1] != reason) or parts[2] in seen:
                    continue
            for doc in self._decrypt(key):
                e = self._entry(key, doc, released=released)
                if e.qid in seen or (reason is not None and e.reason != reason):
                    continue
                seen.add(e.qid)
                yield e

    def keys(self, *, reason: str | None = None) -> Iterator[tuple[str, str, str]]:
        """``(qid, reason, object key)`` of every entry (optionally one reason), each qid once."""
        for e in self.entries(reason=reason):
            yield e.qid, e.reason, e.key

    def released(self, qid: str) -> bool:
        """Whether ``qid`` was released."""
        return self.store.exists(f"quarantine-released/{qid}")

    def get(self, qid: str) -> QuarantineEntry:
        """Decrypt one entry (``QuarantineError`` if unknown or unreadable)."""
        if not _QID.fullmatch(qid):
            raise QuarantineError(f"invalid quarantine id {qid!r} (32 hex characters)")
        for e in self.entries():
            if e.qid == qid:
                return e
        raise QuarantineError(f"no quarantine entry {qid}")

    def _decrypt(self, key: str) -> list[dict[str, Any]]:
        try:
            digest = key.rsplit("-", 1)[1] if key.startswith(BATCH_PREFIX) else None
            lines = open_lines(self.encryptor, self._context(key), self.store.get(key),
                               digest=digest)  # fmt: skip
            return [json.loads(line) for line in lines]
        except Exception as exc:  # decryption/parse failures: one opaque error type
            raise QuarantineError(
                f"quarantine object {key} cannot be read ({type(exc).__name__}: "
                f"{exc if isinstance(exc, SealedBatchError) else 'opaque'})"
            ) from None

    @staticmethod
    def _entry(key: str, doc: dict[str, Any], *, released: set[str]) -> QuarantineEntry:
        try:
            return QuarantineEntry(
                qid=doc["qid"],
                key=key,
                reason=doc["reason"],
                detail=doc["detail"],
                raw=base64.b64decode(doc["raw"]),
                producer_id=doc["producer_id"],
                record_id=doc["record_id"],
                received_at=int(doc["received_at"]),
                partition=doc["partition"],
                position=doc["position"],
                raw_size=int(doc.get("raw_size", len(base64.b64decode(doc["raw"])))),
                released=doc["qid"] in released,
            )
        except Exception as exc:
            raise QuarantineError(
                f"quarantine object {key} cannot be read ({type(exc).__name__})"
            ) from None

    def mark_released(self, qid: str, *, outcome: str, at: int) -> None:
        """Record that ``qid`` was released with ``outcome`` (idempotent)."""
        key = f"quarantine-released/{qid}"
        doc = json.dumps({"qid": qid, "outcome": outcome, "released_at": at}).encode()
        self.store.put(key, self.encryptor.encrypt(doc, context=self._context(key)))
