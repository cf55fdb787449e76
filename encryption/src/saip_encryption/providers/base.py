"""The ``KeyProvider`` protocol: one master key (AWS KMS, Azure Key Vault, Cloud KMS or local).

A provider wraps and unwraps 256-bit data keys under its master key, binding the encryption
context as additional authenticated data wherever the service supports it (AWS KMS
``EncryptionContext``, Cloud KMS ``additional_authenticated_data``; Key Vault's wrap has no AAD,
so the envelope binds the context itself). Providers are addressed by URI
(``local:PATH``, ``aws-kms:ARN_OR_ALIAS``, ``azure-kv:KEY_ID``,
``gcp-kms:projects/.../cryptoKeys/...``). The contract each provider module follows (which errors
mean what, the optional ``accepts(key_id)`` allow-list hook) is in
:mod:`saip_encryption.providers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class WrappedKey:
    """A data key wrapped by one master key.

    Attributes
    ----------
    provider:
        URI scheme of the provider that wrapped it (``"local"``, ``"aws-kms"``, ...).
    key_id:
        The master key that wrapped it, *including its version* where the service exposes one
        (Key Vault key version URL, Cloud KMS ``cryptoKeyVersions/N``, AWS key ARN), so that an
        audit can tell which artifacts depend on which key version.
    ciphertext:
        The wrapped data key, opaque to everyone but the provider.
    """

    provider: str
    key_id: str
    ciphertext: bytes


@runtime_checkable
class KeyProvider(Protocol):
    """A master key that wraps and unwraps data keys."""

    @property
    def uri(self) -> str:
        """Canonical URI of the master key (``scheme:identifier``)."""
        ...

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        """Return a fresh 32-byte data key (in a ``bytearray`` the caller zeroes) and its wrap."""
        ...

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        """Wrap an existing data key (used to add a provider or to re-wrap on rotation)."""
        ...

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        """Recover the data key; on failure raise the package's key error naming the key version."""
        ...
