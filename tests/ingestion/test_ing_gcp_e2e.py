"""End to end on the Pub/Sub emulator + the FAKE BigQuery REST server: signed records →
schema-bound topic → IngestEngine → BigQuery. The first consumer is a separate process that is
SIGKILLed right after a durable write (its leases die with it); the restarted consumer gets the
un-acked messages redelivered and nothing is lost or stored twice.

The killed consumer caps its lease extensions at 10 s (``max_lease_extension_seconds``): with the
client's default (60 s stream ack deadline) its messages stay invisible for up to a minute.

Emulator artefact (Pub/Sub emulator 0.8.20, measured): the emulator never notices that a
streaming pull ended — its grpc-java throws ``NoSuchMethodError`` (``InternalStatus.
asRuntimeException``) in the server's stream-closed path, so the request observer is never told —
and the dead stream's pusher thread keeps pulling every 50 ms for the RPC's 30-minute deadline.
When the killed consumer's leases lapse, the messages go back to the backlog and that pusher
races the restarted consumer's for them (each pull takes all that are waiting); what it wins it
holds for the dead stream's 10 s ack deadline and counts as a delivery attempt; after 5 rounds
the dead-letter policy moves the message to the dead-letter topic. The restarted consumer, when
it loses every round, sees nothing (CI: 38 of 100 stored; here: 2 of 6 runs under load, 70 and
99 messages dead-lettered; with no consumer at all, 100 of 100 dead-lettered within 65 s).
Real Pub/Sub ends the stream when the connection drops. :func:`end_dead_streams` ends it on the
emulator, so the restart is tested against the mechanism (lease lapse, redelivery) alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery, pubsub_v1  # type: ignore[attr-defined]
from saip_ingestion.backends import open_backend
from saip_ingestion.engine import IngestEngine, iter_accepted
from saip_ingestion.quarantine import QuarantineStore

PROJECT = "saip-test"
DISCARD = "http://127.0.0.1:9/"  # RFC 863 discard port: nothing listens, a push would fail


def _load_fake(name: str) -> Any:
    """Import a sibling FAKE module by path (pytest runs with --import-mode=importlib)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"saip_tests_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FakeBigQuery = _load_fake("fake_bigquery").FakeBigQuery

