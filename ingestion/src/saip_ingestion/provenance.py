"""Record provenance: Ed25519 signatures over Merkle batches with per-record inclusion proofs.

A producer signs a batch of ``n`` records once:

1. Each record's *signing input* :func:`leaf_data` is a transport-independent binary encoding of
   every field except ``sig`` (so the signature survives JSON and Avro transport alike).
2. Leaf hashes and the Merkle Tree Hash follow RFC 6962 §2.1 (= RFC 9162 §2.1.1):
   ``leaf = SHA-256(0x00 || leaf_data)``, ``node = SHA-256(0x01 || left || right)``, split at the
   largest power of two below ``n``.
3. The producer signs ``b"saip.batch.v1\\x00" || u16 len || producer_id || u64 n || root`` with
   Ed25519 (RFC 8032, pyca/cryptography).
4. Every record carries ``sig = {alg, key_id, tree_size, index, path, root_sig}``: its RFC 6962
   audit path, so **each record stays verifiable on its own** (RFC 9162 §2.1.3.2 inclusion-proof
   verification recomputes the root, then the root signature is checked).

Format v2 (:meth:`Signer.sign_header`, :meth:`Verifier.verify_header`): the producer signs one
**batch header** ``"saip.batch.v2\\0" || str16 producer_id || u64 seq_first || u64 seq_last ||
u64 count || root`` (domain-separated from v1 roots and from RFC 6962 leaves/nodes); records
carry ``index`` and an empty ``path``, their ``seq`` is ``seq_first + index``; the consumer
recomputes the root from all ``count`` leaves (``n − 1`` hashes) and keeps the leaf list, so
each stored record stays provable later (:mod:`saip_ingestion.verify`).

The consumer holds only public keys (:class:`ProducerRegistry`). Verifying costs one Ed25519
verification per *batch* (results are cached by ``(producer, key_id, tree_size, root, root_sig)``)
plus ``log2(n)`` SHA-256 per record, instead of one Ed25519 verification (~50–70 µs) per record.

Freshness (:class:`ReplayGuard`) bounds ``ts`` to a window around the injectable clock; ``seq``
anti-replay and dedupe are per-producer sliding windows (:mod:`saip_ingestion.window`, the IPsec
scheme of RFC 4303 §3.4.3): a sequence number already used, or below the window, is refused.

Notes
-----
The producer's private key never needs to be on the consumer; this module's :class:`Signer` is
the reference producer's side. Revocation is by removing or marking a key revoked in the
registry; records signed before revocation are then refused too (no signing-time proof exists).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from saip_ingestion.errors import ProvenanceError
from saip_ingestion.schemas import (
    PRODUCER_ID_PATTERN,
    ImageSampleV1,
    TabularSampleV1,
    TextSampleV1,
)

__all__ = [
    "ALG",
    "BatchHeader",
    "ProducerRegistry",
    "ReplayGuard",
    "Signer",
    "Verifier",
    "header_message",
    "image_leaf",
    "inclusion_root",
    "key_id_of",
    "leaf_data",
    "leaf_hash",
    "merkle_proofs",
    "merkle_root",
    "record_leaf_data",
]

ALG: Final = "ed25519-merkle-sha256"
_LEAF_PREFIX: Final = b"saip.record.v1\x00"
_ROOT_PREFIX: Final = b"saip.batch.v1\x00"
_HEADER_PREFIX: Final = b"saip.batch.v2\x00"
_pack_range: Final = struct.Struct("<QQQ").pack
_sha256 = hashlib.sha256
_pack_u16 = struct.Struct("<H").pack
_pack_hdr = struct.Struct("<QQH").pack
_B64: Final = base64.b64decode
_a2b: Final = binascii.a2b_base64


def _str16(value: str) -> bytes:
    raw = value.encode("utf-8")
    return _pack_u16(len(raw)) + raw


def _str32(value: str) -> bytes:
    raw = value.encode("utf-8")
    return struct.pack("<I", len(raw)) + raw


#: ``struct`` packers of whole image payloads by feature count (a bounded cache)
_IMAGE_PACKERS: dict[int, Any] = {}


def _image_packer(n: int) -> Any:
    """The packer of an ``image-sample/v1`` payload with ``n`` features: u32 width, height,
    label, f64[n], little-endian."""
    pack = _IMAGE_PACKERS.get(n)
    if pack is None:
        pack = struct.Struct(f"<III{n}d").pack
        if len(_IMAGE_PACKERS) < 64:
            _IMAGE_PACKERS[n] = pack
    return pack


def image_payload_bytes(payload: ImageSampleV1) -> bytes:
    """Canonical bytes of an ``image-sample/v1`` payload: u32 width, height, label, f64[] LE."""
    features = payload["features"]
    out: bytes = _image_packer(len(features))(
        payload["width"], payload["height"], payload["label"], *features
    )
    return out


_IMAGE_NAME: Final = _str16("image-sample")
_LEAF_HEAD: Final = b"\x00" + _LEAF_PREFIX  # RFC 6962 leaf prefix + the signing input's


def image_leaf(record: Any) -> tuple[bytes, bytes]:
    """``(image_payload_bytes(payload), leaf_hash(record_leaf_data(record)))`` of a validated
    ``image-sample/v1`` record in one pass: the payload packed by one cached ``struct`` call,
    the signing input hashed without being copied behind the RFC 6962 ``0x00`` (the same bytes
    as the reference functions: differential test ``tests/ingestion/test_ing_speed_batch.py``).
    """
    payload = record["payload"]
    features = payload["features"]
    pack = _image_packer(len(features))
    pixels: bytes = pack(payload["width"], payload["height"], payload["label"], *features)
    rid = record["record_id"].encode()
    pid = record["producer_id"].encode()
    head = _pack_hdr(record["seq"], record["ts"], record["schema"]["version"])
    data = b"".join(
        (_LEAF_HEAD, _pack_u16(len(rid)), rid, _pack_u16(len(pid)), pid, head, _IMAGE_NAME, pixels)
    )
    return pixels, _sha256(data).digest()


def tabular_payload_bytes(payload: TabularSampleV1) -> bytes:
    """Canonical bytes of ``tabular-sample/v1``: u32 n, (str16 name, f64) sorted by name, label."""
    features = payload["features"]
    parts = [struct.pack("<I", len(features))]
    for name in sorted(features):
        parts.append(_str16(name) + struct.pack("<d", features[name]))
    label = payload.get("label")
    parts.append(b"\x00" if label is None else b"\x01" + struct.pack("<I", label))
    return b"".join(parts)


def text_payload_bytes(payload: TextSampleV1) -> bytes:
    """Canonical bytes of ``text-sample/v1``: str32 instruction, str32 response."""
    return _str32(payload["instruction"]) + _str32(payload["response"])


def payload_bytes(schema_name: str, payload: Any) -> bytes:
    """Canonical bytes of a validated payload (see ``docs/ingestion-format.md``)."""
    if schema_name == "image-sample":
        return image_payload_bytes(payload)
    if schema_name == "tabular-sample":
        return tabular_payload_bytes(payload)
    if schema_name == "text-sample":
        return text_payload_bytes(payload)
    raise ValueError(f"unknown schema {schema_name!r}")


def record_leaf_data(record: Any) -> bytes:
    """Signing input of a validated record dict (``sig`` ignored)."""
    ref = record["schema"]
    return leaf_data(
        record_id=record["record_id"],
        producer_id=record["producer_id"],
        seq=record["seq"],
        ts=record["ts"],
        schema_name=ref["name"],
        schema_version=ref["version"],
        payload=payload_bytes(ref["name"], record["payload"]),
    )


def leaf_data(
    *,
    record_id: str,
    producer_id: str,
    seq: int,
    ts: int,
    schema_name: str,
    schema_version: int,
    payload: bytes,
) -> bytes:
    """The signing input of one record (every field except ``sig``), transport independent.

    Layout: ``"saip.record.v1\\0" || str16 record_id || str16 producer_id || u64 seq || u64 ts ||
    u16 schema_version || str16 schema_name || payload`` (little-endian; ``str16`` is a u16
    byte length followed by UTF-8).
    """
    rid = record_id.encode()
    pid = producer_id.encode()
    name = schema_name.encode()
    return b"".join(
        (
            _LEAF_PREFIX,
            _pack_u16(len(rid)),
            rid,
            _pack_u16(len(pid)),
            pid,
            _pack_hdr(seq, ts, schema_version),
            _pack_u16(len(name)),
            name,
            payload,
        )
    )


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash ``SHA-256(0x00 || data)``."""
    return _sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    k = 1
    while k << 1 < n:
        k <<= 1
    return k


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of already-hashed leaves (``n >= 1``).

    Computed level by level: hash adjacent pairs, carry an odd last node up unchanged. This is
    the same tree as RFC 6962 §2.1's recursive split at the largest power of two below ``n``
    (the left subtree is always perfect, so its pairs line up; only the rightmost node of a level
    can lack a sibling), with ``n − 1`` hashes and no recursion (``merkle_root_recursive`` is
    the definition, kept for the differential test).
    """
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    level = list(leaves)
    sha = _sha256
    while len(level) > 1:
        odd = level[-1] if len(level) & 1 else None
        it = iter(level)
        level = [sha(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=False)]
        if odd is not None:
            level.append(odd)
    return level[0]


def merkle_root_recursive(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 Merkle Tree Hash, as defined (recursive split); see :func:`merkle_root`."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(merkle_root_recursive(leaves[:k]), merkle_root_recursive(leaves[k:]))


def merkle_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """Root and the RFC 6962 §2.1.1 audit path of every leaf (``O(n log n)``)."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    if len(leaves) == 1:
        return leaves[0], [[]]
    k = _split(len(leaves))
    left_root, left_paths = merkle_proofs(leaves[:k])
    right_root, right_paths = merkle_proofs(leaves[k:])
    paths = [[*p, right_root] for p in left_paths] + [[*p, left_root] for p in right_paths]
    return _node(left_root, right_root), paths


