"""Junk vs clean: how fast the ingestion engine rejects a stream of 100% hostile records.

Issue 11 item 6: junk must be cheap to reject (goal: a 100% junk stream is processed at ≥ 50%
of the clean rate). Both streams have the same number of lines and run through the same full
path (``FileRecordStream`` → :class:`IngestEngine` → local store, real envelope encryption,
fsync'd writes), interleaved, median of the repeats.

Clean: 64-feature ``image-sample/v1`` records (sklearn digits) from 4 registered producers,
Merkle batches of 256 (the workload of ``benchmarks/ingestion.py``).

Junk (equal shares, cycled): truncated JSON; ``{"n": i}`` (unknown schema); a genuine record with
its label changed (bad signature); a record signed by an unregistered key (unknown producer);
64 strings as features; a genuine record with a duplicated ``payload.label`` key; a signed text
record whose instruction is 16k characters of ``<a`` (unclosed markup); a blank line; and, for
1 in 100 lines, a 157 KB record with 52k wrong-typed features (the review's worst case).

Side by side, the markup anchor: stdlib ``html.parser`` (what the sanitizer used before) vs the
linear tokenizer on one 16k-character field of ``<a`` and of ``<!--``.

Usage: ``python benchmarks/ingestion_junk.py [--records N] [--repeats R] [--quick]`` → writes
``benchmarks/results/ingestion_junk.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from saip_ingestion.backends.local import FileRecordStream, LocalObjectStore
from saip_ingestion.engine import IngestEngine
from saip_ingestion.provenance import ProducerRegistry, Signer, generate_key, record_leaf_data
from saip_ingestion.sanitize import sanitize_text

sys.path.append(str(Path(__file__).resolve().parent))  # the records and the pin: ingestion.py
from ingestion import make_records, one_core

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ingestion_junk.json"
NOW = 1_764_100_000_000


def make_junk(clean: Path, n: int, tmp: Path, registry: ProducerRegistry) -> Path:
    """``n`` hostile lines built from the clean records (see the module docstring)."""
    genuine = [json.loads(line) for _, line in zip(range(256), clean.open(), strict=False)]
    stranger = Signer(producer_id="stranger", private_key=generate_key())
    insider_key = generate_key()
    registry.register("insider", insider_key.public_key())
    insider = Signer(producer_id="insider", private_key=insider_key)
    text_recs = []
    for seq in range(256):
        text_recs.append(
            {
                "record_id": f"insider-{seq:06d}",
                "producer_id": "insider",
                "seq": seq,
                "ts": NOW,
                "schema": {"name": "text-sample", "version": 1},
                "payload": {"instruction": "<a" * 4096, "response": "ok"},
            }
        )
    for r, s in zip(
        text_recs, insider.sign_batch([record_leaf_data(r) for r in text_recs]), strict=True
    ):
        r["sig"] = s
    foreign = [dict(r, producer_id="stranger") for r in genuine[:64]]
    for r, s in zip(
        foreign, stranger.sign_batch([record_leaf_data(r) for r in foreign]), strict=True
    ):
        r["sig"] = s
    huge = dict(genuine[0], payload={"width": 256, "height": 203, "features": ["x"] * 52000,
                                     "label": 1})  # fmt: skip
    huge_line = json.dumps(huge, separators=(",", ":"))
    path = tmp / "junk.jsonl"
    with path.open("w") as fh:
        for i in range(n):
            g = genuine[i % len(genuine)]
            line = json.dumps(g, separators=(",", ":"))
            if i % 100 == 99:
                out = huge_line
            else:
                kind = i % 8
                if kind == 0:
                    out = line[: len(line) // 2]
                elif kind == 1:
                    out = json.dumps({"n": i})
                elif kind == 2:
                    bad = dict(
                        g, payload=dict(g["payload"], label=(g["payload"]["label"] + 1) % 10)
                    )
                    out = json.dumps(bad, separators=(",", ":"))
                elif kind == 3:
                    out = json.dumps(foreign[i % len(foreign)], separators=(",", ":"))
                elif kind == 4:
                    bad = dict(g, payload=dict(g["payload"], features=["x"] * 64))
                    out = json.dumps(bad, separators=(",", ":"))
                elif kind == 5:
                    out = line.replace('"payload":{', '"payload":{"label":0,', 1)
                elif kind == 6:
                    out = json.dumps(text_recs[i % len(text_recs)], separators=(",", ":"))
                else:
                    out = ""
            fh.write(out + "\n")
    return path


def run_once(path: Path, registry: ProducerRegistry, tmp: Path, encryptor: Any) -> dict[str, Any]:
    run = Path(tempfile.mkdtemp(dir=tmp))
    store = LocalObjectStore(run / "objects")
    stream = FileRecordStream(path, checkpoint_dir=run / "ckpt")
    with IngestEngine(
        store=store, encryptor=encryptor, registry=registry, state_dir=run / "state",
        clock=lambda: NOW,
    ) as engine:  # fmt: skip
        t0, c0 = time.perf_counter(), time.process_time()
        summary = engine.run(stream, batch_size=4000)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    stream.close()
    assert summary.received == summary.accepted + summary.quarantined
    files = sum(len(f) for _, _, f in os.walk(run / "objects"))
    size = sum(p.stat().st_size for p in (run / "objects").rglob("*") if p.is_file())
    return {
        "records": summary.received,
        "quarantined": summary.quarantined,
        "reasons": dict(summary.reasons),
        "seconds": round(seconds, 3),
        "rec_per_s": summary.received / seconds,
        "rec_per_cpu_s": summary.received / cpu,
        "object_files": files,
        "stored_bytes": size,
    }


class _HtmlParserAnchor(HTMLParser):
    """The previous sanitizer's markup stripper (stdlib html.parser), as the anchor."""

    def handle_data(self, data: str) -> None:
        pass


