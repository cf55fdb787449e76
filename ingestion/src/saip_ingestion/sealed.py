"""Record-sealed batch objects: one ``seal_many`` per batch, ``open_many`` per read.

A batch object (accepted records or quarantine entries) holds one ciphertext per line, each
sealed with the encryptor's bound-context batch API (:meth:`Encryptor.bind`), under the object's
context (purpose + object key, the AAD). Layout (all integers big-endian)::

    magic   8   b"SAIPRB2\\n" (lines compressed; b"SAIPRB1\\n": uncompressed, read only)
    plen    4   length of P, the longest common prefix of the ciphertexts (the epoch header)
    P       plen
    count   4   number of records
    count × (len 4, suffix len)      ciphertext i = P || suffix i

Storing the common prefix once keeps the per-record cost to the nonce, ciphertext and tag.
The prefix is not trusted: each rebuilt ciphertext is authenticated in full by ``open``.

Integrity of the whole object: every object key ends in the first 16 hex of SHA-256 of the
plaintext (``b"".join(line + b"\\n")``), and the key is in every record's AAD. Reading
recomputes that digest, so records dropped, repeated or reordered within an object, or moved
from another object, are refused even though each one authenticates on its own.

Compression (magic ``b"SAIPRB2\\n"``, written since issue 12 item 4; same layout): each line is
compressed **on its own** with Zstandard (RFC 8878, one frame with its content size) before it is
sealed. Compressing record by record, never across records, is deliberate: a shared compression
context would let one producer who can see object sizes learn about another producer's records
from the compression ratio (the CRIME/BREACH side channel, Kelsey 2002 "Compression and
Information Leakage of Plaintext"); per record, the size reveals only the record's own
redundancy. Decompression runs only after a record authenticates, and is capped
(:data:`MAX_LINE_BYTES`, frame header and actual output both checked): a frame that claims or
produces more is a :class:`SealedBatchError`, never an allocation of the claimed size.

Reads use ``open_many`` (all or nothing); when it fails, every record is opened alone to name
the ones that do not authenticate (:class:`SealedBatchError` carries their indices). Objects
written before these formats (one envelope ciphertext of the whole plaintext, no magic) are still
read with ``decrypt``, and uncompressed ``SAIPRB1`` objects with ``open_many``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Final

import zstandard

from saip_ingestion.protocols import Encryptor

__all__ = [
    "MAGIC",
    "MAGIC_V1",
    "MAX_LINE_BYTES",
    "SealedBatchError",
    "content_id",
    "line_compressor",
    "open_lines",
    "seal_lines",
]

#: record-sealed batch with each line Zstandard-compressed (written)
MAGIC: Final = b"SAIPRB2\n"
#: record-sealed batch, uncompressed (read only)
MAGIC_V1: Final = b"SAIPRB1\n"
#: largest decompressed line accepted from a compressed batch (a stored record or a quarantine
#: entry with its bounded raw head, base64); larger is refused as a decompression bomb
MAX_LINE_BYTES: Final = 4 * 1024 * 1024
#: Zstandard level: 1 is the fastest standard level (measured in the ingestion README)
ZSTD_LEVEL: Final = 1
_U32: Final = struct.Struct(">I")
#: at most this many failing record indices are kept in an error
_MAX_BAD: Final = 32


class SealedBatchError(Exception):
    """A batch object does not open: ``bad`` lists the failing record indices (first 32),
    empty when the framing or the content digest is wrong rather than a record."""

    def __init__(self, message: str, *, bad: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.bad = list(bad)


def content_id(lines: Sequence[bytes]) -> str:
    """First 16 hex of SHA-256 of the object's plaintext (each line + ``\\n``)."""
    h = hashlib.sha256()
    for line in lines:
        h.update(line)
        h.update(b"\n")
    return h.hexdigest()[:16]


def _common_prefix(cts: Sequence[bytes]) -> int:
    first = cts[0]
    n = min(len(c) for c in cts)
    for c in cts[1:]:
        if c[:n] == first[:n]:
            continue
        lo, hi = 0, n  # first[:lo] is common; find the longest common prefix by bisection
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if c[:mid] == first[:mid]:
                lo = mid
            else:
                hi = mid - 1
        n = lo
        if n == 0:
            break
    return n


def line_compressor() -> Callable[[bytes], bytes]:
    """The per-line compression of :func:`seal_lines`: one Zstandard frame at
    :data:`ZSTD_LEVEL` with its content size (read back by :func:`open_lines`)."""
    compress: Callable[[bytes], bytes] = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL, write_content_size=True
    ).compress
    return compress


