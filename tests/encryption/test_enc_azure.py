"""Azure Key Vault provider with the REAL azure-keyvault-keys SDK's local crypto (``from_jwk``).

``LocalVault`` below holds several versions of one key as JWKs and hands out
``CryptographyClient.from_jwk`` clients, the way the service resolves a key ID: the unversioned
ID gives the latest version, a versioned ID that exact version. A *deleted* version raises the
SDK's ``ResourceNotFoundError``; a *disabled* version is modelled by a JWK without the
``unwrapKey``/``wrapKey`` operations (the SDK refuses the operation locally). The service's own
HTTP 403 "disabled key" answer is covered in ``test_enc_azure_service.py`` through the real
``CryptographyClient`` HTTP pipeline.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import JsonWebKey, KeyType
from azure.keyvault.keys.crypto import CryptographyClient
from cryptography.hazmat.primitives.asymmetric import rsa
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers import azure
from saip_encryption.providers.base import KeyProvider, WrappedKey

VAULT = "https://saip-test.vault.azure.net"
CTX = {"dataset": "digits", "tenant": "t1"}


def _int(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


class LocalVault:
    """Versions of one key as JWKs, resolved to real ``from_jwk`` clients (no service)."""

    def __init__(self, name: str, kty: str) -> None:
        self.key = f"{VAULT}/keys/{name}"
        self.kty = kty
        self.versions: dict[str, JsonWebKey] = {}
        self.order: list[str] = []
        self.rotate()

    def rotate(self) -> str:
        version = secrets.token_hex(16)
        kid = f"{self.key}/{version}"
        ops = ["wrapKey", "unwrapKey"]
        if self.kty == "RSA":
            priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pn = priv.private_numbers()
            jwk = JsonWebKey(
                kid=kid,
                kty=KeyType.rsa,
                key_ops=ops,
                n=_int(pn.public_numbers.n),
                e=_int(pn.public_numbers.e),
                d=_int(pn.d),
                p=_int(pn.p),
                q=_int(pn.q),
                dp=_int(pn.dmp1),
                dq=_int(pn.dmq1),
                qi=_int(pn.iqmp),
            )
        else:
            jwk = JsonWebKey(kid=kid, kty=KeyType.oct_hsm, key_ops=ops, k=os.urandom(32))
        self.versions[kid] = jwk
        self.order.append(kid)
        return kid

    def disable(self, kid: str) -> None:
        self.versions[kid].key_ops = []

    def delete(self, kid: str) -> None:
        del self.versions[kid]

    def client(self, key_id: str) -> Any:
        if key_id == self.key:
            key_id = self.order[-1]
        if key_id not in self.versions:
            raise ResourceNotFoundError(f"A key with (name/id) {key_id} was not found")
        return CryptographyClient.from_jwk(self.versions[key_id])

    def provider(self, algorithm: str) -> azure.AzureKeyVaultProvider:
        return azure.from_uri(
            f"azure-kv:{self.key}", algorithm=algorithm, client_for_version=self.client
        )


PARAMS = [
    pytest.param("RSA", "RSA-OAEP-256", id="rsa-oaep-256"),
    pytest.param("oct", "A256KW", id="a256kw"),
]


@pytest.mark.parametrize(("kty", "alg"), PARAMS)
def test_roundtrip_records_versioned_key_id(kty: str, alg: str) -> None:
    vault = LocalVault("records", kty)
    provider = vault.provider(alg)
    assert isinstance(provider, KeyProvider)
    assert provider.uri == f"azure-kv:{vault.key}"
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert len(data_key) == 32
    assert wrapped.provider == "azure-kv"
    assert wrapped.key_id == vault.order[-1]
    assert bytes(data_key) not in wrapped.ciphertext
    assert provider.unwrap(wrapped, context=CTX) == data_key


@pytest.mark.parametrize(("kty", "alg"), PARAMS)
def test_new_version_wraps_new_data_and_old_versions_stay_readable(kty: str, alg: str) -> None:
    vault = LocalVault("rotating", kty)
    provider = vault.provider(alg)
    v1_key, v1 = provider.generate_data_key(context=CTX)
    v2_id = vault.rotate()
    v2_key, v2 = provider.generate_data_key(context=CTX)
    vault.rotate()
    assert v1.key_id == vault.order[0]
    assert v2.key_id == v2_id
    assert provider.unwrap(v1, context=CTX) == v1_key
    assert provider.unwrap(v2, context=CTX) == v2_key


@pytest.mark.parametrize(("kty", "alg"), PARAMS)
def test_disabled_or_deleted_version_fails_naming_that_version(kty: str, alg: str) -> None:
    vault = LocalVault("retiring", kty)
    provider = vault.provider(alg)
    _, old = provider.generate_data_key(context=CTX)
    vault.rotate()
    new_key, new = provider.generate_data_key(context=CTX)
    vault.disable(old.key_id)
    with pytest.raises(KeyProviderError) as info:
        provider.unwrap(old, context=CTX)
    assert str(info.value).startswith(f"azure-kv: key version {old.key_id} does not permit")
    assert provider.unwrap(new, context=CTX) == new_key
    vault.delete(old.key_id)
    with pytest.raises(KeyProviderError, match=f"key version {old.key_id} was not found"):
        provider.unwrap(old, context=CTX)


@pytest.mark.parametrize(("kty", "alg"), PARAMS)
def test_tampered_wrapped_key_is_the_opaque_error(kty: str, alg: str) -> None:
    vault = LocalVault("tamper", kty)
    provider = vault.provider(alg)
    data_key, wrapped = provider.generate_data_key(context=CTX)
    bad = WrappedKey("azure-kv", wrapped.key_id, wrapped.ciphertext[:-1] + b"\x00")
    with pytest.raises(DecryptionError) as info:
        provider.unwrap(bad, context=CTX)
    assert str(info.value) == "decryption failed"
    assert data_key.hex() not in str(info.value)


def test_injected_client_pins_one_version() -> None:
    vault = LocalVault("pinned", "RSA")
    kid = vault.order[-1]
    client = CryptographyClient.from_jwk(vault.versions[kid])
    provider = azure.from_uri(f"azure-kv:{kid}", client=client)
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert wrapped.key_id == kid
    assert provider.unwrap(wrapped, context=CTX) == data_key


def test_wrap_answered_by_another_key_is_refused() -> None:
    other = LocalVault("other", "RSA")
    client = CryptographyClient.from_jwk(other.versions[other.order[-1]])
    provider = azure.from_uri(f"azure-kv:{VAULT}/keys/records", client=client)
    with pytest.raises(KeyProviderError, match="not a version of the configured key"):
        provider.generate_data_key(context=CTX)


def test_wrapped_key_of_another_key_or_provider_is_refused() -> None:
    vault = LocalVault("records", "RSA")
    provider = vault.provider("RSA-OAEP-256")
    _, wrapped = provider.generate_data_key(context=CTX)
    foreign = WrappedKey("azure-kv", f"{VAULT}/keys/other/{'0' * 32}", wrapped.ciphertext)
    with pytest.raises(KeyProviderError, match="is not a version of"):
        provider.unwrap(foreign, context=CTX)
    unversioned = WrappedKey("azure-kv", vault.key, wrapped.ciphertext)
    with pytest.raises(KeyProviderError, match="is not a version of"):
        provider.unwrap(unversioned, context=CTX)
    with pytest.raises(KeyProviderError, match="provider 'aws-kms'"):
        provider.unwrap(WrappedKey("aws-kms", wrapped.key_id, b""), context=CTX)


@pytest.mark.parametrize(
    ("uri", "options", "error", "match"),
    [
        ("azure-kv:http://v.vault.azure.net/keys/k", {}, EncryptionConfigError, "must be https"),
        ("azure-kv:https://evil.example.com/keys/k", {}, EncryptionConfigError, "must be https"),
        ("azure-kv:https://v.vault.azure.net/secrets/k", {}, EncryptionConfigError, "must be"),
        (
            "azure-kv:https://v.vault.azure.net/keys/k",
            {"algorithm": "RSA1_5"},
            EncryptionConfigError,
            "RSA1_5",
        ),
        ("azure-kv:https://v.vault.azure.net/keys/k", {"vault": "x"}, TypeError, "unknown option"),
        (
            "azure-kv:https://v.vault.azure.net/keys/k",
            {"client_for_version": 3},
            TypeError,
            "callable",
        ),
    ],
)
def test_from_uri_validates_eagerly(
    uri: str, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        azure.from_uri(uri, **options)


def test_sovereign_and_hsm_hosts_and_versions_parse() -> None:
    assert azure.parse_key_id("https://h.managedhsm.azure.net/keys/k/abc123") == (
        "https://h.managedhsm.azure.net",
        "k",
        "abc123",
    )
    assert azure.parse_key_id("https://v.vault.azure.cn/keys/k")[2] is None


@pytest.mark.live("azure")
def test_live_key_vault_roundtrip() -> None:
    """Set SAIP_LIVE_AZURE_KEY_ID to https://VAULT.vault.azure.net/keys/NAME (RSA key)."""
    key_id = os.environ.get("SAIP_LIVE_AZURE_KEY_ID")
    if not key_id:
        pytest.skip("set SAIP_LIVE_AZURE_KEY_ID to a Key Vault key ID")
    provider = azure.from_uri(f"azure-kv:{key_id}")
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert wrapped.key_id.startswith(key_id.rstrip("/") + "/")
    assert provider.unwrap(wrapped, context=CTX) == data_key
