"""Azure Key Vault / Managed HSM key provider (``azure-kv:https://VAULT.vault.azure.net/keys/NAME[/VERSION]``).

Data keys are drawn from the OS CSPRNG (``secrets``) and wrapped with azure-keyvault-keys
``CryptographyClient.wrap_key`` — ``RSA-OAEP-256`` (RSA keys, RFC 8017 OAEP with SHA-256) or
``A256KW`` (Managed HSM ``oct-HSM`` keys, RFC 3394 AES key wrap) — and unwrapped with
``unwrap_key``. The recorded ``key_id`` is the **versioned** key identifier the service returns,
so an audit can tell which key version every artifact depends on, and unwrap always addresses
that exact version.

Key Vault's wrap/unwrap take no additional authenticated data: this provider does **not** bind
the encryption context. The envelope format binds it (the context is authenticated with the
header that also carries the wrapped keys), so swapping contexts fails there.

Rotation: a new key version (``KeyClient.rotate_key`` or a rotation policy) is used for new
wraps when the URI names the key without a version; data wrapped under older versions stays
readable while those versions are enabled. Unwrapping under a disabled, deleted or
operation-restricted version raises :class:`~saip_encryption.errors.KeyProviderError` naming
that version; a wrapped key the vault rejects as invalid raises the opaque
:class:`~saip_encryption.errors.DecryptionError`.

Credentials: ``azure.identity.DefaultAzureCredential`` unless a credential, a client or a
version resolver is injected; the HTTP transport comes from
:func:`saip_encryption.tls.azure_transport` (TLS ≥ 1.2).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from saip_encryption import tls
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers._cloud import (
    DATA_KEY_BYTES,
    check_context,
    check_data_key,
    check_options,
    short,
    split_uri,
)
from saip_encryption.providers.base import WrappedKey

__all__ = ["ALGORITHMS", "SCHEME", "AzureKeyVaultProvider", "from_uri"]

SCHEME = "azure-kv"
#: Wrap algorithms this provider allows (Key Vault names).
ALGORITHMS = ("RSA-OAEP-256", "A256KW")
_LOG = logging.getLogger(__name__)
_VAULT_SUFFIXES = (
    ".vault.azure.net",
    ".managedhsm.azure.net",
    ".vault.azure.cn",
    ".managedhsm.azure.cn",
    ".vault.usgovcloudapi.net",
    ".managedhsm.usgovcloudapi.net",
)
_PATH = re.compile(r"^/keys/(?P<name>[A-Za-z0-9-]{1,127})(?:/(?P<version>[A-Za-z0-9]{1,64}))?/?$")
_OPTIONS = frozenset(
    {
        "algorithm",
        "credential",
        "client",
        "client_for_version",
        "ca_bundle",
        "transport",
        "client_options",
    }
)

#: Resolves a *versioned* key ID to a ``CryptographyClient`` for that version.
VersionResolver = Callable[[str], Any]


def parse_key_id(key_id: str) -> tuple[str, str, str | None]:
    """Split a Key Vault key ID into ``(vault_url, name, version or None)``.

    Raises
    ------
    EncryptionConfigError
        Not ``https://VAULT.<vault domain>/keys/NAME[/VERSION]`` (loopback hosts are accepted
        for local test endpoints).
    """
    if not isinstance(key_id, str):
        raise TypeError(f"key id must be a string, got {type(key_id).__name__}")
    try:
        parts = urlsplit(key_id)
        host = parts.hostname or ""
    except ValueError:  # e.g. "Invalid IPv6 URL": header key IDs are attacker-controlled
        parts, host = urlsplit(""), ""
    match = _PATH.match(parts.path)
    if (
        parts.scheme != "https"
        or not match
        or parts.query
        or parts.fragment
        or not (host.endswith(_VAULT_SUFFIXES) or tls.is_loopback_host(host))
    ):
        raise EncryptionConfigError(
            f"azure-kv key id {key_id!r} must be https://VAULT.vault.azure.net/keys/NAME[/VERSION]"
        )
    return f"https://{parts.netloc}", match.group("name"), match.group("version")


class AzureKeyVaultProvider:
    """A Key Vault (or Managed HSM) key that wraps 256-bit data keys.

    Parameters
    ----------
    key_id:
        ``https://VAULT.vault.azure.net/keys/NAME`` (wrap with the current version) or
        ``.../NAME/VERSION`` (pin one version).
    algorithm:
        ``"RSA-OAEP-256"`` (default) or ``"A256KW"`` (Managed HSM symmetric keys).
    credential:
        An ``azure.core`` token credential; ``None``: ``DefaultAzureCredential``.
    client:
        A ``CryptographyClient`` used for wrapping (e.g. ``CryptographyClient.from_jwk``).
    client_for_version:
        Callable mapping a key ID to a ``CryptographyClient`` for it: the configured ID for
        wrapping (unless ``client`` is given), a versioned ID for unwrapping. Defaults to a
        service client per version (cached), built with ``credential`` and
        :func:`saip_encryption.tls.azure_transport`.
    ca_bundle, transport:
        TLS trust for a private endpoint, or a ready azure-core transport (TLS ≥ 1.2 is the
        caller's responsibility then).
    client_options:
        Extra keyword arguments for the service ``CryptographyClient`` (e.g. ``api_version``,
        ``retry_total``, ``verify_challenge_resource``).
    """

    def __init__(
        self,
        *,
        key_id: str,
        algorithm: str = "RSA-OAEP-256",
        credential: Any = None,
        client: Any = None,
        client_for_version: VersionResolver | None = None,
        ca_bundle: str | None = None,
        transport: Any = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._vault, self._name, self._version = parse_key_id(key_id)
        if algorithm not in ALGORITHMS:
            raise EncryptionConfigError(
                f"azure-kv algorithm {algorithm!r} not allowed (allowed: {', '.join(ALGORITHMS)})"
            )
        if client_for_version is not None and not callable(client_for_version):
            raise TypeError("client_for_version must be callable")
        if transport is not None and ca_bundle is not None:
            raise TypeError("pass either transport or ca_bundle")
        self._key_id = key_id.rstrip("/")
        self._algorithm = algorithm
        self._credential = credential
        self._ca_bundle = ca_bundle
        self._transport = transport
        if client_options is not None and not isinstance(client_options, Mapping):
            raise TypeError("client_options must be a mapping of keyword arguments")
        self._client_options = dict(client_options or {})
        self._resolver = client_for_version
        self._clients: dict[str, Any] = {}
        self._wrap_client = client

    @property
    def uri(self) -> str:
        """``azure-kv:`` followed by the configured key ID."""
        return f"{SCHEME}:{self._key_id}"

    @property
    def algorithm(self) -> str:
        """The wrap algorithm (``RSA-OAEP-256`` or ``A256KW``)."""
        return self._algorithm

    @property
    def wraps_with_public_key(self) -> bool:
        """True for RSA-OAEP: anyone who can read the public key can produce a wrap.

        The envelope then accepts a data key unwrapped here only from a header signed by a
        configured verifier (:mod:`saip_encryption.signing`). ``A256KW`` (Managed HSM) wraps
        need the secret key, like AWS and Cloud KMS symmetric keys.
        """
        return self._algorithm.startswith("RSA")

    def accepts(self, key_id: str) -> bool:
        """Whether ``key_id`` is a version of this key (the pinned version, if one is pinned)."""
        try:
            vault, name, version = parse_key_id(key_id)
        except (EncryptionConfigError, TypeError):
            return False
        if (vault, name) != (self._vault, self._name) or version is None:
            return False
        return self._version is None or version == self._version

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        """Draw 32 random bytes locally and wrap them with :meth:`wrap`."""
        data_key = bytearray(secrets.token_bytes(DATA_KEY_BYTES))
        try:
            return data_key, self.wrap(data_key, context=context)
        except BaseException:
            data_key[:] = bytes(DATA_KEY_BYTES)
            raise

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        """``wrap_key`` under the configured key (``context`` is bound by the envelope)."""
        check_data_key(data_key)
        check_context(context)
        try:
            client = self._wrap_client
            if client is None:
                client = self._resolver(self._key_id) if self._resolver else None
            if client is None:
                client = self._client_for(self._key_id)
            result = client.wrap_key(self._wrap_algorithm(), bytes(data_key))
        except Exception as exc:
            self._raise_for("wrapKey", self._key_id, exc)
        kid = str(result.key_id or "")
        try:
            vault, name, version = parse_key_id(kid)
        except EncryptionConfigError:
            vault, name, version = "", "", None
        if (
            (vault, name) != (self._vault, self._name)
            or version is None
            or (self._version is not None and version != self._version)
        ):
            raise KeyProviderError(
                f"azure-kv: key {self._key_id}: wrapKey answered for {kid!r}, not a version of "
                "the configured key"
            )
        return WrappedKey(SCHEME, kid, bytes(result.encrypted_key))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        """``unwrap_key`` with the exact key version recorded in ``wrapped.key_id``."""
        if not isinstance(wrapped, WrappedKey):
            raise TypeError(f"wrapped must be a WrappedKey, got {type(wrapped).__name__}")
        check_context(context)
        if wrapped.provider != SCHEME:
            raise KeyProviderError(
                f"azure-kv: cannot unwrap a key wrapped by provider {wrapped.provider!r}"
            )
        if not self.accepts(wrapped.key_id):
            raise KeyProviderError(
                f"azure-kv: key version {wrapped.key_id!r} is not a version of {self._key_id}"
            )
        try:
            client = self._unwrap_client(wrapped.key_id)
            result = client.unwrap_key(self._wrap_algorithm(), wrapped.ciphertext)
        except Exception as exc:
            self._raise_for("unwrapKey", wrapped.key_id, exc)
        plaintext = bytearray(result.key)
        if len(plaintext) != DATA_KEY_BYTES:
            plaintext[:] = bytes(len(plaintext))
            raise DecryptionError()
        return plaintext

    # -- internals ---------------------------------------------------------------------------

    def _wrap_algorithm(self) -> Any:
        from azure.keyvault.keys.crypto import KeyWrapAlgorithm

        return KeyWrapAlgorithm(self._algorithm)

    def _unwrap_client(self, versioned_id: str) -> Any:
        wrap_client = self._wrap_client
        if wrap_client is not None and getattr(wrap_client, "key_id", None) == versioned_id:
            return wrap_client
        if self._resolver is not None:
            return self._resolver(versioned_id)
        return self._client_for(versioned_id)

    def _client_for(self, key_id: str) -> Any:
        if key_id not in self._clients:
            from azure.keyvault.keys.crypto import CryptographyClient

            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            transport = self._transport or tls.azure_transport(ca_bundle=self._ca_bundle)
            self._clients[key_id] = CryptographyClient(
                key_id, self._credential, transport=transport, **self._client_options
            )
        return self._clients[key_id]

    def _raise_for(self, operation: str, key_id: str, exc: Exception) -> NoReturn:
        from azure.core import exceptions as aexc
        from cryptography.hazmat.primitives.keywrap import InvalidUnwrap

        _LOG.debug("azure-kv %s on %s failed: %s", operation, key_id, type(exc).__name__)
        what = "key version" if parse_key_id(key_id)[2] else "key"
        if operation == "unwrapKey" and isinstance(exc, ValueError | InvalidUnwrap):
            raise DecryptionError() from None  # local (from_jwk) unwrap of a bad ciphertext
        if isinstance(exc, aexc.HttpResponseError) and not isinstance(
            exc, aexc.ResourceNotFoundError | aexc.ClientAuthenticationError
        ):
            status = exc.status_code
            message = short(getattr(exc, "message", exc))
            if operation == "unwrapKey" and status == 400:
                raise DecryptionError() from None
            if status == 403 and "disabled" in message.lower():
                reason = "is disabled"
            elif status == 403:
                reason = "access denied or operation not permitted"
            else:
                reason = f"request failed (HTTP {status})"
            raise KeyProviderError(
                f"azure-kv: {what} {key_id} {reason} ({operation}: {message})"
            ) from None
        if isinstance(exc, aexc.ResourceNotFoundError):
            reason = "was not found (deleted or purged?)"
        elif isinstance(exc, aexc.ClientAuthenticationError):
            reason = "credentials rejected"
        elif isinstance(exc, aexc.ServiceRequestError):
            reason = "is unreachable"
        elif isinstance(exc, NotImplementedError | aexc.AzureError):
            reason = "does not permit this operation (disabled key_ops or algorithm?)"
        else:
            reason = "request failed"
        raise KeyProviderError(
            f"azure-kv: {what} {key_id} {reason} ({operation}: {type(exc).__name__}: {short(exc)})"
        ) from None


def from_uri(uri: str, **options: Any) -> AzureKeyVaultProvider:
    """Build an :class:`AzureKeyVaultProvider` from ``azure-kv:https://VAULT.../keys/NAME[/VER]``.

    Options: ``algorithm``, ``credential``, ``client``, ``client_for_version``, ``ca_bundle``,
    ``transport`` (see the class).
    """
    key_id = split_uri(uri, SCHEME)
    check_options(options, _OPTIONS, SCHEME)
    return AzureKeyVaultProvider(key_id=key_id, **options)