def seal_lines(encryptor: Encryptor, context: Mapping[str, str], lines: Sequence[bytes]) -> bytes:
    """Compress each line, seal them (one ``seal_many`` call) into one batch object."""
    if not lines:
        raise ValueError("a sealed batch holds at least one record")
    if max(map(len, lines)) > MAX_LINE_BYTES:
        raise ValueError(f"a line is longer than {MAX_LINE_BYTES} bytes")
    compress = line_compressor()
    cts = encryptor.bind(context).seal_many([compress(line) for line in lines])
    if len(cts) != len(lines):
        raise ValueError("seal_many returned another number of ciphertexts")
    p = _common_prefix(cts)
    parts = [MAGIC, _U32.pack(p), cts[0][:p], _U32.pack(len(cts))]
    for c in cts:
        parts.append(_U32.pack(len(c) - p))
        parts.append(c[p:])
    return b"".join(parts)


def _split(blob: bytes) -> list[bytes]:
    try:
        pos = len(MAGIC)
        (plen,) = _U32.unpack_from(blob, pos)
        pos += 4
        prefix = blob[pos : pos + plen]
        pos += plen
        (count,) = _U32.unpack_from(blob, pos)
        pos += 4
        if len(prefix) != plen or count == 0 or count > (len(blob) - pos) // 4:
            raise SealedBatchError("malformed sealed batch (prefix or count)")
        cts: list[bytes] = []
        for _ in range(count):
            (n,) = _U32.unpack_from(blob, pos)
            pos += 4
            if pos + n > len(blob):
                raise SealedBatchError("malformed sealed batch (record length)")
            cts.append(prefix + blob[pos : pos + n])
            pos += n
    except struct.error:
        raise SealedBatchError("malformed sealed batch (truncated)") from None
    if pos != len(blob):
        raise SealedBatchError("malformed sealed batch (trailing bytes)")
    return cts


def _decompress_all(frames: Sequence[bytes]) -> list[bytes]:
    """Each authenticated frame decompressed, at most :data:`MAX_LINE_BYTES` each."""
    dctx = zstandard.ZstdDecompressor()
    out: list[bytes] = []
    for i, frame in enumerate(frames):
        try:
            size = zstandard.frame_content_size(frame)
            if not 0 <= size <= MAX_LINE_BYTES:  # -1: unknown size, refused (we always write it)
                raise SealedBatchError(
                    f"record {i}: decompressed size not declared or above the cap "
                    f"({MAX_LINE_BYTES} bytes)",
                    bad=[i],
                )
            line = dctx.decompress(frame, max_output_size=MAX_LINE_BYTES)
        except zstandard.ZstdError:
            raise SealedBatchError(f"record {i}: not a valid Zstandard frame", bad=[i]) from None
        if len(line) != size:
            raise SealedBatchError(f"record {i}: decompressed size differs", bad=[i])
        out.append(line)
    return out


def open_lines(
    encryptor: Encryptor, context: Mapping[str, str], blob: bytes, *, digest: str | None
) -> list[bytes]:
    """The lines of a batch object (``open_many``, per-record fallback to name failures).

    ``digest`` is the content id the object key ends in (checked for sealed batches).
    Objects of the earlier whole-object format are decrypted with ``decrypt``.

    Raises
    ------
    SealedBatchError
        Framing, a record that does not authenticate (indices in ``bad``) or a content digest
        that differs from the key's.
    Exception
        Whatever the encryptor raises for a whole-object ciphertext of the earlier format.
    """
    compressed = blob.startswith(MAGIC)
    if not compressed and not blob.startswith(MAGIC_V1):
        plain = encryptor.decrypt(blob, context=context)
        return [line for line in plain.split(b"\n") if line]
    cts = _split(blob)
    sealer = encryptor.bind(context)
    try:
        lines = list(sealer.open_many(cts))
    except Exception as exc:
        lines, bad, kinds = [], [], {type(exc).__name__}
        for i, c in enumerate(cts):
            try:
                lines.append(sealer.open(c))
            except Exception as one:
                bad.append(i)
                kinds.add(type(one).__name__)
        if bad:  # else the batch call failed transiently and every record opened alone
            first = ", ".join(map(str, bad[:_MAX_BAD]))
            raise SealedBatchError(
                f"{len(bad)} of {len(cts)} records do not open (first: {first}; "
                f"{', '.join(sorted(kinds))})",
                bad=bad[:_MAX_BAD],
            ) from None
    if compressed:
        lines = _decompress_all(lines)
    if digest is not None and content_id(lines) != digest:
        raise SealedBatchError("records dropped, repeated or reordered (content digest differs)")
    return lines
