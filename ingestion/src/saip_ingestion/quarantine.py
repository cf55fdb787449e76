"""Quarantine (dead-letter) store: every rejected record, encrypted, with its reason.

Entry key ``quarantine/<reason>/<qid>`` where ``qid`` = first 16 bytes (hex) of
``SHA-256(reason || 0x00 || raw)``: re-delivering the same bad record writes the same key (a
no-op), so the store stays duplicate-free after crashes. The object is the
:class:`~saip_ingestion.protocols.Encryptor` ciphertext of a JSON document holding the raw bytes
as received (base64), the reason code and detail, the claimed producer and record id, the
receipt time and the stream position; the encryption context binds the key and purpose (AAD).
Releasing an entry writes ``quarantine-released/<qid>``; entries are never deleted (audit).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from saip_ingestion.backends.base import ObjectStore
from saip_ingestion.errors import QuarantineError
from saip_ingestion.protocols import Encryptor

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
    "conflict": "the record_id was already accepted with different content",
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
            "size": len(self.raw),
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
        """Store one rejected record (idempotent); return its qid."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason code {reason!r}")
        qid = quarantine_id(reason, raw)
        key = f"quarantine/{reason}/{qid}"
        if self.store.exists(key):
            return qid
        doc = {
            "format": "saip.quarantine.v1",
            "qid": qid,
            "reason": reason,
            "detail": detail,
            "producer_id": producer_id,
            "record_id": record_id,
            "received_at": received_at,
            "partition": partition,
            "position": position,
            "raw": base64.b64encode(raw).decode("ascii"),
        }
        blob = self.encryptor.encrypt(json.dumps(doc).encode(), context=self._context(key))
        self.store.put(key, blob, metadata={"reason": reason})
        return qid

    def keys(self, *, reason: str | None = None) -> Iterator[tuple[str, str, str]]:
        """``(qid, reason, key)`` of every entry (optionally one reason)."""
        prefix = f"quarantine/{reason}/" if reason else "quarantine/"
        for key in self.store.list(prefix):
            parts = key.split("/")
            if len(parts) == 3 and _QID.fullmatch(parts[2]):
                yield parts[2], parts[1], key

    def _find(self, qid: str) -> tuple[str, str]:
        if not _QID.fullmatch(qid):
            raise QuarantineError(f"invalid quarantine id {qid!r} (32 hex characters)")
        for found, reason, key in self.keys():
            if found == qid:
                return reason, key
        raise QuarantineError(f"no quarantine entry {qid}")

    def released(self, qid: str) -> bool:
        """Whether ``qid`` was released."""
        return self.store.exists(f"quarantine-released/{qid}")

    def get(self, qid: str) -> QuarantineEntry:
        """Decrypt one entry (``QuarantineError`` if unknown or unreadable)."""
        _reason, key = self._find(qid)
        return self._load(key)

    def _load(self, key: str) -> QuarantineEntry:
        try:
            plain = self.encryptor.decrypt(self.store.get(key), context=self._context(key))
            doc = json.loads(plain)
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
                released=self.released(doc["qid"]),
            )
        except QuarantineError:
            raise
        except Exception as exc:  # decryption/parse failures: one opaque error type
            raise QuarantineError(
                f"quarantine entry {key} cannot be read ({type(exc).__name__})"
            ) from None

    def entries(self, *, reason: str | None = None) -> Iterator[QuarantineEntry]:
        """Decrypt every entry (optionally one reason)."""
        for _qid, _reason, key in self.keys(reason=reason):
            yield self._load(key)

    def mark_released(self, qid: str, *, outcome: str, at: int) -> None:
        """Record that ``qid`` was released with ``outcome`` (idempotent)."""
        key = f"quarantine-released/{qid}"
        doc = json.dumps({"qid": qid, "outcome": outcome, "released_at": at}).encode()
        self.store.put(key, self.encryptor.encrypt(doc, context=self._context(key)))
