"""Ingestion throughput: saip's full path vs a fair naive per-record path, side by side.

Full path (saip): read JSONL → parse + validate (msgspec decoder generated from the pydantic
schemas; pydantic-core decides whatever it refuses) → signing input +
RFC 6962 leaf hash → inclusion proof + batch Ed25519 signature (cached per Merkle batch) →
content checks (NumPy, vectorised per batch) → dedupe + ts window + seq anti-replay → each line
Zstandard-compressed, one ``seal_many`` per batch (saip_encryption batch API, local key) →
durable write (fsync) → journal → checkpoint. Records: 64-feature ``image-sample/v1`` (sklearn
digits), 4 producers, Merkle batches of 256.

Fair naive (issue #12): the same records and the same number of them, per record: the same
pydantic-core validator the engine uses, one Ed25519 verification of a per-record signature
(signed by the producer before timing), a dict dedupe on (producer_id, record_id), the range
check in Python, one AES-256-GCM encryption under a cached data key (``os.urandom`` nonce, the
producer as AAD), one buffered append; one fsync at the end.

Usage::

    python benchmarks/ingestion.py --quick                    # development: 20k records
    python benchmarks/ingestion.py --out benchmarks/results/ingestion.json   # full: 100k + 1M

The default ``--out`` is ``.run/bench/ingestion.json`` (git-ignored), so a development run never
overwrites the committed results. Keys: ``rec_per_cpu_s.{saip,naive}``, ``rec_per_s.{saip,naive}``
(wall), ``peak_rss_mb`` (the saip run's peak RSS), ``rss_growth_mb_per_100k`` (saip's RSS growth
per 100k records between 100k and 1M records of one run; between 25% and 100% of the run with
``--quick``). Interleaved repeats, medians; one core (``sched_setaffinity``) where possible.
``--profile`` adds a per-stage cost table (cProfile, one extra saip run).

``floor`` (in the default run; ``--sections floor`` runs it with the naive only): only the
C-level calls each control needs per record, each the engine's own call, on the same records
in batches of 4,000 (:func:`floor_parts`): ``floor.floor_us_per_record`` (the sum),
``floor.parts_us_per_record``, ``floor.ceiling_rec_per_cpu_s`` (1e6 / floor),
``floor.ceiling_over_naive`` and, with the throughput section, saip's µs per record above it.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from itertools import repeat, starmap
from pathlib import Path
from typing import Any

import psutil
from saip_ingestion import provenance, sealed, state
from saip_ingestion.backends.local import FileRecordStream, LocalObjectStore
from saip_ingestion.engine import (
    DATASET_SPECS,
    IngestEngine,
    _encode_json,
    image_value_checks,
)
from saip_ingestion.fastdecode import FAST_DECODERS, decode_any_many
from saip_ingestion.provenance import (
    ProducerRegistry,
    Signer,
    generate_key,
    header_message,
    image_leaf,
    merkle_root,
    record_leaf_data,
)
from saip_ingestion.schemas import IMAGE_RECORD_ADAPTER
from saip_ingestion.window import rid_hash

NOW = 1_764_100_000_000
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / ".run" / "bench" / "ingestion.json"


def make_records(
    n: int, tmp: Path, *, interleave: bool = False
) -> tuple[Path, ProducerRegistry, list[Any]]:
    """``n`` signed v2 records of 4 producers, one producer after another, or with
    ``interleave`` one Merkle batch of each in turn (concurrent producers: every producer's
    dedupe window exists from the first poll, so RSS growth measures the windows' fill, not
    producers arriving — each new producer's bounded window adds its ≈ 10 MB once)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.data.astype(float), digits.target
    registry = ProducerRegistry(tmp / "producers")
    producers = []
    for p in range(4):
        key = generate_key()
        registry.register(f"bench-{p}", key.public_key())
        producers.append(Signer(producer_id=f"bench-{p}", private_key=key))
    path = tmp / "records.jsonl"
    naive_keys: list[Any] = []
    with path.open("w") as fh:
        per = n // len(producers)
        naive_keys.extend(producers)
        order = [(pi, start) for pi in range(len(producers)) for start in range(0, per, 256)]
        if interleave:
            order.sort(key=lambda o: (o[1], o[0]))
        for pi, start in order:
            signer = producers[pi]
            chunk = []
            for seq in range(start, min(per, start + 256)):
                j = (pi * per + seq) % len(y)
                chunk.append(
                    image_record(signer.producer_id, seq, [float(v) for v in x[j]], int(y[j]))
                )
            leaves = [_leaf(r) for r in chunk]
            # v2: one signed batch header per 256 records (the consumer recomputes the root)
            _header, sigs = signer.sign_header(leaves, seq_first=chunk[0]["seq"])
            for r, s in zip(chunk, sigs, strict=True):
                r["sig"] = s
                fh.write(json.dumps(r, separators=(",", ":")) + "\n")
    return path, registry, naive_keys


def image_record(producer: str, seq: int, features: list[float], label: int) -> dict[str, Any]:
    """One unsigned 8×8 ``image-sample/v1`` record of ``producer`` (the ingestion benchmarks'
    record, built here once: ``ingestion_provenance.py`` signs the same shape both ways)."""
    return {
        "record_id": f"{producer}-{seq:09d}",
        "producer_id": producer,
        "seq": seq,
        "ts": NOW,
        "schema": {"name": "image-sample", "version": 1},
        "payload": {"width": 8, "height": 8, "features": features, "label": label},
    }


def _leaf(r: dict[str, Any]) -> bytes:
    return record_leaf_data(r)


def saip_run(
    path: Path, registry: ProducerRegistry, tmp: Path, *, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.providers.local import create_local_key

    key = tmp / "master.key"
    if not key.exists():
        create_local_key(key)
    encryptor = EnvelopeEncryptor([from_uri(f"local:{key}")])
    run = Path(tempfile.mkdtemp(dir=tmp))
    store = LocalObjectStore(run / "objects")
    rss: list[tuple[int, float]] = []
    proc = psutil.Process()
    stream = FileRecordStream(path, checkpoint_dir=run / "ckpt")
    gc.collect()
    rss.append((0, proc.memory_info().rss / 2**20))
    with IngestEngine(
        store=store,
        encryptor=encryptor,
        registry=registry,
        state_dir=run / "state",
        clock=lambda: NOW,
    ) as engine:
        t0 = time.perf_counter()
        c0 = time.process_time()
        if profile is not None:
            profile.enable()
        summary = engine.run(
            stream,
            batch_size=4000,
            on_batch=lambda s: rss.append((s.received, proc.memory_info().rss / 2**20)),
        )
        if profile is not None:
            profile.disable()
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    stream.close()
    if summary.stored != summary.received:
        raise AssertionError(f"saip did not store every record: {summary.as_dict()}")
    return {
        "seconds": round(seconds, 3),
        "records": summary.received,
        "rec_per_s": summary.received / seconds,
        "rec_per_cpu_s": summary.received / cpu,
        "signature_checks": summary.signature_checks,
        "peak_rss_mb": round(max(r for _, r in rss), 1),
        "rss_mb_by_records": rss,
    }


def sign_per_record(lines: list[bytes], producers: list[str]) -> tuple[list[bytes], dict[str, Any]]:
    """The naive producer's per-record Ed25519 signatures over the raw line (done before timing)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = {p: Ed25519PrivateKey.generate() for p in producers}
    sigs = [keys[json.loads(raw)["producer_id"]].sign(raw) for raw in lines]
    return sigs, {p: k.public_key() for p, k in keys.items()}


def naive_run(
    lines: list[bytes], sigs: list[bytes], pubs: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """Fair naive: same validator, Ed25519 per record, one AES-GCM per record (cached key)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    validate = IMAGE_RECORD_ADAPTER.validator.validate_json
    aead = AESGCM(AESGCM.generate_key(bit_length=256))  # the cached data key
    urandom = os.urandom
    seen: set[tuple[str, str]] = set()
    stored = 0
    with open(tmp / "naive.out", "wb") as out:
        t0 = time.perf_counter()
        c0 = time.process_time()
        for raw, sig in zip(lines, sigs, strict=True):
            rec = validate(raw)
            pid = rec["producer_id"]
            pubs[pid].verify(sig, raw)
            if not all(0.0 <= v <= 16.0 for v in rec["payload"]["features"]):
                raise AssertionError("out of range")
            ident = (pid, rec["record_id"])
            if ident in seen:
                continue
            seen.add(ident)
            nonce = urandom(12)
            ct = aead.encrypt(nonce, raw, pid.encode())
            out.write(len(ct).to_bytes(4, "little") + nonce + ct)
            stored += 1
        out.flush()
        os.fsync(out.fileno())
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - c0
    if stored != len(lines):
        raise AssertionError("naive did not store every record")
    return {
        "seconds": round(seconds, 3),
        "records": len(lines),
        "rec_per_s": len(lines) / seconds,
        "rec_per_cpu_s": len(lines) / cpu,
    }


# ---------------------------------------------------------------------------------------------
# The floor: only the C-level calls each control needs per record, timed side by side


#: records per floor batch (the benchmark's poll size)
FLOOR_BATCH = 4000


@dataclass
class FloorPart:
    """One control's C-level work on one batch: ``call(prepare())`` is timed (CPU time, GC
    off); ``records`` is what the call covers (the per-record divisor); ``meta`` names the
    parameters the test compares with the engine's (e.g. the zstd level)."""

    prepare: Callable[[], Any]
    call: Callable[[Any], Any]
    records: int
    meta: dict[str, Any] = field(default_factory=dict)


def floor_parts(
    lines: list[bytes], registry: ProducerRegistry, encryptor: Any, tmp: Path
) -> dict[str, FloorPart]:
    """The parts of the floor for one batch of benchmark lines, each the engine's own C call.

    Everything a part needs as input is built in ``prepare`` (untimed) with the engine's own
    functions; the timed ``call`` is the C-level work only, driven by ``map`` where possible
    so that no Python frame runs per record: the generated msgspec decoder, the ``struct``
    packers and SHA-256 of the signing input (``provenance.image_leaf``'s pieces), the RFC 6962
    root (``merkle_root``), one Ed25519 verification per Merkle batch, the NumPy content check
    (``engine.image_value_checks``), the record-id hash (``window.rid_hash``'s calls), the
    stored-line encode (the engine's msgspec encoder), the per-line zstd
    (``sealed.line_compressor``), one ``seal_many`` per batch under a per-object context, the
    object's content digest (``sealed.content_id``), the object write + fsync
    (``LocalObjectStore.put``) and the journal line + fsync, freeing the decoded records, and
    reading + splitting the stream's bytes.
    """
    n = len(lines)
    decoder = FAST_DECODERS["image-sample/v1"]
    decode = decoder._decode  # the msgspec Decoder.decode the engine's fast path calls
    recs = decode_any_many(lines)  # the engine's records (plain dicts), untimed
    if any(r is None for r in recs):
        raise AssertionError("the floor needs benchmark records the fast path accepts")
    pix_leaf = [image_leaf(r) for r in recs]
    pixels = [p for p, _ in pix_leaf]
    leaves = [lf for _, lf in pix_leaf]
    spec = DATASET_SPECS["digits"]

    # signing input + leaf hash: image_leaf's pieces (docs/ingestion-format.md)
    pack = provenance._image_packer(len(recs[0]["payload"]["features"]))
    pack_u16, pack_hdr = provenance._pack_u16, provenance._pack_hdr
    head, name = provenance._LEAF_HEAD, provenance._IMAGE_NAME
    leaf_args = (
        [(r["payload"]["width"], r["payload"]["height"], r["payload"]["label"],
          *r["payload"]["features"]) for r in recs],
        [r["record_id"] for r in recs],
        [r["producer_id"] for r in recs],
        [(r["seq"], r["ts"], r["schema"]["version"]) for r in recs],
    )  # fmt: skip

    def signing_input_and_leaf(a: Any) -> tuple[list[bytes], list[bytes]]:
        args, rids, pids, hdrs = a
        pix = list(starmap(pack, args))
        rb = list(map(str.encode, rids))
        pb = list(map(str.encode, pids))
        datas = map(b"".join, zip(repeat(head), map(pack_u16, map(len, rb)), rb,
                                  map(pack_u16, map(len, pb)), pb, starmap(pack_hdr, hdrs),
                                  repeat(name), pix, strict=False))  # fmt: skip
        return pix, [h.digest() for h in map(sha256, datas)]

    # Merkle batches wholly inside this batch: root recomputed, one Ed25519 verification each
    groups: dict[tuple[str, str, int, str], list[tuple[int, dict[str, Any], bytes]]] = {}
    for r, lf in zip(recs, leaves, strict=True):
        sig = r["sig"]
        groups.setdefault((r["producer_id"], sig["key_id"], sig["tree_size"], sig["root_sig"]),
                          []).append((sig["index"], r, lf))  # fmt: skip
    whole = [sorted(g, key=lambda t: t[0]) for k, g in groups.items() if len(g) == k[2]]
    trees = [[lf for _, _, lf in g] for g in whole]
    in_trees = sum(map(len, trees))
    checks = []
    for g, tree in zip(whole, trees, strict=True):
        r0 = g[0][1]
        key = registry.key(r0["producer_id"], r0["sig"]["key_id"])
        if key is None:
            raise AssertionError("benchmark producer not registered")
        msg = header_message(
            r0["producer_id"], r0["seq"], r0["seq"] + len(tree) - 1, len(tree), merkle_root(tree)
        )
        checks.append((key.public_key.verify, provenance._a2b(r0["sig"]["root_sig"]), msg))

    def verify_all(cs: list[tuple[Any, bytes, bytes]]) -> int:
        for verify, sig, msg in cs:
            verify(sig, msg)  # raises InvalidSignature
        return len(cs)

    # the engine's entry of an image record with plain features (IngestEngine._stored_line)
    entries = [
        {
            "record_id": r["record_id"],
            "producer_id": r["producer_id"],
            "seq": r["seq"],
            "ts": r["ts"],
            "leaf": lf.hex(),
            "audit": [],
            "record": r,
        }
        for r, lf in zip(recs, leaves, strict=True)
    ]  # fmt: skip
    stored = list(map(_encode_json, entries))
    compress = sealed.line_compressor()
    frames = list(map(compress, stored))
    digest = sealed.content_id(stored)
    numbers = iter(range(1, 1 << 62))

    def next_key() -> str:  # a new object per call, as the engine's batches are
        return f"accepted/floor/{next(numbers):012d}-{digest}"

    def context() -> dict[str, str]:
        return IngestEngine._context(next_key())

    def sealed_object() -> tuple[str, bytes]:  # the engine's object under its own key's context
        key = next_key()
        return key, sealed.seal_lines(encryptor, IngestEngine._context(key), stored)

    store = LocalObjectStore(tmp / "floor-objects")
    journal_path = tmp / "floor-journal.jsonl"
    line = state._encode(
        {"batch": 1, "key": "accepted/floor/000000000001-0123456789abcdef",
         "marks": [[r["producer_id"], r["seq"], lf[:8].hex(), rid_hash(r["record_id"]).hex(), "a"]
                   for r, lf in zip(recs, leaves, strict=True)]}
    ) + "\n"  # fmt: skip
    journal = open(journal_path, "a")  # noqa: SIM115 - closed by parts["_close"]

    def write_and_journal(obj: tuple[str, bytes]) -> str:
        key, blob = obj
        store.put(key, blob, metadata={"format": "saip.accepted.v3", "records": str(n),
                                       "contentid": key.rsplit("-", 1)[1]})  # fmt: skip
        journal.write(line)
        journal.flush()
        os.fsync(journal.fileno())
        return key

    raw_path = tmp / "floor-lines.jsonl"
    raw_path.write_bytes(b"".join(ln + b"\n" for ln in lines))

    def read_split(path: Path) -> list[bytes]:
        with open(path, "rb") as fh:
            return fh.read().split(b"\n")

    parts = {
        "stream read + split": FloorPart(lambda: raw_path, read_split, n),
        "decode (msgspec, generated decoder)": FloorPart(
            lambda: lines, lambda ls: list(map(decode, ls)), n, {"decoder": decode}
        ),
        "signing input + leaf hash (struct, SHA-256)": FloorPart(
            lambda: leaf_args, signing_input_and_leaf, n
        ),
        "Merkle root (n - 1 SHA-256)": FloorPart(
            lambda: trees, lambda ts: list(map(merkle_root, ts)), in_trees
        ),
        "Ed25519 verify, one per Merkle batch": FloorPart(
            lambda: checks, verify_all, in_trees, {"verifications": len(checks)}
        ),
        "content check (NumPy)": FloorPart(
            lambda: pixels, lambda ps: image_value_checks(ps, spec), n
        ),
        "record-id hash (SHA-256 prefix)": FloorPart(
            lambda: [r["record_id"] for r in recs],
            lambda rids: [h.digest()[:8] for h in map(sha256, map(str.encode, rids))],
            n,
        ),
        "stored line (msgspec encode)": FloorPart(
            lambda: entries, lambda es: list(map(_encode_json, es)), n
        ),
        "zstd per line": FloorPart(
            lambda: stored,
            lambda ls: list(map(compress, ls)),
            n,
            {"zstd_level": sealed.ZSTD_LEVEL},
        ),
        "AEAD seal (one seal_many)": FloorPart(
            lambda: (context(), frames), lambda a: (a[0], encryptor.bind(a[0]).seal_many(a[1])), n
        ),
        "object content digest (SHA-256)": FloorPart(lambda: stored, sealed.content_id, n),
        "object write + fsync + journal": FloorPart(sealed_object, write_and_journal, n),
        "free the decoded records": FloorPart(
            lambda: [list(map(decode, lines))], lambda box: box.clear(), n
        ),
    }
    parts["_close"] = FloorPart(lambda: None, lambda _: journal.close(), 0)
    return parts


def floor_run(
    lines: list[bytes], registry: ProducerRegistry, tmp: Path, *, batches: int, repeats: int
) -> dict[str, Any]:
    """µs per record of each part (median over batches × repeats, interleaved) and the sum."""
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.providers.local import create_local_key

    key = tmp / "floor-master.key"
    if not key.exists():
        create_local_key(key)
    encryptor = EnvelopeEncryptor([from_uri(f"local:{key}")])
    chunks = [lines[i : i + FLOOR_BATCH] for i in range(0, len(lines), FLOOR_BATCH)]
    if len(chunks) > 1 and len(chunks[-1]) < FLOOR_BATCH:
        chunks.pop()  # whole batches only (a short one has fewer whole Merkle batches)
    chunks = chunks[:batches]
    all_parts = []
    for i, chunk in enumerate(chunks):
        (tmp / f"floor-{i}").mkdir(parents=True)
        all_parts.append(floor_parts(chunk, registry, encryptor, tmp / f"floor-{i}"))
    times: dict[str, list[float]] = {}
    try:
        for _ in range(repeats):
            for parts in all_parts:
                for label, part in parts.items():
                    if label.startswith("_") or not part.records:
                        continue
                    arg = part.prepare()
                    gc.collect()
                    gc.disable()
                    try:
                        c0 = time.process_time()
                        part.call(arg)
                        dt = time.process_time() - c0
                    finally:
                        gc.enable()
                    del arg
                    times.setdefault(label, []).append(dt / part.records * 1e6)
    finally:
        for parts in all_parts:
            parts["_close"].call(None)
    each = {k: round(statistics.median(v), 3) for k, v in times.items()}
    total = round(sum(each.values()), 2)
    return {
        "floor_us_per_record": total,
        "parts_us_per_record": each,
        "ceiling_rec_per_cpu_s": round(1e6 / total, 1),
        "batch_records": FLOOR_BATCH,
        "batches": len(chunks),
        "repeats": repeats,
        "zstd_level": sealed.ZSTD_LEVEL,
        "notes": (
            "only the C-level calls each control needs, on the benchmark's records in batches "
            "of 4,000, each the engine's own call (driven by map, no Python frame per record "
            "where the call allows it); CPU time per call, GC off, median over batches x "
            "repeats. The sum is a floor for any Python driver of these controls; "
            "ceiling_rec_per_cpu_s = 1e6 / floor."
        ),
    }


#: profile stages: (label, function names whose cumulative time forms the stage)
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "parse + validate (msgspec fast path; pydantic-core on refusal)",
        ("_validate", "decode_any", "decode_any_many"),
    ),
    ("duplicate-key check", ("duplicate_key",)),
    ("signing input + leaf hash", ("image_leaf", "image_payload_bytes", "leaf_data", "leaf_hash")),
    ("provenance (Merkle root + Ed25519 per batch)", ("_verify_group",)),
    ("content checks (NumPy)", ("_check_content",)),
    ("stored line (canonical JSON)", ("_stored_line",)),
    ("dedupe + ts + seq windows (w/o stored line)", ("_decide_all",)),
    ("compression + encryption (zstd per line, seal_many)", ("seal_lines",)),
    ("quarantine object", ("put_batch",)),
    ("object write + fsync", ("put",)),
    ("journal (fsync)", ("commit",)),
    ("state snapshots", ("snapshot",)),
    ("stream read + checkpoint", ("poll", "checkpoint")),
)


