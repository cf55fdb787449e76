"""Interfaces ingestion needs from other packages (implemented by ``saip_encryption``).

Ingestion never imports a key provider: the ``saip`` CLI composes an encryptor (e.g.
``saip_encryption.EnvelopeEncryptor`` behind ``saip.compose.ContextBoundEncryptor``) and passes
it in. Errors raised by an implementation are opaque to ingestion (it catches ``Exception`` at
its boundaries and maps it to its own error types).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable


class RecordSealer(Protocol):
    """Record encryption under one bound context (``Encryptor.bind``)."""

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt one record."""
        ...

    def open(self, ciphertext: bytes) -> bytes:
        """Authenticate and decrypt one record; raises on any failure."""
        ...

    def seal_many(self, plaintexts: Sequence[bytes]) -> list[bytes]:
        """Encrypt a batch of records; ciphertexts in order."""
        ...

    def open_many(self, ciphertexts: Sequence[bytes]) -> list[bytes]:
        """Decrypt a batch, all or nothing (raises on the first record that fails)."""
        ...


@runtime_checkable
class Encryptor(Protocol):
    """Envelope encryption of one record or object, with the context bound as AAD, and a
    bound-context batch API (one ``seal_many`` per ingestion batch)."""

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the envelope ciphertext of ``plaintext`` under ``context``."""
        ...

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Return the plaintext; raises one opaque error on any failure (wrong context included)."""
        ...

    def bind(self, context: Mapping[str, str]) -> RecordSealer:
        """A :class:`RecordSealer` for ``context`` (validated once)."""
        ...
