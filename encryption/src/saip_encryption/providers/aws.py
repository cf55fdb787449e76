"""AWS KMS key provider (``aws-kms:ARN_OR_ALIAS``).

Data keys are generated and wrapped by AWS KMS (``GenerateDataKey``, ``Encrypt``) and unwrapped
with ``Decrypt``; the encryption context is sent as KMS's ``EncryptionContext``, which KMS binds
as additional authenticated data and re-checks on ``Decrypt`` (AWS KMS Developer Guide,
"Encryption context"). ``Decrypt`` pins ``KeyId`` to the key ARN recorded in the wrapped key, so a
ciphertext cannot be redirected to another key. :meth:`AwsKmsProvider.reencrypt` re-wraps a data
key under this provider's key with ``ReEncrypt`` — the data key never leaves KMS.

Rotation: automatic and on-demand rotation (``EnableKeyRotation``, ``RotateKeyOnDemand``) keep the
key ARN; KMS keeps every backing key version and picks the right one from the ciphertext, so old
data stays readable. The recorded ``key_id`` is the full key ARN returned by KMS.

Credentials come only from the SDK's default chain (environment, profile, SSO, IMDS/IRSA); the
client is built by :func:`saip_encryption.tls.boto3_client` (TLS ≥ 1.2).

Errors: a disabled, pending-deletion, unavailable, missing or access-denied key raises
:class:`~saip_encryption.errors.KeyProviderError` naming the provider and the key ARN; a ciphertext
that KMS rejects (tampered, wrong context, wrong key) raises the opaque
:class:`~saip_encryption.errors.DecryptionError`. No message ever includes key material.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, NoReturn

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

__all__ = ["SCHEME", "AwsKmsProvider", "from_uri"]

SCHEME = "aws-kms"
_LOG = logging.getLogger(__name__)

_ARN = re.compile(
    r"^arn:aws(?:-cn|-us-gov|-iso|-iso-b)?:kms:(?P<region>[a-z0-9-]+):\d{12}:"
    r"(?:key/[A-Za-z0-9-]+|alias/[A-Za-z0-9/_+=,.@-]+)$"
)
_ALIAS = re.compile(r"^alias/[A-Za-z0-9/_+=,.@-]{1,250}$")
_KEY_UUID = re.compile(r"^(?:mrk-)?[0-9a-fA-F-]{32,36}$")

#: KMS error codes that mean "the key cannot be used now" (operator action needed).
_KEY_STATE_ERRORS = {
    "DisabledException": "is disabled",
    "KeyUnavailableException": "is unavailable",
    "KMSInvalidStateException": "is not in a usable state (pending deletion/import?)",
    "NotFoundException": "was not found",
    "AccessDeniedException": "access denied",
    "InvalidKeyUsageException": "does not allow this operation",
    "IncorrectKeyException": "is not the key that wrapped this data key",
    "DependencyTimeoutException": "timed out",
    "KMSInternalException": "failed inside KMS",
    "UnsupportedOperationException": "does not support this operation",
    "InvalidGrantTokenException": "grant token rejected",
}
_XML_ERROR = re.compile(
    r"<Code>(?P<code>[A-Za-z.]{1,100})</Code>\s*<Message>(?P<message>[^<]{0,500})</Message>"
)
_OPTIONS = frozenset({"endpoint_url", "region", "session", "client", "ca_bundle"})


def _region_of(key: str) -> str | None:
    match = _ARN.match(key)
    return match.group("region") if match else None


class AwsKmsProvider:
    """A KMS key (by ARN, key ID or alias) that wraps 256-bit data keys.

    Parameters
    ----------
    key:
        Key ARN, alias ARN, ``alias/NAME`` or key ID.
    client:
        A boto3 KMS client to use as is (tests, custom sessions). Otherwise one is built with
        :func:`saip_encryption.tls.boto3_client` from ``endpoint_url``, ``region``, ``session``
        and ``ca_bundle``.
    endpoint_url:
        KMS endpoint override (moto on loopback, a VPC endpoint).
    region:
        Region; defaults to the ARN's region, then to the SDK's default chain.
    session:
        ``boto3.session.Session`` whose default credential chain is used.
    ca_bundle:
        PEM bundle to verify a custom endpoint.

    Raises
    ------
    EncryptionConfigError
        The key is not an ARN/alias/key ID, or ``region`` contradicts the ARN.
    """

    def __init__(
        self,
        *,
        key: str,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        session: Any = None,
        ca_bundle: str | None = None,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a string, got {type(key).__name__}")
        if not (_ARN.match(key) or _ALIAS.match(key) or _KEY_UUID.match(key)):
            raise EncryptionConfigError(
                f"aws-kms key {key!r} is not a KMS key ARN, alias ARN, 'alias/NAME' or key ID"
            )
        arn_region = _region_of(key)
        if region is not None and arn_region is not None and region != arn_region:
            raise EncryptionConfigError(
                f"aws-kms region {region!r} contradicts the key ARN's region {arn_region!r}"
            )
        self._key = key
        self._resolved: str | None = None
        if client is not None:
            if any(v is not None for v in (endpoint_url, region, session, ca_bundle)):
                raise TypeError("pass either client or endpoint_url/region/session/ca_bundle")
            self._client = client
        else:
            self._client = tls.boto3_client(
                "kms",
                endpoint_url=endpoint_url,
                region=region or arn_region,
                session=session,
                ca_bundle=ca_bundle,
            )

    @property
    def uri(self) -> str:
        """``aws-kms:`` followed by the configured key ARN/alias/ID."""
        return f"{SCHEME}:{self._key}"

    @property
    def client(self) -> Any:
        """The boto3 KMS client (for administration in tests and tools)."""
        return self._client

    def accepts(self, key_id: str) -> bool:
        """Whether a wrapped key's ``key_id`` (a key ARN) is this provider's key.

        A key ARN or key ID is compared directly; an alias is resolved once with
        ``DescribeKey`` (which needs ``kms:DescribeKey``; consumers holding only ``kms:Decrypt``
        should name the key ARN). An alias re-pointed to a new key accepts only the new key.
        """
        if not isinstance(key_id, str) or not _ARN.match(key_id) or ":key/" not in key_id:
            return False
        if _ARN.match(self._key) and ":key/" in self._key:
            return key_id == self._key
        if _KEY_UUID.match(self._key):
            return key_id.endswith(f":key/{self._key}")
        if self._resolved is None:
            response = self._call("DescribeKey", self._key, KeyId=self._key)
            self._resolved = str(response["KeyMetadata"]["Arn"])
        return key_id == self._resolved

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        """``GenerateDataKey`` (AES_256) under the key, bound to ``context``."""
        ctx = check_context(context)
        response = self._call(
            "GenerateDataKey",
            self._key,
            KeyId=self._key,
            KeySpec="AES_256",
            EncryptionContext=ctx,
        )
        plaintext = bytearray(response["Plaintext"])
        if len(plaintext) != DATA_KEY_BYTES:
            raise KeyProviderError(
                f"aws-kms: key {self._key} returned a data key of unexpected size"
            )
        wrapped = WrappedKey(SCHEME, str(response["KeyId"]), bytes(response["CiphertextBlob"]))
        return plaintext, wrapped

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        """``Encrypt`` an existing data key under the key, bound to ``context``."""
        check_data_key(data_key)
        ctx = check_context(context)
        response = self._call(
            "Encrypt", self._key, KeyId=self._key, Plaintext=bytes(data_key), EncryptionContext=ctx
        )
        return WrappedKey(SCHEME, str(response["KeyId"]), bytes(response["CiphertextBlob"]))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        """``Decrypt`` with ``KeyId`` pinned to ``wrapped.key_id`` and the same context."""
        self._check_wrapped(wrapped)
        ctx = check_context(context)
        response = self._call(
            "Decrypt",
            wrapped.key_id,
            KeyId=wrapped.key_id,
            CiphertextBlob=wrapped.ciphertext,
            EncryptionContext=ctx,
        )
        plaintext = bytearray(response["Plaintext"])
        if response.get("KeyId") != wrapped.key_id or len(plaintext) != DATA_KEY_BYTES:
            plaintext[:] = bytes(len(plaintext))
            raise DecryptionError()
        return plaintext

    def reencrypt(
        self,
        wrapped: WrappedKey,
        *,
        context: Mapping[str, str],
        new_context: Mapping[str, str] | None = None,
    ) -> WrappedKey:
        """Re-wrap under this provider's key with ``ReEncrypt`` (the data key stays inside KMS).

        Parameters
        ----------
        wrapped:
            A data key wrapped by any AWS KMS key this credential may ``ReEncryptFrom``.
        context:
            The context it was wrapped with.
        new_context:
            Context for the new wrap; defaults to ``context``.
        """
        self._check_wrapped(wrapped)
        src = check_context(context)
        dst = src if new_context is None else check_context(new_context)
        response = self._call(
            "ReEncrypt",
            wrapped.key_id,
            CiphertextBlob=wrapped.ciphertext,
            SourceKeyId=wrapped.key_id,
            SourceEncryptionContext=src,
            DestinationKeyId=self._key,
            DestinationEncryptionContext=dst,
        )
        return WrappedKey(SCHEME, str(response["KeyId"]), bytes(response["CiphertextBlob"]))

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _check_wrapped(wrapped: WrappedKey) -> None:
        if not isinstance(wrapped, WrappedKey):
            raise TypeError(f"wrapped must be a WrappedKey, got {type(wrapped).__name__}")
        if wrapped.provider != SCHEME:
            raise KeyProviderError(
                f"aws-kms: cannot unwrap a key wrapped by provider {wrapped.provider!r}"
            )

    def _call(self, operation: str, key_id: str, **params: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        method = {
            "GenerateDataKey": self._client.generate_data_key,
            "Encrypt": self._client.encrypt,
            "Decrypt": self._client.decrypt,
            "ReEncrypt": self._client.re_encrypt,
            "DescribeKey": self._client.describe_key,
        }[operation]
        try:
            result: dict[str, Any] = method(**params)
            return result
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = str(error.get("Message", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            inner = _XML_ERROR.search(message)  # an IAM-style XML error body (moto's IAM check)
            if inner:
                code, message = inner.group("code"), inner.group("message")
            if code == "AccessDenied" or (status == 403 and code == "403"):
                code = "AccessDeniedException"
            self._raise_for_code(operation, key_id, code, message)
        except NoCredentialsError:
            raise KeyProviderError(
                f"aws-kms: {operation} on key {key_id}: no credentials in the SDK's default chain"
            ) from None
        except BotoCoreError as exc:
            raise KeyProviderError(
                f"aws-kms: {operation} on key {key_id} failed: {type(exc).__name__}: {short(exc)}"
            ) from None

    @staticmethod
    def _raise_for_code(operation: str, key_id: str, code: str, message: str) -> NoReturn:
        _LOG.debug("aws-kms %s on %s failed with %s", operation, key_id, code)
        if code == "InvalidCiphertextException" and operation in ("Decrypt", "ReEncrypt"):
            raise DecryptionError() from None
        reason = _KEY_STATE_ERRORS.get(code, "request failed")
        detail = f": {short(message)}" if message else ""
        raise KeyProviderError(
            f"aws-kms: key {key_id} {reason} ({operation} → {code}{detail})"
        ) from None


def from_uri(uri: str, **options: Any) -> AwsKmsProvider:
    """Build an :class:`AwsKmsProvider` from ``aws-kms:ARN_OR_ALIAS``.

    Options: ``endpoint_url``, ``region``, ``session``, ``client``, ``ca_bundle`` (see the class).
    """
    key = split_uri(uri, SCHEME)
    check_options(options, _OPTIONS, SCHEME)
    return AwsKmsProvider(key=key, **options)