def inclusion_root(index: int, tree_size: int, leaf: bytes, path: Sequence[bytes]) -> bytes | None:
    """Root implied by an inclusion proof (RFC 9162 §2.1.3.2), or ``None`` if malformed."""
    if index >= tree_size or index < 0:
        return None
    fn, sn, r = index, tree_size - 1, leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def root_message(producer_id: str, tree_size: int, root: bytes) -> bytes:
    """What the producer's Ed25519 key signs for one batch."""
    return _ROOT_PREFIX + _str16(producer_id) + struct.pack("<Q", tree_size) + root


def header_message(
    producer_id: str, seq_first: int, seq_last: int, count: int, root: bytes
) -> bytes:
    """What the producer's Ed25519 key signs for one **batch header** (format v2).

    ``"saip.batch.v2\\0" || str16 producer_id || u64 seq_first || u64 seq_last || u64 count ||
    root`` — domain-separated from the v1 root message (``saip.batch.v1``) and from leaves and
    nodes (RFC 6962 §2.1 prefixes ``0x00``/``0x01`` inside the tree), so a signature of one kind
    never verifies as another.
    """
    return _HEADER_PREFIX + _str16(producer_id) + _pack_range(seq_first, seq_last, count) + root


@dataclass(frozen=True)
class BatchHeader:
    """A v2 batch header: what one Ed25519 signature covers for ``count`` records.

    Records of the batch carry ``seq = seq_first + index`` (contiguous, in leaf order), their
    leaf ``index``, ``tree_size = count``, an empty ``path`` and ``root_sig``; the consumer
    recomputes the RFC 6962 root from all ``count`` leaves (``count − 1`` node hashes).
    """

    producer_id: str
    key_id: str
    seq_first: int
    seq_last: int
    count: int
    root: bytes
    root_sig: str

    def message(self) -> bytes:
        """The signed bytes (:func:`header_message`)."""
        return header_message(self.producer_id, self.seq_first, self.seq_last, self.count,
                              self.root)  # fmt: skip

    def check(self) -> tuple[str, str] | None:
        """``("bad_batch", detail)`` if the seq range does not match the count."""
        if not 1 <= self.count <= 65536:
            return "bad_batch", f"count {self.count} outside 1..65536"
        if self.seq_first < 0 or self.seq_last - self.seq_first + 1 != self.count:
            return "bad_batch", (
                f"seq range {self.seq_first}..{self.seq_last} does not hold {self.count} records"
            )
        return None


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Key identifier: hex of the first 8 bytes of SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# ----------------------------------------------------------------------------- producer side


