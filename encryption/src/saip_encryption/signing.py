"""Header signatures: sender authentication that does not depend on the wrap being secret.

Why: a wrap under a *public* key (Key Vault RSA-OAEP-256, the Azure default) can be produced by
anyone who can read that public key. Such a forger picks the data key, wraps it, and computes a
valid commitment, so the commitment alone authenticates nothing about the *sender*. A signature
by a KMS-held signing key over ``A || C`` (:func:`saip_encryption.wire.signed_message`) closes
that: ``C`` binds the data key, so a valid signature means the signer produced this data key for
this context and message/epoch ID. One signature per data key period (records: per epoch; artifacts:
per artifact), verified locally with a pinned public key — decryption makes no extra KMS call.

One algorithm, so there is nothing to negotiate: ECDSA on P-256 with SHA-256 (FIPS 186-5),
DER-encoded. Every cloud KMS offers it with a non-exportable key:

* AWS KMS ``Sign`` (``ECC_NIST_P256`` key, ``ECDSA_SHA_256``, ``MessageType=RAW``);
* Azure Key Vault / Managed HSM ``sign`` (``EC`` P-256 key, ``ES256`` over SHA-256 of the message;
  Key Vault returns ``r || s``, converted to DER here);
* Cloud KMS ``asymmetricSign`` (``EC_SIGN_P256_SHA256``, SHA-256 digest, CRC32C-checked).

Verification (:class:`HeaderVerifier`) is local: the decryptor is configured with the signing
key's public key (PEM, from ``GetPublicKey``/``get_key``/``getPublicKey`` once, pinned in config)
and the exact key ID it must carry. The scheme and key ID written in the header only select among
configured verifiers; an unknown one is never contacted.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from saip_encryption import wire
from saip_encryption.errors import EncryptionConfigError, KeyProviderError

__all__ = [
    "AwsKmsSigner",
    "AzureKeyVaultSigner",
    "GcpKmsSigner",
    "HeaderSigner",
    "HeaderVerifier",
    "signer_from_uri",
    "verifier_from_spec",
]

_ECDSA = ec.ECDSA(hashes.SHA256())


@runtime_checkable
class HeaderSigner(Protocol):
    """A KMS-held ECDSA P-256 key that signs envelope headers."""

    @property
    def scheme(self) -> str:
        """Provider scheme written into the header (``"aws-kms"``, ``"azure-kv"``, ...)."""
        ...

    @property
    def key_id(self) -> str:
        """The signing key's ID, written into the header (the verifier must expect it)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """DER ECDSA P-256 / SHA-256 signature over ``message``."""
        ...


