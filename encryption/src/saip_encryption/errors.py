"""Error types of the encryption boundary.

``DecryptionError`` is deliberately opaque: every way a ciphertext can fail to decrypt (tampered
header, wrong context, wrong key, truncated or reordered segments, key ID outside the allow-list)
raises it with the same message, so that no failure mode becomes an oracle (pyca/cryptography's
``InvalidToken``, Tink's single ``TinkError`` on decrypt follow the same rule).
``KeyProviderError`` is operational, not about the ciphertext: a master key or key version is
unavailable, disabled or access is denied; its message names the provider and key version so an
operator can act (e.g. re-enable the version a dataset still needs).
"""

from __future__ import annotations


class EncryptionError(Exception):
    """Base class of this package's errors."""


class DecryptionError(EncryptionError):
    """The ciphertext could not be authenticated and decrypted. One message for every cause."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class KeyProviderError(EncryptionError):
    """A master key could not be used; the message names the provider and the key version."""


class EncryptionConfigError(EncryptionError, ValueError):
    """A key URI or an encryption setting is invalid; the message names the setting."""
