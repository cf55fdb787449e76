"""Envelope encryption of records and streamed artifacts (SAIP format v2; v1 still read).

:class:`EnvelopeEncryptor` encrypts under one data key per cache period for records (an *epoch*,
see below and :class:`~saip_encryption.cache.DataKeyCache`) and per artifact for streams, wraps the
data key under every configured master key (multi-provider: any one of them can decrypt —
cross-cloud disaster recovery), optionally signs the header with a KMS-held key
(:mod:`saip_encryption.signing`), and decrypts only what authenticates. The byte layout, key
derivation and security argument are in :mod:`saip_encryption.wire` and
``docs/encryption-format.md``.

Records (suite 2): an epoch is one data key, a fresh 256-bit epoch ID and one context. The epoch
key and the commitment are derived once per epoch; each record is the constant epoch header, a
random 96-bit nonce and one AES-GCM ciphertext. :meth:`EnvelopeEncryptor.bind` returns a
:class:`BoundEncryptor` for one context with ``seal``/``open`` and the batch forms
``seal_many``/``open_many`` (one ``urandom`` call per batch).

Decryption order (every step before any plaintext is released):

1. parse the header strictly (magic, version, suite, field ranges, key-ID grammar, key-slot CRCs,
   wrapped-key cap);
2. the stored context must equal the caller's context;
3. the signature policy: a signed header is checked locally against the configured verifiers
   (``verify_with``; configured verifiers make a valid signature mandatory); a wrap that anyone
   with a public key can produce (Key Vault RSA-OAEP) counts only with a valid signature;
4. offer each wrapped key only to a configured provider that accepts its key ID (allow-list),
   providers in the order given;
5. derive ``(K, commitment)`` from the unwrapped data key and compare the commitment in constant
   time — this authenticates the header and commits to the data key;
6. decrypt (suite 1: segment by segment, STREAM counter + final flag, a segment's plaintext is
   released only after its tag verifies; suite 2: one AEAD call). A later record of a verified
   epoch is matched by its exact header bytes, so steps 1-5 run once per epoch.

Every ciphertext problem raises the one opaque :class:`~saip_encryption.errors.DecryptionError`.
When the ciphertext is intact but no provider could unwrap the data key (key disabled, version
destroyed, access denied), :class:`~saip_encryption.errors.KeyProviderError` lists each attempt.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import count, islice
from typing import Any, Protocol, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from saip_encryption import wire
from saip_encryption.cache import DataKeyCache
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers import accepts
from saip_encryption.providers.base import KeyProvider, WrappedKey
from saip_encryption.signing import HeaderSigner, HeaderVerifier

__all__ = [
    "DEFAULT_KEY_SLOT_CAPACITY",
    "DEFAULT_STREAM_SEGMENT_SIZE",
    "BoundEncryptor",
    "EnvelopeEncryptor",
    "recover_data_key",
    "wraps_with_public_key",
]

_LOG = logging.getLogger(__name__)

DEFAULT_STREAM_SEGMENT_SIZE = 1 << 20
#: bytes reserved per key slot in artifacts, so that re-wrapping can happen in place
DEFAULT_KEY_SLOT_CAPACITY = 2048

_TAG = wire.TAG_LEN
_NONCE = wire.NONCE_LEN
_FINAL0 = wire.segment_nonce(0, final=True)
_MAX_SEGMENTS = 1 << 32
_BYTES_LIKE = (bytes, bytearray, memoryview)
_U16 = struct.Struct(">H")
_AREA = struct.Struct(">BH")
_CTX_AT = wire.PREFIX_SIZE
#: version 2, suite 2 (epoch record): bytes 4 and 5 of every record
_EPOCH_TAG = bytes((wire.VERSION, wire.SUITE_EPOCH_RECORD))
#: random 96-bit nonces: at most 2^32 records per epoch key (NIST SP 800-38D §8.3)
MAX_EPOCH_MESSAGES = 1 << 32


class Readable(Protocol):
    """A binary source: ``readinto`` (a file, ``sys.stdin.buffer``, ``io.BytesIO``...)."""

    def readinto(self, buffer: Any, /) -> int | None: ...

    def read(self, size: int = -1, /) -> bytes: ...


class Writable(Protocol):
    """A binary sink."""

    def write(self, data: Any, /) -> int | None: ...


class _TamperError(Exception):
    """Internal: a ciphertext problem (becomes DecryptionError)."""


@dataclass(slots=True)
class _Epoch:
    """One epoch: its constant header ``A || C || S || K`` and its AEAD."""

    header: bytes
    aead: AESGCM
    context_bytes: bytes
    #: the context as a dict: a caller's context equal to it has the same canonical encoding
    context: dict[str, str]
    #: clock value after which the epoch is not used (encrypt) or verified again (decrypt)
    expires: float = 0.0
    #: encrypt side: record tickets (0, 1, 2, ...): a record may be sealed only with a ticket
    #: below ``limit``. ``next`` on ``itertools.count`` is one C call, so no two threads (or
    #: encryptors sharing the epoch) get the same ticket and the message cap is exact.
    issued: Iterator[int] = field(default_factory=count)
    limit: int = 0
    #: encrypt side: plaintext bytes the epoch may still protect (a soft cap: concurrent
    #: threads may overshoot it by one record or batch each; it is not a nonce bound)
    bytes_left: int = 0
    #: encrypt side: the provider and signer objects whose ids key the epoch in a shared cache
    owners: tuple[object, ...] = ()

    def reserve(self, messages: int, nbytes: int) -> bool:
        """Take ``messages`` tickets and account ``nbytes``; False if a cap would be exceeded.

        The last ticket of the batch is checked: tickets only grow, so all of them are below it.
        A refused batch burns its tickets, which only retires the epoch sooner.
        """
        if self.bytes_left < nbytes:
            return False
        last = next(self.issued) if messages == 1 else next(islice(self.issued, messages - 1, None))
        if last >= self.limit:
            return False
        self.bytes_left -= nbytes
        return True


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


def wraps_with_public_key(provider: KeyProvider) -> bool:
    """Whether anyone holding ``provider``'s *public* key can produce its wraps (RSA-OAEP)."""
    return bool(getattr(provider, "wraps_with_public_key", False))


