"""End to end: the SAIP envelope (enc-core's ``EnvelopeEncryptor``) under the AWS KMS provider
(moto server over HTTP), and multi-provider AWS + Cloud KMS (FAKE gRPC server) where either key
alone decrypts — the cross-cloud disaster-recovery case.
"""

from __future__ import annotations

import io
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, from_uri
from saip_encryption.rotation import rewrap_bytes

CTX = {"dataset": "digits", "tenant": "t1", "purpose": "records"}
GCP_KEY = "projects/saip/locations/global/keyRings/dr/cryptoKeys/records"


def _arn(url: str) -> str:
    kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1")
    return str(kms.create_key()["KeyMetadata"]["Arn"])


@pytest.fixture
def gcp_provider(fake_gcp_kms: Any) -> Iterator[Any]:
    with fake_gcp_kms.serve() as running:
        provider = from_uri(f"gcp-kms:{GCP_KEY}", api_endpoint=running.target, insecure=True)
        admin = provider.client  # type: ignore[attr-defined]
        admin.create_key_ring(
            request={
                "parent": "projects/saip/locations/global",
                "key_ring_id": "dr",
                "key_ring": {},
            }
        )
        admin.create_crypto_key(
            request={
                "parent": "projects/saip/locations/global/keyRings/dr",
                "crypto_key_id": "records",
                "crypto_key": {"purpose": 1},
            }
        )
        yield provider


def test_records_and_artifacts_roundtrip_under_aws_kms(moto_url: str) -> None:
    arn = _arn(moto_url)
    enc = EnvelopeEncryptor([from_uri(f"aws-kms:{arn}", endpoint_url=moto_url)])
    blob = enc.encrypt(b"record one", context=CTX)
    assert enc.decrypt(blob, context=CTX) == b"record one"
    with pytest.raises(DecryptionError):
        enc.decrypt(blob, context={**CTX, "tenant": "t2"})
    artifact = os.urandom(300_000)
    sealed, opened = io.BytesIO(), io.BytesIO()
    enc.encrypt_stream(io.BytesIO(artifact), sealed, context=CTX)
    sealed.seek(0)
    enc.decrypt_stream(sealed, opened, context=CTX)
    assert opened.getvalue() == artifact


def test_kms_rotation_keeps_envelopes_readable_and_rewrap_moves_to_new_key(moto_url: str) -> None:
    old_arn, new_arn = _arn(moto_url), _arn(moto_url)
    old = from_uri(f"aws-kms:{old_arn}", endpoint_url=moto_url)
    new = from_uri(f"aws-kms:{new_arn}", endpoint_url=moto_url)
    blob = EnvelopeEncryptor([old], cache=False).encrypt(b"x" * 5000, context=CTX)
    kms = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    kms.rotate_key_on_demand(KeyId=old_arn)
    assert EnvelopeEncryptor([old]).decrypt(blob, context=CTX) == b"x" * 5000
    moved = rewrap_bytes(blob, unwrap_with=[old], wrap_with=[new])
    assert moved[-4000:] == blob[-4000:]  # the payload is untouched by a re-wrap
    assert EnvelopeEncryptor([new]).decrypt(moved, context=CTX) == b"x" * 5000
    with pytest.raises(DecryptionError):  # no wrapped key for the old key any more
        EnvelopeEncryptor([old]).decrypt(moved, context=CTX)


def test_multi_provider_aws_and_gcp_either_one_decrypts(moto_url: str, gcp_provider: Any) -> None:
    aws = from_uri(f"aws-kms:{_arn(moto_url)}", endpoint_url=moto_url)
    blob = EnvelopeEncryptor([aws, gcp_provider]).encrypt(b"dr record", context=CTX)
    assert EnvelopeEncryptor([aws]).decrypt(blob, context=CTX) == b"dr record"
    assert EnvelopeEncryptor([gcp_provider]).decrypt(blob, context=CTX) == b"dr record"
    # AWS region lost (all KMS state gone): the GCP wrap still opens the data.
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"))
    assert EnvelopeEncryptor([aws, gcp_provider]).decrypt(blob, context=CTX) == b"dr record"
    # Both unavailable: one KeyProviderError naming each provider and key version.
    version = f"{GCP_KEY}/cryptoKeyVersions/1"
    gcp_provider.client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": version, "state": 2},
            "update_mask": {"paths": ["state"]},
        }
    )
    with pytest.raises(KeyProviderError) as info:
        EnvelopeEncryptor([aws, gcp_provider]).decrypt(blob, context=CTX)
    message = str(info.value)
    assert "was not found" in message
    assert aws.uri in message
    assert f"key version {version} is not enabled" in message


def test_cli_encrypt_decrypt_inspect_with_aws_kms(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saip.cli import main

    arn = _arn(moto_url)
    data = os.urandom(100_000)
    (tmp_path / "in.bin").write_bytes(data)
    common = ["--key", f"aws-kms:{arn}", "--endpoint-url", moto_url, "--context", "dataset=d1"]
    sealed, opened = tmp_path / "in.saip", tmp_path / "out.bin"
    assert main(["encrypt", *common, str(tmp_path / "in.bin"), str(sealed)]) == 0
    assert main(["decrypt", *common, str(sealed), str(opened)]) == 0
    assert opened.read_bytes() == data
    capsys.readouterr()
    assert main(["inspect", "--json", str(sealed)]) == 0
    assert arn in capsys.readouterr().out  # the key ARN is recorded in the header
    wrong = ["--key", f"aws-kms:{arn}", "--endpoint-url", moto_url, "--context", "dataset=d2"]
    assert main(["decrypt", *wrong, str(sealed), str(tmp_path / "bad.bin")]) == 1
    assert not (tmp_path / "bad.bin").exists()