def stage_table(profile: cProfile.Profile, records: int) -> dict[str, float]:
    """µs per record per stage, from cumulative times (cProfile overhead included)."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    cum: dict[str, float] = {}
    for (file, _line, name), (_cc, _nc, _tt, ct, _callers) in stats.items():
        if "saip_ingestion" in file or "saip_encryption" in file:
            cum[name] = cum.get(name, 0.0) + ct
    total = sum(v[3] for k, v in stats.items() if k[2] == "run" and "engine.py" in k[0])
    out = {label: sum(cum.get(n, 0.0) for n in names) for label, names in STAGES}
    # the stored lines are built during the decision (``_decide_all`` and, below it,
    # ``_decide`` and ``_accept_runs``, whose comprehension is its own profiler frame):
    # counted once, as lines
    out["dedupe + ts + seq windows (w/o stored line)"] -= cum.get("_stored_line", 0.0)
    out = {k: round(v / records * 1e6, 2) for k, v in out.items()}
    out["total (engine.run)"] = round(total / records * 1e6, 2)
    return out


def growth(samples: list[tuple[int, float]], lo: int, hi: int) -> float:
    """MB of RSS per 100k records between the first samples at >= lo and >= hi records."""
    a = next((r, m) for r, m in samples if r >= lo)
    b = next((r, m) for r, m in samples if r >= hi)
    return round((b[1] - a[1]) / max(1, b[0] - a[0]) * 100_000, 2)


@contextlib.contextmanager
def one_core() -> Iterator[None]:
    """Pin the process to one core for steady timings while measuring, and give the CPU set
    back afterwards: a caller of a benchmark's ``main`` in the same process (the test suite)
    must not inherit the pin. Shared by ``ingestion_junk.py`` and ``ingestion_provenance.py``."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {sorted(cpus)[-1]})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="development run: 20k records")
    ap.add_argument("--records", type=int, default=None, help="both sides (default 100k)")
    ap.add_argument("--growth-records", type=int, default=None, help="default 1M (0 = skip)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="add a per-stage cost table")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument(
        "--sections",
        default="throughput,floor",
        help="comma list of throughput (saip vs naive) and floor (the C-level work of the "
        "controls; with floor alone the naive still runs, for the ratio); default both",
    )
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    if not sections or sections - {"throughput", "floor"}:
        ap.error("--sections: a comma list of throughput and floor")
    throughput = "throughput" in sections
    records = args.records or (20_000 if args.quick else 100_000)
    grow_n = (
        args.growth_records if args.growth_records is not None else (0 if args.quick else 1_000_000)
    )
    repeats = args.repeats or (1 if args.quick else 3)
    if not args.quick and records < 100_000:
        ap.error("--records must be >= 100000 without --quick")
    with one_core(), tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        path, registry, signers = make_records(records, tmp)
        lines = path.read_bytes().splitlines()
        sigs, pubs = sign_per_record(lines, [s.producer_id for s in signers])
        gen_s = time.perf_counter() - t0
        saip_runs: list[dict[str, Any]] = []
        naive_runs: list[dict[str, Any]] = []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            if throughput:
                saip_runs.append(saip_run(path, registry, tmp))
            naive_runs.append(naive_run(lines, sigs, pubs, tmp))
        del sigs
        stages = None
        if args.profile and throughput:
            prof = cProfile.Profile()
            saip_run(path, registry, tmp, profile=prof)
            stages = stage_table(prof, records)
        grow_run = None
        if grow_n and throughput:
            gpath, gregistry, _ = make_records(grow_n, tmp / "grow", interleave=True)
            grow_run = saip_run(gpath, gregistry, tmp)
        # the floor runs last: it holds every decoded batch at once, and the heap it leaves
        # behind would hide the growth run's RSS growth (the run re-uses the freed pages: a
        # growth of 0.0 MB per 100 k when the floor ran first)
        floor = None
        if "floor" in sections:
            floor = floor_run(lines, registry, tmp / "floor", batches=2 if args.quick else 5,
                              repeats=3 if args.quick else 5)  # fmt: skip
        del lines
        path.unlink()
    med = statistics.median
    naive = med(r["rec_per_s"] for r in naive_runs)
    naive_cpu = med(r["rec_per_cpu_s"] for r in naive_runs)
    if floor is not None:
        ceiling = floor["ceiling_rec_per_cpu_s"]
        floor["naive_rec_per_cpu_s"] = round(naive_cpu, 1)
        floor["ceiling_over_naive"] = round(ceiling / naive_cpu, 2)
    if not throughput:
        result = {
            "rec_per_cpu_s": {"naive": round(naive_cpu, 1)},
            "rec_per_s": {"naive": round(naive, 1)},
            "floor": floor,
            "records": records,
            "quick": args.quick,
            "repeats": repeats,
            "sections": sorted(sections),
            "naive_runs": naive_runs,
            "load_average_1m": os.getloadavg()[0],
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
        }
        return _write(result, args.out, ("rec_per_cpu_s",), None)
    saip = med(r["rec_per_s"] for r in saip_runs)
    saip_cpu = med(r["rec_per_cpu_s"] for r in saip_runs)
    if floor is not None:
        floor["saip_rec_per_cpu_s"] = round(saip_cpu, 1)
        floor["saip_us_per_record"] = round(1e6 / saip_cpu, 2)
        # what the engine spends above the floor: Python (and its allocations) on this run
        floor["above_floor_us_per_record"] = round(1e6 / saip_cpu - floor["floor_us_per_record"], 2)
    if grow_run is not None:
        rss_growth = growth(grow_run["rss_mb_by_records"], 100_000, grow_n)
        growth_span = f"100k to {grow_n:,} records of one saip run"
    else:
        samples = saip_runs[0]["rss_mb_by_records"]
        rss_growth = growth(samples, records // 4, records)
        growth_span = f"{records // 4:,} to {records:,} records of the first saip run"
    for r in [*saip_runs, *([grow_run] if grow_run else [])]:
        r["rss_mb_by_records"] = r["rss_mb_by_records"][
            :: max(1, len(r["rss_mb_by_records"]) // 12)
        ]
    result = {
        "rec_per_cpu_s": {"saip": round(saip_cpu, 1), "naive": round(naive_cpu, 1)},
        "rec_per_s": {"saip": round(saip, 1), "naive": round(naive, 1)},
        "ratio_cpu_saip_over_naive": round(saip_cpu / naive_cpu, 2),
        "ratio_saip_over_naive": round(saip / naive, 2),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in saip_runs),
        "rss_growth_mb_per_100k": rss_growth,
        "rss_growth_span": growth_span,
        "goal": {"rec_per_cpu_s": 40000, "ratio": 6, "rss_growth_mb_per_100k": 2},
        "records": records,
        "quick": args.quick,
        "repeats": repeats,
        "stage_us_per_record": stages,
        "floor": floor,
        "sections": sorted(sections),
        "saip_runs": saip_runs,
        "naive_runs": naive_runs,
        "growth_run": grow_run,
        "generate_seconds": round(gen_s, 1),
        "load_average_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "notes": (
            "one core (sched_setaffinity); median of interleaved repeats, same records and "
            "count on both sides; rec_per_s is wall clock, rec_per_cpu_s divides by the process "
            "CPU time (less sensitive to the other jobs sharing this machine; see "
            "load_average_1m). Fair naive (issue #12): the engine's pydantic-core validator + "
            "one Ed25519 verify + one AES-256-GCM encryption under a cached data key per "
            "record, dict dedupe, one fsync. saip: full path incl. fsync'd batch writes. "
            "peak_rss_mb: the process RSS during the saip runs (records generated in the same "
            "process are included)."
        ),
    }
    keys = ("rec_per_cpu_s", "rec_per_s", "ratio_cpu_saip_over_naive", "peak_rss_mb",
            "rss_growth_mb_per_100k")  # fmt: skip
    return _write(result, args.out, keys, stages)


def _write(
    result: dict[str, Any], out: Path, keys: tuple[str, ...], stages: dict[str, float] | None
) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump({k: result[k] for k in keys}, sys.stdout)
    print()
    if stages:
        for k, v in stages.items():
            print(f"{v:8.2f} us  {k}")
    floor = result.get("floor")
    if floor:
        for k, v in floor["parts_us_per_record"].items():
            print(f"{v:8.3f} us  floor: {k}")
        print(f"{floor['floor_us_per_record']:8.2f} us  floor total -> ceiling "
              f"{floor['ceiling_rec_per_cpu_s']:,.0f} rec/CPU-s = "
              f"{floor['ceiling_over_naive']}x naive")  # fmt: skip
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
