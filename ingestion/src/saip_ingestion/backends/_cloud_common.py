"""Pieces shared by the cloud backends (AWS, GCP, Azure): errors, option checks, backoff.

Nothing here imports a cloud SDK, so the checks are unit-testable without one.

Retry timing follows the "full jitter" scheme of M. Brooker, *Exponential Backoff And Jitter*,
AWS Architecture Blog (2015): ``sleep = uniform(0, min(cap, base * 2**attempt))``, which spreads
retries from many producers instead of synchronising them. The clock (``sleep``) and the random
source are injectable so tests run without waiting and reproducibly.
"""

from __future__ import annotations

import ipaddress
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "Backoff",
    "CloudBackendError",
    "ObjectConflictError",
    "PublishError",
    "check_endpoint_url",
    "check_metadata",
    "check_name",
    "check_object_key",
]

#: Hosts for which a plain ``http://`` endpoint is accepted (local stand-ins only).
_LOOPBACK_NAMES = frozenset({"localhost"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_META_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class CloudBackendError(RuntimeError):
    """A cloud backend could not complete an operation; the message says which and why."""


class PublishError(CloudBackendError):
    """Some payloads could not be published after every retry (nothing is silently dropped).

    Attributes
    ----------
    failed:
        Indexes (into the ``payloads`` passed to ``publish``) of the payloads that were lost.
    """

    def __init__(self, message: str, *, failed: list[int]) -> None:
        super().__init__(message)
        self.failed = failed


class ObjectConflictError(CloudBackendError):
    """A ``put`` found different bytes already stored under the same key (never overwritten)."""


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_endpoint_url(option: str, url: str | None) -> str | None:
    """Validate a custom (private / VPC) endpoint URL.

    ``https://`` is required; ``http://`` is accepted only for a loopback host (a local
    stand-in such as moto server or Azurite), so a typo can never send data in clear text.

    Raises
    ------
    ValueError
        Naming ``option`` when the URL is malformed or plain HTTP to a non-loopback host.
    """
    if url is None:
        return None
    if not isinstance(url, str) or not url:
        raise ValueError(f"{option}: must be a non-empty URL string")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{option}: {url!r} is not an http(s) URL with a host")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(
            f"{option}: plain http is allowed only for loopback stand-ins; use https for {url!r}"
        )
    if parts.username or parts.password:
        raise ValueError(f"{option}: credentials must not be embedded in the URL")
    return url


def check_name(option: str, value: object, pattern: str, *, hint: str) -> str:
    """Check a resource name against ``pattern``; ValueError names the option otherwise."""
    if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
        raise ValueError(f"{option}: {value!r} is not a valid name ({hint})")
    return value


def check_object_key(key: object, *, max_bytes: int = 1024) -> str:
    """Validate an object key: non-empty, no control characters, no ``..`` or empty segments."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"object key must be a non-empty string, got {key!r}")
    if _CONTROL.search(key) or key.startswith("/") or "\\" in key:
        raise ValueError(f"object key {key!r} has control characters, a leading '/' or '\\'")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"object key {key!r} has an empty, '.' or '..' segment")
    if len(key.encode("utf-8")) > max_bytes:
        raise ValueError(f"object key is longer than {max_bytes} bytes")
    return key


def check_metadata(metadata: Mapping[str, str] | None, *, max_bytes: int = 2048) -> dict[str, str]:
    """Validate object metadata: lowercase ASCII keys, printable ASCII values, bounded size."""
    if metadata is None:
        return {}
    out: dict[str, str] = {}
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or _META_KEY.fullmatch(key) is None:
            raise ValueError(f"metadata key {key!r} must match {_META_KEY.pattern}")
        if not isinstance(value, str) or not value.isascii() or _CONTROL.search(value):
            raise ValueError(f"metadata value for {key!r} must be printable ASCII")
        total += len(key) + len(value)
        out[key] = value
    if total > max_bytes:
        raise ValueError(f"metadata is {total} bytes; the limit is {max_bytes}")
    return out


@dataclass
class Backoff:
    """Exponential backoff with full jitter (Brooker, AWS Architecture Blog, 2015).

    Parameters
    ----------
    base:
        First retry waits up to ``base`` seconds.
    cap:
        No single wait exceeds ``cap`` seconds.
    max_attempts:
        Total attempts including the first one (``>= 1``).
    rng, sleep:
        Injectable random source and clock for tests.
    """

    base: float = 0.05
    cap: float = 5.0
    max_attempts: int = 8
    rng: random.Random = field(default_factory=random.Random)
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if not (isinstance(self.max_attempts, int) and self.max_attempts >= 1):
            raise ValueError(f"max_attempts: must be an int >= 1, got {self.max_attempts!r}")
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError(f"backoff: need 0 < base <= cap, got {self.base}, {self.cap}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        return self.rng.uniform(0.0, min(self.cap, self.base * (2 ** (attempt - 1))))

    def wait(self, attempt: int) -> float:
        """Sleep before retry ``attempt`` and return the delay used."""
        delay = self.delay(attempt)
        self.sleep(delay)
        return delay
