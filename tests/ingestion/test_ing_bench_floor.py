"""The floor section of ``benchmarks/ingestion.py`` (issue 12): it runs, and what it times is the
engine's own work. Nothing here is timed or asserts a speed: only that every key is there with a
positive number and that each part's output is what the engine produces for the same records
(same decoder, same signing input, same stored bytes, same zstd frames at ``sealed.ZSTD_LEVEL``,
the same AEAD under the engine's object context, the same object digest)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import zstandard
from cryptography.exceptions import InvalidSignature
from saip_encryption import EnvelopeEncryptor, from_uri
from saip_encryption.providers.local import create_local_key
from saip_ingestion import sealed
from saip_ingestion.backends.local import FileRecordStream, LocalObjectStore
from saip_ingestion.engine import IngestEngine
from saip_ingestion.fastdecode import FAST_DECODERS, decode_any_many
from saip_ingestion.provenance import image_leaf
from saip_ingestion.window import rid_hash

ROOT = Path(__file__).resolve().parents[2]
PARTS = {
    "stream read + split",
    "decode (msgspec, generated decoder)",
    "signing input + leaf hash (struct, SHA-256)",
    "Merkle root (n - 1 SHA-256)",
    "Ed25519 verify, one per Merkle batch",
    "content check (NumPy)",
    "record-id hash (SHA-256 prefix)",
    "stored line (msgspec encode)",
    "zstd per line",
    "AEAD seal (one seal_many)",
    "object content digest (SHA-256)",
    "object write + fsync + journal",
    "free the decoded records",
}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    name = "saip_tests_bench_ingestion"
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "ingestion.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_floor_section_runs_quick_and_reports_every_key(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    assert (
        bench.main(["--quick", "--records", "1024", "--sections", "floor", "--out", str(out)]) == 0
    )
    doc = json.loads(out.read_text())
    floor = doc["floor"]
    assert set(floor["parts_us_per_record"]) == PARTS
    assert all(v > 0 for v in floor["parts_us_per_record"].values())
    for key in ("floor_us_per_record", "ceiling_rec_per_cpu_s", "ceiling_over_naive",
                "naive_rec_per_cpu_s"):  # fmt: skip
        assert floor[key] > 0, key
    assert floor["floor_us_per_record"] == pytest.approx(
        sum(floor["parts_us_per_record"].values()), abs=0.01
    )
    assert floor["ceiling_rec_per_cpu_s"] == pytest.approx(
        1e6 / floor["floor_us_per_record"], rel=1e-3
    )
    assert floor["ceiling_over_naive"] == pytest.approx(
        floor["ceiling_rec_per_cpu_s"] / doc["rec_per_cpu_s"]["naive"], rel=0.01
    )
    assert floor["zstd_level"] == sealed.ZSTD_LEVEL
    assert doc["rec_per_cpu_s"]["naive"] > 0
    with pytest.raises(SystemExit):  # a section that does not exist is a usage error
        bench.main(["--quick", "--sections", "floors", "--out", str(out)])


def _engine_stored(path: Path, registry: Any, tmp: Path) -> tuple[list[bytes], str]:
    """The lines the engine stores for the benchmark file (one poll), and the object key."""
    key = tmp / "master.key"
    create_local_key(key)
    encryptor = EnvelopeEncryptor([from_uri(f"local:{key}")])
    store = LocalObjectStore(tmp / "objects")
    stream = FileRecordStream(path, checkpoint_dir=tmp / "ckpt")
    with IngestEngine(
        store=store, encryptor=encryptor, registry=registry, state_dir=tmp / "state",
        clock=lambda: 1_764_100_000_000,
    ) as engine:  # fmt: skip
        summary = engine.run(stream, batch_size=4000)
    stream.close()
    assert summary.stored == summary.received
    (okey,) = list(store.list("accepted/"))
    blob = store.get(okey)
    lines = sealed.open_lines(
        encryptor, IngestEngine._context(okey), blob, digest=okey.rsplit("-", 1)[1]
    )
    return lines, okey


def test_each_floor_part_is_the_engines_call(bench: ModuleType, tmp_path: Path) -> None:
    path, registry, _ = bench.make_records(1024, tmp_path)
    lines = path.read_bytes().splitlines()
    engine_lines, okey = _engine_stored(path, registry, tmp_path / "engine")
    key = tmp_path / "floor.key"
    create_local_key(key)
    encryptor = EnvelopeEncryptor([from_uri(f"local:{key}")])
    (tmp_path / "floor").mkdir()
    parts = bench.floor_parts(lines, registry, encryptor, tmp_path / "floor")
    run = {k: p.call(p.prepare()) for k, p in parts.items() if not k.startswith("_")}
    try:
        records = decode_any_many(lines)
        decoder = FAST_DECODERS["image-sample/v1"]
        # the engine's own msgspec decoder, converted as the engine converts it
        assert parts["decode (msgspec, generated decoder)"].meta["decoder"] is decoder._decode
        decoded = run["decode (msgspec, generated decoder)"]
        assert [decoder._to_dict(s) for s in decoded] == records
        # signing input and leaf: image_leaf's bytes
        assert run["signing input + leaf hash (struct, SHA-256)"] == (
            [image_leaf(r)[0] for r in records],
            [image_leaf(r)[1] for r in records],
        )
        # one Ed25519 verification per Merkle batch of 256 (4 producers × 256), each verifies;
        # a changed message does not
        ed = parts["Ed25519 verify, one per Merkle batch"]
        assert run["Ed25519 verify, one per Merkle batch"] == 4 == ed.meta["verifications"]
        verify, sig, msg = ed.prepare()[0]
        with pytest.raises(InvalidSignature):
            verify(sig, msg[:-1] + bytes([msg[-1] ^ 1]))
        assert parts["Merkle root (n - 1 SHA-256)"].records == 1024
        x, ok, plain = run["content check (NumPy)"]
        assert x.shape == (1024, 64)
        assert ok.all()
        assert all(plain)
        assert run["record-id hash (SHA-256 prefix)"] == [rid_hash(r["record_id"]) for r in records]
        # the stored line: byte for byte what the engine stored (same order)
        stored = run["stored line (msgspec encode)"]
        assert stored == engine_lines
        # zstd: the level and the frames seal_lines writes, which open_lines reads back
        assert parts["zstd per line"].meta["zstd_level"] == sealed.ZSTD_LEVEL
        frames = run["zstd per line"]
        compress = sealed.line_compressor()
        assert frames == [compress(line) for line in engine_lines]
        dctx = zstandard.ZstdDecompressor()
        assert [dctx.decompress(f) for f in frames] == engine_lines
        assert all(
            zstandard.frame_content_size(f) == len(ln) for f, ln in zip(frames, stored, strict=True)
        )
        # the AEAD: one seal_many under the engine's per-object context, opened by the engine's
        # reader
        context, cts = run["AEAD seal (one seal_many)"]
        assert context["saip:purpose"] == IngestEngine._context("k")["saip:purpose"]
        assert encryptor.bind(context).open_many(cts) == frames
        assert run["object content digest (SHA-256)"] == okey.rsplit("-", 1)[1]
        # the object written and fsync'd is the sealed batch the engine would write
        written = run["object write + fsync + journal"]
        store = LocalObjectStore(tmp_path / "floor" / "floor-objects")
        assert sealed.open_lines(
            encryptor, IngestEngine._context(written), store.get(written),
            digest=written.rsplit("-", 1)[1],
        ) == engine_lines  # fmt: skip
        assert (tmp_path / "floor" / "floor-journal.jsonl").read_text().count("\n") == 1
        assert run["stream read + split"] == [*lines, b""]
        box = parts["free the decoded records"].prepare()
        parts["free the decoded records"].call(box)
        assert box == []
    finally:
        parts["_close"].call(None)
