"""Record-sealed batch objects: one ``seal_many`` per batch, ``open_many`` per read.

A batch object (accepted records or quarantine entries) holds one ciphertext per line, each
sealed with the encryptor's bound-context batch API (:meth:`Encryptor.bind`), under the object's
context (purpose + object key, the AAD). Layout (all integers big-endian)::

    magic   8   b"SAIPRB1\\n"
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

Reads use ``open_many`` (all or nothing); when it fails, every record is opened alone to name
the ones that do not authenticate (:class:`SealedBatchError` carries their indices). Objects
written before this format (one envelope ciphertext of the whole plaintext, no magic) are still
read with ``decrypt``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from typing import Final

from saip_ingestion.protocols import Encryptor

__all__ = ["MAGIC", "SealedBatchError", "content_id", "open_lines", "seal_lines"]

MAGIC: Final = b"SAIPRB1\n"
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


def seal_lines(encryptor: Encryptor, context: Mapping[str, str], lines: Sequence[bytes]) -> bytes:
    """Seal ``lines`` (one ``seal_many`` call) into one batch object."""
    if not lines:
        raise ValueError("a sealed batch holds at least one record")
    cts = encryptor.bind(context).seal_many(lines)
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
    if not blob.startswith(MAGIC):
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
    if digest is not None and content_id(lines) != digest:
        raise SealedBatchError("records dropped, repeated or reordered (content digest differs)")
    return lines