class Signer:
    """Reference producer signing: one Ed25519 signature per batch, one proof per record.

    Parameters
    ----------
    producer_id:
        The producer's identifier (must match the strict pattern).
    private_key:
        The producer's Ed25519 private key.
    """

    def __init__(self, *, producer_id: str, private_key: Ed25519PrivateKey) -> None:
        import re

        if not isinstance(producer_id, str) or not re.fullmatch(
            PRODUCER_ID_PATTERN.strip("^$"), producer_id
        ):
            raise ValueError(f"producer_id {producer_id!r} does not match {PRODUCER_ID_PATTERN}")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey")
        self.producer_id = producer_id
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id_of(self.public_key)

    def sign_header(
        self, leaf_datas: Sequence[bytes], *, seq_first: int
    ) -> tuple[BatchHeader, list[dict[str, Any]]]:
        """Sign a v2 batch header once; return it and each record's ``sig`` (index, no path).

        The records' ``seq`` must be ``seq_first, seq_first + 1, …`` in leaf order (they are in
        the leaf data; the consumer checks it).
        """
        n = len(leaf_datas)
        if not 1 <= n <= 65536:
            raise ValueError("a batch holds 1..65536 records")
        root = merkle_root([leaf_hash(d) for d in leaf_datas])
        seq_last = seq_first + n - 1
        sig = self._key.sign(header_message(self.producer_id, seq_first, seq_last, n, root))
        root_sig = base64.b64encode(sig).decode("ascii")
        header = BatchHeader(self.producer_id, self.key_id, seq_first, seq_last, n, root, root_sig)
        sigs = [
            {"alg": ALG, "key_id": self.key_id, "tree_size": n, "index": i, "path": [],
             "root_sig": root_sig}
            for i in range(n)
        ]  # fmt: skip
        return header, sigs

    def sign_batch(self, leaf_datas: Sequence[bytes]) -> list[dict[str, Any]]:
        """Return the ``sig`` object of each record of one batch (in order)."""
        leaves = [leaf_hash(d) for d in leaf_datas]
        root, paths = merkle_proofs(leaves)
        n = len(leaves)
        signature = self._key.sign(root_message(self.producer_id, n, root))
        root_sig = base64.b64encode(signature).decode("ascii")
        return [
            {
                "alg": ALG,
                "key_id": self.key_id,
                "tree_size": n,
                "index": i,
                "path": [base64.b64encode(h).decode("ascii") for h in path],
                "root_sig": root_sig,
            }
            for i, path in enumerate(paths)
        ]


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class ProducerKey:
    """One registered public key of a producer."""

    key_id: str
    public_key: Ed25519PublicKey
    revoked: bool = False


