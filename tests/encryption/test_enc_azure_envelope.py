"""End to end: the SAIP envelope under the Azure Key Vault provider (REAL SDK, local ``from_jwk``
crypto). Key Vault's wrap has no AAD, so these tests show the *envelope* binds the context, and
that data sealed under an older key version opens after a new version is created.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError
from saip_encryption.rotation import rewrap_bytes

CTX = {"dataset": "digits", "tenant": "t1"}


def _load(name: str) -> ModuleType:
    qual = f"saip_tests_{name}"
    if qual not in sys.modules:
        spec = importlib.util.spec_from_file_location(qual, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qual] = module
        spec.loader.exec_module(module)
    return sys.modules[qual]


LocalVault = _load("test_enc_azure").LocalVault
azure_ec_signer = _load("conftest").azure_ec_signer


@pytest.mark.parametrize(("kty", "alg"), [("RSA", "RSA-OAEP-256"), ("oct", "A256KW")])
def test_envelope_binds_context_and_survives_a_new_version(kty: str, alg: str) -> None:
    vault = LocalVault("records", kty)
    provider = vault.provider(alg)
    signer, verifier = azure_ec_signer()
    sign = {"signer": signer, "verify_with": [verifier]}
    blob = EnvelopeEncryptor([provider], **sign).encrypt(b"record", context=CTX)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor([provider], **sign).decrypt(blob, context={**CTX, "tenant": "t2"})
    vault.rotate()
    newer = EnvelopeEncryptor([provider], **sign).encrypt(b"newer", context=CTX)
    assert EnvelopeEncryptor([provider], **sign).decrypt(blob, context=CTX) == b"record"
    assert EnvelopeEncryptor([provider], **sign).decrypt(newer, context=CTX) == b"newer"


def test_rewrap_to_new_version_before_disabling_the_old_one() -> None:
    """The "Key Vault rotation failure" scenario: re-wrap first, then disable the old version."""
    vault = LocalVault("models", "RSA")
    provider = vault.provider("RSA-OAEP-256")
    signer, verifier = azure_ec_signer()
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
