"""SAIP envelope wire format, versions 2 (written) and 1 (read): parsing, serialisation, keys.

This module is pure (no I/O, no providers): it turns bytes into a :class:`Header` and back, and
derives the per-message key and the key commitment. :mod:`saip_encryption.envelope` builds the
record and stream encryptors on top of it. The normative description, with the security argument,
is ``docs/encryption-format.md``; the byte layout below is the same and is locked by
``tests/encryption/test_enc_format.py``.

Layout (all integers big-endian)::

    A  authenticated prefix (bound into the key derivation, so covered by the commitment)
       magic         4   b"SAIP"
       version       1   0x02 (0x01: read only, no S field, suite 0x01 only)
       suite         1   0x01 = AES-256-GCM, HKDF-SHA-512, 256-bit key commitment, STREAM segments
                         0x02 = the same keys, one epoch key per (data key, epoch ID, context) and
                                records sealed with random 96-bit nonces (v2 only)
       segment_size  4   suite 1: plaintext bytes per segment (MIN_SEGMENT_SIZE ..
                         MAX_SEGMENT_SIZE); suite 2: 0
       message_id   32   random, fresh for every message (suite 2: the epoch ID)
       context_len   2   length of the next field (<= MAX_CONTEXT_BYTES)
       context       n   canonical encryption context (see encode_context)
    C  commitment   32   OKM[32:64] (below); checked, in constant time, before anything is decrypted
    S  signature (v2 only; not covered by the commitment, it signs A || C)
       sig_len       2   0 = unsigned, else <= MAX_SIGNATURE_BLOCK bytes of:
          scheme_len 1, scheme (ASCII), key_id_len 2, key_id (ASCII), signature_len 2, signature
          signature = ECDSA P-256 / SHA-256 (DER) over signed_message(A, C)
    K  key area (NOT covered by the commitment: re-wrapping rewrites only this part)
       slot_count    1   1 (records) or 2 (artifacts: A/B slots for crash-safe in-place re-wrap)
       slot_capacity 2   bytes per slot
       slots             slot_count x slot_capacity bytes, each:
          generation 4   0 = empty; the highest generation is tried first
          count      1   number of wrapped data keys (<= MAX_WRAPPED_KEYS)
          count x  { provider_len 1, provider, key_id_len 2, key_id, wrapped_len 2, wrapped }
          zero padding
          crc32      4   CRC-32 of the slot's preceding bytes (torn-write detection, not security)
    P  suite 2: nonce(12, random) || AES-256-GCM(K_epoch, nonce, record) || tag(16)
       suite 1: segment i (i = 0, 1, ...) is AES-256-GCM(K_msg, nonce_i, plaintext_i) || tag(16)
       nonce_i = 0x00 * 7 || uint32(i) || final_flag (0x00, or 0x01 on the last segment)
       every segment but the last carries exactly segment_size plaintext bytes; the last carries
       fewer (possibly zero), so the end of the message is authenticated, not inferred.

Key derivation (RFC 5869 HKDF with SHA-512; the same hash and commitment idea as the AWS
Encryption SDK's committing suite)::

    PRK = HKDF-Extract(salt = b"SAIP-v1 HKDF-Extract", IKM = data_key)       (once per data key)
    OKM = HKDF-Expand(PRK, info = b"SAIP-v1 AES-256-GCM" || A, L = 64)        (once per message)
    K_msg = OKM[0:32]                 per-message AES-256-GCM key
    commitment = OKM[32:64]           stored in C

Suite 2 derives ``K_epoch`` and the commitment the same way, once per epoch (A carries the
epoch ID); every record of the epoch repeats the epoch header ``A || C || S || K`` byte for byte.

Because ``info`` contains the whole prefix A (with the random 256-bit message ID), every message
gets its own AES key: GCM's 2^32-invocations limit per key never comes near, and the counter nonces
can start at zero. ``commitment`` is a PRF output under the data key over A, so comparing it
authenticates the header *and* commits the ciphertext to exactly one data key (Albertini et al.,
"How to Abuse and Fix Authenticated Encryption Without Key Commitment", USENIX Security 2022;
the attack class of CVE-2020-8897). Segments follow the STREAM construction of Hoang,
Reyhanitabar, Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
Misuse-Resistance", CRYPTO 2015: a counter and a final flag in the nonce stop truncation,
reordering, duplication and trailing data.

HKDF-Expand is computed with the standard library's HMAC from a pre-keyed state (one
HMAC-SHA-512 per message); ``tests/encryption/test_enc_format.py`` checks it against the RFC 5869
test vectors and against ``cryptography``'s ``HKDF``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from saip_encryption.providers.base import WrappedKey

__all__ = [
    "COMMITMENT_LEN",
    "DEFAULT_SEGMENT_SIZE",
    "MAGIC",
    "MAX_CONTEXT_BYTES",
    "MAX_SEGMENT_SIZE",
    "MAX_SIGNATURE_BLOCK",
    "MAX_WRAPPED_KEYS",
    "MESSAGE_ID_LEN",
    "MIN_SEGMENT_SIZE",
    "NONCE_LEN",
    "SUITE_AES256GCM_HKDF_SHA512_COMMIT",
    "SUITE_EPOCH_RECORD",
    "SUITE_NAMES",
    "TAG_LEN",
    "VERSION",
    "VERSIONS",
    "Header",
    "HeaderSignature",
    "HmacKey",
    "KeySlot",
    "MalformedError",
    "decode_context",
    "encode_context",
    "encode_signature",
    "encode_slot",
    "escape",
    "hkdf_expand",
    "hkdf_extract",
    "message_keys",
    "pack_prefix",
    "parse_header",
    "segment_nonce",
    "signed_message",
    "slot_size",
    "valid_key_id",
]

MAGIC = b"SAIP"
VERSION = 2
#: versions this module reads (v1: no signature field, STREAM suite only)
VERSIONS = (1, 2)
SUITE_AES256GCM_HKDF_SHA512_COMMIT = 1
SUITE_EPOCH_RECORD = 2
SUITE_NAMES = {
    SUITE_AES256GCM_HKDF_SHA512_COMMIT: "AES-256-GCM/HKDF-SHA-512/commit/STREAM",
    SUITE_EPOCH_RECORD: "AES-256-GCM/HKDF-SHA-512/commit/epoch-record",
}
NONCE_LEN = 12
#: cap of the signature field S (scheme, key ID and signature)
MAX_SIGNATURE_BLOCK = 4096
MESSAGE_ID_LEN = 32
COMMITMENT_LEN = 32
TAG_LEN = 16
KEY_LEN = 32
MIN_SEGMENT_SIZE = 64
MAX_SEGMENT_SIZE = 1 << 24
DEFAULT_SEGMENT_SIZE = 1 << 16
MAX_CONTEXT_BYTES = 8192
#: hard cap of wrapped data keys per slot (decryptors may set a lower one)
MAX_WRAPPED_KEYS = 16
MAX_KEY_ID_LEN = 2048
MAX_WRAPPED_LEN = 8192

_PREFIX = struct.Struct(">4sBBI32sH")
_KEY_AREA = struct.Struct(">BH")
_SLOT_HEAD = struct.Struct(">IB")
_U16 = struct.Struct(">H")
_CRC = struct.Struct(">I")
_NONCE = struct.Struct(">7xIB")

_EXTRACT_SALT = b"SAIP-v1 HKDF-Extract"
_SIGNATURE_LABEL = b"SAIP-v2 header signature\x00"
#: wrapped-key provider names: lower-case scheme names
_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: key IDs: printable ASCII without spaces (ARNs, Key Vault URLs, Cloud KMS resource names)
_KEY_ID = re.compile(r"[!-~]{1,2048}")
#: local key IDs: ``<key uuid: 32 hex>/v<version>``
LOCAL_KEY_ID = re.compile(r"(?P<uuid>[0-9a-f]{32})/v(?P<version>[1-9][0-9]{0,9})")
_EXPAND_LABEL = b"SAIP-v1 AES-256-GCM"


class MalformedError(Exception):
    """Internal: the bytes are not a well-formed SAIP header (mapped to DecryptionError)."""


def escape(text: str) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\r``, ``\\u202e``...).

    Header strings (key IDs, contexts) are attacker-controlled: they go through this before they
    reach a terminal, a log line or an error message, so they cannot move the cursor, rewrite a
    line or ring the bell. Rich markup is a separate concern: the CLI prints them as plain text.
    """
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def valid_key_id(provider: str, key_id: str) -> bool:
    """The key-ID grammar every wrapped key must follow (checked when a header is parsed)."""
    if not _PROVIDER_NAME.fullmatch(provider) or not _KEY_ID.fullmatch(key_id):
        return False
    return provider != "local" or LOCAL_KEY_ID.fullmatch(key_id) is not None