class ProducerRegistry:
    """Public keys of known producers, one JSON file per producer under ``directory``.

    File ``<producer_id>.json``: ``{"producer_id": ..., "keys": [{"key_id", "public_key"
    (base64 raw 32 bytes), "revoked"}]}``. The consumer never holds private keys.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._keys: dict[str, dict[str, ProducerKey]] = {}
        self.reload()

    def reload(self) -> None:
        """Re-read every producer file (malformed files raise :class:`ProvenanceError`)."""
        keys: dict[str, dict[str, ProducerKey]] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.glob("*.json")):
                producer_id, entries = self._read(path)
                keys[producer_id] = entries
        self._keys = keys

    def _read(self, path: Path) -> tuple[str, dict[str, ProducerKey]]:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            producer_id = doc["producer_id"]
            if path.stem != producer_id:
                raise ValueError("file name does not match producer_id")
            entries: dict[str, ProducerKey] = {}
            for item in doc["keys"]:
                pub = Ed25519PublicKey.from_public_bytes(_B64(item["public_key"], validate=True))
                kid = key_id_of(pub)
                if kid != item["key_id"]:
                    raise ValueError("key_id does not match the public key")
                entries[kid] = ProducerKey(kid, pub, bool(item.get("revoked", False)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ProvenanceError(f"producer registry file {path} is invalid: {exc}") from None
        return str(producer_id), entries

    def register(self, producer_id: str, public_key: Ed25519PublicKey) -> str:
        """Add ``public_key`` for ``producer_id`` (idempotent); return its key id."""
        import re

        if not re.fullmatch(PRODUCER_ID_PATTERN.strip("^$"), producer_id):
            raise ProvenanceError(f"producer_id {producer_id!r} does not match the pattern")
        kid = key_id_of(public_key)
        current = dict(self._keys.get(producer_id, {}))
        if kid in current:
            return kid
        current[kid] = ProducerKey(kid, public_key)
        self._write(producer_id, current)
        return kid

    def revoke(self, producer_id: str, key_id: str | None = None) -> list[str]:
        """Mark one key (or every key) of ``producer_id`` revoked; return the key ids revoked.

        Later records signed with a revoked key are quarantined as ``revoked_key``; the entry
        stays in the registry (audit). Raises :class:`ProvenanceError` for an unknown
        producer or key.
        """
        current = dict(self._keys.get(producer_id, {}))
        if not current:
            raise ProvenanceError(f"unknown producer {producer_id!r}")
        if key_id is not None and key_id not in current:
            raise ProvenanceError(f"producer {producer_id!r} has no key {key_id!r}")
        done = []
        for kid, k in current.items():
            if (key_id is None or kid == key_id) and not k.revoked:
                current[kid] = ProducerKey(kid, k.public_key, revoked=True)
                done.append(kid)
        self._write(producer_id, current)
        return done

    def describe(self) -> list[dict[str, Any]]:
        """``[{"producer_id", "key_id", "revoked"}]`` for every registered key."""
        return [
            {"producer_id": p, "key_id": k.key_id, "revoked": k.revoked}
            for p in sorted(self._keys)
            for k in self._keys[p].values()
        ]

    def _write(self, producer_id: str, current: dict[str, ProducerKey]) -> None:
        doc = {
            "producer_id": producer_id,
            "keys": [
                {
                    "key_id": k.key_id,
                    "public_key": base64.b64encode(
                        k.public_key.public_bytes(
                            serialization.Encoding.Raw, serialization.PublicFormat.Raw
                        )
                    ).decode("ascii"),
                    "revoked": k.revoked,
                }
                for k in current.values()
            ],
        }
        self.directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(self.directory / f"{producer_id}.json", json.dumps(doc, indent=2).encode())
        self._keys[producer_id] = current

    def producers(self) -> list[str]:
        """Registered producer ids."""
        return sorted(self._keys)

    def key(self, producer_id: str, key_id: str) -> ProducerKey | None:
        """The registered key, or ``None``."""
        return self._keys.get(producer_id, {}).get(key_id)

    def knows(self, producer_id: str) -> bool:
        """Whether ``producer_id`` has at least one registered key."""
        return bool(self._keys.get(producer_id))


def _atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- consumer side


class Verifier:
    """Verify a record's inclusion proof and its batch root signature (cached per batch).

    Returns a reason code (``unknown_producer``, ``unknown_key``, ``revoked_key``,
    ``bad_signature``) or ``None`` when the record is authentic.
    """

    def __init__(self, registry: ProducerRegistry, *, cache_size: int = 4096) -> None:
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.registry = registry
        self._cache: dict[tuple[Any, ...], bool] = {}
        self._cache_size = cache_size
        self.signature_checks = 0

    def verify(
        self,
        *,
        producer_id: str,
        key_id: str,
        tree_size: int,
        index: int,
        path: Sequence[str],
        root_sig: str,
        leaf: bytes,
    ) -> tuple[str, str] | None:
        """``None`` if authentic, else ``(reason_code, detail)``."""
        key = self._usable_key(producer_id, key_id)
        if isinstance(key, tuple):
            return key
        try:
            hashes = [_a2b(p, strict_mode=True) for p in path]
        except (ValueError, binascii.Error):
            return "bad_signature", "inclusion path is not base64"
        root = inclusion_root(index, tree_size, leaf, hashes)
        if root is None:
            return "bad_signature", "malformed inclusion proof"
        if not self._root_ok(key, producer_id, key_id, tree_size, root, root_sig):
            return "bad_signature", "Ed25519 signature over the batch root does not verify"
        return None

    def verify_tree(
        self,
        *,
        producer_id: str,
        key_id: str,
        root_sig: str,
        leaves: Sequence[bytes],
        paths: Sequence[Sequence[str]],
    ) -> bool:
        """Verify a *complete* Merkle batch at once (leaves in index order).

        Recomputes the tree (``n − 1`` node hashes instead of ``n log n``), checks that every
        record's stored audit path is exactly its RFC 6962 path (so each stays verifiable on
        its own) and verifies the root signature once. ``False`` means "not proven": the caller
        falls back to :meth:`verify` per record for exact reasons.
        """
        key = self.registry.key(producer_id, key_id)
        if key is None or key.revoked or len(leaves) != len(paths) or not leaves:
            return False
        root, expected = tree_paths_b64(leaves)
        for got, want in zip(paths, expected, strict=True):
            if list(got) != want:
                return False
        return self._root_ok(key, producer_id, key_id, len(leaves), root, root_sig)

    def verify_header(
        self, header: BatchHeader, leaves: Sequence[bytes] | None = None
    ) -> tuple[str, str] | None:
        """Verify a v2 batch header; with ``leaves`` (all of them, index order), also that they
        are the batch: the RFC 6962 root is recomputed (``n − 1`` node hashes) and must equal
        ``header.root``. The signature is verified once per header (cached).

        ``None`` if authentic, else ``(reason, detail)``: ``unknown_producer``, ``unknown_key``,
        ``revoked_key``, ``bad_batch`` (the seq range does not match the count, or the leaves do
        not match the header) or ``bad_signature``.
        """
        pid, kid = header.producer_id, header.key_id
        key = self._usable_key(pid, kid)
        if isinstance(key, tuple):
            return key
        err = header.check()
        if err is None and leaves is not None:
            if len(leaves) != header.count:
                err = "bad_batch", f"{len(leaves)} leaves for a header of {header.count}"
            elif merkle_root(leaves) != header.root:
                err = "bad_batch", "the leaves do not hash to the header's root"
        if err is not None:
            return err
        root = header.root
        cache_key = (pid, kid, header.count, root, header.root_sig, header.seq_first)
        ok = self._cache.get(cache_key)
        if ok is None:
            self.signature_checks += 1
            try:
                key.public_key.verify(
                    _a2b(header.root_sig, strict_mode=True),
                    header_message(pid, header.seq_first, header.seq_last, header.count, root),
                )
                ok = True
            except (InvalidSignature, ValueError, binascii.Error):
                ok = False
            self._remember(cache_key, ok)
        if not ok:
            return "bad_signature", "Ed25519 signature over the batch header does not verify"
        return None

    def key_problem(self, producer_id: str, key_id: str) -> tuple[str, str] | None:
        """Why no record signed by ``key_id`` of ``producer_id`` can verify now, else ``None``
        (``unknown_producer``, ``unknown_key`` or ``revoked_key``, with a detail)."""
        key = self._usable_key(producer_id, key_id)
        return key if isinstance(key, tuple) else None

    def _usable_key(self, producer_id: str, key_id: str) -> ProducerKey | tuple[str, str]:
        """The registered, unrevoked key, or the reason why there is none."""
        if not self.registry.knows(producer_id):
            return "unknown_producer", f"producer {producer_id!r} is not registered"
        key = self.registry.key(producer_id, key_id)
        if key is None:
            return "unknown_key", f"key {key_id} is not registered for {producer_id!r}"
        if key.revoked:
            return "revoked_key", f"key {key_id} of {producer_id!r} is revoked"
        return key

    def _remember(self, cache_key: tuple[Any, ...], ok: bool) -> None:
        if len(self._cache) >= self._cache_size:
            self._cache.pop(next(iter(self._cache)))
        self._cache[cache_key] = ok

    def _root_ok(
        self,
        key: ProducerKey,
        producer_id: str,
        key_id: str,
        tree_size: int,
        root: bytes,
        root_sig: str,
    ) -> bool:
        cache_key = (producer_id, key_id, tree_size, root, root_sig)
        ok = self._cache.get(cache_key)
        if ok is None:
            self.signature_checks += 1
            try:
                key.public_key.verify(
                    _a2b(root_sig, strict_mode=True), root_message(producer_id, tree_size, root)
                )
                ok = True
            except (InvalidSignature, ValueError, binascii.Error):
                ok = False
            self._remember(cache_key, ok)
        return ok


def tree_paths_b64(leaves: Sequence[bytes]) -> tuple[bytes, list[list[str]]]:
    """Root and every leaf's audit path, base64-encoded, encoding each node once."""
    b64 = base64.b64encode

    def rec(lo: int, hi: int) -> tuple[bytes, str, list[list[str]]]:
        if hi - lo == 1:
            leaf = leaves[lo]
            return leaf, b64(leaf).decode("ascii"), [[]]
        k = _split(hi - lo)
        left, left64, lp = rec(lo, lo + k)
        right, right64, rp = rec(lo + k, hi)
        node = _node(left, right)
        paths = [[*p, right64] for p in lp] + [[*p, left64] for p in rp]
        return node, b64(node).decode("ascii"), paths

    root, _root64, paths = rec(0, len(leaves))
    return root, paths


