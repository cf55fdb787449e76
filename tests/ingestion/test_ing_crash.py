"""Crash safety: killing the consumer at any point loses nothing and stores nothing twice."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.backends.local import LocalObjectStore, LocalStream
from saip_ingestion.engine import IngestEngine, iter_accepted
from saip_ingestion.errors import IngestError
from saip_ingestion.quarantine import QuarantineStore


class _Crash(Exception):
    pass


class CrashingStore:
    """Wraps a store; raises on the n-th put whose key starts with ``prefix`` (a crash)."""

    def __init__(self, inner: LocalObjectStore, *, prefix: str, at: int) -> None:
        self.inner, self.prefix, self.at, self.count = inner, prefix, at, 0

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        if key.startswith(self.prefix):
            self.count += 1
            if self.count == self.at:
                raise _Crash(key)
        self.inner.put(key, data, metadata=metadata)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)


class CrashAfterPut(CrashingStore):
    """Crashes right AFTER the n-th matching put is durable (before journal and checkpoint)."""

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        self.inner.put(key, data, metadata=metadata)
        if key.startswith(self.prefix):
            self.count += 1
            if self.count == self.at:
                raise _Crash(key)


class CrashingCheckpointStream:
    def __init__(self, inner: Any, *, at: int) -> None:
        self.inner, self.at, self.count = inner, at, 0

    def publish(self, payloads: Sequence[bytes], *, partition_key: str) -> None:
        self.inner.publish(payloads, partition_key=partition_key)

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        out: list[StreamMessage] = self.inner.poll(max_messages=max_messages, timeout=timeout)
        return out

    def checkpoint(self, messages: Sequence[StreamMessage]) -> None:
        self.count += 1
        if self.count == self.at:
            raise _Crash("checkpoint")
        self.inner.checkpoint(messages)


def _workload(env: Any) -> tuple[list[bytes], int, int]:
    """200 records from 2 producers with duplicates and bad lines; returns (lines, acc, quar)."""
    a, b = env.producer("alpha"), env.producer("beta")
    lines = [env.line(r) for r in a.sign([a.record(label=i % 10) for i in range(100)])]
    lines += [env.line(r) for r in b.sign([b.record(label=i % 10) for i in range(90)])]
    lines += [lines[3], lines[150], b"{oops", b"[]", lines[7][:-9]]
    lines += [lines[0]] * 5
    return lines, 190, 3


def _assert_exactly_once(env: Any, accepted_unique: int, quarantined: int) -> None:
    entries = iter_accepted(env.store, env.encryptor)
    ids = [e["record_id"] for e in entries]
    assert len(ids) == len(set(ids)) == accepted_unique
    qs = list(QuarantineStore(env.store, env.encryptor).keys())
    assert len(qs) == quarantined


@pytest.mark.parametrize("file", ["window", "snapshot.json", "journal"])
@pytest.mark.parametrize("at", [1, 2])
def test_crash_mid_incremental_snapshot(
    env: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, at: int
) -> None:
    """Killed while writing the n-th snapshot (a producer's window file, ``snapshot.json``, or
    the fresh journal): the restart neither loses a record nor stores one twice."""
    import saip_ingestion.state as state_mod
    import saip_ingestion.window as window_mod

    lines, accepted, quarantined = _workload(env)
    stream = LocalStream(tmp_path / "stream")
    stream.publish(lines, partition_key="p")
    calls = {"n": 0}

    def hit() -> None:
        calls["n"] += 1
        if calls["n"] == at:
            raise _Crash(file)

    if file == "journal":
        real_open = state_mod._open_private

        def crash_open(path: Path, mode: str) -> Any:
            if path.name == "journal.jsonl" and mode == "w":
                hit()
            return real_open(path, mode)

        monkeypatch.setattr(state_mod, "_open_private", crash_open)
    else:
        mod: Any = window_mod if file == "window" else state_mod
        real_write = mod.atomic_write

        def crash_write(path: Path, data: bytes, **kw: Any) -> None:
            if path.name.endswith(".win" if file == "window" else "snapshot.json"):
                hit()
            real_write(path, data, **kw)

        monkeypatch.setattr(mod, "atomic_write", crash_write)
    engine = env.open(snapshot_every=2)
    with pytest.raises(_Crash):
        engine.run(stream, batch_size=40)
    monkeypatch.undo()
    engine.state.close()  # the process died: the OS drops the lock
    env.engine = None
    summary = env.open(snapshot_every=2).run(LocalStream(tmp_path / "stream"), batch_size=40)
    assert summary.received == summary.accepted + summary.quarantined
    _assert_exactly_once(env, accepted, quarantined)


@pytest.mark.parametrize(
    ("stage", "at"),
    [
        ("before-batch-object", 2),
        ("after-batch-object", 1),
        ("after-batch-object", 3),
        ("before-quarantine-object", 1),
        ("after-quarantine-object", 1),
        ("checkpoint", 2),
    ],
)
def test_crash_at_each_commit_stage(env: Any, tmp_path: Path, stage: str, at: int) -> None:
    lines, accepted, quarantined = _workload(env)
    stream = LocalStream(tmp_path / "stream")
    stream.publish(lines, partition_key="p")
    store = env.store
    if stage == "before-batch-object":
        env.store = CrashingStore(store, prefix="accepted/", at=at)
    elif stage == "after-batch-object":
        env.store = CrashAfterPut(store, prefix="accepted/", at=at)
    elif stage == "before-quarantine-object":
        env.store = CrashingStore(store, prefix="quarantine-batches/", at=at)
    elif stage == "after-quarantine-object":
        env.store = CrashAfterPut(store, prefix="quarantine-batches/", at=at)
    engine = env.open()
    rs: Any = stream
    if stage == "checkpoint":
        rs = CrashingCheckpointStream(stream, at=at)
    with pytest.raises(_Crash):
        engine.run(rs, batch_size=40)
    engine.state.close()  # the process died: no snapshot, the OS drops the lock
    env.engine = None
    env.store = store
    restarted = LocalStream(tmp_path / "stream")  # a new process re-reads from the checkpoint
    summary = env.open().run(restarted, batch_size=40)
    assert summary.received == summary.accepted + summary.quarantined
    _assert_exactly_once(env, accepted, quarantined)


def test_second_consumer_on_the_same_state_is_refused(env: Any) -> None:
    env.open()
    with pytest.raises(IngestError, match="another consumer"):
        IngestEngine(
            store=env.store, encryptor=env.encryptor, registry=env.registry,
            state_dir=env.tmp / "state",
        )  # fmt: skip


_CONSUMER = """
import sys
from pathlib import Path
from saip_encryption import EnvelopeEncryptor, from_uri
from saip_ingestion.backends import open_backend
from saip_ingestion.backends.local import FileRecordStream
from saip_ingestion.engine import IngestEngine
from saip_ingestion.provenance import ProducerRegistry
data, src = Path(sys.argv[1]), Path(sys.argv[2])
_stream, store = open_backend("local", data_dir=data)
state = data / "ingest" / "state" / "local"
enc = EnvelopeEncryptor([from_uri(f"local:{data}/keys/master.key")])
registry = ProducerRegistry(data / "ingest" / "producers")
with IngestEngine(store=store, encryptor=enc, registry=registry, state_dir=state) as e:
    e.run(FileRecordStream(src, checkpoint_dir=state / "checkpoints"), batch_size=40)
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_restart(tmp_path: Path, capsys: Any) -> None:
    """SIGKILL the consumer process twice mid-run; the CLI run then completes exactly once.

    The killed consumer is the same engine, backend and state directory ``saip ingest run``
    uses (started with a small driver so that the test does not pay the whole CLI's start-up).
    """
    import json

    import numpy as np
    from saip.cli import main
    from saip_encryption.providers.local import create_local_key
    from saip_ingestion.producer import parse_poison, produce

    data = tmp_path / "data"
    src = tmp_path / "alpha.jsonl"
    produce(data_dir=data, producer="alpha", dataset="digits", out=src, limit=600,
            poison=[parse_poison("malformed:n=6"), parse_poison("replay:n=3")])  # fmt: skip
    create_local_key(data / "keys" / "master.key")
    objects = data / "ingest" / "objects" / "accepted"
    for kill_after in (2, 8):
        proc = subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, str(data), str(src)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            n = sum(1 for _ in objects.rglob("0*")) if objects.exists() else 0
            if n >= kill_after or proc.poll() is not None:
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert main(["--data-dir", str(data), "ingest", "run", "--source", str(src), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["conserved"]
    out = tmp_path / "x.npz"
    assert main(["--data-dir", str(data), "ingest", "export", str(out)]) == 0
    ids = list(np.load(out)["record_id"])
    # 600 good records (+ replays, stale and out-of-range ones): exactly the 600 good ones
    assert len(ids) == len(set(ids)) == 600
    assert sorted(ids) == [f"alpha-{i:09d}" for i in range(600)]
