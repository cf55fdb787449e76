"""Envelope encryption of records and streamed artifacts (SAIP format v1).

:class:`EnvelopeEncryptor` encrypts under one data key per message (records: per cache period,
see :class:`~saip_encryption.cache.DataKeyCache`; artifacts: per artifact), wraps the data key
under every configured master key (multi-provider: any one of them can decrypt — cross-cloud
disaster recovery), and decrypts only what authenticates. The byte layout, key derivation and
security argument are in :mod:`saip_encryption.wire` and ``docs/encryption-format.md``.

Decryption order (every step before the first segment is decrypted):

1. parse the header strictly (magic, version, field ranges, key-slot CRCs, wrapped-key cap);
2. the suite must be in the allow-list, the stored context must equal the caller's context;
3. offer each wrapped key only to a configured provider that accepts its key ID (allow-list),
   providers in the order given;
4. derive ``(K_msg, commitment)`` from the unwrapped data key and compare the commitment in
   constant time — this authenticates the header and commits to the data key;
5. decrypt segment by segment (STREAM counter + final flag); a segment's plaintext is released
   only after its tag verifies; a record is returned only after all segments verify.

Every ciphertext problem raises the one opaque :class:`~saip_encryption.errors.DecryptionError`.
When the ciphertext is intact but no provider could unwrap the data key (key disabled, version
destroyed, access denied), :class:`~saip_encryption.errors.KeyProviderError` lists each attempt.
"""

from __future__ import annotations

import hmac
import logging
import os
import struct
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from saip_encryption import wire
from saip_encryption.cache import DataKeyCache
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers import accepts
from saip_encryption.providers.base import KeyProvider, WrappedKey

__all__ = [
    "DEFAULT_KEY_SLOT_CAPACITY",
    "DEFAULT_STREAM_SEGMENT_SIZE",
    "EnvelopeEncryptor",
    "recover_data_key",
]

_LOG = logging.getLogger(__name__)

DEFAULT_STREAM_SEGMENT_SIZE = 1 << 20
#: bytes reserved per key slot in artifacts, so that re-wrapping can happen in place
DEFAULT_KEY_SLOT_CAPACITY = 2048

_TAG = wire.TAG_LEN
_FINAL0 = wire.segment_nonce(0, final=True)
_MAX_SEGMENTS = 1 << 32
_BYTES_LIKE = (bytes, bytearray, memoryview)
_PREFIX = struct.Struct(">4sBBI32sH")
_AREA = struct.Struct(">BH")


