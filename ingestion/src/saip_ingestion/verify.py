"""Prove one stored record later: its leaf, its batch, its producer's signature.

A v1 record carries its RFC 6962 audit path (RFC 9162 §2.1.3.2 inclusion proof); a v2 record
carries only its leaf index, and the consumer stored its batch's header and leaf list in a
sealed ``provenance/<consumer>/<batch>-<content id>`` object when it accepted the batch. Either
way the check ends in one Ed25519 verification (RFC 8032) with the producer's registered key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from saip_ingestion.backends.base import ObjectStore
from saip_ingestion.engine import PROVENANCE_PREFIX, iter_accepted, provenance_context
from saip_ingestion.errors import ProvenanceError
from saip_ingestion.protocols import Encryptor
from saip_ingestion.provenance import (
    BatchHeader,
    ProducerRegistry,
    Verifier,
    leaf_hash,
    record_leaf_data,
)
from saip_ingestion.sealed import SealedBatchError, open_lines

__all__ = ["RecordProof", "verify_stored_record"]


@dataclass(frozen=True)
class RecordProof:
    """What was proven for one stored record."""

    producer_id: str
    seq: int
    record_id: str
    format: str  # "v1-inclusion-proof" | "v2-batch-header"
    key_id: str
    leaf: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dict(self.__dict__)


def _headers(store: ObjectStore, encryptor: Encryptor) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in store.list(PROVENANCE_PREFIX):
        digest = key.rsplit("-", 1)[-1]  # the content id: lines dropped or reordered are refused
        try:
            lines = open_lines(encryptor, provenance_context(key), store.get(key), digest=digest)
        except SealedBatchError as exc:
            raise ProvenanceError(f"provenance object {key}: {exc}") from None
        out.extend(json.loads(line) for line in lines)
    return out


def verify_stored_record(
    store: ObjectStore,
    encryptor: Encryptor,
    registry: ProducerRegistry,
    *,
    producer_id: str,
    seq: int,
) -> RecordProof:
    """Prove the stored record ``(producer_id, seq)``; raise :class:`ProvenanceError` naming
    the reason (``not_found``, ``bad_leaf``, ``no_header``, or a provenance reason code)."""
    entry = next(
        (e for e in iter_accepted(store, encryptor)
         if e["producer_id"] == producer_id and e["seq"] == seq),
        None,
    )  # fmt: skip
    if entry is None:
        raise ProvenanceError(f"not_found: no stored record seq {seq} of {producer_id!r}")
    signed = entry.get("original") or entry["record"]  # sanitized records keep the signed one
    leaf = leaf_hash(record_leaf_data(signed))
    if leaf.hex() != entry["leaf"]:
        raise ProvenanceError("bad_leaf: the stored record does not hash to its stored leaf")
    sig = signed["sig"]
    verifier = Verifier(registry)
    if sig["path"] or sig["tree_size"] == 1:
        err = verifier.verify(
            producer_id=producer_id, key_id=sig["key_id"], tree_size=sig["tree_size"],
            index=sig["index"], path=sig["path"], root_sig=sig["root_sig"], leaf=leaf,
        )  # fmt: skip
        if err is None:
            return RecordProof(producer_id, seq, signed["record_id"], "v1-inclusion-proof",
                               sig["key_id"], leaf.hex())  # fmt: skip
        if sig["path"]:
            raise ProvenanceError(f"{err[0]}: {err[1]}")
    for doc in _headers(store, encryptor):
        if (doc["producer_id"], doc["key_id"], doc["root_sig"]) != (
            producer_id, sig["key_id"], sig["root_sig"],
        ) or not doc["seq_first"] <= seq <= doc["seq_last"]:  # fmt: skip
            continue
        leaves = [bytes.fromhex(h) for h in doc["leaves"]]
        j = seq - doc["seq_first"]
        if j != sig["index"] or j >= len(leaves) or leaves[j] != leaf:
            raise ProvenanceError(f"bad_leaf: leaf {sig['index']} of the stored batch differs")
        header = BatchHeader(producer_id, doc["key_id"], doc["seq_first"], doc["seq_last"],
                             doc["count"], bytes.fromhex(doc["root"]), doc["root_sig"])  # fmt: skip
        err = verifier.verify_header(header, leaves)
        if err is not None:
            raise ProvenanceError(f"{err[0]}: {err[1]}")
        return RecordProof(producer_id, seq, signed["record_id"], "v2-batch-header",
                           sig["key_id"], leaf.hex())  # fmt: skip
    raise ProvenanceError(f"no_header: no stored batch header holds seq {seq} of {producer_id!r}")
