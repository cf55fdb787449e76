"""Fixtures of the encryption tests: a local master key, and two labelled test doubles.

``StaticProvider`` is a FAKE key provider for wire-format tests only: it hands out one fixed data
key so ciphertexts are deterministic (with a fixed RNG) and can be compared to golden digests.
``CountingProvider`` wraps a real provider and counts calls (the "one KMS call per batch" tests).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType

import pytest
from saip_encryption.errors import DecryptionError, KeyProviderError
from saip_encryption.providers.base import KeyProvider, WrappedKey
from saip_encryption.providers.local import LocalKeyProvider, create_local_key


class StaticProvider:
    """FAKE provider: the data key is fixed and "wrapping" is XOR with a fixed pad (tests only)."""

    def __init__(self, data_key: bytes = bytes(range(32)), key_id: str = "static-key/v1") -> None:
        self._key = bytes(data_key)
        self._key_id = key_id
        self.fail_with: Exception | None = None

    @property
    def uri(self) -> str:
        return f"static:{self._key_id.split('/')[0]}"

    def accepts(self, key_id: str) -> bool:
        return key_id == self._key_id

    def _pad(self, data: bytes) -> bytes:
        return bytes(b ^ 0x5C for b in data)

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        return bytearray(self._key), self.wrap(self._key, context=context)

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        return WrappedKey("static", self._key_id, self._pad(bytes(data_key)))

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        if self.fail_with is not None:
            raise self.fail_with
        return bytearray(self._pad(wrapped.ciphertext))


class CountingProvider:
    """Wraps a provider and counts generate/wrap/unwrap calls."""

    def __init__(self, inner: KeyProvider) -> None:
        self.inner = inner
        self.generated = 0
        self.wrapped = 0
        self.unwrapped = 0

    @property
    def uri(self) -> str:
        return self.inner.uri

    def accepts(self, key_id: str) -> bool:
        return bool(getattr(self.inner, "accepts")(key_id))  # noqa: B009

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        self.generated += 1
        return self.inner.generate_data_key(context=context)

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        self.wrapped += 1
        return self.inner.wrap(data_key, context=context)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        self.unwrapped += 1
        return self.inner.unwrap(wrapped, context=context)


class UnavailableProvider:
    """A provider whose key is "disabled": every call raises KeyProviderError naming a version."""

    def __init__(self, inner: LocalKeyProvider, version: str = "v1") -> None:
        self.inner = inner
        self.version = version

    @property
    def uri(self) -> str:
        return self.inner.uri

    def accepts(self, key_id: str) -> bool:
        return self.inner.accepts(key_id)

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        raise KeyProviderError(f"local: key version {self.version} is disabled")

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        raise KeyProviderError(f"local: key version {self.version} is disabled")

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        raise KeyProviderError(f"local: key {wrapped.key_id} version {self.version} is disabled")


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "master.key"
    create_local_key(path)
    return path


@pytest.fixture
def local(key_path: Path) -> LocalKeyProvider:
    return LocalKeyProvider(key_path)


@pytest.fixture
def other_local(tmp_path: Path) -> LocalKeyProvider:
    path = tmp_path / "keys" / "other.key"
    create_local_key(path)
    return LocalKeyProvider(path)


@pytest.fixture
def static_provider_cls() -> type[StaticProvider]:
    return StaticProvider


@pytest.fixture
def counting_cls() -> type[CountingProvider]:
    return CountingProvider


@pytest.fixture
def unavailable_cls() -> type[UnavailableProvider]:
    return UnavailableProvider


__all__ = ["DecryptionError"]


def azure_ec_signer(name: str = "headers") -> tuple[object, object]:
    """A Key Vault EC P-256 signing key through the REAL SDK's local ``from_jwk`` crypto (the
    Key Vault stand-in): returns ``(AzureKeyVaultSigner, HeaderVerifier)``."""
    import secrets as _secrets

    from azure.keyvault.keys import JsonWebKey
    from azure.keyvault.keys.crypto import CryptographyClient
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from saip_encryption.signing import AzureKeyVaultSigner, HeaderVerifier

    priv = ec.generate_private_key(ec.SECP256R1())
    nums = priv.private_numbers()
    kid = f"https://saip-test.vault.azure.net/keys/{name}/{_secrets.token_hex(16)}"
    jwk = JsonWebKey(
        kid=kid,
        kty="EC",
        crv="P-256",
        x=nums.public_numbers.x.to_bytes(32, "big"),
        y=nums.public_numbers.y.to_bytes(32, "big"),
        d=nums.private_value.to_bytes(32, "big"),
        key_ops=["sign", "verify"],
    )
    signer = AzureKeyVaultSigner(client=CryptographyClient.from_jwk(jwk))
    pem = priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return signer, HeaderVerifier(scheme="azure-kv", key_id=kid, public_key=pem)


@pytest.fixture
def azure_signing() -> tuple[object, object]:
    return azure_ec_signer()


def load_sibling(name: str) -> ModuleType:
    """Import ``tests/encryption/<name>.py`` once (tests are not a package: importlib mode)."""
    qual = f"saip_tests_{name}"
    if qual not in sys.modules:
        spec = importlib.util.spec_from_file_location(qual, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qual] = module
        spec.loader.exec_module(module)
    return sys.modules[qual]


@pytest.fixture
def local_vault_cls() -> type:
    """``LocalVault`` of test_enc_azure.py: Key Vault key versions as REAL ``from_jwk`` clients."""
    vault: type = load_sibling("test_enc_azure").LocalVault
    return vault


@pytest.fixture
def fake_gcp_kms() -> ModuleType:
    """The FAKE Cloud KMS gRPC server module (fake_gcp_kms.py)."""
    return load_sibling("fake_gcp_kms")


@pytest.fixture
def make_azure_signer() -> object:
    """Factory of extra Key Vault EC signing keys (e.g. an attacker's own)."""
    return azure_ec_signer
