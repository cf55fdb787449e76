"""Scale-out on Event Hubs: three consumer processes in one consumer group split a 6-partition
hub with the SDK's REAL partition load balancing (``EventProcessor`` + ``OwnershipManager``) and
the REAL ``BlobCheckpointStore`` on Azurite (etag-conditional ownership claims, expiry, takeover,
checkpoints); one is SIGKILLed right after it stored a batch and the others take its partitions
over. With the claims (``saip_ingestion.backends.claims`` on a Blob commit store in Azurite,
``If-None-Match: *``) every record is stored once: 0 lost, 0 stored twice (object by object),
counts conserved. The landing store is the REAL ``AdlsBlobStore`` on Azurite.

There is no Event Hubs emulator: the partition receivers are FAKE (``fake_eventhubs.
ProcessorFakeConsumerClient`` reading a ``SharedLogHub`` of files). The consumers run the same
engine/backend code as ``saip ingest run`` through a child script, because the CLI builds the
real AMQP client (no injection point)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import ContainerClient
from saip_encryption import EnvelopeEncryptor, from_uri
from saip_encryption.providers.local import create_local_key
from saip_ingestion.backends.azure import AdlsBlobStore
from saip_ingestion.engine import ACCEPTED_PREFIX, read_batch
from saip_ingestion.provenance import ProducerRegistry
from saip_ingestion.quarantine import QuarantineStore

PARTITIONS, PRODUCERS, PER_PRODUCER = 6, 6, 40
INTERVAL, EXPIRY = 1.0, 4.0

CHILD = textwrap.dedent(
    """
    import importlib.util, json, sys
    from pathlib import Path
    from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
    from azure.storage.blob import ContainerClient
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_ingestion.backends import open_backend
    from saip_ingestion.engine import IngestEngine
    from saip_ingestion.provenance import ProducerRegistry

    cfg = json.loads(sys.argv[1])
    spec = importlib.util.spec_from_file_location("fake_eventhubs", cfg["fake"])
    fake = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fake)
    conn = cfg["conn"]
    hub = fake.SharedLogHub(cfg["hub"], partitions=cfg["partitions"])
    cps = BlobCheckpointStore.from_connection_string(conn, cfg["checkpoints"])
    client = fake.ProcessorFakeConsumerClient(
        hub, consumer_group="$Default", checkpoint_store=cps,
        load_balancing_interval=cfg["interval"], ownership_expiration=cfg["expiry"])
    stream, store = open_backend(
        "azure", eventhub=hub.name, container=cfg["landing"], consumer=client,
        producer=fake.FakeProducerClient(fake.FakeEventHub()), checkpoint_store=cps,
        container_client=ContainerClient.from_connection_string(conn, cfg["landing"]),
        consumer_name=cfg["name"], commit_store="az://" + cfg["commits"] + "/claims",
        commit_container_client=ContainerClient.from_connection_string(conn, cfg["commits"]),
        prefetch_events=20)
    enc = EnvelopeEncryptor([from_uri("local:" + cfg["key"])])
    engine = IngestEngine(store=store, encryptor=enc,
                          registry=ProducerRegistry(Path(cfg["registry"])),
                          state_dir=Path(cfg["state"]))
    stream.held = engine.held_messages
    try:
        engine.run(stream, batch_size=10, poll_timeout=0.5, idle_polls=cfg["idle"])
    finally:
        stream.close()
    summary = engine.finish().as_dict()
    engine.close()
    print(json.dumps(summary, sort_keys=True))
    sys.exit(0 if summary["conserved"] else 1)
    """
)


def _wait(pred: Any, what: str, timeout: float = 90.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_three_consumers_one_group_one_sigkilled_partitions_taken_over_exactly_once(
    azurite: Any, env: Any, tmp_path: Path
) -> None:
    conn = azurite.connection_string
    tag = uuid.uuid4().hex[:8]
    names = {"landing": f"land-{tag}", "checkpoints": f"cp-{tag}", "commits": f"commits-{tag}"}
    for name in names.values():
        ContainerClient.from_connection_string(conn, name).create_container()
    fake = Path(__file__).with_name("fake_eventhubs.py")
    spec = __import__("importlib.util").util.spec_from_file_location("saip_fake_eh", fake)
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    hub = module.SharedLogHub(tmp_path / "hub", partitions=PARTITIONS)
    key = tmp_path / "master.key"
    create_local_key(key)

    now = int(time.time() * 1000)
    producers = [env.producer(f"p{i}", register=False) for i in range(PRODUCERS)]
    rogue = env.producer("rogue", register=False)  # registered nowhere: quarantined
    good: set[tuple[str, int]] = set()
    batches: list[tuple[str, list[bytes]]] = []
    for n, prod in enumerate(producers):
        recs = prod.sign([prod.record(label=j % 10, ts=now) for j in range(PER_PRODUCER)])
        good |= {(r["producer_id"], r["seq"]) for r in recs}
        batches.append((str(n % PARTITIONS), [env.line(r) for r in recs]))
    bad = [env.line(r) for r in rogue.sign([rogue.record(ts=now) for _ in range(4)])]
    batches.append(("0", bad))

    dirs = [tmp_path / f"c{i}" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    for i, data in enumerate(dirs):
        reg = ProducerRegistry(data / "producers")
        for prod in producers:
            reg.register(prod.name, prod.key.public_key())
        cfg = {
            "fake": str(fake), "conn": conn, "hub": str(tmp_path / "hub"),
            "partitions": PARTITIONS, "interval": INTERVAL, "expiry": EXPIRY,
            "name": f"c{i}", "key": str(key), "registry": str(data / "producers"),
            "state": str(data / "state"), "idle": 40, **names,
        }  # fmt: skip
        out = (data / "out.json").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=out, stderr=subprocess.PIPE
            )
        )
    cps = BlobCheckpointStore.from_connection_string(conn, names["checkpoints"])

    def owners() -> dict[str, list[str]]:
        by: dict[str, list[str]] = {}
        for o in cps.list_ownership(hub.namespace, hub.name, "$Default"):
            if o["owner_id"] and o["last_modified_time"] + EXPIRY > time.time():
                by.setdefault(o["owner_id"], []).append(o["partition_id"])
        return by

    errs: dict[int, str] = {}
    victim = -1
    try:  # publish once the SDK has balanced 2 partitions per consumer (no steal mid-batch)
        _wait(lambda: sorted(len(v) for v in owners().values()) == [2, 2, 2], "balanced owners")
        for partition, lines in batches:
            hub.append(partition, lines, key=partition)
        journals = [d / "state" / "journal.jsonl" for d in dirs]

        def first_to_store() -> int | None:
            for n, journal in enumerate(journals):
                if journal.is_file() and journal.read_bytes().count(b"\n") >= 1:
                    return n
            return None

        _wait(lambda: first_to_store() is not None, "a stored batch")
        victim = first_to_store()  # type: ignore[assignment]
        os.kill(procs[victim].pid, signal.SIGKILL)  # nothing checkpointed, ownership kept
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
        return path.read_text()[:400] if path.is_file() else "(none)"

    logs = "\n".join(
        f"--- c{n} (victim: {n == victim}) ---\nstderr:\n{e[-3000:]}\nsummary: {summary(n)}"
        for n, e in errs.items()
    )
    assert procs[victim].returncode == -signal.SIGKILL, logs
    for n, proc in enumerate(procs):
        if n != victim:
            assert proc.returncode == 0, logs

    enc = EnvelopeEncryptor([from_uri(f"local:{key}")])
    store = AdlsBlobStore(
        container_client=ContainerClient.from_connection_string(conn, names["landing"])
    )
    per_consumer: dict[str, int] = {}
    got: list[tuple[str, int]] = []
    for k in store.list(ACCEPTED_PREFIX):
        entries = read_batch(store, enc, k)
        per_consumer[k.split("/")[1]] = per_consumer.get(k.split("/")[1], 0) + len(entries)
        got += [(e["producer_id"], e["seq"]) for e in entries]
    twice = sorted({x for x in got if got.count(x) > 1})
    missing = sorted(good - set(got))
    assert not twice, f"stored twice: {twice[:20]}\n{logs}"  # every object read, none collapsed
    assert not missing, f"missing: {missing[:20]}\n{logs}"  # 0 lost
    dead = json.loads((dirs[victim] / "state" / "consumer.json").read_text())
    assert 0 < per_consumer.get(dead["consumer_id"], 0) < len(good), (per_consumer, logs)
    rejected = [json.loads(e.raw)["record_id"] for e in QuarantineStore(store, enc).entries()]
    assert sorted(rejected) == sorted(json.loads(x)["record_id"] for x in bad), logs
    # every partition checkpointed to its last event; no ownership left to the dead consumer
    cps_by_pid = {
        c["partition_id"]: c for c in cps.list_checkpoints(hub.namespace, hub.name, "$Default")
    }
    for pid in hub.partitions:
        size = hub.size(pid)
        if size:
            assert int(cps_by_pid[pid]["sequence_number"]) == size - 1, (pid, cps_by_pid, logs)


def test_blob_commit_store_create_is_exclusive_on_azurite(azurite: Any) -> None:
    """Azurite honours ``If-None-Match: *`` (``upload_blob(overwrite=False)``): the second
    create of a claim fails and the first one's bytes stay."""
    from saip_ingestion.backends.claims import BlobCommitStore

    cc = ContainerClient.from_connection_string(
        azurite.connection_string, f"cs-{uuid.uuid4().hex[:8]}"
    )
    cc.create_container()
    store = BlobCommitStore(container_client=cc, prefix="claims/")
    assert store.create("s/claims/m1/0", b"a")
    assert not store.create("s/claims/m1/0", b"b")
    assert store.read("s/claims/m1/0") == b"a"
    assert store.read("s/claims/m2/0") is None
    assert list(cc.list_blob_names()) == ["claims/s/claims/m1/0"]


def test_azure_scale_out_options_refused_naming_them() -> None:
    from saip_ingestion.backends import open_backend

    base: dict[str, Any] = {"eventhub": "hub", "container": "landing", "consumer": object(),
                            "producer": object(), "checkpoint_store": object(),
                            "container_client": object()}  # fmt: skip
    with pytest.raises(ValueError, match="commit_store"):
        open_backend("azure", **base, consumer_name="c1")
    with pytest.raises(ValueError, match="commit_store"):
        open_backend("azure", **base, commit_store="az://commits")
    with pytest.raises(ValueError, match="commit_store"):
        open_backend("azure", **base, consumer_name="c1", commit_store="gs://x")
    with pytest.raises(ValueError, match="consumer"):
        open_backend("azure", **base, consumer_name="bad name", commit_store="az://commits")
    with pytest.raises(ValueError, match="load_balancing_interval"):
        open_backend("azure", **base, load_balancing_interval=0.1)
    with pytest.raises(ValueError, match="ownership_expiration"):
        open_backend("azure", **base, load_balancing_interval=5, ownership_expiration=5)
