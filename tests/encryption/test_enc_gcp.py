"""Cloud KMS provider: the REAL google-cloud-kms client over gRPC against a local FAKE server.

The fake (``fake_gcp_kms.py``, labelled FAKE) implements AES-256-GCM wrapping, versions, primary
rotation, disabled/destroyed versions, AAD checks and CRC32C fields. Administration (rotation,
disabling) goes through the same real client, as an operator would.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from google.cloud import kms_v1
from google.protobuf import field_mask_pb2
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers import gcp
from saip_encryption.providers.base import KeyProvider, WrappedKey


def _load_fake() -> ModuleType:
    name = "saip_tests_fake_gcp_kms"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("fake_gcp_kms.py")
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


fake_gcp_kms = _load_fake()
CTX = {"dataset": "digits", "tenant": "t1"}
RING_PARENT = "projects/saip-test/locations/europe-west1"
RING = f"{RING_PARENT}/keyRings/ring"
KEY = f"{RING}/cryptoKeys/records"
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState


@pytest.fixture(scope="module")
def kms_server() -> Iterator[object]:
    with fake_gcp_kms.serve() as running:
        yield running


@pytest.fixture
def provider(kms_server: object) -> gcp.GcpKmsProvider:
    """A provider on a fresh CryptoKey (unique per test) created through the real client."""
    target = kms_server.target  # type: ignore[attr-defined]
    p = gcp.from_uri(f"gcp-kms:{KEY}", api_endpoint=target, insecure=True, timeout=5)
    admin = p.client
    fake = kms_server.fake  # type: ignore[attr-defined]
    if RING not in fake.key_rings:
        admin.create_key_ring(
            request={"parent": RING_PARENT, "key_ring_id": "ring", "key_ring": {}}
        )
    fake.keys.pop(KEY, None)
    admin.create_crypto_key(
        request={
            "parent": RING,
            "crypto_key_id": "records",
            "crypto_key": {"purpose": kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT},
        }
    )
    fake.corrupt_next = None
    return p


def _set_state(p: gcp.GcpKmsProvider, version: str, state: int) -> None:
    p.client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": version, "state": state},
            "update_mask": field_mask_pb2.FieldMask(paths=["state"]),
        }
    )


def test_roundtrip_records_version_and_sends_crc32c(
    provider: gcp.GcpKmsProvider, kms_server: object
) -> None:
    assert isinstance(provider, KeyProvider)
    assert provider.uri == f"gcp-kms:{KEY}"
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert len(data_key) == 32
    assert wrapped.provider == "gcp-kms"
    assert wrapped.key_id == f"{KEY}/cryptoKeyVersions/1"
    assert bytes(data_key) not in wrapped.ciphertext
    assert provider.unwrap(wrapped, context=dict(reversed(list(CTX.items())))) == data_key
    assert kms_server.fake.calls[-2:] == ["Encrypt", "Decrypt"]  # type: ignore[attr-defined]


def test_wrong_context_and_tampering_are_one_opaque_error(provider: gcp.GcpKmsProvider) -> None:
    data_key, wrapped = provider.generate_data_key(context=CTX)
    tampered = WrappedKey("gcp-kms", wrapped.key_id, wrapped.ciphertext[:-1] + b"\x00")
    for bad, ctx in [(wrapped, {**CTX, "tenant": "t2"}), (wrapped, {}), (tampered, CTX)]:
        with pytest.raises(DecryptionError) as info:
            provider.unwrap(bad, context=ctx)
        assert str(info.value) == "decryption failed"
        assert data_key.hex() not in str(info.value)


def test_rotation_to_new_primary_keeps_old_data_readable(provider: gcp.GcpKmsProvider) -> None:
    old_key, old = provider.generate_data_key(context=CTX)
    version = provider.client.create_crypto_key_version(
        request={"parent": KEY, "crypto_key_version": {}}
    )
    assert version.name == f"{KEY}/cryptoKeyVersions/2"
    provider.client.update_crypto_key_primary_version(
        request={"name": KEY, "crypto_key_version_id": "2"}
    )
    new_key, new = provider.generate_data_key(context=CTX)
    assert new.key_id == f"{KEY}/cryptoKeyVersions/2"
    assert old.key_id == f"{KEY}/cryptoKeyVersions/1"
    assert provider.unwrap(old, context=CTX) == old_key
    assert provider.unwrap(new, context=CTX) == new_key


def test_disabled_and_destroyed_versions_fail_naming_the_version(
    provider: gcp.GcpKmsProvider,
) -> None:
    _, old = provider.generate_data_key(context=CTX)
    provider.client.create_crypto_key_version(request={"parent": KEY, "crypto_key_version": {}})
    provider.client.update_crypto_key_primary_version(
        request={"name": KEY, "crypto_key_version_id": "2"}
    )
    new_key, new = provider.generate_data_key(context=CTX)
    _set_state(provider, old.key_id, State.DISABLED)
    with pytest.raises(KeyProviderError) as info:
        provider.unwrap(old, context=CTX)
    assert f"gcp-kms: key version {KEY}/cryptoKeyVersions/1 is not enabled" in str(info.value)
    assert provider.unwrap(new, context=CTX) == new_key  # other versions unaffected
    _set_state(provider, old.key_id, State.ENABLED)
    assert len(provider.unwrap(old, context=CTX)) == 32  # re-enabling restores access
    provider.client.destroy_crypto_key_version(request={"name": old.key_id})
    with pytest.raises(KeyProviderError, match="cryptoKeyVersions/1 is not enabled"):
        provider.unwrap(old, context=CTX)


def test_disabled_primary_cannot_wrap(provider: gcp.GcpKmsProvider) -> None:
    _set_state(provider, f"{KEY}/cryptoKeyVersions/1", State.DISABLED)
    with pytest.raises(KeyProviderError, match=f"key {KEY} is not enabled"):
        provider.generate_data_key(context=CTX)


@pytest.mark.parametrize("direction", ["encrypt", "decrypt"])
def test_response_corrupted_in_transit_is_detected_by_crc32c(
    provider: gcp.GcpKmsProvider, kms_server: object, direction: str
) -> None:
    _, wrapped = provider.generate_data_key(context=CTX)
    kms_server.fake.corrupt_next = direction  # type: ignore[attr-defined]

    def call() -> object:
        if direction == "encrypt":
            return provider.generate_data_key(context=CTX)
        return provider.unwrap(wrapped, context=CTX)

    with pytest.raises(KeyProviderError, match="CRC32C"):
        call()


def test_version_of_another_key_or_provider_is_refused(provider: gcp.GcpKmsProvider) -> None:
    _, wrapped = provider.generate_data_key(context=CTX)
    other = WrappedKey(
        "gcp-kms", f"{RING}/cryptoKeys/other/cryptoKeyVersions/1", wrapped.ciphertext
    )
    with pytest.raises(KeyProviderError, match="does not belong"):
        provider.unwrap(other, context=CTX)
    with pytest.raises(KeyProviderError, match="provider 'aws-kms'"):
        provider.unwrap(WrappedKey("aws-kms", wrapped.key_id, wrapped.ciphertext), context=CTX)


def test_missing_key_and_unreachable_endpoint_name_the_key(kms_server: object) -> None:
    target = kms_server.target  # type: ignore[attr-defined]
    missing = f"{RING}/cryptoKeys/missing"
    p = gcp.from_uri(f"gcp-kms:{missing}", api_endpoint=target, insecure=True, timeout=5)
    with pytest.raises(KeyProviderError, match=f"key {missing} was not found"):
        p.generate_data_key(context=CTX)
    dead = gcp.from_uri(f"gcp-kms:{KEY}", api_endpoint="127.0.0.1:9", insecure=True, timeout=1)
    data_key = bytes(range(32))
    with pytest.raises(KeyProviderError, match=f"gcp-kms: key {KEY}") as info:
        dead.wrap(data_key, context=CTX)
    # the operational error names the key, never the key material
    message = str(info.value)
    for form in (data_key.hex(), repr(data_key), base64.b64encode(data_key).decode()):
        assert form not in message


@pytest.mark.parametrize(
    ("uri", "options", "error", "match"),
    [
        ("gcp-kms:projects/p/keyRings/r", {}, EncryptionConfigError, "must be projects/"),
        (f"gcp-kms:{KEY}/cryptoKeyVersions/1", {}, EncryptionConfigError, "must be projects/"),
        (f"gcp-kms:{KEY}", {"insecure": True}, EncryptionConfigError, "loopback"),
        (
            f"gcp-kms:{KEY}",
            {"insecure": True, "api_endpoint": "kms.example.com:443"},
            EncryptionConfigError,
            "loopback",
        ),
        (f"gcp-kms:{KEY}", {"timeout": 0}, ValueError, "timeout"),
        (f"gcp-kms:{KEY}", {"project": "x"}, TypeError, "unknown option"),
    ],
)
def test_from_uri_validates_eagerly(
    uri: str, options: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        gcp.from_uri(uri, **options)


@pytest.mark.live("gcp")
def test_live_gcp_kms_roundtrip() -> None:
    """Set SAIP_LIVE_GCP_KMS_KEY to projects/.../cryptoKeys/K (Application Default Credentials)."""
    key = os.environ.get("SAIP_LIVE_GCP_KMS_KEY")
    if not key:
        pytest.skip("set SAIP_LIVE_GCP_KMS_KEY to a Cloud KMS CryptoKey name")
    provider = gcp.from_uri(f"gcp-kms:{key}")
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert "/cryptoKeyVersions/" in wrapped.key_id
    assert provider.unwrap(wrapped, context=CTX) == data_key
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped, context={**CTX, "tenant": "other"})


def test_cli_shared_options_endpoint_url_and_region(kms_server: object, provider: object) -> None:
    target = kms_server.target  # type: ignore[attr-defined]
    p = gcp.from_uri(f"gcp-kms:{KEY}", endpoint_url=f"http://{target}", region="europe-west1")
    data_key, wrapped = p.generate_data_key(context=CTX)
    assert p.unwrap(wrapped, context=CTX) == data_key
    with pytest.raises(EncryptionConfigError, match="contradicts the key's location"):
        gcp.from_uri(f"gcp-kms:{KEY}", region="us-east1")
    with pytest.raises(EncryptionConfigError, match="endpoint_url: plaintext"):
        gcp.from_uri(f"gcp-kms:{KEY}", endpoint_url="http://kms.example.com:80")


def test_missing_application_default_credentials_is_a_named_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never probe a metadata server
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    with pytest.raises(KeyProviderError, match="no Application Default Credentials"):
        gcp.from_uri(f"gcp-kms:{KEY}")
