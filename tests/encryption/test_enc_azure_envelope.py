"""End to end: the SAIP envelope under the Azure Key Vault provider (REAL SDK, local ``from_jwk``
crypto). Key Vault's wrap has no AAD, so these tests show the *envelope* binds the context, and
that data sealed under an older key version opens after a new version is created.
"""

from __future__ import annotations

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError
from saip_encryption.rotation import rewrap_bytes

CTX = {"dataset": "digits", "tenant": "t1"}


@pytest.mark.parametrize(("kty", "alg"), [("RSA", "RSA-OAEP-256"), ("oct", "A256KW")])
def test_envelope_binds_context_and_survives_a_new_version(
    kty: str, alg: str, local_vault_cls: type, azure_signing: tuple
) -> None:
    vault = local_vault_cls("records", kty)
    provider = vault.provider(alg)
    signer, verifier = azure_signing
    sign = {"signer": signer, "verify_with": [verifier]}
    blob = EnvelopeEncryptor([provider], **sign).encrypt(b"record", context=CTX)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor([provider], **sign).decrypt(blob, context={**CTX, "tenant": "t2"})
    vault.rotate()
    newer = EnvelopeEncryptor([provider], **sign).encrypt(b"newer", context=CTX)
    assert EnvelopeEncryptor([provider], **sign).decrypt(blob, context=CTX) == b"record"
    assert EnvelopeEncryptor([provider], **sign).decrypt(newer, context=CTX) == b"newer"


def test_rewrap_to_new_version_before_disabling_the_old_one(
    local_vault_cls: type, azure_signing: tuple
) -> None:
    """The "Key Vault rotation failure" scenario: re-wrap first, then disable the old version."""
    vault = local_vault_cls("models", "RSA")
    provider = vault.provider("RSA-OAEP-256")
    signer, verifier = azure_signing
    sign = {"signer": signer, "verify_with": [verifier]}
    blob = EnvelopeEncryptor([provider], **sign).encrypt(b"weights", context=CTX)
    old_version = vault.order[-1]
    vault.rotate()
    vault.disable(old_version)
    with pytest.raises(KeyProviderError, match=f"key version {old_version} does not permit"):
        EnvelopeEncryptor([provider], verify_with=[verifier]).decrypt(blob, context=CTX)
    vault.versions[old_version].key_ops = ["wrapKey", "unwrapKey"]  # re-enable to recover
    with pytest.raises(DecryptionError):  # re-wrapping applies the signature policy too
        rewrap_bytes(blob, unwrap_with=[provider], wrap_with=[provider])
    moved = rewrap_bytes(blob, unwrap_with=[provider], wrap_with=[provider], verify_with=[verifier])
    vault.disable(old_version)
    assert EnvelopeEncryptor([provider], verify_with=[verifier]).decrypt(moved, context=CTX) == (
        b"weights"
    )
