"""Google Cloud KMS key provider (``gcp-kms:projects/P/locations/L/keyRings/R/cryptoKeys/K``).

Data keys are drawn from the OS CSPRNG (``secrets``) and wrapped with Cloud KMS ``Encrypt`` on the
CryptoKey (its *primary* version); ``Decrypt`` unwraps. The encryption context is sent as
``additional_authenticated_data`` (canonical JSON: sorted keys, compact, UTF-8), so Cloud KMS
binds it and rejects a mismatch. Every call follows Google's data-integrity guidelines
("Verifying end-to-end data integrity", Cloud KMS docs): the request carries CRC32C checksums of
plaintext/ciphertext and AAD; the response's ``verified_*`` flags, ``ciphertext_crc32c``,
``plaintext_crc32c`` and ``name`` are checked, and any mismatch raises
:class:`~saip_encryption.errors.KeyProviderError` (corruption in transit; safe to retry).

The recorded ``key_id`` is the ``cryptoKeyVersions/N`` name returned by ``Encrypt``. Rotation
(a new primary version) keeps old data readable because Cloud KMS picks the version from the
ciphertext. A version that is disabled, destroyed or scheduled for destruction makes ``unwrap``
raise ``KeyProviderError`` naming that version. Ciphertexts rejected by Cloud KMS (tampered,
wrong context) raise the opaque :class:`~saip_encryption.errors.DecryptionError`.

The default client is ``KeyManagementServiceClient`` over gRPC with
:func:`saip_encryption.tls.grpc_channel_credentials` (TLS ≥ 1.2) and Application Default
Credentials; ``insecure=True`` (plaintext gRPC) is accepted only for a loopback ``api_endpoint``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any, NoReturn
from urllib.parse import urlsplit

from saip_encryption import tls
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers._cloud import (
    DATA_KEY_BYTES,
    canonical_context,
    check_data_key,
    check_options,
    short,
    split_uri,
)
from saip_encryption.providers.base import WrappedKey

__all__ = ["SCHEME", "GcpKmsProvider", "from_uri"]

SCHEME = "gcp-kms"
_LOG = logging.getLogger(__name__)
_SEGMENT = r"[A-Za-z0-9_-]{1,63}"
_KEY = re.compile(
    rf"^projects/{_SEGMENT}/locations/{_SEGMENT}/keyRings/{_SEGMENT}/cryptoKeys/{_SEGMENT}$"
)
_VERSION = re.compile(r"^(?P<key>.+)/cryptoKeyVersions/(?P<number>[0-9]+)$")
_OPTIONS = frozenset(
    {"client", "api_endpoint", "insecure", "credentials", "root_certificates", "timeout"}
)


def _crc32c(data: bytes) -> int:
    import google_crc32c

    return int(google_crc32c.value(data))


class GcpKmsProvider:
    """A Cloud KMS symmetric CryptoKey that wraps 256-bit data keys.

    Parameters
    ----------
    key:
        ``projects/P/locations/L/keyRings/R/cryptoKeys/K`` (not a version: Encrypt uses the
        primary version, so rotation needs no configuration change).
    client:
        A ``KeyManagementServiceClient`` to use as is.
    api_endpoint:
        ``host:port`` override (e.g. a regional or private endpoint, or a loopback test server).
    insecure:
        Plaintext gRPC; only allowed when ``api_endpoint`` is on loopback.
    credentials:
        ``google.auth`` credentials; ``None`` uses Application Default Credentials.
    root_certificates:
        PEM roots to verify ``api_endpoint`` (tests with a private CA).
    timeout:
        Per-call deadline in seconds (default 30).
    """

    def __init__(
        self,
        *,
        key: str,
        client: Any = None,
        api_endpoint: str | None = None,
        insecure: bool = False,
        credentials: Any = None,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a string, got {type(key).__name__}")
        if not _KEY.match(key):
            raise EncryptionConfigError(
                f"gcp-kms key {key!r} must be projects/P/locations/L/keyRings/R/cryptoKeys/K"
            )
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        if not isinstance(insecure, bool):
            raise TypeError("insecure must be a bool")
        self._key = key
        self._timeout = float(timeout)
        if client is not None:
            if api_endpoint is not None or insecure or credentials is not None:
                raise TypeError("pass either client or api_endpoint/insecure/credentials")
            self._client = client
        else:
            self._client = _build_client(
                api_endpoint=api_endpoint,
                insecure=insecure,
                credentials=credentials,
                root_certificates=root_certificates,
            )

    @property
    def uri(self) -> str:
        """``gcp-kms:`` followed by the CryptoKey name."""
        return f"{SCHEME}:{self._key}"

    @property
    def client(self) -> Any:
        """The ``KeyManagementServiceClient`` (for administration in tests and tools)."""
        return self._client

    def accepts(self, key_id: str) -> bool:
        """Whether ``key_id`` is a ``cryptoKeyVersions/N`` of this CryptoKey."""
        match = _VERSION.match(key_id) if isinstance(key_id, str) else None
        return match is not None and match.group("key") == self._key

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        """Draw 32 random bytes locally and wrap them with :meth:`wrap`."""
        data_key = bytearray(secrets.token_bytes(DATA_KEY_BYTES))
        try:
            return data_key, self.wrap(data_key, context=context)
        except BaseException:
            data_key[:] = bytes(DATA_KEY_BYTES)
            raise

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        """``Encrypt`` the data key with the context as AAD; verify every CRC32C."""
        check_data_key(data_key)
        aad = canonical_context(context)
        plaintext = bytes(data_key)
        request = {
            "name": self._key,
            "plaintext": plaintext,
            "additional_authenticated_data": aad,
            "plaintext_crc32c": _crc32c(plaintext),
            "additional_authenticated_data_crc32c": _crc32c(aad),
        }
        response = self._call("Encrypt", self._key, request)
        name = str(response.name)
        match = _VERSION.match(name)
        if not (
            response.verified_plaintext_crc32c
            and response.verified_additional_authenticated_data_crc32c
            and response.ciphertext_crc32c == _crc32c(response.ciphertext)
            and match is not None
            and match.group("key") == self._key
        ):
            raise KeyProviderError(
                f"gcp-kms: key {self._key}: Encrypt response failed its integrity check "
                "(CRC32C or name); the request may be retried"
            )
        return WrappedKey(SCHEME, name, bytes(response.ciphertext))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        """``Decrypt`` on the version's CryptoKey with the context as AAD; verify CRC32C."""
        if not isinstance(wrapped, WrappedKey):
            raise TypeError(f"wrapped must be a WrappedKey, got {type(wrapped).__name__}")
        if wrapped.provider != SCHEME:
            raise KeyProviderError(
                f"gcp-kms: cannot unwrap a key wrapped by provider {wrapped.provider!r}"
            )
        match = _VERSION.match(wrapped.key_id)
        if match is None or match.group("key") != self._key:
            raise KeyProviderError(
                f"gcp-kms: key version {wrapped.key_id!r} does not belong to {self._key}"
            )
        aad = canonical_context(context)
        request = {
            "name": self._key,
            "ciphertext": wrapped.ciphertext,
            "additional_authenticated_data": aad,
            "ciphertext_crc32c": _crc32c(wrapped.ciphertext),
            "additional_authenticated_data_crc32c": _crc32c(aad),
        }
        response = self._call("Decrypt", wrapped.key_id, request)
        plaintext = bytearray(response.plaintext)
        if response.plaintext_crc32c != _crc32c(bytes(plaintext)):
            plaintext[:] = bytes(len(plaintext))
            raise KeyProviderError(
                f"gcp-kms: key version {wrapped.key_id}: Decrypt response failed its CRC32C "
                "integrity check; the request may be retried"
            )
        if len(plaintext) != DATA_KEY_BYTES:
            plaintext[:] = bytes(len(plaintext))
            raise DecryptionError()
        return plaintext

    # -- internals ---------------------------------------------------------------------------

    def _call(self, operation: str, key_id: str, request: dict[str, Any]) -> Any:
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        method = self._client.encrypt if operation == "Encrypt" else self._client.decrypt
        # Retry transient failures (as the GAPIC default does) but within *our* deadline.
        retry = gretry.Retry(
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=self._timeout,
            predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
        )
        try:
            return method(request=request, retry=retry, timeout=self._timeout)
        except gexc.GoogleAPICallError as exc:
            self._raise_for(operation, key_id, exc)
        except gexc.RetryError as exc:
            what = "key version" if "/cryptoKeyVersions/" in key_id else "key"
            raise KeyProviderError(
                f"gcp-kms: {what} {key_id} is unreachable: {operation} did not succeed within "
                f"{self._timeout:g} s: {short(exc.cause or exc)}"
            ) from None
        except Exception as exc:  # google.auth errors (no ADC), channel errors
            raise KeyProviderError(
                f"gcp-kms: key {key_id}: {operation} failed: {type(exc).__name__}: {short(exc)}"
            ) from None

    @staticmethod
    def _raise_for(operation: str, key_id: str, exc: Any) -> NoReturn:
        from google.api_core import exceptions as gexc

        message = short(getattr(exc, "message", exc))
        _LOG.debug("gcp-kms %s on %s failed: %s", operation, key_id, type(exc).__name__)
        what = "key version" if "/cryptoKeyVersions/" in key_id else "key"
        if isinstance(exc, gexc.InvalidArgument):
            if "checksum" in message.lower():
                raise KeyProviderError(
                    f"gcp-kms: {what} {key_id}: {operation} request failed Cloud KMS's CRC32C "
                    "integrity check; the request may be retried"
                ) from None
            if operation == "Decrypt":
                raise DecryptionError() from None
        reason = {
            gexc.FailedPrecondition: "is not enabled (disabled, destroyed or pending destruction)",
            gexc.NotFound: "was not found",
            gexc.PermissionDenied: "permission denied",
            gexc.Unauthenticated: "credentials rejected",
            gexc.ServiceUnavailable: "is unreachable",
            gexc.DeadlineExceeded: "timed out",
        }.get(type(exc), "request failed")
        raise KeyProviderError(
            f"gcp-kms: {what} {key_id} {reason} ({operation} → {type(exc).__name__}: {message})"
        ) from None


