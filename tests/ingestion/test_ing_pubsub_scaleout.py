"""Scale-out on the Pub/Sub emulator: three ``saip ingest run`` processes share ONE subscription
(the real google-cloud-pubsub client, streaming pull); one is SIGKILLed right after it stored a
batch, so its un-acked messages are redelivered to the other two. With ``--commit-store`` (claims
and fenced batch commits, ``saip_ingestion.backends.claims``) every record is stored once:
0 lost, 0 stored twice (counted object by object, nothing collapsed), counts conserved.

The landing store is the FAKE BigQuery REST server (``fake_bigquery.py``; no BigQuery emulator
exists); the commit store is a shared directory (``file://``, exclusive create by hard link) —
GCS's ``ifGenerationMatch=0`` path has no local stand-in here (see ``test_ing_claims.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from saip.compose import build_encryptor
from saip.config import SaipConfig
from saip_encryption.providers.local import create_local_key
from saip_ingestion.backends import open_backend
from saip_ingestion.provenance import ProducerRegistry

PROJECT = "saip-test"
PRODUCERS, PER_PRODUCER = 4, 60
STATE = Path("ingest/state/gcp-ds_landing")


@pytest.mark.slow
def test_three_consumers_one_subscription_one_sigkilled_exactly_once(
    pubsub_emulator: str, env: Any, tmp_path: Path, helpers: Any
) -> None:
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    key = tmp_path / "master.key"
    create_local_key(key)
    now = int(time.time() * 1000)
    producers = [env.producer(f"p{i}", register=False) for i in range(PRODUCERS)]
    rogue = env.producer("rogue", register=False)  # registered nowhere: quarantined
    good: set[tuple[str, int]] = set()
    lines: list[bytes] = []
    for prod in producers:
        recs = prod.sign([prod.record(label=j % 10, ts=now) for j in range(PER_PRODUCER)])
        good |= {(r["producer_id"], r["seq"]) for r in recs}
        lines += [env.line(r) for r in recs]
    bad = [env.line(r) for r in rogue.sign([rogue.record(ts=now) for _ in range(5)])]
    with helpers.load_fake("fake_bigquery").FakeBigQuery() as fake:
        bq = bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # test only: the FAKE needs no auth
            client_options=ClientOptions(api_endpoint=fake.url),
        )
        stream, store = open_backend(
            "gcp", project=PROJECT, topic=topic, bigquery_table="ds.landing", create=True,
            ack_deadline_seconds=10, bigquery_client=bq,
        )  # fmt: skip
        store.ensure_table()  # type: ignore[attr-defined]

        cfg = tmp_path / "saip.toml"
        cfg.write_text(
            f'[ingest.gcp]\nproject = "{PROJECT}"\nmax_lease_extension_seconds = 10\n'
            "max_outstanding_messages = 20\n"
        )
        proc_env = {**os.environ, "SAIP_KEY_DIR": str(tmp_path / "keys")}
        dirs = [tmp_path / f"c{i}" for i in range(3)]
        procs: list[subprocess.Popen[bytes]] = []
        for i, data in enumerate(dirs):
            reg = ProducerRegistry(data / "ingest" / "producers")
            for prod in producers:
                reg.register(prod.name, prod.key.public_key())
            cmd = [
                sys.executable, "-m", "saip", "--data-dir", str(data), "--config", str(cfg),
                "ingest", "run", "--backend", "gcp", "--source", "stream",
                "--stream", topic, "--bucket", "ds.landing", "--endpoint-url", fake.url,
                "--key", f"local:{key}", "--consumer-name", f"c{i}",
                "--commit-store", f"file://{tmp_path / 'commits'}",
                "--batch-size", "10", "--poll-timeout", "0.5", "--idle-polls", "60", "--json",
            ]  # fmt: skip
            out = (data / "out.json").open("wb")
            procs.append(subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.PIPE))
        try:  # publish once every consumer is up, in chunks, so the service spreads them
            helpers.wait_for(
                lambda: all((d / STATE / "consumer.json").is_file() for d in dirs),
                "three consumers started",
            )
            time.sleep(2.0)  # their streaming pulls open
            sent = lines[: len(lines) // 2] + bad + lines[len(lines) // 2 :]
            for k in range(0, len(sent), 15):
                stream.publish(sent[k : k + 15], partition_key="p")
                time.sleep(0.2)
            stream.close()  # type: ignore[attr-defined]
        except BaseException:
            helpers.kill_all(procs)
            raise
        victim, errs = helpers.sigkill_first_to_store(
            procs, [d / STATE / "journal.jsonl" for d in dirs]
        )
        summaries = {
            n: (d / "out.json").read_text()[:600] if (d / "out.json").is_file() else "(none)"
            for n, d in enumerate(dirs)
        }
        enc = build_encryptor(f"local:{key}", context=SaipConfig().encryption.context)
        try:
            helpers.audit_exactly_once(
                store, enc, good=good, bad=bad, victim=victim, victim_dir=dirs[victim] / STATE,
                procs=procs, errs=errs, summaries=summaries,
            )  # fmt: skip
        except AssertionError as exc:  # missing: lost, or still waiting in the subscription?
            from google.cloud import pubsub_v1

            sub = pubsub_v1.SubscriberClient()
            left = sub.pull(
                request={"subscription": f"projects/{PROJECT}/subscriptions/{topic}-saip",
                         "max_messages": 100}, timeout=15,
            ).received_messages  # fmt: skip
            raise AssertionError(
                f"{exc}\n{len(left)} message(s) still in the subscription (not redelivered "
                "before the survivors went idle, i.e. not lost)"
            ) from None
        for n, d in enumerate(dirs):
            if n != victim:
                assert json.loads((d / "out.json").read_text())["conserved"], summaries[n]
