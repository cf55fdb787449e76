"""Scale-out on moto server: three ``saip ingest run`` processes share one 6-shard Kinesis stream
through a DynamoDB lease table; one is SIGKILLed mid-run and its shards are taken over.
0 lost, 0 stored twice (counted per object, not collapsed on read), counts conserved.

Half the producers sign v2 batches of 30 records (one header signature; the consumer decides a
batch only when all of it has arrived), read 10 at a time: the engine holds undecided records
across polls, so partial checkpoints and intents that stop before them are exercised too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
from saip.compose import build_encryptor
from saip.config import SaipConfig
from saip_encryption.providers.local import create_local_key
from saip_ingestion.backends.aws import S3ObjectStore
from saip_ingestion.engine import ACCEPTED_PREFIX, read_batch
from saip_ingestion.provenance import ProducerRegistry
from saip_ingestion.quarantine import QuarantineStore

REGION = "us-east-1"
STREAM, BUCKET, TABLE = "scale-s", "scale-b", "scale-leases"
PRODUCERS, PER_PRODUCER = 6, 60
V2_BATCH = 30


@pytest.mark.slow
def test_three_consumers_one_sigkilled_shards_taken_over_exactly_once(
    moto_url: str, tmp_path: Path, env: Any, helpers: Any
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_url)
    kinesis.create_stream(StreamName=STREAM, ShardCount=6)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=STREAM, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket=BUCKET)
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    helpers.create_lease_table(ddb, TABLE)
    key = tmp_path / "master.key"
    create_local_key(key)

    # producers (keys registered on every consumer), records fresh by the real clock
    now = int(time.time() * 1000)
    producers = [env.producer(f"p{i}", register=False) for i in range(PRODUCERS)]
    good: dict[str, bytes] = {}
    for n, prod in enumerate(producers):
        recs = [prod.record(label=j % 10, ts=now) for j in range(PER_PRODUCER)]
        if n % 2:
            prod.sign(recs)  # v1: one Merkle batch with an inclusion proof per record
        else:
            for k in range(0, PER_PRODUCER, V2_BATCH):
                prod.sign_v2(recs[k : k + V2_BATCH])
        lines = [env.line(r) for r in recs]
        good.update({r["record_id"]: x for r, x in zip(recs, lines, strict=True)})
        kinesis.put_records(
            StreamName=STREAM, Records=[{"Data": x, "PartitionKey": prod.name} for x in lines]
        )
    bad = [b"{oops", b"[]", b'{"schema": 1}', b"\xff\xfe", b"null", b"{}"]
    kinesis.put_records(
        StreamName=STREAM,
        Records=[{"Data": x, "PartitionKey": f"bad{i}"} for i, x in enumerate(bad)],
    )

    # the aws_env fixture (through moto_url) already put dummy credentials into os.environ
    proc_env = {**os.environ, "SAIP_KEY_DIR": str(tmp_path / "keys")}
    procs: list[subprocess.Popen[bytes]] = []
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    for i, data in enumerate(dirs):
        reg = ProducerRegistry(data / "ingest" / "producers")
        for prod in producers:
            reg.register(prod.name, prod.key.public_key())
        cmd = [
            sys.executable, "-m", "saip", "--data-dir", str(data), "ingest", "run",
            "--backend", "aws", "--source", "stream", "--endpoint-url", moto_url,
            "--region", REGION, "--stream", STREAM, "--bucket", BUCKET, "--key", f"local:{key}",
            "--lease-table", TABLE, "--consumer-name", f"c{i}", "--lease-duration", "6",
            "--batch-size", "10", "--poll-timeout", "0.5", "--idle-polls", "30", "--json",
        ]  # fmt: skip
        out = (data / "out.json").open("wb")
        procs.append(subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.PIPE))
    try:
        journals = [d / "ingest" / "state" / f"aws-{BUCKET}" / "journal.jsonl" for d in dirs]

        def first_to_store() -> int | None:
            for n, journal in enumerate(journals):
                if journal.is_file() and journal.read_bytes().count(b"\n") >= 1:
                    return n
            return None

        helpers.wait_for(lambda: first_to_store() is not None, "a stored batch")
        victim = first_to_store()
        assert victim is not None
        os.kill(procs[victim].pid, signal.SIGKILL)  # mid-run: no checkpoint, no lease release
        procs[victim].wait(timeout=10)
        assert procs[victim].stderr is not None
        errs = {victim: procs[victim].stderr.read().decode(errors="replace")}
        for n, proc in enumerate(procs):
            if n != victim:
                _, err = proc.communicate(timeout=120)
                errs[n] = err.decode(errors="replace")
                assert proc.returncode == 0, errs[n][-2000:]
    finally:
        helpers.kill_all(procs)
    assert procs[victim].returncode == -signal.SIGKILL

    enc = build_encryptor(f"local:{key}", context=SaipConfig().encryption.context)
    store = S3ObjectStore(s3=s3, bucket=BUCKET)
    per_consumer: dict[str, int] = {}
    ids: list[str] = []
    for k in store.list(ACCEPTED_PREFIX):
        entries = read_batch(store, enc, k)
        per_consumer[k.split("/")[1]] = per_consumer.get(k.split("/")[1], 0) + len(entries)
        ids += [e["record_id"] for e in entries]
    # 0 stored twice (every object read, nothing collapsed); on failure the consumers' logs
    # ("took lease", "was stored by the previous owner") show which takeover read what again
    twice = sorted({i for i in ids if ids.count(i) > 1})
    logs = "\n".join(f"--- c{n} (victim: {n == victim}) ---\n{e[-3000:]}" for n, e in errs.items())
    assert len(ids) == len(set(ids)), f"stored twice: {twice[:20]}\n{logs}"
    assert set(ids) == set(good)  # 0 lost
    dead = json.loads((dirs[victim] / "ingest/state" / f"aws-{BUCKET}/consumer.json").read_text())
    dead_stored = per_consumer.get(dead["consumer_id"], 0)
    assert 0 < dead_stored < len(good)  # killed mid-run: the others finished its shards
    qs = QuarantineStore(store, enc)
    raws = [e.raw for e in qs.entries()]
    assert sorted(raws) == sorted(bad)  # conserved: 360 accepted + 6 quarantined = 366 sent
    summaries = [
        json.loads((d / "out.json").read_text()) for n, d in enumerate(dirs) if n != victim
    ]
    assert all(s["conserved"] for s in summaries)
    # every shard checkpointed to its last record, and no lease left to the dead consumer
    rows = ddb.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    shard_rows = [r for r in rows if "/shardId-" in r["lease_key"]["S"]]
    assert len(shard_rows) == 6
    for r in shard_rows:
        sid = r["lease_key"]["S"].split("/")[1]
        it = kinesis.get_shard_iterator(
            StreamName=STREAM, ShardId=sid, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        recs = kinesis.get_records(ShardIterator=it, Limit=10000)["Records"]
        if recs:
            assert r["checkpoint"]["S"] == recs[-1]["SequenceNumber"]
        else:  # no record hashed to this shard
            assert "checkpoint" not in r
        assert r.get("owner", {}).get("S") != f"c{victim}"
        assert "pending_keys" not in r
