"""Provenance cost per record: v1 (inclusion proof per record) vs v2 (one signed batch header,
records carry only their leaf index), side by side in one process on the same records.

Two measurements, interleaved repeats, medians, one core where possible:

* ``verify``: the provenance stage alone for complete Merkle batches of 256 (what the engine
  does per batch): v1 ``Verifier.verify_tree`` (root recomputed, every stored audit path
  compared, one Ed25519 verification) vs v2 ``merkle_root`` + ``Verifier.verify_header`` (root
  recomputed, one Ed25519 verification); signature cache cleared per repeat.
* ``engine``: the full ``IngestEngine.process_and_commit`` path (parse, validate, leaf hash,
  provenance, content checks, dedupe windows, sealing, fsync'd writes, journal) on the same
  64-feature ``image-sample/v1`` records signed both ways (v1 lines carry 8 path hashes, ≈ 380
  bytes more each), in polls of 4,000.

Usage::

    python benchmarks/ingestion_provenance.py --quick          # 8k records, 3 repeats
    python benchmarks/ingestion_provenance.py --out benchmarks/results/ingestion_provenance.json

The default ``--out`` is ``.run/bench/ingestion_provenance.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parent))  # the records and the pin: ingestion.py
from ingestion import NOW, image_record, one_core

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".run" / "bench" / "ingestion_provenance.json"
TREE = 256


def _records(n: int, producer: str) -> list[dict[str, Any]]:
    return [
        image_record(producer, seq, [float((seq + j) % 17) for j in range(64)], seq % 10)
        for seq in range(n)
    ]


def _signed(n: int) -> dict[str, Any]:
    from saip_ingestion.provenance import (
        ProducerRegistry,
        Signer,
        generate_key,
        leaf_hash,
        record_leaf_data,
    )

    tmp = Path(tempfile.mkdtemp(prefix="saip-provbench-"))
    registry = ProducerRegistry(tmp / "producers")
    out: dict[str, Any] = {"tmp": tmp, "registry": registry, "lines": {}, "batches": {}}
    for fmt in ("v1", "v2"):
        key = generate_key()
        signer = Signer(producer_id=f"bench-{fmt}", private_key=key)
        registry.register(signer.producer_id, key.public_key())
        recs = _records(n, signer.producer_id)
        lines, batches = [], []
        for start in range(0, n, TREE):
            chunk = recs[start : start + TREE]
            datas = [record_leaf_data(r) for r in chunk]
            if fmt == "v1":
                sigs = signer.sign_batch(datas)
                header = None
            else:
                header, sigs = signer.sign_header(datas, seq_first=chunk[0]["seq"])
            for r, s in zip(chunk, sigs, strict=True):
                r["sig"] = s
                lines.append(json.dumps(r, separators=(",", ":")).encode())
            batches.append((signer.producer_id, signer.key_id, chunk, header,
                            [leaf_hash(d) for d in datas]))  # fmt: skip
        out["lines"][fmt] = lines
        out["batches"][fmt] = batches
    return out


def _verify_stage(data: dict[str, Any], fmt: str) -> float:
    """CPU seconds per record of the provenance stage alone (complete batches)."""
    from saip_ingestion.provenance import BatchHeader, Verifier, merkle_root

    verifier = Verifier(data["registry"])
    c0 = time.process_time()
    n = 0
    for pid, kid, chunk, header, leaves in data["batches"][fmt]:
        if fmt == "v1":
            ok = verifier.verify_tree(
                producer_id=pid,
                key_id=kid,
                root_sig=chunk[0]["sig"]["root_sig"],
                leaves=leaves,
                paths=[r["sig"]["path"] for r in chunk],
            )
        else:
            h = BatchHeader(pid, kid, chunk[0]["seq"], chunk[0]["seq"] + len(leaves) - 1,
                            len(leaves), merkle_root(leaves), header.root_sig)  # fmt: skip
            ok = verifier.verify_header(h) is None
        if not ok:
            raise AssertionError(f"{fmt} batch did not verify")
        n += len(leaves)
    return (time.process_time() - c0) / n


def _engine(data: dict[str, Any], fmt: str, encryptor: Any) -> float:
    """CPU seconds per record of the full engine path."""
    from saip_ingestion.backends.base import StreamMessage
    from saip_ingestion.backends.local import LocalObjectStore
    from saip_ingestion.engine import IngestEngine

    run = Path(tempfile.mkdtemp(dir=data["tmp"]))
    lines = data["lines"][fmt]
    msgs = [StreamMessage(x, "bench", str(i)) for i, x in enumerate(lines)]
    with IngestEngine(
        store=LocalObjectStore(run / "objects"),
        encryptor=encryptor,
        registry=data["registry"],
        state_dir=run / "state",
        clock=lambda: NOW,
    ) as engine:
        c0 = time.process_time()
        for start in range(0, len(msgs), 4000):
            engine.process_and_commit(msgs[start : start + 4000])
        cpu = time.process_time() - c0
        if engine.summary.stored != len(lines):
            raise AssertionError(f"{fmt}: {engine.summary.as_dict()}")
    return cpu / len(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8k records, 3 repeats")
    ap.add_argument("--records", type=int, default=None, help="default 40k")
    ap.add_argument("--repeats", type=int, default=None, help="default 5")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    n = args.records or (8_192 if args.quick else 40_960)
    repeats = args.repeats or (3 if args.quick else 5)
    with one_core():  # while measuring; the caller's CPU set comes back
        return _run(args, n, repeats)


def _run(args: argparse.Namespace, n: int, repeats: int) -> int:
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.providers.local import create_local_key

    data = _signed(n)
    key = data["tmp"] / "master.key"
    create_local_key(key)
    encryptor = EnvelopeEncryptor([from_uri(f"local:{key}")])
    samples: dict[str, list[float]] = {k: [] for k in ("verify_v1", "verify_v2",
                                                        "engine_v1", "engine_v2")}  # fmt: skip
    for _ in range(repeats):  # interleaved
        for fmt in ("v1", "v2"):
            samples[f"verify_{fmt}"].append(_verify_stage(data, fmt))
            samples[f"engine_{fmt}"].append(_engine(data, fmt, encryptor))
    med = {k: statistics.median(v) * 1e6 for k, v in samples.items()}
    result = {
        "records": n,
        "tree_size": TREE,
        "repeats": repeats,
        "us_per_record": {k: round(v, 3) for k, v in med.items()},
        "samples_us": {k: [round(x * 1e6, 3) for x in v] for k, v in samples.items()},
        "ratio_verify_v1_over_v2": round(med["verify_v1"] / med["verify_v2"], 2),
        "engine_saving_us_per_record": round(med["engine_v1"] - med["engine_v2"], 2),
        "line_bytes": {f: round(sum(map(len, data["lines"][f])) / n, 1) for f in ("v1", "v2")},
        "load_average": os.getloadavg()[0],
        "quick": args.quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    keys = ("us_per_record", "ratio_verify_v1_over_v2", "engine_saving_us_per_record")
    print(json.dumps({k: result[k] for k in (*keys, "line_bytes")}))
    print(f"-> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