class Readable(Protocol):
    """A binary source: ``readinto`` (a file, ``sys.stdin.buffer``, ``io.BytesIO``...)."""

    def readinto(self, buffer: Any, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    """A binary sink."""

    def write(self, data: Any, /) -> int | None: ...


class _TamperError(Exception):
    """Internal: a ciphertext problem (becomes DecryptionError)."""


@dataclass
class _Material:
    key_area: bytes


def _read_full(src: Readable, buf: memoryview) -> int:
    """Fill ``buf`` from ``src`` unless EOF comes first; return the bytes read.

    Only ``0`` is end of input. ``None`` (a non-blocking source with no data ready) raises
    ``ValueError``: treating it as EOF would seal a silently truncated, authentic artifact.
    """
    total = 0
    size = len(buf)
    while total < size:
        n = src.readinto(buf[total:])
        if n is None:
            raise ValueError("source is non-blocking and had no data ready: use a blocking source")
        if n == 0:
            break
        total += n
    return total


def recover_data_key(
    header: wire.Header,
    providers: Sequence[KeyProvider],
    context: Mapping[str, str],
    *,
    allowed_key_ids: Collection[str] | None = None,
    max_wrapped_keys: int = 8,
) -> tuple[bytearray, wire.HmacKey, bytes]:
    """Unwrap and verify a message's data key.

    Tries each provider in order on each wrapped key it accepts; a data key counts only if its
    commitment matches the header's (so a substituted wrapped key cannot smuggle in another key).

    Returns
    -------
    (data_key, prk, k_msg)
        The data key (caller zeroes it), its HKDF PRK state and the per-message key.

    Raises
    ------
    DecryptionError
        Tampering anywhere, no wrapped key acceptable to the providers, too many wrapped keys.
    KeyProviderError
        The ciphertext is intact but every acceptable provider failed operationally; the message
        lists each provider, key ID and reason.
    """
    keys = header.wrapped_keys()
    if not keys or len(keys) > max_wrapped_keys:
        raise DecryptionError()
    failures: list[str] = []
    tampered = False
    for provider in providers:
        for wrapped in keys:
            if allowed_key_ids is not None and wrapped.key_id not in allowed_key_ids:
                continue
            try:
                if not accepts(provider, wrapped):
                    continue
            except KeyProviderError as exc:  # e.g. an alias that cannot be resolved now
                failures.append(f"{provider.uri} (key {wrapped.key_id}): {exc}")
                continue
            try:
                data_key = provider.unwrap(wrapped, context=context)
            except DecryptionError:
                tampered = True
                continue
            except KeyProviderError as exc:
                failures.append(f"{provider.uri} (key {wrapped.key_id}): {exc}")
                continue
            except Exception as exc:  # a provider bug or SDK error: report it
                failures.append(f"{provider.uri} (key {wrapped.key_id}): {type(exc).__name__}")
                continue
            if len(data_key) != wire.KEY_LEN:
                data_key[:] = bytes(len(data_key))
                tampered = True
                continue
            prk = wire.hkdf_extract(data_key)
            k_msg, commitment = wire.message_keys(prk, header.prefix)
            if hmac.compare_digest(commitment, header.commitment):
                return data_key, prk, k_msg
            data_key[:] = bytes(len(data_key))
            tampered = True
    if failures and not tampered:
        raise KeyProviderError("no key provider could unwrap the data key: " + "; ".join(failures))
    if failures:
        _LOG.warning("key provider failures while decrypting: %s", "; ".join(failures))
    raise DecryptionError()


class EnvelopeEncryptor:
    """Envelope encryption under one or more master keys.

    Satisfies ``saip_ingestion.protocols.Encryptor`` (``encrypt``/``decrypt`` of records) and
    encrypts artifacts as constant-memory streams (``encrypt_stream``/``decrypt_stream``).

    Parameters
    ----------
    providers:
        Master keys, primary first. Encryption generates the data key with the first and wraps
        it under every other one; decryption tries them in this order.
    cache:
        ``True`` (default): a :class:`DataKeyCache` with default caps for records; an instance to
        set the caps; ``False``: a new data key (one KMS call) per record. The decrypt side keeps
        its own cache with the same caps. Artifacts always get a fresh data key.
    segment_size:
        Plaintext bytes per segment for records (artifacts: ``stream_segment_size``).
    stream_segment_size:
        Plaintext bytes per segment for artifacts (memory use is about three segments).
    key_slot_capacity:
        Bytes reserved per key slot in artifacts so re-wrapping can rewrite the header in place.
    max_wrapped_keys:
        Cap on wrapped data keys accepted on decrypt (and produced on encrypt).
    allowed_key_ids:
        Optional exact allow-list of wrapped-key IDs (on top of each provider's own check).
    rng:
        ``rng(n) -> n random bytes`` for message IDs (default ``os.urandom``).

    Raises
    ------
    TypeError, ValueError, EncryptionConfigError
        A setting out of range (checked here, not at first use).

    Notes
    -----
    Caching lets one data key protect many records; each still has its own HKDF-derived key.
    A shorter ``max_age`` narrows the window in which a disabled master key keeps working.
    """

    def __init__(
        self,
        providers: KeyProvider | Sequence[KeyProvider],
        *,
        cache: DataKeyCache | bool = True,
        segment_size: int = wire.DEFAULT_SEGMENT_SIZE,
        stream_segment_size: int = DEFAULT_STREAM_SEGMENT_SIZE,
        key_slot_capacity: int = DEFAULT_KEY_SLOT_CAPACITY,
        max_wrapped_keys: int = 8,
        allowed_key_ids: Collection[str] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        plist = [providers] if isinstance(providers, KeyProvider) else list(providers)
        if not plist:
            raise EncryptionConfigError("at least one key provider is required")
        for p in plist:
            if not isinstance(p, KeyProvider):
                raise TypeError(f"not a KeyProvider: {type(p).__name__}")
        for name, value, lo, hi in (
            ("segment_size", segment_size, wire.MIN_SEGMENT_SIZE, wire.MAX_SEGMENT_SIZE),
            (
                "stream_segment_size",
                stream_segment_size,
                wire.MIN_SEGMENT_SIZE,
                wire.MAX_SEGMENT_SIZE,
            ),
            ("key_slot_capacity", key_slot_capacity, 64, 0xFFFF),
            ("max_wrapped_keys", max_wrapped_keys, 1, wire.MAX_WRAPPED_KEYS),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {value}")
        if len(plist) > max_wrapped_keys:
            raise EncryptionConfigError(
                f"{len(plist)} key providers exceed max_wrapped_keys={max_wrapped_keys}"
            )
        if not callable(rng):
            raise TypeError("rng must be callable")
        if isinstance(cache, bool):
            self._cache: DataKeyCache | None = DataKeyCache() if cache else None
        elif isinstance(cache, DataKeyCache):
            self._cache = cache
        else:
            raise TypeError("cache must be a DataKeyCache or a bool")
        self._dcache: DataKeyCache | None = (
            DataKeyCache(
                max_age=self._cache.max_age,
                max_messages=self._cache.max_messages,
                max_bytes=self._cache.max_bytes,
                max_entries=self._cache.max_entries,
                clock=self._cache._clock,
            )
            if self._cache is not None
            else None
        )
        self._providers = tuple(plist)
        self._segment_size = segment_size
        self._stream_segment_size = stream_segment_size
        self._slot_capacity = key_slot_capacity
        self._max_wrapped_keys = max_wrapped_keys
        self._allowed_key_ids = frozenset(allowed_key_ids) if allowed_key_ids is not None else None
        self._rng = rng
        self._ctx_memo: dict[tuple[tuple[str, str], ...], tuple[bytes, bytes]] = {}
        self._prefix_head = wire.pack_prefix(segment_size, bytes(32), b"")[:10]

    # -- properties -----------------------------------------------------------------------------

    @property
    def providers(self) -> tuple[KeyProvider, ...]:
        """The master keys, primary first."""
        return self._providers

    @property
    def cache(self) -> DataKeyCache | None:
        """The encrypt-side data-key cache (``None`` when caching is off)."""
        return self._cache

    @property
    def decrypt_cache(self) -> DataKeyCache | None:
        """The decrypt-side cache of unwrapped data keys."""
        return self._dcache

    def close(self) -> None:
        """Evict both data-key caches, zeroing every cached data key."""
        for cache in (self._cache, self._dcache):
            if cache is not None:
                cache.clear()

    def __enter__(self) -> EnvelopeEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers --------------------------------------------------------------------------------

    def _context_bytes(self, context: Mapping[str, str]) -> bytes:
        try:
            return self._ctx_memo[tuple(context.items())][0]
        except (KeyError, TypeError, AttributeError):
            return self._context_parts(context)[0]

    def _context_parts(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        """``(encoded context, uint16 length || encoded context)``, memoised per context."""
        try:
            memo_key = tuple(context.items())
            return self._ctx_memo[memo_key]
        except KeyError:
            pass
        except (TypeError, AttributeError):  # unhashable or not a mapping: raise the right error
            if not isinstance(context, Mapping):
                raise TypeError(
                    f"context must be a mapping of str to str, got {type(context).__name__}"
                ) from None
            encoded = wire.encode_context(context)
            return encoded, len(encoded).to_bytes(2, "big") + encoded
        encoded = wire.encode_context(context)
        if len(self._ctx_memo) >= 1024:
            self._ctx_memo.clear()
        parts = (encoded, len(encoded).to_bytes(2, "big") + encoded)
        self._ctx_memo[memo_key] = parts
        return parts

    def _new_data_key(self, context: Mapping[str, str]) -> tuple[bytearray, list[WrappedKey]]:
        data_key, first = self._providers[0].generate_data_key(context=context)
        try:
            if len(data_key) != wire.KEY_LEN:
                raise KeyProviderError(
                    f"{self._providers[0].uri}: data key is not {wire.KEY_LEN} bytes"
                )
            wrapped = [first] + [p.wrap(data_key, context=context) for p in self._providers[1:]]
        except BaseException:
            data_key[:] = bytes(len(data_key))
            raise
        return data_key, wrapped

    def _record_material(
        self, ctx_bytes: bytes, context: Mapping[str, str], nbytes: int
    ) -> tuple[wire.HmacKey, bytes]:
        if self._cache is not None:
            hit = self._cache.use(ctx_bytes, nbytes)
            if hit is not None:
                return hit[0], cast(_Material, hit[1]).key_area
        data_key, wrapped = self._new_data_key(context)
        prk = wire.hkdf_extract(data_key)
        need = wire.slot_size(wrapped)
        area = wire.key_area([wire.encode_slot(wrapped, generation=1, capacity=need)], need)
        if self._cache is not None:
            self._cache.put(
                ctx_bytes, data_key=data_key, prk=prk, extra=_Material(area), nbytes=nbytes
            )
        else:
            data_key[:] = bytes(len(data_key))
        return prk, area

    def _segments(self, aead: AESGCM, data: bytes | memoryview, seg: int) -> list[bytes]:
        mv = memoryview(data)
        out: list[bytes] = []
        i = 0
        pos = 0
        n = len(mv)
        while n - pos >= seg:
            out.append(aead.encrypt(wire.segment_nonce(i, final=False), mv[pos : pos + seg], None))
            pos += seg
            i += 1
        out.append(aead.encrypt(wire.segment_nonce(i, final=True), mv[pos:], None))
        return out

    # -- records (Encryptor protocol) ----------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Encrypt one record under ``context`` (bound as AAD; needed again to decrypt).

        Raises
        ------
        TypeError, ValueError
            ``plaintext`` not bytes-like, or an invalid context.
        KeyProviderError
            The primary provider could not generate (or another could not wrap) a data key.
        """
        if not isinstance(plaintext, _BYTES_LIKE):
            raise TypeError(f"plaintext must be bytes, got {type(plaintext).__name__}")
        ctx_bytes, ctx_tail = self._context_parts(context)
        seg = self._segment_size
        prk, area = self._record_material(ctx_bytes, context, len(plaintext))
        message_id = self._rng(wire.MESSAGE_ID_LEN)
        if len(message_id) != wire.MESSAGE_ID_LEN:
            raise ValueError("rng returned the wrong number of bytes")
        prefix = self._prefix_head + message_id + ctx_tail
        k_msg, commitment = wire.message_keys(prk, prefix)
        aead = AESGCM(k_msg)
        if len(plaintext) < seg:
            return b"".join((prefix, commitment, area, aead.encrypt(_FINAL0, plaintext, None)))
        return b"".join((prefix, commitment, area, *self._segments(aead, plaintext, seg)))

    def _message_key(self, header: wire.Header, context: Mapping[str, str], nbytes: int) -> bytes:
        """Per-message key of a parsed header, via the decrypt cache or the providers."""
        if header.suite != wire.SUITE_AES256GCM_HKDF_SHA512_COMMIT:
            raise _TamperError("suite not allowed")
        if len(header.wrapped_keys()) > self._max_wrapped_keys:
            raise _TamperError("too many wrapped keys")
        cache_key = (
            wire.key_area([s.raw for s in header.slots], header.slot_capacity),
            header.context_bytes,
        )
        if self._dcache is not None:
            hit = self._dcache.use(cache_key, nbytes)
            if hit is not None:
                k_msg, commitment = wire.message_keys(hit[0], header.prefix)
                if not hmac.compare_digest(commitment, header.commitment):
                    raise _TamperError("commitment mismatch")
                return k_msg
        data_key, prk, k_msg = recover_data_key(
            header,
            self._providers,
            context,
            allowed_key_ids=self._allowed_key_ids,
            max_wrapped_keys=self._max_wrapped_keys,
        )
        if self._dcache is not None:
            self._dcache.put(cache_key, data_key=data_key, prk=prk, extra=None, nbytes=nbytes)
        else:
            data_key[:] = bytes(len(data_key))
        return k_msg

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Authenticate and decrypt one record; ``context`` must equal the one used to encrypt.

        Raises
        ------
        DecryptionError
            Any tampering, truncation, wrong context, wrong key or disallowed key ID or suite.
        KeyProviderError
            The ciphertext is intact but no provider could unwrap its data key (lists each).
        """
        ctx_bytes = self._context_bytes(context)
        if not isinstance(ciphertext, bytes):
            if not isinstance(ciphertext, _BYTES_LIKE):
                raise TypeError(f"ciphertext must be bytes, got {type(ciphertext).__name__}")
            ciphertext = bytes(ciphertext)
        try:
            k_msg, offset, seg = self._record_key(ciphertext, ctx_bytes, context)
            body = memoryview(ciphertext)[offset:]
            aead = AESGCM(k_msg)
            seg += _TAG
            n = len(body)
            if n < seg:
                return aead.decrypt(_FINAL0, body, None)
            parts: list[bytes] = []
            pos = 0
            i = 0
            while n - pos >= seg:
                nonce = wire.segment_nonce(i, final=False)
                parts.append(aead.decrypt(nonce, body[pos : pos + seg], None))
                pos += seg
                i += 1
            parts.append(aead.decrypt(wire.segment_nonce(i, final=True), body[pos:], None))
            return b"".join(parts)
        except (_TamperError, wire.MalformedError, InvalidTag, ValueError, struct.error) as exc:
            _LOG.debug("record decryption failed: %s", type(exc).__name__)
            raise DecryptionError() from None

    def _record_key(
        self, ciphertext: bytes, ctx_bytes: bytes, context: Mapping[str, str]
    ) -> tuple[bytes, int, int]:
        """``(K_msg, payload offset, segment size)`` of a record, authenticated by commitment.

        Fast path: a key area byte-identical to one that already passed the strict parse and
        unwrap is found in the decrypt cache, so only the fixed prefix fields are read here
        (range-checked) and the commitment is verified as always.
        """
        magic, version, suite, seg, _mid, clen = _PREFIX.unpack_from(ciphertext, 0)
        if (
            magic != wire.MAGIC
            or version != wire.VERSION
            or suite != wire.SUITE_AES256GCM_HKDF_SHA512_COMMIT
            or not wire.MIN_SEGMENT_SIZE <= seg <= wire.MAX_SEGMENT_SIZE
        ):
            raise _TamperError("bad prefix")
        end = _PREFIX.size + clen
        if ciphertext[_PREFIX.size : end] != ctx_bytes:
            raise _TamperError("context mismatch")
        slots, capacity = _AREA.unpack_from(ciphertext, end + wire.COMMITMENT_LEN)
        area_start = end + wire.COMMITMENT_LEN
        offset = area_start + _AREA.size + slots * capacity
        if self._dcache is not None and offset <= len(ciphertext):
            hit = self._dcache.use((ciphertext[area_start:offset], ctx_bytes), len(ciphertext))
            if hit is not None:
                k_msg, commitment = wire.message_keys(hit[0], ciphertext[:end])
                if not hmac.compare_digest(commitment, ciphertext[end:area_start]):
                    raise _TamperError("commitment mismatch")
                return k_msg, offset, seg
        header = wire.parse_header(ciphertext)
        return self._message_key(header, context, len(ciphertext)), header.payload_offset, seg

    # -- artifacts (streams) --------------------------------------------------------------------

    def encrypt_stream(self, src: Readable, dst: Writable, *, context: Mapping[str, str]) -> int:
        """Encrypt ``src`` to ``dst`` in constant memory under a fresh data key.

        Returns
        -------
        int
            Plaintext bytes read.
        """
        ctx_bytes = self._context_bytes(context)
        seg = self._stream_segment_size
        data_key, wrapped = self._new_data_key(context)
        try:
            need = wire.slot_size(wrapped)
            capacity = max(need, self._slot_capacity)
            if capacity > 0xFFFF:
                raise EncryptionConfigError("wrapped keys exceed the 65535-byte slot limit")
            area = wire.key_area(
                [
                    wire.encode_slot(wrapped, generation=1, capacity=capacity),
                    wire.encode_slot((), generation=0, capacity=capacity),
                ],
                capacity,
            )
            prefix = wire.pack_prefix(seg, self._rng(wire.MESSAGE_ID_LEN), ctx_bytes)
            k_msg, commitment = wire.message_keys(wire.hkdf_extract(data_key), prefix)
        finally:
            data_key[:] = bytes(len(data_key))
        dst.write(prefix + commitment + area)
        aead = AESGCM(k_msg)
        inbuf = bytearray(seg)
        outbuf = bytearray(seg + _TAG)
        inv = memoryview(inbuf)
        outv = memoryview(outbuf)
        total = 0
        index = 0
        while True:
            n = _read_full(src, inv)
            total += n
            final = n < seg
            if index >= _MAX_SEGMENTS:
                raise EncryptionConfigError("artifact exceeds 2^32 segments")
            aead.encrypt_into(
                wire.segment_nonce(index, final=final), inv[:n], None, outv[: n + _TAG]
            )
            dst.write(outv[: n + _TAG])
            index += 1
            if final:
                return total

    def decrypt_stream(self, src: Readable, dst: Writable, *, context: Mapping[str, str]) -> int:
        """Decrypt ``src`` to ``dst`` in constant memory.

        Each segment is written only after its tag verifies. A truncated stream raises *after*
        the earlier, authentic segments were written: callers that must not expose a partial
        result write to a temporary file and keep it only on success (as ``saip decrypt`` does).

        Returns
        -------
        int
            Plaintext bytes written.

        Raises
        ------
        DecryptionError, KeyProviderError
            As :meth:`decrypt`.
        """
        ctx_bytes = self._context_bytes(context)
        try:
            head = bytearray()
            need = wire.PREFIX_SIZE
            while len(head) < need:
                chunk = src.read(need - len(head))
                if not chunk:
                    raise _TamperError("truncated header")
                head += chunk
                need = wire.header_length_hint(bytes(head))
            header = wire.parse_header(bytes(head))
            if header.context_bytes != ctx_bytes:
                raise _TamperError("context mismatch")
            aead = AESGCM(self._message_key(header, context, 0))
            seg = header.segment_size
            inbuf = bytearray(seg + _TAG)
            outbuf = bytearray(seg)
            inv = memoryview(inbuf)
            outv = memoryview(outbuf)
            total = 0
            index = 0
            while True:
                n = _read_full(src, inv)
                if n < _TAG or index >= _MAX_SEGMENTS:
                    raise _TamperError("truncated")
                final = n < seg + _TAG
                aead.decrypt_into(
                    wire.segment_nonce(index, final=final), inv[:n], None, outv[: n - _TAG]
                )
                dst.write(outv[: n - _TAG])
                total += n - _TAG
                index += 1
                if final:
                    return total
        except (_TamperError, wire.MalformedError, InvalidTag, ValueError) as exc:
            _LOG.debug("stream decryption failed: %s", type(exc).__name__)
            raise DecryptionError() from None