# --------------------------------------------------------------------------------------------
# Encryption context
# --------------------------------------------------------------------------------------------


def encode_context(context: Mapping[str, str]) -> bytes:
    """Canonical bytes of an encryption context.

    ``uint16 count || (uint16 len, key UTF-8, uint16 len, value UTF-8)*`` sorted by key bytes;
    keys must be non-empty. The encoding is injective, so two different contexts never collide.

    Raises
    ------
    TypeError
        A key or value is not a ``str``.
    ValueError
        An empty key, a field longer than 65535 bytes, or more than MAX_CONTEXT_BYTES in total.
    """
    items: list[tuple[bytes, bytes]] = []
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("encryption context keys and values must be str")
        if not key:
            raise ValueError("encryption context keys must be non-empty")
        items.append((key.encode("utf-8"), value.encode("utf-8")))
    items.sort()
    parts = [_U16.pack(len(items))]
    for k, v in items:
        if len(k) > 0xFFFF or len(v) > 0xFFFF:
            raise ValueError("encryption context field longer than 65535 bytes")
        parts += [_U16.pack(len(k)), k, _U16.pack(len(v)), v]
    out = b"".join(parts)
    if len(out) > MAX_CONTEXT_BYTES:
        raise ValueError(f"encryption context exceeds {MAX_CONTEXT_BYTES} bytes when encoded")
    return out


