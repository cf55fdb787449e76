"""Case study: a Kinesis ingestion poisoning attempt, run on moto server (HTTP, in this process).

Three producers sign digit images with their own Ed25519 keys. ``alpha``'s key is compromised:
the attacker uses it to send 10% BadNets-style trigger images relabelled to class 0. A second
attacker holds only ``kinesis:PutRecords`` (no signing key) and writes crafted lines straight to
the stream: unsigned records, a record signed with its own key under alpha's name, an unknown
producer, a tampered label, a JSON line with a duplicate ``label`` key, exact replays, and a
record replayed under a new id. The consumer (``saip ingest run --backend aws``) reads Kinesis,
lands accepted batches in S3 with SSE-KMS, and the poisoning gate (``saip scan``) scores the
export. Output is deterministic (fixed seeds; no timestamps, keys or paths are printed).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

REGION = "us-east-1"
STREAM, BUCKET = "saip-case", "saip-case"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _saip(*args: str, ok: bool = False) -> tuple[int, str]:
    """Run the real ``saip`` CLI in this process; with ``ok``, a non-zero exit is an error."""
    from saip.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    if ok and code != 0:
        raise RuntimeError(f"saip {' '.join(args[2:4])} exited {code}: {err.getvalue().strip()}")
    return code, out.getvalue()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _crafted(alpha: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """What a stream writer without alpha's key can send, each with a label for the report."""
    from saip_ingestion.provenance import Signer, generate_key, record_leaf_data
    from saip_ingestion.schemas import PAYLOAD_ADAPTERS

    victim = alpha[5]
    out: list[tuple[str, bytes]] = []

    unsigned = {k: v for k, v in victim.items() if k != "sig"} | {"record_id": "alpha-x-unsigned"}
    out.append(("unsigned record under alpha's name", json.dumps(unsigned).encode()))

    own = Signer(producer_id="alpha", private_key=generate_key())
    forged = dict(unsigned) | {"record_id": "alpha-x-ownkey", "seq": 100000}
    tag = f"{forged['schema']['name']}/v{forged['schema']['version']}"
    leaf = record_leaf_data(
        forged | {"payload": PAYLOAD_ADAPTERS[tag].validate_python(forged["payload"])}
    )
    (sig,) = own.sign_batch([leaf])
    out.append(
        (
            "record signed with the attacker's own key as alpha",
            json.dumps(forged | {"sig": sig}).encode(),
        )
    )

    stranger = dict(victim) | {"producer_id": "delta", "record_id": "delta-000000000"}
    out.append(("record from an unregistered producer", json.dumps(stranger).encode()))

    tampered = json.loads(json.dumps(victim))
    tampered["payload"]["label"] = (tampered["payload"]["label"] + 1) % 10
    out.append(("alpha's record with the label changed", json.dumps(tampered).encode()))

    raw = json.dumps(victim, separators=(",", ":"))
    label = victim["payload"]["label"]
    dup_key = raw.replace(f'"label":{label}', f'"label":{label},"label":{(label + 1) % 10}', 1)
    out.append(('duplicate JSON key: a second "label" after the signed one', dup_key.encode()))

    for i in (10, 11):
        out.append(("exact replay of an accepted record", json.dumps(alpha[i]).encode()))

    renamed = dict(alpha[12]) | {"record_id": "alpha-x-renamed"}
    out.append(("replay under a new record_id (same seq)", json.dumps(renamed).encode()))
    return out


