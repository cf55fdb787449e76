"""Data-key cache with age, message and byte caps (the AWS Encryption SDK's caching-CMM model).

A stream of small records would otherwise cost one KMS round trip per record. The cache lets one
data key serve many messages — each message still gets its own key derived by HKDF from the data
key and a random message ID (:mod:`saip_encryption.wire`) — until any cap is reached:

* ``max_age`` seconds since the data key was generated (bounds how long a key exists in memory
  and how stale a revoked master key can be);
* ``max_messages`` messages protected under it;
* ``max_bytes`` plaintext bytes protected under it.

A cap reached evicts the entry, and evicting zeroes the data key's ``bytearray``. What cannot be
wiped: the HKDF PRK exists as Python ``bytes`` (and in the two ``hashlib`` states keyed from it),
and an epoch's AES key lives in Python ``bytes`` and inside its ``AESGCM`` object; they are
dropped with the entry and reclaimed whenever Python frees them. Caching trades key exposure for
cost: a process compromise reveals the cached keys (see "Notes").

Notes
-----
The caps are the ones the AWS Encryption SDK's caching cryptographic materials manager uses
("Setting cache security thresholds", AWS Encryption SDK Developer Guide); the clock is injectable
so tests can move time.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from saip_encryption.wire import HmacKey

__all__ = ["CacheStats", "DataKeyCache"]


@dataclass
class CacheStats:
    """Counters for tests and monitoring."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0


@dataclass(slots=True)
class _Entry:
    data_key: bytearray
    prk: HmacKey
    extra: object
    created: float
    messages: int = 0
    nbytes: int = 0


class DataKeyCache:
    """Bounded cache of data keys.

    Parameters
    ----------
    max_age:
        Seconds an entry may be used after it was created (> 0).
    max_messages:
        Messages an entry may protect (>= 1).
    max_bytes:
        Plaintext bytes an entry may protect (>= 1).
    max_entries:
        Distinct entries kept (one per encryption context on encrypt); the oldest entry is
        evicted first.
    clock:
        Monotonic clock in seconds (injectable for tests).

    Raises
    ------
    ValueError, TypeError
        A cap that is not a positive number.
    """

    def __init__(
        self,
        *,
        max_age: float = 300.0,
        max_messages: int = 1 << 20,
        max_bytes: int = 1 << 32,
        max_entries: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (
            ("max_messages", max_messages),
            ("max_bytes", max_bytes),
            ("max_entries", max_entries),
        ):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not isinstance(max_age, int | float) or isinstance(max_age, bool):
            raise TypeError(f"max_age must be a number, got {type(max_age).__name__}")
        if not max_age > 0:
            raise ValueError(f"max_age must be > 0 seconds, got {max_age}")
        if not callable(clock):
            raise TypeError("clock must be callable")
        self.max_age = float(max_age)
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    def sibling(self) -> DataKeyCache:
        """An empty cache with the same caps and clock (the decrypt side's own cache)."""
        return DataKeyCache(
            max_age=self.max_age,
            max_messages=self.max_messages,
            max_bytes=self.max_bytes,
            max_entries=self.max_entries,
            clock=self._clock,
        )

    def __len__(self) -> int:
        return len(self._entries)

    def use(
        self, key: Hashable, nbytes: int, *, messages: int = 1
    ) -> tuple[HmacKey, object] | None:
        """Account ``messages`` messages of ``nbytes`` in all against ``key``'s entry; return it.

        Returns ``None`` (and evicts the entry) when the entry is missing or using it would
        exceed a cap.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.stats.misses += 1
                return None
            if (
                self._clock() - entry.created >= self.max_age
                or entry.messages + messages > self.max_messages
                or entry.nbytes + nbytes > self.max_bytes
            ):
                self._evict(key)
                self.stats.misses += 1
                return None
            entry.messages += messages
            entry.nbytes += nbytes
            self.stats.hits += 1
            return entry.prk, entry.extra

    def put(
        self,
        key: Hashable,
        *,
        data_key: bytearray,
        prk: HmacKey,
        extra: object,
        nbytes: int,
        messages: int = 1,
    ) -> None:
        """Insert an entry that has just protected (or unwrapped for) ``messages`` messages.

        The cache takes ownership of ``data_key`` and zeroes it on eviction.
        """
        with self._lock:
            if key in self._entries:
                self._evict(key)
            self._entries[key] = _Entry(
                data_key=data_key,
                prk=prk,
                extra=extra,
                created=self._clock(),
                messages=messages,
                nbytes=nbytes,
            )
            while len(self._entries) > self.max_entries:
                self._evict(next(iter(self._entries)))

    def clear(self) -> None:
        """Evict (and zero) every entry."""
        with self._lock:
            for key in list(self._entries):
                self._evict(key)

    def _evict(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        entry.data_key[:] = bytes(len(entry.data_key))
        self.stats.evictions += 1
