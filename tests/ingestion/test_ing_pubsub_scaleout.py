"""Scale-out on the Pub/Sub emulator: three ``saip ingest run`` processes share ONE subscription
(the real google-cloud-pubsub client, streaming pull); one is SIGKILLed right after it stored a
batch, so its un-acked messages are redelivered to the other two. With ``--commit-store`` (claims
and fenced batch commits, ``saip_ingestion.backends.claims``) every record is stored once:
0 lost, 0 stored twice (counted object by object, nothing collapsed), counts conserved.

The landing store is the FAKE BigQuery REST server (``fake_bigquery.py``; no BigQuery emulator
exists); the commit store is a shared directory (``file://``, exclusive create by hard link) —
GCS's ``ifGenerationMatch=0`` path has no local stand-in here (see ``test_ing_claims.py``)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
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
from saip_ingestion.engine import ACCEPTED_PREFIX, read_batch
from saip_ingestion.provenance import ProducerRegistry
from saip_ingestion.quarantine import QuarantineStore

PROJECT = "saip-test"
PRODUCERS, PER_PRODUCER = 4, 60


def _load_fake(name: str) -> Any:
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"saip_tests_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FakeBigQuery = _load_fake("fake_bigquery").FakeBigQuery


def _wait(pred: Any, what: str, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_three_consumers_one_subscription_one_sigkilled_exactly_once(
    pubsub_emulator: str, env: Any, tmp_path: Path
) -> None:
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    key = tmp_path / "master.key"
    create_local_key(key)
    now = int(time.time() * 1000)
    producers = [env.producer(f"p{i}", register=False) for i in range(PRODUCERS)]
    rogue = env.producer("rogue", register=False)  # registered nowhere: quarantined
    good: dict[tuple[str, int], bytes] = {}
    lines: list[bytes] = []
    for prod in producers:
        recs = prod.sign([prod.record(label=j % 10, ts=now) for j in range(PER_PRODUCER)])
        for r in recs:
            good[(r["producer_id"], r["seq"])] = env.line(r)
        lines += [env.line(r) for r in recs]
    bad = [env.line(r) for r in rogue.sign([rogue.record(ts=now) for _ in range(5)])]
    with FakeBigQuery() as fake:
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
        commits = tmp_path / "commits"
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
                "--commit-store", f"file://{commits}",
                "--batch-size", "10", "--poll-timeout", "0.5", "--idle-polls", "40", "--json",
            ]  # fmt: skip
            out = (data / "out.json").open("wb")
            procs.append(subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=subprocess.PIPE))
        errs: dict[int, str] = {}
        try:  # publish once every consumer is up, in chunks, so the service spreads them
            _wait(
                lambda: all(
                    (d / "ingest/state/gcp-ds_landing/consumer.json").is_file() for d in dirs
                ),
                "three consumers started",
            )
            time.sleep(2.0)  # their streaming pulls open
            sent = lines[: len(lines) // 2] + bad + lines[len(lines) // 2 :]
            for k in range(0, len(sent), 15):
                stream.publish(sent[k : k + 15], partition_key="p")
                time.sleep(0.2)
            stream.close()  # type: ignore[attr-defined]
            journals = [d / "ingest/state/gcp-ds_landing/journal.jsonl" for d in dirs]

            def first_to_store() -> int | None:
                for n, journal in enumerate(journals):
                    if journal.is_file() and journal.read_bytes().count(b"\n") >= 1:
                        return n
                return None

            _wait(lambda: first_to_store() is not None, "a stored batch")
            victim = first_to_store()
            assert victim is not None
            os.kill(procs[victim].pid, signal.SIGKILL)  # mid-run: nothing acked, no release
            procs[victim].wait(timeout=10)
            assert procs[victim].stderr is not None
            errs[victim] = procs[victim].stderr.read().decode(errors="replace")
            for n, proc in enumerate(procs):
                if n != victim:
                    _, err = proc.communicate(timeout=180)
                    errs[n] = err.decode(errors="replace")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()

        def summary(n: int) -> str:
            path = dirs[n] / "out.json"
            return path.read_text()[:600] if path.is_file() else "(none)"

        logs = "\n".join(
            f"--- c{n} (victim: {n == victim}) ---\nstderr:\n{e[-3000:]}\nsummary: {summary(n)}"
            for n, e in errs.items()
        )
        assert procs[victim].returncode == -signal.SIGKILL, logs
        for n, proc in enumerate(procs):
            if n != victim:
                assert proc.returncode == 0, logs

        enc = build_encryptor(f"local:{key}", context=SaipConfig().encryption.context)
        per_consumer: dict[str, int] = {}
        got: list[tuple[str, int]] = []
        for k in store.list(ACCEPTED_PREFIX):
            entries = read_batch(store, enc, k)
            per_consumer[k.split("/")[1]] = per_consumer.get(k.split("/")[1], 0) + len(entries)
            got += [(e["producer_id"], e["seq"]) for e in entries]
        twice = sorted({x for x in got if got.count(x) > 1})
        missing = sorted(set(good) - set(got))
        assert not twice, f"stored twice: {twice[:20]}\n{logs}"  # every object read, none collapsed
        assert not missing, f"missing: {missing[:20]}\n{logs}"  # 0 lost
        assert set(got) == set(good)
        dead = json.loads((dirs[victim] / "ingest/state/gcp-ds_landing/consumer.json").read_text())
        assert 0 < per_consumer.get(dead["consumer_id"], 0) < len(good), per_consumer
        rejected = [json.loads(e.raw)["record_id"] for e in QuarantineStore(store, enc).entries()]
        want_rejected = sorted(json.loads(x)["record_id"] for x in bad)
        assert sorted(rejected) == want_rejected, f"quarantine: {rejected}\n{logs}"  # once each
        summaries = [
            json.loads((d / "out.json").read_text()) for n, d in enumerate(dirs) if n != victim
        ]
        assert all(s["conserved"] for s in summaries)