def decode_context(data: bytes) -> dict[str, str]:
    """Inverse of :func:`encode_context`; raises :class:`MalformedError` on anything else."""
    try:
        (count,) = _U16.unpack_from(data, 0)
        pos = 2
        out: dict[str, str] = {}
        last: bytes | None = None
        for _ in range(count):
            (klen,) = _U16.unpack_from(data, pos)
            key = data[pos + 2 : pos + 2 + klen]
            pos += 2 + klen
            (vlen,) = _U16.unpack_from(data, pos)
            value = data[pos + 2 : pos + 2 + vlen]
            pos += 2 + vlen
            if len(key) != klen or len(value) != vlen or not key:
                raise MalformedError("truncated context")
            if last is not None and key <= last:
                raise MalformedError("context keys not strictly sorted")
            last = key
            out[key.decode("utf-8")] = value.decode("utf-8")
    except (struct.error, UnicodeDecodeError) as exc:
        raise MalformedError("bad context") from exc
    if pos != len(data):
        raise MalformedError("trailing bytes in context")
    return out


# --------------------------------------------------------------------------------------------
# Key derivation (RFC 5869)
# --------------------------------------------------------------------------------------------


_TRANS_36 = bytes(x ^ 0x36 for x in range(256))
_TRANS_5C = bytes(x ^ 0x5C for x in range(256))


