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
    if cfg.get("slow"):  # a slow consumer: it sleeps before each batch's claims
        import time
        commit = store.commit_batch
        def slow_commit():
            time.sleep(cfg["slow"])
            commit()
        store.commit_batch = slow_commit
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


def _group(azurite: Any, tmp_path: Path, helpers: Any) -> tuple[str, dict[str, str], Any, Any]:
    """Fresh landing/checkpoint/commit containers on Azurite, the shared FAKE hub, a key."""
    conn = azurite.connection_string
    tag = uuid.uuid4().hex[:8]
    names = {"landing": f"land-{tag}", "checkpoints": f"cp-{tag}", "commits": f"commits-{tag}"}
    for name in names.values():
        ContainerClient.from_connection_string(conn, name).create_container()
    hub = helpers.load_fake("fake_eventhubs").SharedLogHub(tmp_path / "hub", partitions=PARTITIONS)
    create_local_key(tmp_path / "master.key")
    return conn, names, hub, tmp_path / "master.key"


def _spawn(
    procs: list[subprocess.Popen[bytes]], data: Path, producers: list[Any], **cfg: Any
) -> None:
    """Start one consumer process (the CHILD script) with its own registry and state."""
    reg = ProducerRegistry(data / "producers")
    for prod in producers:
        reg.register(prod.name, prod.key.public_key())
    cfg |= {"partitions": PARTITIONS, "interval": INTERVAL, "expiry": EXPIRY,
            "registry": str(data / "producers"), "state": str(data / "state"),
            "fake": str(Path(__file__).with_name("fake_eventhubs.py"))}  # fmt: skip
    out = (data / "out.json").open("wb")
    procs.append(
        subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(cfg)], stdout=out, stderr=subprocess.PIPE
        )
    )


@pytest.mark.slow
def test_three_consumers_one_group_one_sigkilled_partitions_taken_over_exactly_once(
    azurite: Any, env: Any, tmp_path: Path, helpers: Any
) -> None:
    conn, names, hub, key = _group(azurite, tmp_path, helpers)

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
        _spawn(procs, data, producers, conn=conn, hub=str(tmp_path / "hub"), name=f"c{i}",
               key=str(key), idle=40, **names)  # fmt: skip
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
        helpers.kill_all(procs)
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


class _ScriptedConsumer:
    """FAKE ``EventHubConsumerClient`` driven by the test: it only records the callbacks the
    stream passes to ``receive_batch`` (the SDK calls them from its load balancer)."""

    def __init__(self) -> None:
        import threading

        self.cb: dict[str, Any] = {}
        self.ready = threading.Event()

    def receive_batch(self, on_event_batch: Any, **kw: Any) -> None:
        self.cb = {"batch": on_event_batch, **kw}
        self.ready.set()

    def close(self) -> None:
        pass


def test_rejected_events_come_back_in_order_or_are_dropped_if_the_partition_was_lost() -> None:
    """Attack (6), Event Hubs side: a fenced batch's events are handed back (``reject``). A
    partition still owned gets them again, in order, after the hold (with every later event of
    it held back meanwhile, so nothing is checkpointed past them); a partition the SDK closed
    meanwhile (ownership lost) drops them — its new owner re-reads them from the checkpoint.
    Events of a new session of that partition are not dropped."""
    from azure.eventhub import EventData
    from azure.eventhub._eventprocessor.partition_context import PartitionContext
    from saip_ingestion.backends.azure import EventHubStream

    client = _ScriptedConsumer()
    stream = EventHubStream(producer=None, consumer=client, reject_hold=1.0)
    stream.poll(max_messages=1, timeout=0)
    assert client.ready.wait(5)
    ctx = {p: PartitionContext("ns", "hub", "$Default", p, None) for p in ("0", "1")}

    def deliver(pid: str, seqs: range) -> None:
        events = []
        for s in seqs:
            e = EventData(f"{pid}:{s}".encode())
            e._raw_amqp_message.annotations = {b"x-opt-sequence-number": s}
            events.append(e)
        client.cb["batch"](ctx[pid], events)

    for pid in ("0", "1"):
        client.cb["on_partition_initialize"](ctx[pid])
        deliver(pid, range(0, 3))
    first = stream.poll(max_messages=10, timeout=0.2)
    assert len(first) == 6
    stream.reject(first)  # the fenced batch
    held_at = time.monotonic()
    deliver("0", range(3, 5))
    deliver("1", range(3, 5))
    client.cb["on_partition_close"](ctx["1"], "OWNERSHIP_LOST")  # the SDK lost partition 1
    # an empty poll would mean idle: it waits for the held events (later ones held too)
    again = stream.poll(max_messages=10, timeout=0.2)
    assert time.monotonic() - held_at >= 0.9
    assert [(m.partition, int(m.position)) for m in again] == [("0", s) for s in range(5)]
    assert [m.data for m in again] == [f"0:{s}".encode() for s in range(5)]
    client.cb["on_partition_initialize"](ctx["1"])  # given back later: a new session
    deliver("1", range(0, 2))  # re-read from its checkpoint
    back = stream.poll(max_messages=10, timeout=0.2)
    assert [(m.partition, int(m.position)) for m in back] == [("1", 0), ("1", 1)]