def markup_anchor(repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for unit in ("<a", "<!--"):
        text = unit * (16384 // len(unit))
        samples: dict[str, list[float]] = {"html_parser_ms": [], "saip_tokenizer_ms": []}
        for _ in range(repeats):
            t0 = time.perf_counter()
            p = _HtmlParserAnchor()
            try:
                p.feed(text)
                p.close()
            except AssertionError:
                pass
            samples["html_parser_ms"].append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            sanitize_text(text, field="f", max_length=20000)
            samples["saip_tokenizer_ms"].append((time.perf_counter() - t0) * 1e3)
        out[unit] = {k: round(statistics.median(v), 3) for k, v in samples.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 records, one repeat")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    if args.quick:
        args.records, args.repeats = 2000, 1
    with one_core():  # while measuring; the caller's CPU set comes back
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.providers.local import create_local_key

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clean, registry, _ = make_records(args.records, tmp)
        junk = make_junk(clean, args.records, tmp, registry)
        create_local_key(tmp / "master.key")
        encryptor = EnvelopeEncryptor([from_uri(f"local:{tmp / 'master.key'}")])
        clean_runs, junk_runs = [], []
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            clean_runs.append(run_once(clean, registry, tmp, encryptor))
            junk_runs.append(run_once(junk, registry, tmp, encryptor))
        sizes = {"clean_bytes": clean.stat().st_size, "junk_bytes": junk.stat().st_size}
    med = {
        name: {
            "rec_per_s": round(statistics.median(r["rec_per_s"] for r in runs), 1),
            "rec_per_cpu_s": round(statistics.median(r["rec_per_cpu_s"] for r in runs), 1),
        }
        for name, runs in (("clean", clean_runs), ("junk", junk_runs))
    }
    ratio = med["junk"]["rec_per_s"] / med["clean"]["rec_per_s"]
    ratio_cpu = med["junk"]["rec_per_cpu_s"] / med["clean"]["rec_per_cpu_s"]
    result = {
        "median": med,
        "ratio_junk_over_clean": round(ratio, 2),
        "ratio_cpu_junk_over_clean": round(ratio_cpu, 2),
        "goal": {"ratio_junk_over_clean": 0.5},
        "goal_met": ratio >= 0.5 and ratio_cpu >= 0.5,
        "markup_16k_field": markup_anchor(max(3, args.repeats)),
        "records": args.records,
        "repeats": args.repeats,
        "input": sizes,
        "clean_runs": clean_runs,
        "junk_runs": junk_runs,
        "load_average_1m": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "notes": (
            "one core (sched_setaffinity); median of interleaved repeats; rec_per_s is wall "
            "clock, rec_per_cpu_s divides by process CPU time. Junk mix in the module docstring."
        ),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    json.dump({k: result[k] for k in ("median", "ratio_junk_over_clean", "markup_16k_field")},
              sys.stdout)  # fmt: skip
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