def _build_client(
    *,
    api_endpoint: str | None,
    insecure: bool,
    credentials: Any,
    root_certificates: bytes | None,
) -> Any:
    import grpc  # type: ignore[import-untyped]
    from google.cloud import kms_v1
    from google.cloud.kms_v1.services.key_management_service.transports import (
        KeyManagementServiceGrpcTransport,
    )

    host = api_endpoint or "cloudkms.googleapis.com"
    if api_endpoint is not None and (not isinstance(api_endpoint, str) or not api_endpoint):
        raise EncryptionConfigError("gcp-kms api_endpoint must be a non-empty 'host[:port]'")
    if insecure:
        hostname = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
        if api_endpoint is None or not tls.is_loopback_host(hostname.strip("[]")):
            raise EncryptionConfigError(
                "gcp-kms insecure=True (plaintext gRPC) is only allowed for a loopback "
                f"api_endpoint, got {api_endpoint!r}"
            )
        transport = KeyManagementServiceGrpcTransport(channel=grpc.insecure_channel(host))
    elif root_certificates is not None:
        # A private CA (tests, private endpoints): the channel is built here, unauthenticated
        # unless credentials are given.
        channel_credentials = tls.grpc_channel_credentials(root_certificates=root_certificates)
        if credentials is not None:
            import google.auth.transport.grpc
            import google.auth.transport.requests

            call_credentials = grpc.metadata_call_credentials(
                google.auth.transport.grpc.AuthMetadataPlugin(  # type: ignore[no-untyped-call]
                    credentials, google.auth.transport.requests.Request()
                )
            )
            channel_credentials = grpc.composite_channel_credentials(
                channel_credentials, call_credentials
            )
        transport = KeyManagementServiceGrpcTransport(
            channel=grpc.secure_channel(host, channel_credentials)
        )
    else:
        from google.auth import exceptions as auth_exceptions

        try:
            transport = KeyManagementServiceGrpcTransport(
                host=host,
                credentials=credentials,
                ssl_channel_credentials=tls.grpc_channel_credentials(),
            )
        except auth_exceptions.DefaultCredentialsError as exc:
            raise KeyProviderError(
                f"gcp-kms: no Application Default Credentials for {host}: {short(exc, 120)}"
            ) from None
    return kms_v1.KeyManagementServiceClient(transport=transport)