@pytest.mark.slow
def test_partitions_stolen_from_a_live_slow_owner_fence_its_batch_it_consumes_on(
    azurite: Any, env: Any, tmp_path: Path, helpers: Any
) -> None:
    """Attack (6): one slow consumer owns all 6 partitions and is storing; two more join the
    group, and the SDK's REAL load balancer steals partitions from the live owner while its
    batches are in flight. The fenced batches are dropped and handed back; every consumer
    exits 0 (none stops), every record is stored once (object by object), none is lost,
    rejects are quarantined once, every partition is checkpointed to its last event."""
    conn, names, hub, key = _group(azurite, tmp_path, helpers)
    now = int(time.time() * 1000)
    producers = [env.producer(f"p{i}", register=False) for i in range(PRODUCERS)]
    rogue = env.producer("rogue", register=False)
    good: set[tuple[str, int]] = set()
    for n, prod in enumerate(producers):
        recs = prod.sign([prod.record(label=j % 10, ts=now) for j in range(PER_PRODUCER)])
        good |= {(r["producer_id"], r["seq"]) for r in recs}
        hub.append(str(n % PARTITIONS), [env.line(r) for r in recs], key=str(n % PARTITIONS))
    bad = [env.line(r) for r in rogue.sign([rogue.record(ts=now) for _ in range(4)])]
    hub.append("0", bad, key="0")
    dirs = [tmp_path / f"c{i}" for i in range(3)]
    procs: list[subprocess.Popen[bytes]] = []
    cps = BlobCheckpointStore.from_connection_string(conn, names["checkpoints"])

    def start(i: int) -> None:
        _spawn(procs, dirs[i], producers, conn=conn, hub=str(tmp_path / "hub"), name=f"c{i}",
               key=str(key), idle=30, slow=2.0 if i == 0 else 0, **names)  # fmt: skip

    try:
        start(0)
        helpers.wait_for(
            lambda: (
                (dirs[0] / "state" / "journal.jsonl").is_file()
                and (dirs[0] / "state" / "journal.jsonl").stat().st_size > 0
            ),
            "the slow owner storing",
        )
        start(1)
        start(2)
        errs = {}
        for n, proc in enumerate(procs):
            _out, err = proc.communicate(timeout=240)
            errs[n] = err.decode(errors="replace")
    finally:
        helpers.kill_all(procs)
    outs = [(d / "out.json").read_text() for d in dirs]
    logs = "\n".join(f"--- c{n} rc={p.returncode}\n{errs[n][-2500:]}\n{outs[n][:600]}"
                     for n, p in enumerate(procs))  # fmt: skip
    assert [p.returncode for p in procs] == [0, 0, 0], logs
    summaries = [json.loads(o.strip().splitlines()[-1]) for o in outs]
    # partitions were stolen from the live owner (it stored only part); whether a steal lands
    # inside its in-flight batch (fenced) or between batches (rolled forward) is timing: both
    # seen here; the fenced path itself is proven deterministically by
    # test_rejected_events_come_back_in_order_or_are_dropped_if_the_partition_was_lost and
    # test_ing_claims.py::test_fenced_live_consumer_keeps_consuming_nothing_lost_or_stored_twice
    total = len(good) + len(bad)
    assert 0 < summaries[0]["received"] < total, logs
    assert summaries[1]["accepted"] + summaries[2]["accepted"] > 0, logs
    enc = EnvelopeEncryptor([from_uri(f"local:{key}")])
    landing = AdlsBlobStore(
        container_client=ContainerClient.from_connection_string(conn, names["landing"])
    )
    from saip_ingestion.engine import ACCEPTED_PREFIX, read_batch
    from saip_ingestion.quarantine import QuarantineStore

    got = [
        (e["producer_id"], e["seq"])
        for k in landing.list(ACCEPTED_PREFIX)
        for e in read_batch(landing, enc, k)
    ]
    twice = sorted({x for x in got if got.count(x) > 1})
    assert not twice, f"stored twice: {twice[:20]}\n{logs}"
    assert not good - set(got), f"missing: {sorted(good - set(got))[:20]}\n{logs}"
    rejected = [json.loads(e.raw)["record_id"] for e in QuarantineStore(landing, enc).entries()]
    assert sorted(rejected) == sorted(json.loads(x)["record_id"] for x in bad), logs
    cps_by_pid = {
        c["partition_id"]: c for c in cps.list_checkpoints(hub.namespace, hub.name, "$Default")
    }
    for pid in hub.partitions:
        if hub.size(pid):
            assert int(cps_by_pid[pid]["sequence_number"]) == hub.size(pid) - 1, (pid, logs)


def test_claims_of_two_event_hubs_namespaces_sharing_a_commit_store_never_mix() -> None:
    """Attack: two Event Hubs namespaces with a hub of the same name (or two projects with a
    subscription of the same id) share one commit container. Event ids are partition +
    sequence number, so hub B's event "0.5" would find hub A's committed claim for "0.5" and be
    acked as already stored — silently lost. The claims' namespace carries the fully
    qualified namespace (as the SDK's checkpoint store does); long or odd names are hashed,
    never truncated into each other."""
    import types

    from saip_ingestion.backends import open_backend
    from saip_ingestion.backends.claims import claims_namespace

    def log_ns(fqns: str, hub: str = "hub") -> str:
        consumer = types.SimpleNamespace(fully_qualified_namespace=fqns)
        rs, _store = open_backend(
            "azure", eventhub=hub, container="landing", consumer=consumer, producer=object(),
            checkpoint_store=object(), container_client=object(), consumer_name="c1",
            commit_store="az://commits", commit_container_client=object(),
        )  # fmt: skip
        ns: str = rs.log.namespace  # type: ignore[attr-defined]
        rs.log.close()  # type: ignore[attr-defined]
        return ns

    a = log_ns("a.servicebus.windows.net")
    b = log_ns("b.servicebus.windows.net")
    assert a != b
    assert "a.servicebus.windows.net" in a
    long1, long2 = "h" * 250 + "1", "h" * 250 + "2"
    assert log_ns("a.servicebus.windows.net", long1) != log_ns("a.servicebus.windows.net", long2)
    assert claims_namespace("p1", "sub") != claims_namespace("p2", "sub")
    assert claims_namespace("p", "a~b") != claims_namespace("p", "a+b")