def _signature_valid(header: wire.Header, verifiers: Sequence[HeaderVerifier]) -> bool:
    sig = header.signature
    if sig is None:
        return False
    return any(v.verify(sig, header.prefix, header.commitment) for v in verifiers if v.matches(sig))


def recover_data_key(
    header: wire.Header,
    providers: Sequence[KeyProvider],
    context: Mapping[str, str],
    *,
    allowed_key_ids: Collection[str] | None = None,
    max_wrapped_keys: int = 8,
    verify_with: Sequence[HeaderVerifier] = (),
    allow_unsigned_public_key_wraps: bool = False,
) -> tuple[bytearray, wire.HmacKey, bytes]:
    """Unwrap and verify a message's data key (decryption and re-wrapping both come here).

    Only the given ``providers`` are used — never a key named by the header — and each is offered
    only the wrapped keys it accepts (and that are in ``allowed_key_ids``, if given). A data key
    counts only if its commitment matches the header's. Signature policy (before any provider is
    called): with ``verify_with``, the header must carry a valid signature by one of them; without,
    a data key unwrapped by a public-key wrap (:func:`wraps_with_public_key`) counts only if the
    header is validly signed — unless ``allow_unsigned_public_key_wraps`` (forgeable: anyone with
    the public key can then make envelopes this decryptor accepts).

    Returns
    -------
    (data_key, prk, key)
        The data key (caller zeroes it), its HKDF PRK state and the message/epoch key.

    Raises
    ------
    DecryptionError
        Tampering anywhere, a missing or invalid required signature, no wrapped key acceptable
        to the providers, too many wrapped keys.
    KeyProviderError
        The ciphertext is intact but every acceptable provider failed operationally; the message
        lists each provider, key ID (escaped) and reason.
    """
    keys = header.wrapped_keys()
    if not keys or len(keys) > max_wrapped_keys:
        raise DecryptionError()
    signed = _signature_valid(header, verify_with) if verify_with else False
    if verify_with and not signed:
        raise DecryptionError()
    failures: list[str] = []
    tampered = False
    for provider in providers:
        if not signed and not allow_unsigned_public_key_wraps and wraps_with_public_key(provider):
            tampered = tampered or any(_accepts_quietly(provider, w) for w in keys)
            continue
        for wrapped in keys:
            if allowed_key_ids is not None and wrapped.key_id not in allowed_key_ids:
                continue
            where = f"{provider.uri} (key {wire.escape(wrapped.key_id)})"
            try:
                if not accepts(provider, wrapped):
                    continue
            except KeyProviderError as exc:  # e.g. an alias that cannot be resolved now
                failures.append(f"{where}: {wire.escape(str(exc))}")
                continue
            except Exception as exc:  # a provider choking on a hostile key ID: not its key
                _LOG.debug("%s rejected a key ID: %s", provider.uri, type(exc).__name__)
                continue
            try:
                data_key = provider.unwrap(wrapped, context=context)
            except DecryptionError:
                tampered = True
                continue
            except KeyProviderError as exc:
                failures.append(f"{where}: {wire.escape(str(exc))}")
                continue
            except Exception as exc:  # a provider bug or SDK error: report it
                failures.append(f"{where}: {type(exc).__name__}")
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


