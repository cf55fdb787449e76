"""saip_encryption: envelope encryption for records and training artifacts.

Public API::

    from saip_encryption import EnvelopeEncryptor, from_uri
    enc = EnvelopeEncryptor([from_uri("local:keys/master.key")])
    blob = enc.encrypt(b"record", context={"dataset": "digits"})
    enc.decrypt(blob, context={"dataset": "digits"})

The wire format (SAIP v1: AES-256-GCM, per-message keys by HKDF-SHA-512, key commitment,
STREAM segments, re-wrappable key slots) is specified in :mod:`saip_encryption.wire` and
``docs/encryption-format.md``. Key providers are addressed by URI
(:func:`saip_encryption.providers.from_uri`); rotation lives in :mod:`saip_encryption.rotation`.
"""

from __future__ import annotations

from saip_encryption.cache import DataKeyCache
from saip_encryption.envelope import EnvelopeEncryptor
from saip_encryption.errors import (
    DecryptionError,
    EncryptionConfigError,
    EncryptionError,
    KeyProviderError,
)
from saip_encryption.providers import from_uri
from saip_encryption.providers.base import KeyProvider, WrappedKey

__all__ = [
    "DataKeyCache",
    "DecryptionError",
    "EncryptionConfigError",
    "EncryptionError",
    "EnvelopeEncryptor",
    "KeyProvider",
    "KeyProviderError",
    "WrappedKey",
    "from_uri",
]