class HmacKey:
    """HMAC (RFC 2104) under one fixed key, from precomputed inner and outer hash states.

    ``HMAC(K, m) = H((K' xor opad) || H((K' xor ipad) || m))``: the two padded-key blocks are
    hashed once here and each :meth:`digest` only copies the two ``hashlib`` states — the
    construction the standard library's ``hmac`` module uses without OpenSSL, and about twice as
    fast per message as copying an OpenSSL HMAC context. Checked against ``hmac`` and the
    RFC 5869 vectors in ``tests/encryption/test_enc_format.py``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, hash_name: str = "sha512") -> None:
        probe = hashlib.new(hash_name)
        if len(key) > probe.block_size:
            key = hashlib.new(hash_name, key).digest()
        padded = key.ljust(probe.block_size, b"\0")
        self._inner = hashlib.new(hash_name, padded.translate(_TRANS_36))
        self._outer = hashlib.new(hash_name, padded.translate(_TRANS_5C))

    def digest(self, message: bytes) -> bytes:
        """``HMAC(K, message)``."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def hkdf_extract(ikm: bytes | bytearray, *, salt: bytes = _EXTRACT_SALT) -> HmacKey:
    """HKDF-Extract (RFC 5869 §2.2) with SHA-512, returned as ``HMAC(PRK, ·)``.

    The PRK's padded-key hash states are computed once per data key rather than per message.
    """
    return HmacKey(hmac.digest(salt, bytes(ikm), "sha512"))


