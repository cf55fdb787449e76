"""Re-wrap (header only, in place or by rewrite, crash-safe) and the key-dependency audit."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, wire
from saip_encryption.rotation import audit, read_header, rewrap_bytes, rewrap_file

CTX = {"dataset": "d", "purpose": "training"}


def _artifact(path: Path, providers, data: bytes = b"A" * 5000, **kw) -> Path:
    out = io.BytesIO()
    EnvelopeEncryptor(providers, stream_segment_size=1024, **kw).encrypt_stream(
        io.BytesIO(data), out, context=CTX
    )
    path.write_bytes(out.getvalue())
    return path


def _decrypt(path: Path, providers) -> bytes:
    out = io.BytesIO()
    with open(path, "rb") as fh:
        EnvelopeEncryptor(providers).decrypt_stream(fh, out, context=CTX)
    return out.getvalue()


def _payload_digest(path: Path) -> str:
    header = read_header(path)
    data = path.read_bytes()
    return hashlib.sha256(
        data[: header.key_area_offset] + data[header.payload_offset :]
    ).hexdigest()


def test_rewrap_in_place_touches_only_the_key_area(tmp_path, local, other_local) -> None:
    path = _artifact(tmp_path / "a.saip", local)
    before = path.read_bytes()
    digest = _payload_digest(path)
    result = rewrap_file(path, unwrap_with=[local], wrap_with=[other_local])
    assert result.in_place
    after = path.read_bytes()
    assert len(after) == len(before)
    header = read_header(path)
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert min(changed) >= header.key_area_offset + 3
    assert max(changed) < header.payload_offset
    assert _payload_digest(path) == digest
    assert _decrypt(path, [other_local]) == b"A" * 5000
    with pytest.raises(DecryptionError):  # the old key no longer appears in the header
        _decrypt(path, [local])
    # generation moved to the other slot; the old slot is empty
    assert [s.generation for s in header.slots] == [0, 2]


def test_rewrap_twice_ping_pongs_between_slots(tmp_path, local, other_local) -> None:
    path = _artifact(tmp_path / "a.saip", local)
    rewrap_file(path, unwrap_with=[local], wrap_with=[other_local])
    rewrap_file(path, unwrap_with=[other_local], wrap_with=[local, other_local])
    header = read_header(path)
    assert [s.generation for s in header.slots] == [3, 0]
    assert _decrypt(path, [local]) == _decrypt(path, [other_local]) == b"A" * 5000


def test_rewrap_falls_back_to_rewrite_when_keys_do_not_fit(tmp_path, local, other_local) -> None:
    path = _artifact(tmp_path / "a.saip", local, key_slot_capacity=64)
    digest = _payload_digest(path)
    path.chmod(0o640)
    result = rewrap_file(path, unwrap_with=[local], wrap_with=[local, other_local])
    assert not result.in_place
    assert _payload_digest(path) == digest
    assert path.stat().st_mode & 0o777 == 0o640
    assert _decrypt(path, [other_local]) == b"A" * 5000
    assert not list(tmp_path.glob(".*rewrap"))


def test_interrupted_rewrap_is_completed_by_running_it_again(tmp_path, local, other_local) -> None:
    path = _artifact(tmp_path / "a.saip", local)
    header = read_header(path)
    start = header.key_area_offset + 3 + header.slot_capacity  # slot 1 (inactive)
    data = bytearray(path.read_bytes())
    data[start : start + 40] = b"\xff" * 40  # torn write of the new slot
    path.write_bytes(bytes(data))
    with pytest.raises(DecryptionError):  # strict decrypt refuses a broken header
        _decrypt(path, [local])
    assert "interrupted re-wrap" in audit([path]).problems[str(path)]
    rewrap_file(path, unwrap_with=[local], wrap_with=[other_local])
    assert _decrypt(path, [other_local]) == b"A" * 5000
    assert audit([path]).problems == {}


def test_crash_between_the_two_slot_writes_keeps_both_keys_usable(
    tmp_path, local, other_local
) -> None:
    path = _artifact(tmp_path / "a.saip", local)
    header = read_header(path)
    cap = header.slot_capacity
    new = other_local.wrap(bytes(32), context=CTX)  # any valid slot content
    # simulate: new slot written (generation 2), old slot not yet cleared
    real = rewrap_bytes(path.read_bytes(), unwrap_with=[local], wrap_with=[local, other_local])
    assert new.key_id
    start = header.key_area_offset + 3
    data = bytearray(path.read_bytes())
    slot = wire.parse_header(real).slots[0]
    data[start + cap : start + 2 * cap] = wire.encode_slot(slot.keys, generation=2, capacity=cap)
    path.write_bytes(bytes(data))
    assert _decrypt(path, [local]) == _decrypt(path, [other_local]) == b"A" * 5000


def test_rewrap_record_bytes(local, other_local) -> None:
    blob = EnvelopeEncryptor(local).encrypt(b"rec", context=CTX)
    new = rewrap_bytes(blob, unwrap_with=[local], wrap_with=[other_local])
    h_old, h_new = wire.parse_header(blob), wire.parse_header(new)
    assert blob[h_old.payload_offset :] == new[h_new.payload_offset :]
    assert blob[: h_old.key_area_offset] == new[: h_new.key_area_offset]
    assert EnvelopeEncryptor(other_local).decrypt(new, context=CTX) == b"rec"


def test_rewrap_needs_a_working_key(tmp_path, local, other_local, unavailable_cls) -> None:
    path = _artifact(tmp_path / "a.saip", local)
    before = path.read_bytes()
    with pytest.raises(DecryptionError):
        rewrap_file(path, unwrap_with=[other_local], wrap_with=[other_local])
    with pytest.raises(KeyProviderError, match="disabled"):
        rewrap_file(path, unwrap_with=[unavailable_cls(local)], wrap_with=[other_local])
    assert path.read_bytes() == before
    (tmp_path / "junk").write_bytes(b"junk")
    with pytest.raises(DecryptionError):
        rewrap_file(tmp_path / "junk", unwrap_with=[local], wrap_with=[other_local])


def test_audit_lists_artifacts_per_key_and_version(tmp_path, key_path, local, other_local) -> None:
    from saip_encryption.providers.local import LocalKeyProvider, create_local_key

    d = tmp_path / "data"
    d.mkdir()
    _artifact(d / "a.saip", local)
    _artifact(d / "b.saip", [local, other_local])
    (d / "plain.txt").write_text("not encrypted")
    (d / "sub").mkdir()
    create_local_key(key_path, rotate=True)
    v2 = LocalKeyProvider(key_path)
    _artifact(d / "sub" / "c.saip", v2)
    report = audit([d])
    assert report.scanned == 4
    assert report.envelopes == 3
    rows = {(u.key, u.version): sorted(Path(f).name for f in u.files) for u in report.keys}
    assert rows[(local.key_uuid, "v1")] == ["a.saip", "b.saip"]
    assert rows[(local.key_uuid, "v2")] == ["c.saip"]
    assert rows[(other_local.key_uuid, "v1")] == ["b.saip"]
    # after re-wrapping c and a away from the local key, v1 is only needed by b
    rewrap_file(d / "a.saip", unwrap_with=[local], wrap_with=[other_local])
    rows = {(u.key, u.version): u.files for u in audit([d]).keys}
    assert [Path(f).name for f in rows[(local.key_uuid, "v1")]] == ["b.saip"]
    assert audit([d]).to_dict()["envelopes"] == 3


def test_split_key_version_for_cloud_ids() -> None:
    from saip_encryption.rotation import split_key_version

    assert split_key_version(
        "gcp-kms", "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/3"
    ) == ("projects/p/locations/l/keyRings/r/cryptoKeys/k", "3")
    assert split_key_version("azure-kv", "https://v.vault.azure.net/keys/k/0a1b") == (
        "https://v.vault.azure.net/keys/k",
        "0a1b",
    )
    assert split_key_version("aws-kms", "arn:aws:kms:us-east-1:1:key/u")[1] == "(managed by KMS)"


@pytest.mark.parametrize("capacity", [2048, 64])  # in place, and rewrite + rename
def test_concurrent_rewraps_serialise(tmp_path, local, other_local, capacity) -> None:
    import threading

    path = _artifact(tmp_path / "a.saip", local, key_slot_capacity=capacity)
    errors: list[BaseException] = []

    def worker(target) -> None:  # type: ignore[no-untyped-def]
        try:
            for _ in range(5):
                rewrap_file(path, unwrap_with=[local, other_local], wrap_with=[target, local])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in (other_local, local)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert audit([path]).problems == {}
    assert _decrypt(path, [local]) == b"A" * 5000
    assert not list(tmp_path.glob(".*rewrap"))
