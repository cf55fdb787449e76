"""Key providers, addressed by URI.

:func:`from_uri` dispatches on the URI scheme:

=============  ===============================================  ==============================
scheme         module                                           written by
=============  ===============================================  ==============================
``local``      :mod:`saip_encryption.providers.local`           this package (embedded default)
``aws-kms``    :mod:`saip_encryption.providers.aws`             cloud providers
``azure-kv``   :mod:`saip_encryption.providers.azure`           cloud providers
``gcp-kms``    :mod:`saip_encryption.providers.gcp`             cloud providers
=============  ===============================================  ==============================

Cloud modules are imported lazily, so the cloud SDKs load only when such a key is used.

Contract every provider module follows (the envelope relies on it):

* module-level ``from_uri(uri, **options) -> KeyProvider``; unknown options raise ``TypeError``,
  a malformed URI raises :class:`~saip_encryption.errors.EncryptionConfigError`;
* ``unwrap`` raises :class:`~saip_encryption.errors.DecryptionError` when the service rejects the
  *wrapped key* (tampered, wrong context, wrong key) and
  :class:`~saip_encryption.errors.KeyProviderError` naming the provider and key version when the
  *key* cannot be used (disabled, unavailable, access denied, version destroyed). The envelope
  turns any tampering into one opaque error and reports operational failures per provider;
* optionally ``accepts(key_id: str) -> bool``: whether a wrapped key's ``key_id`` belongs to this
  master key. The decryptor only offers a wrapped key to a provider that accepts it (the key-ID
  allow-list). Without the method the envelope applies :func:`default_accepts`.
"""

from __future__ import annotations

import importlib
from typing import Any

from saip_encryption.errors import EncryptionConfigError
from saip_encryption.providers.base import KeyProvider, WrappedKey

__all__ = [
    "CLOUD_SCHEMES",
    "SCHEMES",
    "KeyProvider",
    "WrappedKey",
    "accepts",
    "default_accepts",
    "from_uri",
    "scheme_of",
]

CLOUD_SCHEMES = {"aws-kms": "aws", "azure-kv": "azure", "gcp-kms": "gcp"}
SCHEMES = ("local", *CLOUD_SCHEMES)


def scheme_of(uri: str) -> str:
    """The scheme of a key URI (``"local"``, ``"aws-kms"``, ...)."""
    return uri.partition(":")[0]


def from_uri(uri: str, **options: Any) -> KeyProvider:
    """Build the key provider a URI names.

    Parameters
    ----------
    uri:
        ``local:PATH``, ``aws-kms:ARN_OR_ALIAS``, ``azure-kv:KEY_ID`` or
        ``gcp-kms:projects/.../cryptoKeys/...``.
    **options:
        Passed to the provider module's ``from_uri`` (e.g. ``endpoint_url``, ``region``).

    Raises
    ------
    EncryptionConfigError
        Unknown scheme, malformed URI, or the provider module cannot be loaded.
    TypeError
        An option the provider does not know.
    """
    if not isinstance(uri, str):
        raise TypeError(f"key URI must be a string, got {type(uri).__name__}")
    scheme, sep, rest = uri.partition(":")
    if not sep or not rest:
        raise EncryptionConfigError(
            f"key URI {uri!r} must look like SCHEME:IDENTIFIER "
            f"with SCHEME one of {', '.join(SCHEMES)}"
        )
    if scheme == "local":
        from saip_encryption.providers import local

        return local.from_uri(uri, **options)
    module_name = CLOUD_SCHEMES.get(scheme)
    if module_name is None:
        raise EncryptionConfigError(
            f"key URI {uri!r}: unknown provider scheme {scheme!r} (known: {', '.join(SCHEMES)})"
        )
    try:
        module = importlib.import_module(f"saip_encryption.providers.{module_name}")
    except ImportError as exc:
        raise EncryptionConfigError(f"key provider {scheme!r} is not available: {exc}") from None
    provider: KeyProvider = module.from_uri(uri, **options)
    return provider


def default_accepts(provider_uri: str, key_id: str) -> bool:
    """Key-ID allow-list rule for providers without an ``accepts`` method.

    A wrapped key is accepted if its ``key_id`` equals the URI's identifier or is a version of it
    (``IDENTIFIER/...``: Key Vault ``.../keys/NAME/VERSION``, Cloud KMS
    ``.../cryptoKeys/NAME/cryptoKeyVersions/N``). An AWS alias cannot be matched statically: name
    the key ARN to decrypt, or give the decryptor an explicit ``allowed_key_ids``.
    """
    ident = provider_uri.partition(":")[2]
    return key_id == ident or key_id.startswith(ident.rstrip("/") + "/")


def accepts(provider: KeyProvider, wrapped: WrappedKey) -> bool:
    """Whether ``provider`` may be offered ``wrapped`` (scheme and key-ID allow-list)."""
    if wrapped.provider != scheme_of(provider.uri):
        return False
    method = getattr(provider, "accepts", None)
    if callable(method):
        return bool(method(wrapped.key_id))
    return default_accepts(provider.uri, wrapped.key_id)