def hkdf_expand(prk: HmacKey, info: bytes, length: int, *, hash_len: int = 64) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3) with ``prk`` = ``HMAC(PRK, ·)``."""
    if not 0 < length <= 255 * hash_len:
        raise ValueError("HKDF-Expand length out of range")
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = prk.digest(block + info + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


def message_keys(prk: HmacKey, prefix: bytes) -> tuple[bytes, bytes]:
    """Return ``(K_msg, commitment)`` for the authenticated prefix ``A`` of one message."""
    okm = prk.digest(_EXPAND_LABEL + prefix + b"\x01")  # T(1) of SHA-512: 64 bytes
    return okm[:KEY_LEN], okm[KEY_LEN:]


def segment_nonce(index: int, *, final: bool) -> bytes:
    """The 96-bit GCM nonce of segment ``index`` (STREAM: counter || final flag)."""
    return _NONCE.pack(index, 1 if final else 0)


# --------------------------------------------------------------------------------------------
# Header
# --------------------------------------------------------------------------------------------


def pack_prefix(
    segment_size: int,
    message_id: bytes,
    context_bytes: bytes,
    *,
    suite: int = SUITE_AES256GCM_HKDF_SHA512_COMMIT,
    version: int = VERSION,
) -> bytes:
    """Serialise the authenticated prefix ``A`` (suite 2: ``segment_size`` 0)."""
    return (
        _PREFIX.pack(
            MAGIC,
            version,
            suite,
            segment_size,
            message_id,
            len(context_bytes),
        )
        + context_bytes
    )


@dataclass(frozen=True)
class HeaderSignature:
    """The S field: who signed ``A || C`` (scheme and key ID: unauthenticated hints) and how."""

    scheme: str
    key_id: str
    signature: bytes


def signed_message(prefix: bytes, commitment: bytes) -> bytes:
    """The bytes a header signature covers: a label and SHA-512 of ``A || C``.

    ``C`` is a PRF output under the data key over ``A``, so a signature over ``A || C`` binds the
    signer to the context, the message/epoch ID *and* the data key; re-wrapping (which rewrites
    only ``K``) keeps it valid. The digest keeps the message short (AWS KMS ``Sign`` with
    ``MessageType=RAW`` takes at most 4096 bytes).
    """
    return _SIGNATURE_LABEL + hashlib.sha512(prefix + commitment).digest()


def encode_signature(sig: HeaderSignature | None) -> bytes:
    """The S field for ``sig`` (``None``: unsigned, two zero bytes)."""
    if sig is None:
        return _U16.pack(0)
    scheme = sig.scheme.encode("ascii")
    key_id = sig.key_id.encode("ascii")
    if not valid_key_id(sig.scheme, sig.key_id) or not 0 < len(sig.signature) <= 0xFFFF:
        raise ValueError("signature scheme, key ID or length out of range")
    body = (
        bytes((len(scheme),))
        + scheme
        + _U16.pack(len(key_id))
        + key_id
        + _U16.pack(len(sig.signature))
        + sig.signature
    )
    if len(body) > MAX_SIGNATURE_BLOCK:
        raise ValueError(f"signature field exceeds {MAX_SIGNATURE_BLOCK} bytes")
    return _U16.pack(len(body)) + body


def _parse_signature(body: bytes) -> HeaderSignature:
    try:
        slen = body[0]
        scheme = body[1 : 1 + slen]
        pos = 1 + slen
        (klen,) = _U16.unpack_from(body, pos)
        key_id = body[pos + 2 : pos + 2 + klen]
        pos += 2 + klen
        (glen,) = _U16.unpack_from(body, pos)
        sig = body[pos + 2 : pos + 2 + glen]
        pos += 2 + glen
        if len(scheme) != slen or len(key_id) != klen or len(sig) != glen or glen == 0:
            raise MalformedError("truncated signature field")
        if pos != len(body):
            raise MalformedError("trailing bytes in signature field")
        out = HeaderSignature(scheme.decode("ascii"), key_id.decode("ascii"), sig)
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise MalformedError("bad signature field") from exc
    if not valid_key_id(out.scheme, out.key_id):
        raise MalformedError("bad signature key ID")
    return out


def _edk_bytes(keys: Sequence[WrappedKey]) -> bytes:
    parts: list[bytes] = []
    for w in keys:
        if not valid_key_id(w.provider, w.key_id):
            raise ValueError(f"wrapped key ID {escape(w.key_id)!r} breaks the key-ID grammar")
        provider = w.provider.encode("ascii")
        key_id = w.key_id.encode("ascii")
        if not 0 < len(provider) <= 255:
            raise ValueError("wrapped key provider name must be 1..255 ASCII bytes")
        if not 0 < len(key_id) <= MAX_KEY_ID_LEN:
            raise ValueError(f"wrapped key ID must be 1..{MAX_KEY_ID_LEN} bytes")
        if not 0 < len(w.ciphertext) <= MAX_WRAPPED_LEN:
            raise ValueError(f"wrapped key must be 1..{MAX_WRAPPED_LEN} bytes")
        parts += [
            bytes((len(provider),)),
            provider,
            _U16.pack(len(key_id)),
            key_id,
            _U16.pack(len(w.ciphertext)),
            w.ciphertext,
        ]
    return b"".join(parts)


def slot_size(keys: Sequence[WrappedKey]) -> int:
    """Bytes a slot needs to hold ``keys`` (generation, count, keys, CRC)."""
    return _SLOT_HEAD.size + len(_edk_bytes(keys)) + _CRC.size


def encode_slot(keys: Sequence[WrappedKey], *, generation: int, capacity: int) -> bytes:
    """One key slot of exactly ``capacity`` bytes (``keys`` empty and generation 0: empty slot)."""
    if len(keys) > MAX_WRAPPED_KEYS:
        raise ValueError(f"at most {MAX_WRAPPED_KEYS} wrapped keys per message")
    body = _SLOT_HEAD.pack(generation, len(keys)) + _edk_bytes(keys)
    pad = capacity - len(body) - _CRC.size
    if pad < 0:
        raise ValueError("wrapped keys do not fit the slot capacity")
    body += bytes(pad)
    return body + _CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class KeySlot:
    """One parsed key slot."""

    index: int
    generation: int
    keys: tuple[WrappedKey, ...]
    #: raw bytes of the slot (used as the decrypt-side cache key)
    raw: bytes
    #: False when its CRC or layout is broken (a torn write or tampering)
    valid: bool


@dataclass(frozen=True)
class Header:
    """A parsed SAIP header (nothing in it is trusted until the commitment checks)."""

    version: int
    suite: int
    segment_size: int
    message_id: bytes
    context_bytes: bytes
    #: the authenticated prefix A, exactly as on the wire
    prefix: bytes
    commitment: bytes
    slot_count: int
    slot_capacity: int
    slots: tuple[KeySlot, ...]
    #: offset of the key area and of the first segment
    key_area_offset: int
    payload_offset: int
    #: v2: the S field as parsed (``None``: unsigned or v1) and its raw bytes (length included)
    signature: HeaderSignature | None = None
    signature_field: bytes = b""

    @property
    def context(self) -> dict[str, str]:
        """The stored encryption context (unauthenticated until decryption succeeds)."""
        return decode_context(self.context_bytes)

    def wrapped_keys(self) -> list[WrappedKey]:
        """Wrapped keys of the valid slots, highest generation first."""
        ordered = sorted(
            (s for s in self.slots if s.valid), key=lambda s: s.generation, reverse=True
        )
        return [k for s in ordered for k in s.keys]


def _parse_slot(raw: bytes, index: int) -> KeySlot:
    try:
        (crc,) = _CRC.unpack_from(raw, len(raw) - _CRC.size)
        if zlib.crc32(raw[: -_CRC.size]) != crc:
            raise MalformedError("slot CRC mismatch")
        generation, count = _SLOT_HEAD.unpack_from(raw, 0)
        if count > MAX_WRAPPED_KEYS or (count == 0) != (generation == 0):
            raise MalformedError("bad slot head")
        pos = _SLOT_HEAD.size
        keys: list[WrappedKey] = []
        for _ in range(count):
            plen = raw[pos]
            provider = raw[pos + 1 : pos + 1 + plen]
            pos += 1 + plen
            (klen,) = _U16.unpack_from(raw, pos)
            key_id = raw[pos + 2 : pos + 2 + klen]
            pos += 2 + klen
            (clen,) = _U16.unpack_from(raw, pos)
            wrapped = raw[pos + 2 : pos + 2 + clen]
            pos += 2 + clen
            if (
                len(provider) != plen
                or len(key_id) != klen
                or len(wrapped) != clen
                or 0 in (plen, klen, clen)
                or pos > len(raw) - _CRC.size
            ):
                raise MalformedError("truncated wrapped key")
            name, kid = provider.decode("ascii"), key_id.decode("ascii")
            if not valid_key_id(name, kid):
                raise MalformedError("key ID breaks the grammar")
            keys.append(WrappedKey(name, kid, wrapped))
        if any(raw[pos : len(raw) - _CRC.size]):
            raise MalformedError("non-zero slot padding")
    except (IndexError, struct.error, UnicodeDecodeError, MalformedError):
        return KeySlot(index, 0, (), raw, valid=False)
    return KeySlot(index, generation, tuple(keys), raw, valid=True)


def _check_prefix(version: int, suite: int, segment_size: int, ctx_len: int) -> None:
    if version not in VERSIONS:
        raise MalformedError("unsupported version")
    if suite == SUITE_AES256GCM_HKDF_SHA512_COMMIT:
        if not MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE:
            raise MalformedError("field out of range")
    elif suite != SUITE_EPOCH_RECORD or version < 2 or segment_size != 0:
        raise MalformedError("unknown suite")
    if ctx_len > MAX_CONTEXT_BYTES:
        raise MalformedError("field out of range")


def _check_key_area(slot_count: int, capacity: int) -> None:
    if slot_count not in (1, 2) or capacity < _SLOT_HEAD.size + _CRC.size:
        raise MalformedError("bad key area")


def parse_header(data: bytes | memoryview, *, strict: bool = True) -> Header:
    """Parse the header at the start of ``data`` (which may hold more: the payload).

    ``strict`` (the decrypt path) rejects any malformed slot; ``strict=False`` (inspect, audit,
    re-wrap repairing an interrupted re-wrap) returns broken slots flagged ``valid=False``.

    Raises
    ------
    MalformedError
        Wrong magic, unknown version or suite, truncated or inconsistent fields.
    """
    mv = memoryview(data)
    if len(mv) < _PREFIX.size:
        raise MalformedError("truncated header")
    magic, version, suite, segment_size, message_id, ctx_len = _PREFIX.unpack_from(mv, 0)
    if magic != MAGIC:
        raise MalformedError("not a SAIP envelope")
    _check_prefix(version, suite, segment_size, ctx_len)
    pos = _PREFIX.size + ctx_len
    if len(mv) < pos + COMMITMENT_LEN + _KEY_AREA.size:
        raise MalformedError("truncated header")
    prefix = bytes(mv[:pos])
    context_bytes = prefix[_PREFIX.size :]
    decode_context(context_bytes)  # well-formed, canonical
    commitment = bytes(mv[pos : pos + COMMITMENT_LEN])
    key_area_offset = pos + COMMITMENT_LEN
    signature: HeaderSignature | None = None
    signature_field = b""
    if version >= 2:
        (sig_len,) = _U16.unpack_from(mv, key_area_offset)
        if sig_len > MAX_SIGNATURE_BLOCK:
            raise MalformedError("signature field too long")
        end = key_area_offset + 2 + sig_len
        if len(mv) < end + _KEY_AREA.size:
            raise MalformedError("truncated header")
        signature_field = bytes(mv[key_area_offset:end])
        if sig_len:
            signature = _parse_signature(signature_field[2:])
        key_area_offset = end
    slot_count, capacity = _KEY_AREA.unpack_from(mv, key_area_offset)
    _check_key_area(slot_count, capacity)
    start = key_area_offset + _KEY_AREA.size
    payload_offset = start + slot_count * capacity
    if len(mv) < payload_offset:
        raise MalformedError("truncated key area")
    slots = tuple(
        _parse_slot(bytes(mv[start + i * capacity : start + (i + 1) * capacity]), i)
        for i in range(slot_count)
    )
    if strict and (not all(s.valid for s in slots) or not any(s.keys for s in slots)):
        raise MalformedError("bad key slots")
    return Header(
        version=version,
        suite=suite,
        segment_size=segment_size,
        message_id=message_id,
        context_bytes=context_bytes,
        prefix=prefix,
        commitment=commitment,
        slot_count=slot_count,
        slot_capacity=capacity,
        slots=slots,
        key_area_offset=key_area_offset,
        payload_offset=payload_offset,
        signature=signature,
        signature_field=signature_field,
    )


def header_length_hint(data: bytes | bytearray | memoryview) -> int:
    """Bytes needed to parse the whole header, as far as ``data`` tells (grows as it grows).

    Every length field is range-checked *before* it is trusted, so a hostile header cannot make a
    reader buffer more than the format allows (about 140 KiB).

    Raises
    ------
    MalformedError
        Wrong magic, version or suite, or a length field out of range.
    """
    mv = memoryview(data)
    if len(mv) < _PREFIX.size:
        return _PREFIX.size
    fields: tuple[bytes, int, int, int, bytes, int] = _PREFIX.unpack_from(mv, 0)
    magic, version, suite, segment_size, _mid, ctx_len = fields
    if magic != MAGIC:
        raise MalformedError("not a SAIP envelope")
    _check_prefix(version, suite, segment_size, ctx_len)
    key_area_offset: int = _PREFIX.size + ctx_len + COMMITMENT_LEN
    if version >= 2:
        if len(mv) < key_area_offset + 2:
            return key_area_offset + 2 + _KEY_AREA.size
        sig_len: int = _U16.unpack_from(mv, key_area_offset)[0]
        if sig_len > MAX_SIGNATURE_BLOCK:
            raise MalformedError("signature field too long")
        key_area_offset += 2 + sig_len
    if len(mv) < key_area_offset + _KEY_AREA.size:
        return key_area_offset + _KEY_AREA.size
    slot_count: int
    capacity: int
    slot_count, capacity = _KEY_AREA.unpack_from(mv, key_area_offset)
    _check_key_area(slot_count, capacity)
    return key_area_offset + _KEY_AREA.size + slot_count * capacity


def key_area(slots: Sequence[bytes], capacity: int) -> bytes:
    """Serialise the key area from already-encoded slots."""
    return _KEY_AREA.pack(len(slots), capacity) + b"".join(slots)


KEY_AREA_HEAD = _KEY_AREA.size
PREFIX_SIZE = _PREFIX.size
#: the longest header the format allows (v2, both fields at their caps)
MAX_HEADER_SIZE = (
    _PREFIX.size + MAX_CONTEXT_BYTES + COMMITMENT_LEN + 2 + MAX_SIGNATURE_BLOCK + 3 + 2 * 0xFFFF
)