def _accepts_quietly(provider: KeyProvider, wrapped: WrappedKey) -> bool:
    """:func:`accepts`, with any provider error counted as "no" (key IDs are hostile input)."""
    try:
        return accepts(provider, wrapped)
    except Exception:
        return False


def _epoch_header_length(ct: bytes) -> int:
    """Length of the epoch header at the start of a v2 suite-2 record (fields range-checked)."""
    (ctx_len,) = _U16.unpack_from(ct, _CTX_AT - 2)
    if ctx_len > wire.MAX_CONTEXT_BYTES:
        raise _TamperError("context too long")
    pos = _CTX_AT + ctx_len + wire.COMMITMENT_LEN
    (sig_len,) = _U16.unpack_from(ct, pos)
    if sig_len > wire.MAX_SIGNATURE_BLOCK:
        raise _TamperError("signature field too long")
    pos += 2 + sig_len
    slots, capacity = _AREA.unpack_from(ct, pos)
    if slots != 1:
        raise _TamperError("records have one key slot")
    length: int = pos + _AREA.size + capacity
    return length


class BoundEncryptor:
    """Record encryption under one fixed context: ``enc.bind(context)``.

    The context is validated and encoded once. Each record is sealed under the current epoch of
    that context (see :class:`EnvelopeEncryptor`); ``seal_many``/``open_many`` process a batch with
    one ``urandom`` call and one cache look-up. Records are interchangeable with
    :meth:`EnvelopeEncryptor.encrypt`/``decrypt`` under the same context.
    """

    __slots__ = ("_cache_key", "_context", "_ctx_bytes", "_enc")

    def __init__(self, enc: EnvelopeEncryptor, context: Mapping[str, str]) -> None:
        self._enc = enc
        self._context = dict(context)
        self._ctx_bytes = enc._context_bytes(self._context)
        self._cache_key = (enc._cache_ns, self._ctx_bytes)

    @property
    def context(self) -> dict[str, str]:
        """A copy of the bound context."""
        return dict(self._context)

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt one record (as ``enc.encrypt(plaintext, context=...)``)."""
        if not isinstance(plaintext, _BYTES_LIKE):
            raise TypeError(f"plaintext must be bytes, got {type(plaintext).__name__}")
        ep = self._enc._epoch(self._cache_key, self._ctx_bytes, self._context, len(plaintext), 1)
        nonce = self._enc._rng(_NONCE)
        return ep.header + nonce + ep.aead.encrypt(nonce, plaintext, None)

    def seal_many(self, plaintexts: Sequence[bytes]) -> list[bytes]:
        """Encrypt a batch of records; returns their ciphertexts in order."""
        return self._enc._seal_batch(self._cache_key, self._ctx_bytes, self._context, plaintexts)

    def open(self, ciphertext: bytes) -> bytes:
        """Authenticate and decrypt one record (any format version) under the bound context.

        Raises
        ------
        DecryptionError, KeyProviderError
            As :meth:`EnvelopeEncryptor.decrypt`.
        """
        return self._enc._open(ciphertext, self._ctx_bytes, self._context)

    def open_many(self, ciphertexts: Sequence[bytes]) -> list[bytes]:
        """Decrypt a batch; all or nothing.

        Records of an epoch already verified are matched by their exact header bytes, so a batch
        from one epoch costs one header check and one AEAD call per record.

        Raises
        ------
        DecryptionError, KeyProviderError
            On the first record that fails (no plaintext of the batch is returned). Call
            :meth:`open` per record to tell which one failed.
        """
        return self._enc._open_batch(ciphertexts, self._ctx_bytes, self._context)


class EnvelopeEncryptor:
    """Envelope encryption under one or more master keys.

    Satisfies ``saip_ingestion.protocols.Encryptor`` (``encrypt``/``decrypt`` of records),
    offers a bound-context batch API (:meth:`bind`), and encrypts artifacts as constant-memory
    streams (``encrypt_stream``/``decrypt_stream``).

    Parameters
    ----------
    providers:
        Master keys, primary first. Encryption generates the data key with the first and wraps
        it under every other one; decryption tries them in this order.
    cache:
        ``True`` (default): a :class:`DataKeyCache` with default caps for records; an instance to
        set the caps (they are the epoch caps); ``False``: a new data key (one KMS call) per
        record. The decrypt side keeps its own caches with the same caps. Artifacts always get a
        fresh data key. A cache instance may be shared: entries are keyed by the providers, their
        key IDs, the suite, the signer and the context.
    segment_size:
        Plaintext bytes per segment of version-1 style segmented messages (kept for
        compatibility; records are one AEAD call in format v2).
    stream_segment_size:
        Plaintext bytes per segment for artifacts (memory use is about three segments).
    key_slot_capacity:
        Bytes reserved per key slot in artifacts so re-wrapping can rewrite the header in place.
    max_wrapped_keys:
        Cap on wrapped data keys accepted on decrypt (and produced on encrypt).
    allowed_key_ids:
        Optional exact allow-list of wrapped-key IDs (on top of each provider's own check).
    signer:
        A KMS-held ECDSA P-256 key (:mod:`saip_encryption.signing`) that signs every header this
        encryptor writes (one signature per epoch or artifact).
    verify_with:
        Pinned public keys of trusted signers. When given, every envelope must carry a valid
        signature by one of them (sender authentication for every provider).
    allow_unsigned_public_key_wraps:
        Escape hatch: accept unsigned envelopes whose data key came from a public-key wrap (Key
        Vault RSA-OAEP). Anyone who can read the public key can then forge envelopes.

    Raises
    ------
    TypeError, ValueError, EncryptionConfigError
        A setting out of range (checked here, not at first use); every provider wraps with a
        public key and neither ``verify_with`` nor the escape hatch is set.

    Notes
    -----
    Epoch caps are the cache caps (``max_age``, ``max_messages``, ``max_bytes``; messages are
    additionally capped at 2^32 for random 96-bit nonces, NIST SP 800-38D §8.3). A shorter
    ``max_age`` narrows the window in which a disabled master key keeps working.
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
        signer: HeaderSigner | None = None,
        verify_with: Sequence[HeaderVerifier] = (),
        allow_unsigned_public_key_wraps: bool = False,
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
        if signer is not None and not isinstance(signer, HeaderSigner):
            raise TypeError(f"signer must be a HeaderSigner, got {type(signer).__name__}")
        verifiers = tuple(verify_with)
        for v in verifiers:
            if not isinstance(v, HeaderVerifier):
                raise TypeError(f"verify_with takes HeaderVerifier objects, got {type(v).__name__}")
        if not isinstance(allow_unsigned_public_key_wraps, bool):
            raise TypeError("allow_unsigned_public_key_wraps must be a bool")
        if (
            all(wraps_with_public_key(p) for p in plist)
            and not verifiers
            and not allow_unsigned_public_key_wraps
        ):
            raise EncryptionConfigError(
                f"{plist[0].uri}: its wraps can be made by anyone holding the public key, so "
                "unsigned envelopes under it are forgeable: set verify_with=[HeaderVerifier(...)] "
                "(and signer= to encrypt), or allow_unsigned_public_key_wraps=True to accept that"
            )
        if isinstance(cache, bool):
            self._cache: DataKeyCache | None = DataKeyCache() if cache else None
        elif isinstance(cache, DataKeyCache):
            self._cache = cache
        else:
            raise TypeError("cache must be a DataKeyCache or a bool")
        self._dcache: DataKeyCache | None = (
            self._cache.sibling() if self._cache is not None else None
        )
        self._providers = tuple(plist)
        self._segment_size = segment_size
        self._stream_segment_size = stream_segment_size
        self._slot_capacity = key_slot_capacity
        self._max_wrapped_keys = max_wrapped_keys
        self._allowed_key_ids = frozenset(allowed_key_ids) if allowed_key_ids is not None else None
        self._signer = signer
        self._verifiers = verifiers
        self._allow_unsigned = allow_unsigned_public_key_wraps
        #: private test hook: ``rng(n) -> n random bytes`` (message/epoch IDs and nonces)
        self._rng: Callable[[int], bytes] = os.urandom
        self._ctx_memo: dict[tuple[tuple[str, str], ...], bytes] = {}
        # cache namespace: the provider and signer *objects* (a URI such as an AWS alias or key
        # ID names a different key per region, account or endpoint, so equal text is not the same
        # key), their key IDs, suite and segment size — as one digest, so a cache key hashes
        # fast. Every epoch keeps these objects alive (``_Epoch.owners``), so their ids cannot be
        # reused by other objects while an epoch keyed by them exists.
        self._owners: tuple[object, ...] = (*plist, signer)
        self._cache_ns = hashlib.sha256(
            repr(
                (
                    "saip-v2-epoch",
                    tuple(id(o) for o in self._owners),
                    tuple(p.uri for p in plist),
                    tuple(str(getattr(p, "primary_key_id", "")) for p in plist),
                    wire.SUITE_EPOCH_RECORD,
                    segment_size,
                    None if signer is None else (signer.scheme, signer.key_id),
                )
            ).encode()
        ).digest()
        # decrypt side: verified epoch headers (exact bytes) → epoch, LRU, same caps as the cache
        self._depochs: OrderedDict[bytes, _Epoch] = OrderedDict()
        self._last: _Epoch | None = None
        self._hot: dict[tuple[bytes, bytes], _Epoch] = {}
        self._last_sealed: _Epoch | None = None
        self._lock = threading.Lock()
        self._clock: Callable[[], float] = (
            self._cache._clock if self._cache is not None else time.monotonic
        )

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
        """The decrypt-side cache of unwrapped data keys (segmented messages)."""
        return self._dcache

    def close(self) -> None:
        """Evict the data-key caches (zeroing every cached data key) and forget verified epochs."""
        for cache in (self._cache, self._dcache):
            if cache is not None:
                cache.clear()
        with self._lock:
            self._depochs.clear()
            self._last = None
            self._hot.clear()
            self._last_sealed = None

    def __enter__(self) -> EnvelopeEncryptor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def bind(self, context: Mapping[str, str]) -> BoundEncryptor:
        """A :class:`BoundEncryptor` for ``context`` (seal, open, seal_many, open_many).

        Raises
        ------
        TypeError, ValueError
            An invalid context (checked here, once).
        """
        if not isinstance(context, Mapping):
            raise TypeError(
                f"context must be a mapping of str to str, got {type(context).__name__}"
            )
        return BoundEncryptor(self, context)

    # -- helpers --------------------------------------------------------------------------------

    def _context_bytes(self, context: Mapping[str, str]) -> bytes:
        """Canonical context bytes, memoised per context."""
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
            return wire.encode_context(context)
        encoded = wire.encode_context(context)
        if len(self._ctx_memo) >= 1024:
            self._ctx_memo.clear()
        self._ctx_memo[memo_key] = encoded
        return encoded

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

    def _signature_field(self, prefix: bytes, commitment: bytes) -> bytes:
        if self._signer is None:
            return wire.encode_signature(None)
        sig = self._signer.sign(wire.signed_message(prefix, commitment))
        return wire.encode_signature(
            wire.HeaderSignature(self._signer.scheme, self._signer.key_id, sig)
        )

    def _epoch(
        self,
        cache_key: tuple[bytes, bytes],
        ctx_bytes: bytes,
        context: Mapping[str, str],
        nbytes: int,
        messages: int,
    ) -> _Epoch:
        """The current epoch for a context, accounting ``messages``/``nbytes`` against its caps.

        The epoch's own counters are authoritative (they live in the epoch object, which a shared
        cache shares) and are checked and decremented atomically (:meth:`_Epoch.reserve`), so
        concurrent threads never put more than the caps under one epoch key; the cache holds the
        data key (zeroed on eviction) and lets encryptors with the same providers share epochs.
        """
        ep = self._hot.get(cache_key)
        if ep is not None and self._clock() < ep.expires and ep.reserve(messages, nbytes):
            return ep
        cache = self._cache
        if cache is not None:
            hit = cache.use(cache_key, nbytes, messages=messages)
            if hit is not None:
                ep = cast(_Epoch, hit[1])
                if ep.reserve(messages, nbytes):
                    self._hot[cache_key] = ep
                    return ep
        data_key, wrapped = self._new_data_key(context)
        try:
            prk = wire.hkdf_extract(data_key)
            prefix = wire.pack_prefix(
                0, self._rng(wire.MESSAGE_ID_LEN), ctx_bytes, suite=wire.SUITE_EPOCH_RECORD
            )
            key, commitment = wire.message_keys(prk, prefix)
            need = wire.slot_size(wrapped)
            area = wire.key_area([wire.encode_slot(wrapped, generation=1, capacity=need)], need)
            header = prefix + commitment + self._signature_field(prefix, commitment) + area
        except BaseException:
            data_key[:] = bytes(len(data_key))
            raise
        epoch = _Epoch(header, AESGCM(key), ctx_bytes, dict(context), owners=self._owners)
        if cache is not None:
            epoch.expires = self._clock() + cache.max_age
            epoch.limit = min(cache.max_messages, MAX_EPOCH_MESSAGES)
            next(islice(epoch.issued, messages - 1, None))  # this call's tickets: 0..messages-1
            epoch.bytes_left = cache.max_bytes - nbytes
            cache.put(
                cache_key, data_key=data_key, prk=prk, extra=epoch, nbytes=nbytes, messages=messages
            )
            if len(self._hot) >= cache.max_entries:
                self._hot.clear()
            self._hot[cache_key] = epoch
        else:
            data_key[:] = bytes(len(data_key))
        return epoch

    def _seal_batch(
        self,
        cache_key: tuple[bytes, bytes],
        ctx_bytes: bytes,
        context: Mapping[str, str],
        plaintexts: Sequence[bytes],
    ) -> list[bytes]:
        n = len(plaintexts)
        if n == 0:
            return []
        total = sum(map(len, plaintexts))  # a str is refused by AESGCM (TypeError) below
        cache = self._cache
        max_messages = min(MAX_EPOCH_MESSAGES, cache.max_messages if cache else 1)
        if n > 1 and (n > max_messages or (cache is not None and total > cache.max_bytes)):
            half = n // 2
            return self._seal_batch(
                cache_key, ctx_bytes, context, plaintexts[:half]
            ) + self._seal_batch(cache_key, ctx_bytes, context, plaintexts[half:])
        ep = self._epoch(cache_key, ctx_bytes, context, total, n)
        nonces = self._rng(_NONCE * n)
        if len(nonces) != _NONCE * n:
            raise ValueError("rng returned the wrong number of bytes")
        header = ep.header
        enc = ep.aead.encrypt
        return [
            header + nonce + enc(nonce, pt, None)
            for nonce, pt in zip(
                [nonces[i : i + _NONCE] for i in range(0, _NONCE * n, _NONCE)],
                plaintexts,
                strict=True,
            )
        ]

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
        n = len(plaintext)
        ep = self._last_sealed
        # fast path: the same context as the last record (compared by value: equal str→str
        # mappings have the same canonical encoding) and the epoch within its caps
        if (
            ep is not None
            and context == ep.context
            and ep.bytes_left >= n
            and self._clock() < ep.expires
            and next(ep.issued) < ep.limit  # a unique ticket: exact message cap under threads
        ):
            ep.bytes_left -= n
        else:
            ctx_bytes = self._context_bytes(context)
            ep = self._epoch((self._cache_ns, ctx_bytes), ctx_bytes, context, n, 1)
            self._last_sealed = ep if self._cache is not None else None
        nonce = self._rng(_NONCE)
        return ep.header + nonce + ep.aead.encrypt(nonce, plaintext, None)

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Authenticate and decrypt one record; ``context`` must equal the one used to encrypt.

        Reads every format version (v2 records and artifacts, v1 records and artifacts).

        Raises
        ------
        DecryptionError
            Any tampering, truncation, wrong context, wrong key, disallowed key ID or suite, a
            missing or invalid required signature.
        KeyProviderError
            The ciphertext is intact but no provider could unwrap its data key (lists each).
        """
        last = self._last
        if (
            last is not None
            and type(ciphertext) is bytes
            and ciphertext.startswith(last.header)
            and context == last.context
            and self._clock() < last.expires
        ):
            hlen = len(last.header)
            try:
                return last.aead.decrypt(
                    ciphertext[hlen : hlen + _NONCE], ciphertext[hlen + _NONCE :], None
                )
            except (InvalidTag, ValueError):  # ValueError: too short for a nonce
                raise DecryptionError() from None
        return self._open(ciphertext, self._context_bytes(context), context)

    def _open(self, ciphertext: bytes, ctx_bytes: bytes, context: Mapping[str, str]) -> bytes:
        if type(ciphertext) is not bytes:
            if not isinstance(ciphertext, _BYTES_LIKE):
                raise TypeError(f"ciphertext must be bytes, got {type(ciphertext).__name__}")
            ciphertext = bytes(ciphertext)
        last = self._last
        try:
            if (
                last is not None
                and last.context_bytes == ctx_bytes
                and ciphertext.startswith(last.header)
                and self._clock() < last.expires
            ):
                hlen = len(last.header)
                return last.aead.decrypt(
                    ciphertext[hlen : hlen + _NONCE], ciphertext[hlen + _NONCE :], None
                )
            if ciphertext[4:6] == _EPOCH_TAG:
                return self._open_epoch_record(ciphertext, ctx_bytes, context)
            return self._open_segmented(ciphertext, ctx_bytes, context)
        except (_TamperError, wire.MalformedError, InvalidTag, ValueError, struct.error) as exc:
            _LOG.debug("record decryption failed: %s", type(exc).__name__)
            raise DecryptionError() from None

    def _open_batch(
        self, ciphertexts: Sequence[bytes], ctx_bytes: bytes, context: Mapping[str, str]
    ) -> list[bytes]:
        """Open a batch: the first record through :meth:`_open`, then every record that starts
        with the same verified epoch header with one AEAD call; any other one through
        :meth:`_open` again."""
        if not ciphertexts:
            return []
        first = self._open(ciphertexts[0], ctx_bytes, context)
        last = self._last
        op = self._open
        if last is None or last.context_bytes != ctx_bytes or self._clock() >= last.expires:
            return [first, *(op(c, ctx_bytes, context) for c in ciphertexts[1:])]
        header, hlen, dec = last.header, len(last.header), last.aead.decrypt
        cut = hlen + _NONCE
        try:
            rest = [
                dec(c[hlen:cut], c[cut:], None)
                if type(c) is bytes and c.startswith(header)
                else op(c, ctx_bytes, context)
                for c in ciphertexts[1:]
            ]
        except (InvalidTag, ValueError) as exc:
            _LOG.debug("record decryption failed: %s", type(exc).__name__)
            raise DecryptionError() from None
        rest.insert(0, first)
        return rest

    def _open_epoch_record(
        self, ciphertext: bytes, ctx_bytes: bytes, context: Mapping[str, str]
    ) -> bytes:
        if ciphertext[:4] != wire.MAGIC:
            raise _TamperError("not an envelope")
        hlen = _epoch_header_length(ciphertext)
        if (
            ciphertext[_CTX_AT - 2 : _CTX_AT + len(ctx_bytes)]
            != len(ctx_bytes).to_bytes(2, "big") + ctx_bytes
        ):
            raise _TamperError("context mismatch")
        header_bytes = ciphertext[:hlen]
        ep = self._verified_epoch(header_bytes)
        if ep is None:
            header = wire.parse_header(header_bytes)
            if header.payload_offset != hlen or header.context_bytes != ctx_bytes:
                raise _TamperError("inconsistent header")
            data_key, _prk, key = self._recover(header, context)
            data_key[:] = bytes(len(data_key))
            ep = _Epoch(header_bytes, AESGCM(key), ctx_bytes, dict(context))
            self._remember(ep)
        if self._dcache is not None:
            self._last = ep
        return ep.aead.decrypt(ciphertext[hlen : hlen + _NONCE], ciphertext[hlen + _NONCE :], None)

    def _recover(
        self, header: wire.Header, context: Mapping[str, str]
    ) -> tuple[bytearray, wire.HmacKey, bytes]:
        """:func:`recover_data_key` with this encryptor's providers and policy."""
        return recover_data_key(
            header,
            self._providers,
            context,
            allowed_key_ids=self._allowed_key_ids,
            max_wrapped_keys=self._max_wrapped_keys,
            verify_with=self._verifiers,
            allow_unsigned_public_key_wraps=self._allow_unsigned,
        )

    def _verified_epoch(self, header_bytes: bytes) -> _Epoch | None:
        if self._dcache is None:
            return None
        with self._lock:
            ep = self._depochs.get(header_bytes)
            if ep is None:
                return None
            if self._clock() >= ep.expires:
                del self._depochs[header_bytes]
                if self._last is ep:
                    self._last = None
                return None
            return ep

    def _remember(self, ep: _Epoch) -> None:
        if self._dcache is None:
            return
        ep.expires = self._clock() + self._dcache.max_age
        with self._lock:
            self._depochs[ep.header] = ep
            while len(self._depochs) > self._dcache.max_entries:
                self._depochs.popitem(last=False)

    def _open_segmented(
        self, ciphertext: bytes, ctx_bytes: bytes, context: Mapping[str, str]
    ) -> bytes:
        header = wire.parse_header(ciphertext)
        if header.suite != wire.SUITE_AES256GCM_HKDF_SHA512_COMMIT:
            raise _TamperError("suite not allowed")
        if header.context_bytes != ctx_bytes:
            raise _TamperError("context mismatch")
        k_msg = self._message_key(header, context, len(ciphertext))
        body = memoryview(ciphertext)[header.payload_offset :]
        aead = AESGCM(k_msg)
        seg = header.segment_size + _TAG
        n = len(body)
        if n < seg:
            return aead.decrypt(_FINAL0, body, None)
        parts: list[bytes] = []
        pos = 0
        i = 0
        while n - pos >= seg:
            parts.append(
                aead.decrypt(wire.segment_nonce(i, final=False), body[pos : pos + seg], None)
            )
            pos += seg
            i += 1
        parts.append(aead.decrypt(wire.segment_nonce(i, final=True), body[pos:], None))
        return b"".join(parts)

    def _message_key(self, header: wire.Header, context: Mapping[str, str], nbytes: int) -> bytes:
        """Per-message key of a parsed segmented header, via the decrypt cache or the providers."""
        if header.suite != wire.SUITE_AES256GCM_HKDF_SHA512_COMMIT:
            raise _TamperError("suite not allowed")
        if len(header.wrapped_keys()) > self._max_wrapped_keys:
            raise _TamperError("too many wrapped keys")
        if self._verifiers and not _signature_valid(header, self._verifiers):
            raise _TamperError("signature required")
        cache_key = (
            header.version,
            header.signature_field,
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
        data_key, prk, k_msg = self._recover(header, context)
        if self._dcache is not None:
            self._dcache.put(cache_key, data_key=data_key, prk=prk, extra=None, nbytes=nbytes)
        else:
            data_key[:] = bytes(len(data_key))
        return k_msg

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
        dst.write(prefix + commitment + self._signature_field(prefix, commitment) + area)
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
        """Decrypt a segmented artifact (v2 or v1) from ``src`` to ``dst`` in constant memory.

        The header is read field by field and every length is range-checked before more is
        read; the context is compared before the key area is read. Each segment is written only
        after its tag verifies. A truncated stream raises *after* the earlier, authentic segments
        were written: callers that must not expose a partial result write to a temporary file and
        keep it only on success (as ``saip decrypt`` does). Records (suite 2) go to
        :meth:`decrypt`.

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
                if len(head) == need:
                    need = wire.header_length_hint(head)
                    if len(head) >= wire.PREFIX_SIZE + len(ctx_bytes) and (
                        head[wire.PREFIX_SIZE - 2 : wire.PREFIX_SIZE + len(ctx_bytes)]
                        != len(ctx_bytes).to_bytes(2, "big") + ctx_bytes
                    ):
                        raise _TamperError("context mismatch")
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