def run() -> str:
    import boto3
    from moto.server import ThreadedMotoServer

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto accepts any credentials
        os.environ.setdefault(var, "testing")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    report: list[str] = []
    try:
        url = f"http://127.0.0.1:{port}"
        kinesis = boto3.client(
            "kinesis",
            region_name=REGION,
            endpoint_url=url,
        )
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(
            StreamName=STREAM, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
        )
        s3 = boto3.client(
            "s3",
            region_name=REGION,
            endpoint_url=url,
        )
        s3.create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory(prefix="saip-case-") as tmp:
            root = Path(tmp)
            data = root / "data"
            base = ["--data-dir", str(data), "ingest"]
            cloud = [
                "--backend",
                "aws",
                "--endpoint-url",
                url,
                "--region",
                REGION,
                "--stream",
                STREAM,
                "--bucket",
                BUCKET,
            ]
            produced: dict[str, Path] = {}
            for i, name in enumerate(("alpha", "beta", "gamma")):
                src = root / f"{name}.jsonl"
                poison = ["--poison", "patch:rate=0.1,target=0"] if name == "alpha" else []
                _saip(
                    *base,
                    "produce",
                    "--producer",
                    name,
                    "--shard",
                    f"{i + 1}/3",
                    *poison,
                    str(src),
                    ok=True,
                )
                produced[name] = src
                _saip(*base, "publish", *cloud, str(src), ok=True)
            truth = json.loads((root / "alpha.jsonl.truth.json").read_text())
            n_poison = len(truth.get("poisoned_record_ids", []))
            alpha = _lines(produced["alpha"])
            crafted = _crafted(alpha)
            for _, line in crafted:
                kinesis.put_record(StreamName=STREAM, Data=line, PartitionKey="attacker")

            report.append("== 1. Producers published to Kinesis (moto)")
            for name, src in produced.items():
                report.append(f"{name}: {len(_lines(src))} signed records")
            report.append(f"alpha (compromised key): {n_poison} of them carry the trigger, label 0")
            report.append(f"stream writer without a key: {len(crafted)} crafted records")

            code, out = _saip(*base, "run", *cloud, "--source", "stream", "--json")
            summary = json.loads(out)
            report.append("")
            report.append(f"== 2. saip ingest run --backend aws (exit {code})")
            for k in ("received", "accepted", "quarantined", "duplicates"):
                report.append(f"{k}: {summary[k]}")
            report.append(
                "reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["reasons"].items()))
            )
            report.append("crafted records, one by one (their fate in the quarantine or store):")
            reasons = _quarantine_reasons(base, cloud, root)
            originals = {json.dumps(r).encode() for r in alpha}
            for what, line in crafted:
                rid = _record_id(line)
                if rid in reasons:
                    fate = reasons[rid]
                elif line in originals:
                    fate = "not quarantined: an exact copy, counted in duplicates and stored once"
                else:
                    fate = "ACCEPTED"
                report.append(f"  - {what}: {fate}")
            report.append(
                "producer health (drift = label distribution vs the median of producers):"
            )
            for name, p in sorted(summary["producers"].items()):
                report.append(
                    f"  {name}: flagged={p['flagged']} rejection_rate={p['rejection_rate']:.3f} "
                    f"max_label_tv={p['max_label_tv']:.3f}"
                )
            objs = s3.list_objects_v2(Bucket=BUCKET, Prefix="accepted/").get("Contents", [])
            sse = {
                s3.head_object(Bucket=BUCKET, Key=o["Key"])["ServerSideEncryption"] for o in objs
            }
            report.append(
                f"S3: {len(objs)} accepted batch objects, server-side encryption {sorted(sse)}"
            )

            npz = root / "dataset.npz"
            _saip(*base, "export", *cloud, str(npz), ok=True)
            code, out = _saip(
                "--data-dir",
                str(data),
                "scan",
                str(npz),
                "--json",
                "-",
                "--max-risk",
                "40",
                "--seed",
                "0",
            )
            scan = json.loads(out)
            report.append("")
            report.append(
                f"== 3. saip scan --max-risk 40 (exit {code}: "
                f"{'refused, above the gate' if code else 'passed'})"
            )
            report.extend(_scan_lines(scan, npz, set(truth.get("poisoned_record_ids", []))))
    finally:
        server.stop()
    return "\n".join(report) + "\n"


def _record_id(line: bytes) -> str:
    try:
        return str(json.loads(line).get("record_id", ""))
    except (ValueError, AttributeError):
        return ""


def _quarantine_reasons(base: list[str], cloud: list[str], root: Path) -> dict[str, str]:
    # `quarantine list` has no --stream option, yet the aws backend needs the stream name:
    # it is given through the settings file (the [ingest] section) instead.
    settings = root / "saip.toml"
    settings.write_text(f'[ingest]\nstream = "{STREAM}"\n', encoding="utf-8")
    args = ["--config", str(settings), *base, "quarantine", "list", *cloud[:-4], *cloud[-2:]]
    _, out = _saip(*args, "--json", ok=True)
    return {str(e["record_id"]): f"quarantined, reason {e['reason']}" for e in json.loads(out)}


def _scan_lines(scan: dict[str, Any], npz: Path, poisoned: set[str]) -> list[str]:
    import numpy as np

    ids = [str(x) for x in np.load(npz, allow_pickle=False)["record_id"]]
    flagged = {ids[int(i)] for i in scan["reasons"]}
    caught = len(flagged & poisoned)
    lines = [
        f"risk: {scan['risk_score']}/100 ({scan['band']}) on {scan['n_samples']} samples",
        f"flagged samples: {len(flagged)}; of the {len(poisoned)} trigger samples, "
        f"{caught} flagged ({caught / max(len(poisoned), 1):.0%}); "
        f"{len(flagged - poisoned)} clean samples flagged",
    ]
    for name, p in sorted(scan["per_producer"].items()):
        lines.append(f"producer {name}: named={p.get('named')} flagged={p.get('flagged')}")
    lines.extend(f"mitigation: {m.get('action')}" for m in scan["mitigations"])
    return lines


if __name__ == "__main__":
    sys.stdout.write(run())
