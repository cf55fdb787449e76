"""Interfaces ingestion needs from other packages (implemented by ``saip_encryption``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable


@runtime_checkable
class Encryptor(Protocol):
    """Envelope encryption of one record or object, with the context bound as AAD."""

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the envelope ciphertext of ``plaintext`` under ``context``."""
        ...

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the plaintext; raises one opaque error on any failure (wrong context included)."""
        ...
