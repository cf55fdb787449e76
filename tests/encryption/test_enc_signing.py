"""Sender authentication: header signatures by a KMS-held key, verified locally.

The attack first: Key Vault RSA-OAEP-256 (the Azure default) wraps with the *public* key, so a
forger who can read it picks a data key, wraps it, computes a valid commitment and produces an
envelope a naive decryptor accepts. With a header signature policy it is rejected — on decrypt,
on the per-epoch fast path and on re-wrap. Signers are the REAL SDKs: AWS KMS ``Sign`` on moto
server, Key Vault ``sign`` through the SDK's local ``from_jwk`` crypto (stand-in), Cloud KMS
``asymmetricSign`` through the labelled fake gRPC server (``fake_gcp_kms.py``).
"""

from __future__ import annotations

import io

import boto3
import grpc
import pytest
from azure.keyvault.keys import JsonWebKey
from azure.keyvault.keys.crypto import CryptographyClient
from google.cloud import kms_v1
from saip_encryption import (
    DecryptionError,
    EncryptionConfigError,
    EnvelopeEncryptor,
    from_uri,
    wire,
)
from saip_encryption.providers import azure
from saip_encryption.providers.local import LocalKeyProvider
from saip_encryption.rotation import rewrap_bytes
from saip_encryption.signing import AwsKmsSigner, GcpKmsSigner, HeaderVerifier

CTX = {"dataset": "digits", "tenant": "t1"}


def _public_only_provider(vault: object) -> azure.AzureKeyVaultProvider:
    """What a forger has: the RSA public key (``keys/get``), no private part, no vault access."""
    kid = vault.order[-1]  # type: ignore[attr-defined]
    full = vault.versions[kid]  # type: ignore[attr-defined]
    public = JsonWebKey(kid=kid, kty="RSA", key_ops=["wrapKey"], n=full.n, e=full.e)
    return azure.from_uri(
        f"azure-kv:{vault.key}",  # type: ignore[attr-defined]
        client=CryptographyClient.from_jwk(public),
    )


def _forge(provider: azure.AzureKeyVaultProvider, **kwargs: object) -> tuple[bytes, bytes]:
    enc = EnvelopeEncryptor(provider, allow_unsigned_public_key_wraps=True, **kwargs)  # type: ignore[arg-type]
    record = enc.encrypt(b"poisoned record", context=CTX)
    out = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(b"poisoned weights" * 64), out, context=CTX)
    return record, out.getvalue()


def test_public_key_only_forgery_is_rejected(
    local_vault_cls: type, azure_signing: tuple, make_azure_signer
) -> None:  # type: ignore[no-untyped-def]
    vault = local_vault_cls("records", "RSA")
    victim = vault.provider("RSA-OAEP-256")
    signer, verifier = azure_signing
    forged_record, forged_artifact = _forge(_public_only_provider(vault))
    naive = EnvelopeEncryptor(victim, allow_unsigned_public_key_wraps=True)
    assert naive.decrypt(forged_record, context=CTX) == b"poisoned record"  # the attack works
    dec = EnvelopeEncryptor(victim, verify_with=[verifier])
    for blob in (forged_record, forged_artifact):
        with pytest.raises(DecryptionError):
            dec.decrypt(blob, context=CTX)
    with pytest.raises(DecryptionError):
        dec.decrypt_stream(io.BytesIO(forged_artifact), io.BytesIO(), context=CTX)
    # the forger signing with their own key is no better
    own_signer, _own_verifier = make_azure_signer("attacker")
    signed_record, _ = _forge(_public_only_provider(vault), signer=own_signer)
    with pytest.raises(DecryptionError):
        dec.decrypt(signed_record, context=CTX)
    # genuine, signed: accepted (records and artifacts)
    genuine = EnvelopeEncryptor(victim, signer=signer, verify_with=[verifier])
    blob = genuine.encrypt(b"real", context=CTX)
    assert dec.decrypt(blob, context=CTX) == b"real"
    assert dec.decrypt(blob, context=CTX) == b"real"  # fast path, same epoch
    with pytest.raises(DecryptionError):  # and the fast path did not open the door
        dec.decrypt(forged_record, context=CTX)


def test_default_policy_without_verifiers(local: LocalKeyProvider, local_vault_cls: type) -> None:
    """No verifier configured: an RSA-OAEP-only decryptor fails at start-up, naming the setting;
    a mixed one accepts symmetric wraps but never an unsigned public-key wrap."""
    vault = local_vault_cls("records", "RSA")
    victim = vault.provider("RSA-OAEP-256")
    with pytest.raises(EncryptionConfigError, match="verify_with"):
        EnvelopeEncryptor(victim)
    forged_record, forged_artifact = _forge(_public_only_provider(vault))
    mixed = EnvelopeEncryptor([local, victim])
    for blob in (forged_record, forged_artifact):
        with pytest.raises(DecryptionError):
            mixed.decrypt(blob, context=CTX)
    assert mixed.decrypt(mixed.encrypt(b"ok", context=CTX), context=CTX) == b"ok"
    with pytest.raises(DecryptionError):  # re-wrap applies the same policy: no laundering
        rewrap_bytes(forged_record, unwrap_with=[victim], wrap_with=[local])
    # A256KW needs the secret key: no signature required
    hsm = local_vault_cls("hsm", "oct").provider("A256KW")
    assert (
        EnvelopeEncryptor(hsm).decrypt(
            EnvelopeEncryptor(hsm).encrypt(b"k", context=CTX), context=CTX
        )
        == b"k"
    )