def from_uri(uri: str, **options: Any) -> GcpKmsProvider:
    """Build a :class:`GcpKmsProvider` from ``gcp-kms:projects/.../cryptoKeys/K``.

    Options: ``client``, ``api_endpoint``, ``insecure``, ``credentials``, ``root_certificates``,
    ``timeout`` (see the class), and the CLI's shared ``endpoint_url`` (``https://host[:port]``,
    or ``http://`` to a loopback test server, which means ``insecure``) and ``region`` (must equal
    the key's location: Cloud KMS keys name their location).
    """
    key = split_uri(uri, SCHEME)
    check_options(options, _OPTIONS | {"endpoint_url", "region"}, SCHEME)
    endpoint_url = options.pop("endpoint_url", None)
    region = options.pop("region", None)
    if region is not None:
        location = key.split("/")[3] if _KEY.match(key) else None
        if region != location:
            raise EncryptionConfigError(
                f"gcp-kms region {region!r} contradicts the key's location {location!r}"
            )
    if endpoint_url is not None:
        if "api_endpoint" in options:
            raise TypeError("pass either endpoint_url or api_endpoint")
        tls.check_endpoint(endpoint_url, setting="endpoint_url")
        parts = urlsplit(endpoint_url)
        if parts.path not in ("", "/") or parts.query:
            raise EncryptionConfigError(
                f"endpoint_url: expected scheme://host[:port], got {endpoint_url!r}"
            )
        options["api_endpoint"] = parts.netloc
        if parts.scheme == "http":
            options["insecure"] = True
    return GcpKmsProvider(key=key, **options)
