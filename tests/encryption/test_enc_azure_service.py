"""Azure Key Vault provider on its SERVICE path: the real ``CryptographyClient``/``KeyClient``
over HTTPS (TLS ≥ 1.2 transport from ``saip_encryption.tls``, bearer challenge, JSON bodies)
against a labelled FAKE vault (``fake_key_vault.py``) with real RSA-OAEP-256.

Shows: the versioned key ID comes from the service; ``KeyClient.rotate_key`` creates a version
that new wraps use while old data stays readable; a version disabled with
``update_key_properties`` fails with a ``KeyProviderError`` naming that version; a deleted key
names the version; a tampered wrapped key is the opaque ``DecryptionError``.
"""

from __future__ import annotations

import importlib.util
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.keys import KeyClient
from saip_encryption import tls
from saip_encryption.errors import DecryptionError, KeyProviderError
from saip_encryption.providers import azure
from saip_encryption.providers.base import WrappedKey

CTX = {"dataset": "digits"}
OPTIONS = {"verify_challenge_resource": False, "retry_total": 0}


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


helpers = _load("tls_helpers")
fake_key_vault = _load("fake_key_vault")


class FakeCredential:
    """Dummy bearer token (no Entra ID offline); the FAKE vault only checks the scheme."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("fake-token", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pki = helpers.make_pki(tmp_path_factory.mktemp("kv-pki"))
    fake = fake_key_vault.FakeKeyVault()
    with helpers.TlsHttpServer(
        pki,
        min_version=ssl.TLSVersion.TLSv1_2,
        max_version=ssl.TLSVersion.TLSv1_3,
        responder=fake.respond,
    ) as server:
        fake.url = server.url
        fake.server, fake.pki = server, pki
        yield fake


def _keys(vault: Any, credential: Any) -> KeyClient:
    return KeyClient(
        vault.url,
        credential,
        transport=tls.azure_transport(ca_bundle=vault.pki.ca_pem),
        **OPTIONS,
    )


def _provider(vault: Any, name: str, credential: Any) -> azure.AzureKeyVaultProvider:
    return azure.from_uri(
        f"azure-kv:{vault.url}/keys/{name}",
        credential=credential,
        ca_bundle=str(vault.pki.ca_pem),
        client_options=OPTIONS,
    )


def test_service_path_roundtrip_with_challenge_auth(vault: Any) -> None:
    credential = FakeCredential()
    created = _keys(vault, credential).create_rsa_key("records", size=2048)
    provider = _provider(vault, "records", credential)
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert wrapped.key_id == created.id  # the versioned ID, as the service reports it
    assert provider.unwrap(wrapped, context=CTX) == data_key
    assert "https://vault.azure.net/.default" in credential.scopes
    assert "Bearer fake-token" in vault.server.seen.auth
    assert set(vault.server.seen.handshakes) <= {"TLSv1.2", "TLSv1.3"}
    assert ("POST", f"/keys/records/{created.properties.version}/unwrapkey?api-version=") in [
        (m, p.split("api-version=")[0] + "api-version=") for m, p in vault.server.seen.requests
    ]


def test_rotate_disable_and_delete_name_the_version(vault: Any) -> None:
    credential = FakeCredential()
    keys = _keys(vault, credential)
    keys.create_rsa_key("models", size=2048)
    provider = _provider(vault, "models", credential)
    old_key, old = provider.generate_data_key(context=CTX)
    rotated = keys.rotate_key("models")
    new_key, new = _provider(vault, "models", credential).generate_data_key(context=CTX)
    assert new.key_id == rotated.id != old.key_id
    assert len(list(keys.list_properties_of_key_versions("models"))) == 2
    assert provider.unwrap(old, context=CTX) == old_key

    old_version = old.key_id.rsplit("/", 1)[1]
    keys.update_key_properties("models", old_version, enabled=False)
    fresh = _provider(vault, "models", credential)
    with pytest.raises(KeyProviderError) as info:
        fresh.unwrap(old, context=CTX)
    assert str(info.value).startswith(f"azure-kv: key version {old.key_id} is disabled")
    assert fresh.unwrap(new, context=CTX) == new_key

    vault.delete_key("models")
    with pytest.raises(KeyProviderError, match=f"key version {new.key_id} was not found"):
        _provider(vault, "models", credential).unwrap(new, context=CTX)


def test_tampered_wrapped_key_is_opaque_on_the_service_path(vault: Any) -> None:
    credential = FakeCredential()
    _keys(vault, credential).create_rsa_key("tamper", size=2048)
    provider = _provider(vault, "tamper", credential)
    _, wrapped = provider.generate_data_key(context=CTX)
    bad = WrappedKey("azure-kv", wrapped.key_id, bytes(len(wrapped.ciphertext)))
    with pytest.raises(DecryptionError):
        provider.unwrap(bad, context=CTX)