CHILD = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_ingestion.backends import open_backend
    from saip_ingestion.engine import IngestEngine
    from saip_ingestion.provenance import ProducerRegistry

    cfg = json.loads(sys.argv[1])
    bq = bigquery.Client(project=cfg["project"], credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=cfg["bq_url"]))
    stream, store = open_backend("gcp", project=cfg["project"], topic=cfg["topic"],
                                 bigquery_table="ds.landing", bigquery_client=bq,
                                 max_outstanding_messages=30, max_lease_extension_seconds=10)

    class DieAfterSecondBatch:
        def __init__(self, inner):
            self.inner, self.n = inner, 0
        def put(self, key, data, *, metadata=None):
            self.inner.put(key, data, metadata=metadata)
            if key.startswith("accepted/"):
                self.n += 1
                if self.n == 2:
                    os.kill(os.getpid(), signal.SIGKILL)  # durable write done, nothing acked
        def get(self, key): return self.inner.get(key)
        def exists(self, key): return self.inner.exists(key)
        def list(self, prefix=""): return self.inner.list(prefix)

    engine = IngestEngine(store=DieAfterSecondBatch(store),
                          encryptor=EnvelopeEncryptor([from_uri("local:" + cfg["key"])]),
                          registry=ProducerRegistry(Path(cfg["registry"])),
                          state_dir=Path(cfg["state"]), clock=lambda: cfg["now"])
    engine.run(stream, batch_size=30, poll_timeout=1.0, idle_polls=30)  # ends by SIGKILL
    sys.exit(3)  # must not be reached
    """
)


def end_dead_streams(subscriber: Any, subscription: str) -> None:
    """Emulator only: end the pusher threads of streams whose client is gone (module notes).

    The emulator ends every streaming pull of a subscription that has a push endpoint
    (``FAILED_PRECONDITION``, checked before each 50 ms pull), so one is set and cleared again.
    Call only while no live consumer streams from ``subscription``. Nothing is delivered
    meanwhile: the dead consumer's messages stay leased to it until their deadline lapses (the
    endpoint is the discard port; a push there would fail and be redelivered, never lost)."""
    subscriber.modify_push_config(
        request={"subscription": subscription, "push_config": {"push_endpoint": DISCARD}}
    )
    time.sleep(1.0)  # > 20 iterations of the pusher loop, also on a loaded machine
    subscriber.modify_push_config(request={"subscription": subscription, "push_config": {}})


def workload(env: Any) -> tuple[list[bytes], int, int]:
    """100 good records from 2 producers + duplicates + 3 malformed lines."""
    a, b = env.producer("alpha"), env.producer("beta")
    lines = [env.line(r) for r in a.sign([a.record(label=i % 10) for i in range(50)])]
    lines += [env.line(r) for r in b.sign([b.record(label=i % 10) for i in range(50)])]
    return lines, 100, 0


@pytest.mark.slow
def test_pubsub_to_bigquery_sigkill_and_restart_exactly_once(
    pubsub_emulator: str, env: Any, tmp_path: Path
) -> None:
    key = tmp_path / "keys" / "master.key"
    assert key.is_file(), "the real saip_encryption EnvelopeEncryptor is expected here"
    topic = f"e2e-{uuid.uuid4().hex[:8]}"
    with FakeBigQuery() as fake:
        bq = bigquery.Client(
            project=PROJECT,
            credentials=AnonymousCredentials(),  # test only: the FAKE needs no auth
            client_options=ClientOptions(api_endpoint=fake.url),
        )
        stream, store = open_backend(
            "gcp",
            project=PROJECT,
            topic=topic,
            bigquery_table="ds.landing",
            create=True,
            ack_deadline_seconds=10,
            bigquery_client=bq,
        )
        store.ensure_table()  # type: ignore[attr-defined]
        lines, accepted, quarantined = workload(env)
        stream.publish(lines, partition_key="p")
        # producers can only publish what the topic schema accepts: malformed lines are refused
        # at the door (shown in test_ing_gcp.py), so this workload carries none.
        cfg = {
            "project": PROJECT,
            "topic": topic,
            "bq_url": fake.url,
            "key": str(key),
            "registry": str(env.registry.directory),
            "state": str(tmp_path / "state"),
            "now": env.now,
        }
        child = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, timeout=120
        )
        assert child.returncode == -9, child.stderr.decode()[-2000:]
        assert len(list(store.list("accepted/"))) == 2  # two batches landed before the kill

        sub_client = pubsub_v1.SubscriberClient()  # PUBSUB_EMULATOR_HOST set by the fixture
        sub = f"projects/{PROJECT}/subscriptions/{topic}-saip"
        end_dead_streams(sub_client, sub)

        env.registry.reload()
        engine = IngestEngine(
            store=store,
            encryptor=env.encryptor,
            registry=env.registry,
            state_dir=tmp_path / "state",
            clock=lambda: env.now,
        )
        # the killed consumer's leases lapse within its 10 s cap, then its messages come back;
        # the bound only keeps a regression from hanging the suite (it is not a timing claim)
        give_up = time.monotonic() + 120
        ids: list[str] = []
        while len(set(ids)) < accepted and time.monotonic() < give_up:
            engine.run(stream, batch_size=30, poll_timeout=1.0, idle_polls=2)
            ids = [e["record_id"] for e in iter_accepted(store, env.encryptor)]
        engine.close()
        stream.close()  # type: ignore[attr-defined]
        dead = sub_client.pull(
            request={
                "subscription": f"projects/{PROJECT}/subscriptions/{topic}-dead-letter-retain",
                "max_messages": 100,
                "return_immediately": True,
            },
            timeout=30,
        ).received_messages
        sub_client.delete_subscription(request={"subscription": sub})  # ends our closed stream
        assert not dead, f"{len(dead)} message(s) dead-lettered instead of redelivered"
        assert engine.summary.recovered_batches == 1
        assert len(ids) == len(set(ids)) == accepted
        assert len(list(QuarantineStore(store, env.encryptor).keys())) == quarantined
        rows = fake.tables[f"{PROJECT}.ds.landing"]["rows"]
        assert all(b"record_id" not in json.dumps(r).encode() for r in rows)