class ReplayGuard:
    """Freshness of ``ts``: a window around the injectable clock.

    Anti-replay of ``seq`` and dedupe are per-producer sliding windows on the authenticated
    ``(producer_id, seq)`` (:class:`saip_ingestion.window.SeqWindows`, RFC 4303 §3.4.3 scheme).

    Parameters
    ----------
    clock:
        Returns the current time in milliseconds since the epoch (injectable for tests).
    max_age_ms:
        Records older than this (by ``ts``) are refused as ``ts_out_of_window``.
    max_skew_ms:
        Records dated further in the future than this are refused as ``ts_out_of_window``.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], int],
        max_age_ms: int = 24 * 3600 * 1000,
        max_skew_ms: int = 5 * 60 * 1000,
    ) -> None:
        if not callable(clock):
            raise TypeError("clock must be callable")
        for name, value in (("max_age_ms", max_age_ms), ("max_skew_ms", max_skew_ms)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int")
        self.clock = clock
        self.max_age_ms = max_age_ms
        self.max_skew_ms = max_skew_ms

    def check_ts(self, ts: int, now: int) -> tuple[str, str] | None:
        """``None`` if ``ts`` is inside the window around ``now``."""
        if ts < now - self.max_age_ms:
            return "ts_out_of_window", f"ts {ts} older than {self.max_age_ms} ms"
        if ts > now + self.max_skew_ms:
            return "ts_out_of_window", f"ts {ts} more than {self.max_skew_ms} ms in the future"
        return None


def generate_key() -> Ed25519PrivateKey:
    """A new Ed25519 private key (OS randomness, via pyca/cryptography)."""
    return Ed25519PrivateKey.generate()


def save_private_key(key: Ed25519PrivateKey, path: Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, owner-only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _atomic_write(path, pem, mode=0o600)


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or base64 of the raw 32 bytes."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ProvenanceError(f"not an Ed25519 public key (PEM or base64): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ProvenanceError("the public key is not an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    """``key`` as SubjectPublicKeyInfo PEM (what ``saip ingest producers add`` reads)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Read a PKCS#8 PEM Ed25519 key (raises :class:`ProvenanceError`)."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvenanceError(f"cannot read producer key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ProvenanceError(f"producer key {path} is not an Ed25519 key")
    return key