def test_signature_is_stripped_swapped_or_damaged(
    local: LocalKeyProvider, azure_signing: tuple
) -> None:
    signer, verifier = azure_signing
    enc = EnvelopeEncryptor(local, cache=False, signer=signer, verify_with=[verifier])
    a, b = enc.encrypt(b"a", context=CTX), enc.encrypt(b"b", context=CTX)
    ha, hb = wire.parse_header(a), wire.parse_header(b)
    assert ha.signature is not None
    assert ha.signature.key_id == signer.key_id
    assert enc.decrypt(a, context=CTX) == b"a"
    sig_at = len(ha.prefix) + wire.COMMITMENT_LEN
    field_end = sig_at + len(ha.signature_field)
    stripped = a[:sig_at] + b"\x00\x00" + a[field_end:]
    swapped = a[:sig_at] + hb.signature_field + a[field_end:]
    for bad in (stripped, swapped):
        with pytest.raises(DecryptionError):
            enc.decrypt(bad, context=CTX)
    for i in range(sig_at, field_end):
        bad = bytearray(a)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionError):
            enc.decrypt(bytes(bad), context=CTX)
    # without verifiers, a signed envelope under a symmetric key still decrypts (unchecked)
    assert EnvelopeEncryptor(local).decrypt(a, context=CTX) == b"a"


def test_aws_kms_signer_on_moto(moto_url: str) -> None:
    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    wrap_arn = kms.create_key(Description="wrap")["KeyMetadata"]["Arn"]
    sign_arn = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"]
    evil_arn = kms.create_key(KeyUsage="SIGN_VERIFY", KeySpec="ECC_NIST_P256")["KeyMetadata"]["Arn"]
    signer = AwsKmsSigner(key_arn=sign_arn, endpoint_url=moto_url)
    verifier = HeaderVerifier(scheme="aws-kms", key_id=sign_arn, public_key=signer.public_key_pem())
    provider = from_uri(f"aws-kms:{wrap_arn}", endpoint_url=moto_url)
    enc = EnvelopeEncryptor(provider, signer=signer, verify_with=[verifier])
    sealer = enc.bind(CTX)
    blobs = sealer.seal_many([b"r1", b"r2", b"r3"])
    assert sealer.open_many(blobs) == [b"r1", b"r2", b"r3"]
    out, back = io.BytesIO(), io.BytesIO()
    enc.encrypt_stream(io.BytesIO(b"w" * 5000), out, context=CTX)
    enc.decrypt_stream(io.BytesIO(out.getvalue()), back, context=CTX)
    assert back.getvalue() == b"w" * 5000
    # a KMS key holder without the signing key: signs with another key, still rejected
    evil = AwsKmsSigner(key_arn=evil_arn, endpoint_url=moto_url)
    forged = EnvelopeEncryptor(provider, signer=evil).encrypt(b"x", context=CTX)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(provider, verify_with=[verifier]).decrypt(forged, context=CTX)
    with pytest.raises(EncryptionConfigError):
        HeaderVerifier(scheme="aws-kms", key_id=sign_arn, public_key=b"not a key")


def test_gcp_kms_signer_on_the_fake_server(fake_gcp_kms: object) -> None:
    fake = fake_gcp_kms
    name = "projects/p/locations/global/keyRings/r/cryptoKeys/sig/cryptoKeyVersions/1"
    with fake.serve() as running:
        running.fake.add_signing_key(name)
        channel = grpc.insecure_channel(running.target)
        transport = (
            kms_v1.services.key_management_service.transports.KeyManagementServiceGrpcTransport(
                channel=channel
            )
        )
        client = kms_v1.KeyManagementServiceClient(transport=transport)
        signer = GcpKmsSigner(version_name=name, client=client)
        verifier = HeaderVerifier(scheme="gcp-kms", key_id=name, public_key=signer.public_key_pem())
        enc = EnvelopeEncryptor(_StaticKey(), signer=signer, verify_with=[verifier])
        blob = enc.encrypt(b"g", context=CTX)
        assert enc.decrypt(blob, context=CTX) == b"g"
        assert "AsymmetricSign" in running.fake.calls
        unsigned = EnvelopeEncryptor(_StaticKey()).encrypt(b"u", context=CTX)
        with pytest.raises(DecryptionError):
            enc.decrypt(unsigned, context=CTX)


class _StaticKey:
    """FAKE symmetric provider (tests only): fixed data key, XOR "wrap"."""

    uri = "static:k"

    def accepts(self, key_id: str) -> bool:
        return key_id == "k/v1"

    def generate_data_key(self, *, context):  # type: ignore[no-untyped-def]
        return bytearray(range(32)), self.wrap(bytes(range(32)), context=context)

    def wrap(self, data_key, *, context):  # type: ignore[no-untyped-def]
        from saip_encryption.providers.base import WrappedKey

        return WrappedKey("static", "k/v1", bytes(b ^ 0x5C for b in data_key))

    def unwrap(self, wrapped, *, context):  # type: ignore[no-untyped-def]
        return bytearray(b ^ 0x5C for b in wrapped.ciphertext)
