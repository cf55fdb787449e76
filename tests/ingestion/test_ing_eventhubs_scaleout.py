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
from saip_ingestion.provenance import ProducerRegistry

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


@pytest.mark.slow
def test_three_consumers_one_group_one_sigkilled_partitions_taken_over_exactly_once(
    azurite: Any, env: Any, tmp_path: Path, helpers: Any
) -> None:
    conn = azurite.connection_string
    tag = uuid.uuid4().hex[:8]
    names = {"landing": f"land-{tag}", "checkpoints": f"cp-{tag}", "commits": f"commits-{tag}"}
    for name in names.values():
        ContainerClient.from_connection_string(conn, name).create_container()
    fake = Path(__file__).with_name("fake_eventhubs.py")
    hub = helpers.load_fake("fake_eventhubs").SharedLogHub(tmp_path / "hub", partitions=PARTITIONS)
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

    try:  # publish once the SDK has balanced 2 partitions per consumer (no steal mid-batch)
        helpers.wait_for(
            lambda: sorted(len(v) for v in owners().values()) == [2, 2, 2], "balanced owners"
        )
        for partition, lines in batches:
            hub.append(partition, lines, key=partition)
    except BaseException:
        for proc in procs:
            proc.kill()
            proc.wait()
        raise
    victim, errs = helpers.sigkill_first_to_store(
        procs, [d / "state" / "journal.jsonl" for d in dirs]
    )
    summaries = {
        n: (d / "out.json").read_text()[:400] if (d / "out.json").is_file() else "(none)"
        for n, d in enumerate(dirs)
    }
    enc = EnvelopeEncryptor([from_uri(f"local:{key}")])
    landing = ContainerClient.from_connection_string(conn, names["landing"])
    helpers.audit_exactly_once(
        AdlsBlobStore(container_client=landing), enc, good=good, bad=bad, victim=victim,
        victim_dir=dirs[victim] / "state", procs=procs, errs=errs, summaries=summaries,
    )  # fmt: skip
    # every partition checkpointed to its last event; no ownership left to the dead consumer
    cps_by_pid = {
        c["partition_id"]: c for c in cps.list_checkpoints(hub.namespace, hub.name, "$Default")
    }
    for pid in hub.partitions:
        size = hub.size(pid)
        if size:
            assert int(cps_by_pid[pid]["sequence_number"]) == size - 1, (pid, cps_by_pid, errs)


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
