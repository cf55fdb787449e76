"""End to end: the SAIP envelope under the Cloud KMS provider (REAL client, FAKE gRPC server):
artifacts across a primary-version rotation stay readable, ``audit`` names the version each
artifact depends on, and disabling a version still in use fails naming that version.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, from_uri
from saip_encryption.rotation import audit

CTX = {"dataset": "digits", "purpose": "model"}
PARENT = "projects/saip/locations/europe-west4/keyRings/ml"
KEY = f"{PARENT}/cryptoKeys/artifacts"


@pytest.fixture
def provider(fake_gcp_kms: Any) -> Iterator[Any]:
    with fake_gcp_kms.serve() as running:
        p = from_uri(f"gcp-kms:{KEY}", api_endpoint=running.target, insecure=True, timeout=5)
        admin = p.client  # type: ignore[attr-defined]
        admin.create_key_ring(
            request={
                "parent": PARENT.rsplit("/keyRings/", 1)[0],
                "key_ring_id": "ml",
                "key_ring": {},
            }
        )
        admin.create_crypto_key(
            request={"parent": PARENT, "crypto_key_id": "artifacts", "crypto_key": {"purpose": 1}}
        )
        yield p


def _seal(enc: EnvelopeEncryptor, data: bytes, path: Path) -> None:
    with path.open("wb") as dst:
        enc.encrypt_stream(io.BytesIO(data), dst, context=CTX)


def _open(enc: EnvelopeEncryptor, path: Path) -> bytes:
    out = io.BytesIO()
    with path.open("rb") as src:
        enc.decrypt_stream(src, out, context=CTX)
    return out.getvalue()


def test_rotation_audit_and_disabled_version(provider: Any, tmp_path: Path) -> None:
    enc = EnvelopeEncryptor([provider])
    old_data, new_data = os.urandom(200_000), os.urandom(100_000)
    _seal(enc, old_data, tmp_path / "model-v1.saip")
    provider.client.create_crypto_key_version(request={"parent": KEY, "crypto_key_version": {}})
    provider.client.update_crypto_key_primary_version(
        request={"name": KEY, "crypto_key_version_id": "2"}
    )
    _seal(enc, new_data, tmp_path / "model-v2.saip")
    assert _open(enc, tmp_path / "model-v1.saip") == old_data
    assert _open(enc, tmp_path / "model-v2.saip") == new_data

    report = audit([tmp_path])
    assert [(u.key, u.version, [Path(f).name for f in u.files]) for u in report.keys] == [
        (KEY, "1", ["model-v1.saip"]),
        (KEY, "2", ["model-v2.saip"]),
    ]

    version1 = f"{KEY}/cryptoKeyVersions/1"
    provider.client.update_crypto_key_version(
        request={
            "crypto_key_version": {"name": version1, "state": 2},
            "update_mask": {"paths": ["state"]},
        }
    )
    with pytest.raises(KeyProviderError, match=f"key version {version1} is not enabled"):
        _open(EnvelopeEncryptor([provider]), tmp_path / "model-v1.saip")
    assert _open(EnvelopeEncryptor([provider]), tmp_path / "model-v2.saip") == new_data


def test_records_bind_context_through_kms_aad_and_envelope(provider: Any) -> None:
    enc = EnvelopeEncryptor([provider], cache=False)
    blob = enc.encrypt(b"label=3", context=CTX)
    assert EnvelopeEncryptor([provider]).decrypt(blob, context=CTX) == b"label=3"
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor([provider]).decrypt(blob, context={**CTX, "purpose": "other"})
