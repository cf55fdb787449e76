"""Regression tests of the smaller defects (issue item 4) and of v1 compatibility.

* ``decrypt_stream`` range-checks every header length (slot count, capacity, context length,
  signature length) *before* it buffers more, and compares the context before reading the key
  area;
* re-wrap at key-slot generation 0xFFFFFFFF falls back to a rewrite instead of ``struct.error``;
* a shared data-key cache is keyed by providers, key IDs, suite, segment size and signer;
* v1 files (frozen under tests/encryption/data) still decrypt, inspect, audit and re-wrap.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from saip.cli import main
from saip_encryption import DataKeyCache, DecryptionError, EnvelopeEncryptor, wire
from saip_encryption.providers.local import LocalKeyProvider, create_local_key
from saip_encryption.rotation import audit, read_header, rewrap_file

CTX = {"dataset": "d1"}
DATA = Path(__file__).with_name("data")


class _CountingReader(io.RawIOBase):
    """Counts the bytes handed out; at most ``chunk`` bytes per call (a slow pipe)."""

    def __init__(self, data: bytes, chunk: int = 1 << 30) -> None:
        self._buf = io.BytesIO(data)
        self._chunk = chunk
        self.given = 0
        self.calls = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def,override]
        self.calls += 1
        data = self._buf.read(min(self._chunk, len(b)))
        b[: len(data)] = data
        self.given += len(data)
        return len(data)


def _artifact(local: LocalKeyProvider, size: int = 300) -> bytes:
    out = io.BytesIO()
    EnvelopeEncryptor(local, cache=False, stream_segment_size=128).encrypt_stream(
        io.BytesIO(bytes(size)), out, context=CTX
    )
    return out.getvalue()


@pytest.mark.parametrize(("slots", "capacity"), [(255, 0xFFFF), (3, 0xFFFF), (2, 4), (0, 100)])
def test_stream_header_lengths_are_checked_before_buffering(
    local: LocalKeyProvider, slots: int, capacity: int
) -> None:
    blob = bytearray(_artifact(local))
    header = wire.parse_header(bytes(blob))
    blob[header.key_area_offset : header.key_area_offset + 3] = struct.pack(">BH", slots, capacity)
    blob += bytes(20 << 20)  # plenty to read if the hint were trusted
    reader = _CountingReader(bytes(blob))
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(local).decrypt_stream(
            io.BufferedReader(reader), io.BytesIO(), context=CTX
        )
    assert reader.given <= 64 << 10  # one buffered read, not the 16 MiB the hint claimed


def test_wrong_context_fails_before_the_key_area_is_read(local: LocalKeyProvider) -> None:
    blob = _artifact(local)
    header = wire.parse_header(blob)
    reader = _CountingReader(blob, chunk=1)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(local).decrypt_stream(reader, io.BytesIO(), context={"dataset": "d2"})
    assert reader.given < header.key_area_offset + 8


def test_header_of_small_reads_costs_linear_reads(local: LocalKeyProvider) -> None:
    blob = _artifact(local)
    header = wire.parse_header(blob)
    reader = _CountingReader(blob, chunk=3)
    out = io.BytesIO()
    assert EnvelopeEncryptor(local).decrypt_stream(reader, out, context=CTX) == 300
    assert reader.calls <= len(blob) // 3 + 10  # every byte read once: no re-reads or re-parses
    assert header.payload_offset < len(blob)


def _set_generation(path: Path, generation: int) -> None:
    blob = bytearray(path.read_bytes())
    header = wire.parse_header(bytes(blob))
    start = header.key_area_offset + 3
    cap = header.slot_capacity
    slot = bytearray(blob[start : start + cap])
    slot[0:4] = struct.pack(">I", generation)
    slot[-4:] = struct.pack(">I", zlib.crc32(bytes(slot[:-4])))
    blob[start : start + cap] = slot
    path.write_bytes(bytes(blob))


def test_rewrap_at_the_last_generation_rewrites(tmp_path: Path, local: LocalKeyProvider) -> None:
    path = tmp_path / "a.saip"
    path.write_bytes(_artifact(local))
    _set_generation(path, 0xFFFFFFFF)
    other = tmp_path / "o.key"
    create_local_key(other)
    target = LocalKeyProvider(other)
    result = rewrap_file(path, unwrap_with=[local], wrap_with=[target])
    assert not result.in_place  # rewritten: generations start again at 1
    assert read_header(path).slots[0].generation == 1
    out = io.BytesIO()
    EnvelopeEncryptor(target).decrypt_stream(io.BytesIO(path.read_bytes()), out, context=CTX)
    assert out.getvalue() == bytes(300)
    assert rewrap_file(path, unwrap_with=[target], wrap_with=[local]).in_place


def test_shared_cache_never_crosses_encryptors(
    local: LocalKeyProvider, other_local: LocalKeyProvider
) -> None:
    shared = DataKeyCache()
    enc_a = EnvelopeEncryptor(local, cache=shared)
    enc_b = EnvelopeEncryptor(other_local, cache=shared)
    a = enc_a.encrypt(b"a", context=CTX)
    b = enc_b.encrypt(b"b", context=CTX)  # same context, same cache: must not reuse a's key
    assert wire.parse_header(b).wrapped_keys()[0].key_id == other_local.primary_key_id
    assert EnvelopeEncryptor(other_local).decrypt(b, context=CTX) == b"b"
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(local).decrypt(b, context=CTX)
    assert EnvelopeEncryptor(local).decrypt(a, context=CTX) == b"a"
    assert len(shared) == 2


# -- v1 compatibility (files written by the v1 code) ----------------------------------------


@pytest.fixture
def v1(tmp_path: Path) -> tuple[Path, LocalKeyProvider, dict[str, str]]:
    work = tmp_path / "v1"
    shutil.copytree(DATA, work)
    (work / "v1-local.key").chmod(0o600)
    ctx = json.loads((work / "v1-context.json").read_text())
    return work, LocalKeyProvider(work / "v1-local.key"), ctx


def test_v1_files_decrypt_inspect_audit_and_rewrap(
    v1: tuple[Path, LocalKeyProvider, dict[str, str]],
    other_local: LocalKeyProvider,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work, key, ctx = v1
    enc = EnvelopeEncryptor(key)
    for kind in ("record", "artifact"):
        blob = (work / f"v1-local-{kind}.saip").read_bytes()
        assert blob[4] == 1
        assert enc.decrypt(blob, context=ctx) == (work / f"v1-{kind}.plain").read_bytes()
    capsys.readouterr()
    assert main(["inspect", "--json", str(work / "v1-local-artifact.saip")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["version"] == 1
    assert info["signature"] is None
    assert info["context"] == ctx
    report = audit([work])
    assert report.envelopes == 4
    assert not report.problems
    for kind in ("record", "artifact"):
        path = work / f"v1-local-{kind}.saip"
        rewrap_file(path, unwrap_with=[key], wrap_with=[other_local])
        blob = path.read_bytes()
        assert blob[4] == 1  # still v1: only the key area changed
        plain = (work / f"v1-{kind}.plain").read_bytes()
        assert EnvelopeEncryptor(other_local).decrypt(blob, context=ctx) == plain
        with pytest.raises(DecryptionError):
            EnvelopeEncryptor(key, cache=False).decrypt(blob, context=ctx)
