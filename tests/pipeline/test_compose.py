"""The composition layer binds the configured encryption context and routes AWS KMS through the
same (private) endpoint as the rest of the AWS pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest
from saip.compose import build_encryptor, default_key_path, provider_options, resolve_key_uri
from saip.errors import ConfigError
from saip_encryption import DecryptionError


def test_configured_context_is_bound_and_rechecked(tmp_path: Path) -> None:
    uri = resolve_key_uri(None, configured=None, data_dir=tmp_path)
    assert uri == f"local:{default_key_path(tmp_path)}"
    assert default_key_path(tmp_path).stat().st_mode & 0o777 == 0o600
    bound = build_encryptor(uri, context={"saip:pipeline": "ingest"})
    blob = bound.encrypt(b"record", context={"dataset": "d1"})
    assert bound.decrypt(blob, context={"dataset": "d1"}) == b"record"
    # without the configured context the same ciphertext does not decrypt
    unbound = build_encryptor(uri, context={})
    with pytest.raises(DecryptionError):
        unbound.decrypt(blob, context={"dataset": "d1"})
    bound.close()
    unbound.close()


def test_batch_api_binds_the_configured_context_too(tmp_path: Path) -> None:
    uri = resolve_key_uri(None, configured=None, data_dir=tmp_path)
    bound = build_encryptor(uri, context={"saip:pipeline": "ingest"})
    sealer = bound.bind({"dataset": "d1"})
    blobs = sealer.seal_many([b"a", b"b"])
    assert sealer.open_many(blobs) == [b"a", b"b"]
    assert bound.decrypt(blobs[0], context={"dataset": "d1"}) == b"a"  # interchangeable
    with pytest.raises(DecryptionError):
        build_encryptor(uri, context={}).bind({"dataset": "d1"}).open_many(blobs)
    with pytest.raises(ConfigError, match=r"encryption\.context"):
        bound.bind({"saip:pipeline": "other"})
    bound.close()


def test_context_key_clash_is_refused(tmp_path: Path) -> None:
    uri = resolve_key_uri(None, configured=None, data_dir=tmp_path)
    bound = build_encryptor(uri, context={"dataset": "x"})
    with pytest.raises(ConfigError, match=r"encryption\.context"):
        bound.encrypt(b"r", context={"dataset": "d1"})


def test_option_wins_over_setting(tmp_path: Path) -> None:
    assert resolve_key_uri("local:/a", configured="local:/b", data_dir=tmp_path) == "local:/a"
    assert resolve_key_uri(None, configured="local:/b", data_dir=tmp_path) == "local:/b"
    assert not (tmp_path / "keys").exists()


def test_default_key_is_outside_the_data_dir_and_per_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of the data directory (backup, shared volume) must hold no key: the default key
    lives under ``$SAIP_KEY_DIR``, one per data directory, in a 0700 directory."""
    home = tmp_path / "key-home"
    monkeypatch.setenv("SAIP_KEY_DIR", str(home))
    a, b = tmp_path / "a", tmp_path / "b"
    uri_a = resolve_key_uri(None, configured=None, data_dir=a)
    uri_b = resolve_key_uri(None, configured=None, data_dir=b)
    assert uri_a != uri_b
    assert uri_a.startswith(f"local:{home}/")
    assert uri_b.startswith(f"local:{home}/")
    assert home.stat().st_mode & 0o777 == 0o700
    assert not a.exists()
    assert not b.exists()
    # reused, not recreated
    before = default_key_path(a).read_bytes()
    assert resolve_key_uri(None, configured=None, data_dir=a) == uri_a
    assert default_key_path(a).read_bytes() == before


def test_legacy_key_beside_the_data_is_still_used_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rich.console import Console
    from saip_encryption.providers.local import create_local_key

    legacy = tmp_path / "keys" / "master.key"
    create_local_key(legacy)
    uri = resolve_key_uri(None, configured=None, data_dir=tmp_path, console=Console())
    assert uri == f"local:{legacy}"
    assert "kept beside the data" in capsys.readouterr().out
    assert not default_key_path(tmp_path).exists()


def test_aws_kms_gets_the_pipeline_endpoint() -> None:
    opts = provider_options(
        "aws-kms:arn:aws:kms:us-east-1:111122223333:key/k",
        endpoint_url="https://vpce.example",
        region="us-east-1",
    )
    assert opts == {"endpoint_url": "https://vpce.example", "region": "us-east-1"}
    assert provider_options("local:/k", endpoint_url="https://x", region="r") == {}


def test_aws_kms_encryptor_uses_moto_endpoint(moto_url: str, tmp_path: Path) -> None:
    import boto3

    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    enc = build_encryptor(
        f"aws-kms:{arn}",
        context={"saip:pipeline": "ingest"},
        endpoint_url=moto_url,
        region="us-east-1",
    )
    blob = enc.encrypt(b"payload", context={"dataset": "d"})
    assert enc.decrypt(blob, context={"dataset": "d"}) == b"payload"
    enc.close()