class HeaderVerifier:
    """A pinned public key that verifies header signatures locally.

    Parameters
    ----------
    scheme, key_id:
        What the header's S field must name (exact match) for this verifier to be used.
    public_key:
        The signer's P-256 public key, PEM or DER ``SubjectPublicKeyInfo``.

    Raises
    ------
    EncryptionConfigError
        The key is not a P-256 public key, or the scheme/key ID break the key-ID grammar.
    """

    def __init__(self, *, scheme: str, key_id: str, public_key: bytes) -> None:
        if not isinstance(public_key, bytes):
            raise TypeError("public_key must be PEM or DER bytes")
        if not wire.valid_key_id(scheme, key_id):
            raise EncryptionConfigError(
                f"signature key {wire.escape(scheme)}:{wire.escape(key_id)!r} is not a valid key ID"
            )
        try:
            if public_key.lstrip().startswith(b"-----BEGIN"):
                key = serialization.load_pem_public_key(public_key)
            else:
                key = serialization.load_der_public_key(public_key)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise EncryptionConfigError(f"signature key {key_id}: unreadable ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise EncryptionConfigError(f"signature key {key_id}: must be an EC P-256 public key")
        self._key = key
        self.scheme = scheme
        self.key_id = key_id

    def matches(self, sig: wire.HeaderSignature) -> bool:
        """Whether the S field names this verifier's key."""
        return sig.scheme == self.scheme and sig.key_id == self.key_id

    def verify(self, sig: wire.HeaderSignature, prefix: bytes, commitment: bytes) -> bool:
        """True iff ``sig`` names this key and is valid over ``A || C``."""
        if not self.matches(sig):
            return False
        try:
            self._key.verify(sig.signature, wire.signed_message(prefix, commitment), _ECDSA)
        except (InvalidSignature, ValueError):
            return False
        return True

    def __repr__(self) -> str:
        return f"HeaderVerifier({self.scheme}:{self.key_id})"


def _check_p256(public_key_der: bytes, key_id: str) -> bytes:
    try:
        key = serialization.load_der_public_key(public_key_der)
    except (ValueError, UnsupportedAlgorithm):
        raise EncryptionConfigError(f"signing key {key_id}: unreadable public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise EncryptionConfigError(f"signing key {key_id} is not an EC P-256 key")
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class AwsKmsSigner:
    """An AWS KMS ``ECC_NIST_P256`` / ``SIGN_VERIFY`` key.

    Parameters
    ----------
    key_arn:
        The key ARN (written into headers; the verifier pins it).
    client:
        A boto3 KMS client; otherwise built by :func:`saip_encryption.tls.boto3_client` from
        ``endpoint_url`` and ``region``.
    """

    scheme = "aws-kms"

    def __init__(
        self,
        *,
        key_arn: str,
        client: Any = None,
        endpoint_url: str | None = None,
        region: str | None = None,
    ) -> None:
        if not wire.valid_key_id(self.scheme, key_arn) or not key_arn.startswith("arn:"):
            raise EncryptionConfigError(f"aws-kms signing key {key_arn!r} must be a key ARN")
        if client is None:
            from saip_encryption import tls

            client = tls.boto3_client(
                "kms", endpoint_url=endpoint_url, region=region or key_arn.split(":")[3]
            )
        self._client = client
        self.key_id = key_arn

    def sign(self, message: bytes) -> bytes:
        """``Sign`` with ``ECDSA_SHA_256`` over the raw message (KMS hashes it)."""
        try:
            out = self._client.sign(
                KeyId=self.key_id,
                Message=message,
                MessageType="RAW",
                SigningAlgorithm="ECDSA_SHA_256",
            )
        except Exception as exc:
            raise KeyProviderError(
                f"aws-kms: signing key {self.key_id} could not sign ({type(exc).__name__})"
            ) from None
        return bytes(out["Signature"])

    def public_key_pem(self) -> bytes:
        """The key's public half (``GetPublicKey``), to pin in the decryptor's configuration."""
        der = self._client.get_public_key(KeyId=self.key_id)["PublicKey"]
        return _check_p256(bytes(der), self.key_id)


class AzureKeyVaultSigner:
    """A Key Vault / Managed HSM ``EC`` P-256 key, through a ``CryptographyClient``.

    Parameters
    ----------
    client:
        ``azure.keyvault.keys.crypto.CryptographyClient`` for the key (service client, or
        ``CryptographyClient.from_jwk`` in tests); its ``key_id`` is written into headers.
    """

    scheme = "azure-kv"

    def __init__(self, *, client: Any) -> None:
        key_id = str(getattr(client, "key_id", "") or "")
        if not wire.valid_key_id(self.scheme, key_id):
            raise EncryptionConfigError("azure-kv signing client has no valid versioned key_id")
        self._client = client
        self.key_id = key_id

    def sign(self, message: bytes) -> bytes:
        """``sign`` with ``ES256`` over SHA-256(message); ``r || s`` converted to DER."""
        from azure.keyvault.keys.crypto import SignatureAlgorithm

        try:
            result = self._client.sign(SignatureAlgorithm.es256, hashlib.sha256(message).digest())
        except Exception as exc:
            raise KeyProviderError(
                f"azure-kv: signing key {self.key_id} could not sign ({type(exc).__name__})"
            ) from None
        raw = bytes(result.signature)
        if len(raw) != 64:
            raise KeyProviderError(f"azure-kv: signing key {self.key_id}: not a P-256 signature")
        return encode_dss_signature(
            int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        )


class GcpKmsSigner:
    """A Cloud KMS ``EC_SIGN_P256_SHA256`` key version.

    Parameters
    ----------
    version_name:
        ``projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N``.
    client:
        A ``google.cloud.kms_v1.KeyManagementServiceClient``.
    """

    scheme = "gcp-kms"

    def __init__(self, *, version_name: str, client: Any) -> None:
        if not wire.valid_key_id(self.scheme, version_name) or "/cryptoKeyVersions/" not in (
            version_name
        ):
            raise EncryptionConfigError(
                f"gcp-kms signing key {version_name!r} must name a cryptoKeyVersion"
            )
        self._client = client
        self.key_id = version_name

    def sign(self, message: bytes) -> bytes:
        """``asymmetricSign`` of SHA-256(message), CRC32C-checked both ways."""
        import google_crc32c

        digest = hashlib.sha256(message).digest()
        try:
            resp = self._client.asymmetric_sign(
                request={
                    "name": self.key_id,
                    "digest": {"sha256": digest},
                    "digest_crc32c": google_crc32c.value(digest),
                }
            )
        except Exception as exc:
            raise KeyProviderError(
                f"gcp-kms: signing key {self.key_id} could not sign ({type(exc).__name__})"
            ) from None
        if (
            not resp.verified_digest_crc32c
            or resp.name != self.key_id
            or google_crc32c.value(resp.signature) != int(resp.signature_crc32c)
        ):
            raise KeyProviderError(f"gcp-kms: signing key {self.key_id}: response failed checks")
        return bytes(resp.signature)

    def public_key_pem(self) -> bytes:
        """The version's public key (``getPublicKey``), to pin in the decryptor's config."""
        resp = self._client.get_public_key(request={"name": self.key_id})
        try:
            key = serialization.load_pem_public_key(str(resp.pem).encode())
        except (ValueError, UnsupportedAlgorithm):
            raise EncryptionConfigError(
                f"signing key {self.key_id}: unreadable public key"
            ) from None
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return _check_p256(der, self.key_id)


def signer_from_uri(uri: str, **options: Any) -> HeaderSigner:
    """The header signer a key URI names (the CLI's ``--sign-with`` / ``[encryption] sign_with``).

    ``aws-kms:KEY_ARN`` (an ``ECC_NIST_P256`` key), ``gcp-kms:projects/.../cryptoKeys/K/
    cryptoKeyVersions/N`` (``EC_SIGN_P256_SHA256``) or ``azure-kv:https://VAULT/keys/NAME/VERSION``
    (``EC`` P-256). ``options`` are the key providers' (``endpoint_url``, ``region``, ...): the
    signing client is built the same way as the wrapping one.

    Raises
    ------
    EncryptionConfigError
        An unknown scheme or a key ID that does not name a signing key (version).
    """
    from saip_encryption.providers import scheme_of

    scheme, _, ident = uri.partition(":")
    if scheme == "aws-kms":
        return AwsKmsSigner(
            key_arn=ident,
            endpoint_url=options.pop("endpoint_url", None),
            region=options.pop("region", None),
        )
    if scheme == "gcp-kms":
        from saip_encryption.providers import gcp

        key, sep, _version = ident.partition("/cryptoKeyVersions/")
        if not sep:
            raise EncryptionConfigError(f"gcp-kms signing key {uri!r} must name a cryptoKeyVersion")
        return GcpKmsSigner(
            version_name=ident, client=gcp.from_uri(f"gcp-kms:{key}", **options).client
        )
    if scheme == "azure-kv":
        from saip_encryption.providers import azure

        provider = azure.from_uri(uri, **options)
        # the provider builds its clients (credential, TLS transport) the same way for any key
        return AzureKeyVaultSigner(client=provider._client_for(ident))
    raise EncryptionConfigError(
        f"signing key {wire.escape(uri)!r}: scheme {wire.escape(scheme_of(uri))!r} cannot sign "
        "(use aws-kms:, gcp-kms: or azure-kv:)"
    )


def verifier_from_spec(spec: str) -> HeaderVerifier:
    """A :class:`HeaderVerifier` from ``SCHEME:KEY_ID=PUBLIC_KEY_FILE`` (PEM or DER).

    The form of the CLI's ``--verify-with`` and ``[encryption] verify_with``: the key URI the
    signer was configured with (``--sign-with``) and the file holding its public key.

    Raises
    ------
    EncryptionConfigError
        Not of that form, an unreadable file, or not an EC P-256 public key.
    """
    uri, sep, path = spec.partition("=")
    scheme, colon, key_id = uri.partition(":")
    if not sep or not colon or not path:
        raise EncryptionConfigError(
            f"verify-with {wire.escape(spec)!r}: expected SCHEME:KEY_ID=PUBLIC_KEY_FILE"
        )
    try:
        with open(path, "rb") as fh:
            public_key = fh.read(1 << 16)
    except OSError as exc:
        raise EncryptionConfigError(
            f"verify-with {wire.escape(uri)}: cannot read {wire.escape(path)} ({exc.strerror})"
        ) from None
    return HeaderVerifier(scheme=scheme, key_id=key_id, public_key=public_key)
