"""Local key provider: file creation, permissions, rotation, wrap/unwrap, URI registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, from_uri
from saip_encryption.errors import EncryptionConfigError
from saip_encryption.providers import default_accepts
from saip_encryption.providers.base import KeyProvider, WrappedKey
from saip_encryption.providers.local import LocalKeyProvider, create_local_key

CTX = {"dataset": "d"}


def test_created_owner_only_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "new" / "k.key"
    key_id = create_local_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert key_id.endswith("/v1")
    before = path.read_bytes()
    with pytest.raises(EncryptionConfigError, match="already exists"):
        create_local_key(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o700])
def test_refuses_group_or_world_accessible_key(key_path: Path, mode: int) -> None:
    key_path.chmod(mode)
    if mode & 0o077:
        with pytest.raises(EncryptionConfigError, match=r"accessible by group/others.*chmod 600"):
            LocalKeyProvider(key_path)
    else:
        LocalKeyProvider(key_path)


def test_missing_or_invalid_key_file(tmp_path: Path) -> None:
    with pytest.raises(EncryptionConfigError, match="create-local"):
        LocalKeyProvider(tmp_path / "nope.key")
    bad = tmp_path / "bad.key"
    bad.write_text("not json")
    bad.chmod(0o600)
    with pytest.raises(EncryptionConfigError, match="not a saip local key file"):
        LocalKeyProvider(bad)
    (tmp_path / "dir.key").mkdir(mode=0o700)
    with pytest.raises(EncryptionConfigError):
        LocalKeyProvider(tmp_path / "dir.key")


def test_symlinked_key_is_refused(key_path: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(key_path)
    with pytest.raises(EncryptionConfigError, match="cannot be opened"):
        LocalKeyProvider(link)


def test_wrap_binds_context_and_key_id(local: LocalKeyProvider) -> None:
    data_key, wrapped = local.generate_data_key(context=CTX)
    assert isinstance(data_key, bytearray)
    assert len(data_key) == 32
    assert wrapped.provider == "local"
    assert wrapped.key_id == local.primary_key_id
    assert len(wrapped.ciphertext) == 60
    assert local.unwrap(wrapped, context=CTX) == data_key
    with pytest.raises(DecryptionError):
        local.unwrap(wrapped, context={"dataset": "other"})
    bad = WrappedKey("local", wrapped.key_id, wrapped.ciphertext[:-1] + b"\x00")
    with pytest.raises(DecryptionError):
        local.unwrap(bad, context=CTX)


def test_rotation_keeps_old_data_readable_and_missing_version_is_named(key_path: Path) -> None:
    v1 = LocalKeyProvider(key_path)
    old = EnvelopeEncryptor(v1, cache=False).encrypt(b"old", context=CTX)
    new_id = create_local_key(key_path, rotate=True)
    assert new_id.endswith("/v2")
    assert key_path.stat().st_mode & 0o777 == 0o600
    v2 = LocalKeyProvider(key_path)
    assert v2.primary_key_id == new_id
    enc = EnvelopeEncryptor(v2, cache=False)
    assert enc.decrypt(old, context=CTX) == b"old"
    fresh = enc.encrypt(b"new", context=CTX)
    # remove version 1 from the file: old data now fails with an error naming the version
    doc = json.loads(key_path.read_text())
    doc["versions"] = [v for v in doc["versions"] if v["version"] == 2]
    key_path.write_text(json.dumps(doc))
    v2only = EnvelopeEncryptor(LocalKeyProvider(key_path), cache=False)
    with pytest.raises(KeyProviderError, match=r"version v1"):
        v2only.decrypt(old, context=CTX)
    assert v2only.decrypt(fresh, context=CTX) == b"new"


def test_close_zeroes_master_key(local: LocalKeyProvider) -> None:
    keys = list(local._keys.values())
    local.close()
    assert all(k == bytearray(32) for k in keys)
    with pytest.raises(KeyProviderError, match="closed"):
        local.wrap(bytes(32), context=CTX)


def test_from_uri_dispatch_and_errors(key_path: Path) -> None:
    provider = from_uri(f"local:{key_path}")
    assert isinstance(provider, LocalKeyProvider)
    assert isinstance(provider, KeyProvider)
    assert provider.uri == f"local:{key_path}"
    with pytest.raises(TypeError, match="unknown option"):
        from_uri(f"local:{key_path}", region="x")
    for bad in ("", "local", "local:", "nokey", "s3:bucket"):
        with pytest.raises(EncryptionConfigError):
            from_uri(bad)
    with pytest.raises(TypeError):
        from_uri(None)  # type: ignore[arg-type]


def test_cloud_schemes_are_loaded_lazily_from_their_modules(monkeypatch) -> None:
    import sys
    import types

    fake = types.ModuleType("saip_encryption.providers.gcp")
    seen: dict[str, object] = {}

    def fake_from_uri(uri: str, **options: object) -> str:
        seen.update(uri=uri, **options)
        return "provider"

    fake.from_uri = fake_from_uri  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "saip_encryption.providers.gcp", fake)
    assert from_uri("gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k", endpoint_url="x")
    assert seen == {
        "uri": "gcp-kms:projects/p/locations/l/keyRings/r/cryptoKeys/k",
        "endpoint_url": "x",
    }


def test_default_key_id_rule() -> None:
    assert default_accepts(
        "azure-kv:https://v.vault.azure.net/keys/k", "https://v.vault.azure.net/keys/k/abc"
    )
    assert not default_accepts(
        "azure-kv:https://v.vault.azure.net/keys/k", "https://v.vault.azure.net/keys/k2/abc"
    )
    assert default_accepts(
        "gcp-kms:projects/p/cryptoKeys/k", "projects/p/cryptoKeys/k/cryptoKeyVersions/3"
    )
    assert default_accepts("aws-kms:arn:aws:kms:r:1:key/u", "arn:aws:kms:r:1:key/u")
    assert not default_accepts("aws-kms:alias/a", "arn:aws:kms:r:1:key/u")


def test_key_file_never_logged_or_in_repr(local: LocalKeyProvider, key_path: Path) -> None:
    secret = json.loads(key_path.read_text())["versions"][0]["key"]
    assert secret not in repr(local)
    assert os.fspath(key_path) in repr(local)
