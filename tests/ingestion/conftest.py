"""Fixtures of the ingestion tests (core slice).

``encryptor`` is the real ``saip_encryption.EnvelopeEncryptor`` over a local key when that package
provides it; otherwise :class:`TestOnlyAesGcmEncryptor`, a TEST-ONLY stand-in (labelled as such)
that satisfies the same ``saip_ingestion.protocols.Encryptor`` protocol.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.backends.local import LocalObjectStore
from saip_ingestion.engine import IngestEngine
from saip_ingestion.provenance import ProducerRegistry, Signer, generate_key, record_leaf_data
from saip_ingestion.schemas import PAYLOAD_ADAPTERS, RECORD_ADAPTER

NOW_MS = 1_764_100_000_000


class TestOnlyAesGcmEncryptor:
    """TEST-ONLY encryptor (a FAKE of saip_encryption): AES-256-GCM, context as sorted-JSON AAD.

    Used only when the real ``saip_encryption.EnvelopeEncryptor`` is not importable.
    """

    __test__ = False

    def __init__(self) -> None:
        self._aead = AESGCM(AESGCM.generate_key(bit_length=256))

    @staticmethod
    def _aad(context: Mapping[str, str]) -> bytes:
        return json.dumps(dict(context), sort_keys=True).encode()

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, self._aad(context))

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        try:
            return self._aead.decrypt(ciphertext[:12], ciphertext[12:], self._aad(context))
        except (InvalidTag, ValueError):
            raise ValueError("decryption failed") from None

    def bind(self, context: Mapping[str, str]) -> TestOnlyBound:
        return TestOnlyBound(self, dict(context))


class TestOnlyBound:
    """TEST-ONLY bound-context batch API of :class:`TestOnlyAesGcmEncryptor` (a FAKE)."""

    __test__ = False

    def __init__(self, enc: TestOnlyAesGcmEncryptor, context: dict[str, str]) -> None:
        self._enc, self._context = enc, context

    def seal(self, plaintext: bytes) -> bytes:
        return self._enc.encrypt(plaintext, context=self._context)

    def open(self, ciphertext: bytes) -> bytes:
        return self._enc.decrypt(ciphertext, context=self._context)

    def seal_many(self, plaintexts: Sequence[bytes]) -> list[bytes]:
        return [self.seal(p) for p in plaintexts]

    def open_many(self, ciphertexts: Sequence[bytes]) -> list[bytes]:
        return [self.open(c) for c in ciphertexts]


def make_encryptor(tmp: Path) -> Any:
    """The real envelope encryptor over a fresh local key, or the test-only stand-in."""
    try:
        from saip_encryption import EnvelopeEncryptor, from_uri
        from saip_encryption.providers.local import create_local_key
    except ImportError:
        return TestOnlyAesGcmEncryptor()
    key = tmp / "keys" / "master.key"
    key.parent.mkdir(parents=True, exist_ok=True)
    create_local_key(key)
    return EnvelopeEncryptor([from_uri(f"local:{key}")])


@pytest.fixture
def encryptor(tmp_path: Path) -> Any:
    return make_encryptor(tmp_path)


class Producer:
    """Builds signed records for tests (uses the library's Signer)."""

    __test__ = False

    def __init__(self, name: str, registry: ProducerRegistry | None) -> None:
        self.name = name
        self.key = generate_key()
        self.signer = Signer(producer_id=name, private_key=self.key)
        if registry is not None:
            registry.register(name, self.key.public_key())
        self.seq = 0

    def record(
        self,
        payload: dict[str, Any] | None = None,
        *,
        schema: str = "image-sample",
        label: int = 1,
        ts: int = NOW_MS,
        **over: Any,
    ) -> dict[str, Any]:
        if payload is None:
            payload = {
                "width": 8,
                "height": 8,
                "features": [float(i % 17) for i in range(64)],
                "label": label,
            }
        rec = {
            "record_id": f"{self.name}-{self.seq:06d}",
            "producer_id": self.name,
            "seq": self.seq,
            "ts": ts,
            "schema": {"name": schema, "version": 1},
            "payload": payload,
        }
        self.seq += 1
        rec.update(over)
        return rec

    def sign(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        leaves = []
        for r in records:
            tag = f"{r['schema']['name']}/v1"
            payload = PAYLOAD_ADAPTERS[tag].validate_python(r["payload"])
            leaves.append(record_leaf_data({**r, "payload": payload}))
        for r, s in zip(records, self.signer.sign_batch(leaves), strict=True):
            r["sig"] = s
        return records

    def sign_v2(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Sign ``records`` as one v2 batch (one header signature, each record its leaf index)."""
        leaves = [
            record_leaf_data(
                {
                    **r,
                    "payload": PAYLOAD_ADAPTERS[f"{r['schema']['name']}/v1"].validate_python(
                        r["payload"]
                    ),
                }
            )
            for r in records
        ]
        _header, sigs = self.signer.sign_header(leaves, seq_first=records[0]["seq"])
        for r, sig in zip(records, sigs, strict=True):
            r["sig"] = sig
        return records


def line(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode()


def msgs(lines: list[bytes]) -> list[StreamMessage]:
    return [StreamMessage(x, "test", str(i)) for i, x in enumerate(lines)]


class Env:
    """A consumer wired to a local store in a temp dir, with a fixed clock."""

    __test__ = False

    def __init__(self, tmp: Path, encryptor: Any) -> None:
        self.tmp = tmp
        self.encryptor = encryptor
        self.registry = ProducerRegistry(tmp / "ingest" / "producers")
        self.store = LocalObjectStore(tmp / "ingest" / "objects")
        self.now = NOW_MS
        self.engine: IngestEngine | None = None

    NOW = NOW_MS

    @staticmethod
    def line(rec: dict[str, Any]) -> bytes:
        return line(rec)

    @staticmethod
    def msgs(lines: list[bytes]) -> list[StreamMessage]:
        return msgs(lines)

    def producer(self, name: str, *, register: bool = True) -> Producer:
        return Producer(name, self.registry if register else None)

    def open(self, **kw: Any) -> IngestEngine:
        if self.engine is not None:
            self.engine.close()
        self.registry.reload()
        clock: Callable[[], int] = lambda: self.now  # noqa: E731
        self.engine = IngestEngine(
            store=self.store,
            encryptor=self.encryptor,
            registry=self.registry,
            state_dir=self.tmp / "state",
            clock=clock,
            **kw,
        )
        return self.engine

    def ingest(self, lines: list[bytes]) -> list[tuple[str, str | None]]:
        engine = self.engine or self.open()
        return engine.process_and_commit(msgs(lines))

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None


@pytest.fixture
def env(tmp_path: Path, encryptor: Any) -> Any:
    e = Env(tmp_path, encryptor)
    yield e
    e.close()


def validate(rec: dict[str, Any]) -> Any:
    return RECORD_ADAPTER.validate_python(rec)


class BufferingFirehoseFake:
    """FAKE Firehose DirectPut client (tests only) that BUFFERS like the real service.

    moto delivers each ``PutRecord`` to S3 immediately, which hides the property that matters for
    idempotence: records sit in Firehose's buffer (up to the size/interval hints, or 24 h when the
    destination is unavailable) and are invisible in S3 meanwhile. This fake keeps every record in
    a buffer until :meth:`flush` writes them, concatenated, as one object into a real S3 bucket
    (moto) under the delivery prefix — one object per flush, named in delivery order like
    Firehose's ``<prefix>YYYY/MM/DD/HH/<stream>-<n>-<timestamp>-<uuid>`` objects.
    """

    __test__ = False

    def __init__(self, *, s3: Any, bucket: str, prefix: str, stream: str) -> None:
        self.s3, self.bucket, self.prefix, self.stream = s3, bucket, prefix, stream
        self.buffer: list[bytes] = []
        self.delivered = 0

    def put_record(self, *, DeliveryStreamName: str, Record: dict[str, bytes]) -> dict[str, Any]:
        if DeliveryStreamName != self.stream:
            raise ValueError(f"unknown delivery stream {DeliveryStreamName}")
        self.buffer.append(bytes(Record["Data"]))
        return {"RecordId": f"fake-{len(self.buffer)}", "Encrypted": False}

    def flush(self) -> None:
        """Deliver the buffer as one S3 object (what Firehose does when a hint is reached)."""
        if not self.buffer:
            return
        self.delivered += 1
        name = f"{self.prefix}2026/11/29/12/{self.stream}-1-{self.delivered:06d}"
        self.s3.put_object(Bucket=self.bucket, Key=name, Body=b"".join(self.buffer))
        self.buffer = []


class CrashAfterPut:
    """Wraps a store; raises ``crash`` right AFTER the n-th put under ``prefix`` was handed over."""

    __test__ = False

    def __init__(self, inner: Any, *, prefix: str, at: int, crash: type[Exception]) -> None:
        self.inner, self.prefix, self.at, self.crash, self.count = inner, prefix, at, crash, 0

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        self.inner.put(key, data, metadata=metadata)
        if key.startswith(self.prefix):
            self.count += 1
            if self.count == self.at:
                raise self.crash(key)

    def get(self, key: str) -> bytes:
        return bytes(self.inner.get(key))

    def exists(self, key: str) -> bool:
        return bool(self.inner.exists(key))

    def list(self, prefix: str = "") -> Any:
        return iter(self.inner.list(prefix))


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 90.0) -> None:
    """Poll ``pred`` every 0.1 s until true; AssertionError naming ``what`` after ``timeout``."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def load_fake(name: str) -> Any:
    """Import a sibling FAKE module by path (pytest runs with --import-mode=importlib)."""
    import importlib.util
    import sys

    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"saip_tests_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sigkill_first_to_store(
    procs: Sequence[Any], journals: Sequence[Path], *, timeout: float = 180.0
) -> tuple[int, dict[int, str]]:
    """Multi-process scale-out tests: SIGKILL the first consumer whose journal holds a stored
    batch, wait for the others; return the victim's index and every consumer's stderr. Every
    process still running afterwards (a failure) is killed."""
    import signal

    def first() -> int | None:
        for n, journal in enumerate(journals):
            if journal.is_file() and journal.read_bytes().count(b"\n") >= 1:
                return n
        return None

    errs: dict[int, str] = {}
    try:
        wait_for(lambda: first() is not None, "a stored batch")
        victim = first()
        assert victim is not None
        os.kill(procs[victim].pid, signal.SIGKILL)  # mid-run: nothing acked or released
        procs[victim].wait(timeout=10)
        errs[victim] = procs[victim].stderr.read().decode(errors="replace")
        for n, proc in enumerate(procs):
            if n != victim:
                _, err = proc.communicate(timeout=timeout)
                errs[n] = err.decode(errors="replace")
    finally:
        kill_all(procs)
    return victim, errs


def kill_all(procs: Sequence[Any]) -> None:
    """Kill and reap every consumer process still running (a test's clean-up path)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def audit_exactly_once(
    store: Any,
    encryptor: Any,
    *,
    good: set[tuple[str, int]],
    bad: Sequence[bytes],
    victim: int,
    victim_dir: Path,
    procs: Sequence[Any],
    errs: Mapping[int, str],
    summaries: Mapping[int, str],
) -> dict[str, int]:
    """Every accepted object read on its own (nothing collapsed): no ``(producer, seq)`` twice,
    none missing, the victim killed mid-run, the others exit 0, each reject quarantined once.
    Failures name the duplicated/missing ids and show each consumer's stderr and summary."""
    import signal

    from saip_ingestion.engine import ACCEPTED_PREFIX, read_batch
    from saip_ingestion.quarantine import QuarantineStore

    logs = "\n".join(
        f"--- c{n} (victim: {n == victim}) ---\nstderr:\n{e[-3000:]}\nsummary: {summaries[n]}"
        for n, e in sorted(errs.items())
    )
    assert procs[victim].returncode == -signal.SIGKILL, logs
    for n, proc in enumerate(procs):
        if n != victim:
            assert proc.returncode == 0, logs
    per_consumer: dict[str, int] = {}
    got: list[tuple[str, int]] = []
    for k in store.list(ACCEPTED_PREFIX):
        entries = read_batch(store, encryptor, k)
        per_consumer[k.split("/")[1]] = per_consumer.get(k.split("/")[1], 0) + len(entries)
        got += [(e["producer_id"], e["seq"]) for e in entries]
    twice = sorted({x for x in got if got.count(x) > 1})
    missing = sorted(good - set(got))
    assert not twice, f"stored twice: {twice[:20]}\n{logs}"
    assert not missing, f"missing: {missing[:20]}\n{logs}"
    dead = json.loads((victim_dir / "consumer.json").read_text())
    assert 0 < per_consumer.get(dead["consumer_id"], 0) < len(good), (per_consumer, logs)
    rejected = [json.loads(e.raw)["record_id"] for e in QuarantineStore(store, encryptor).entries()]
    want = sorted(json.loads(x)["record_id"] for x in bad)
    assert sorted(rejected) == want, f"quarantine: {rejected}\n{logs}"  # each exactly once
    return per_consumer


@pytest.fixture
def helpers() -> Any:
    """Shared test helpers (conftest is not importable by path-imported test modules)."""
    import types

    return types.SimpleNamespace(
        BufferingFirehoseFake=BufferingFirehoseFake,
        CrashAfterPut=CrashAfterPut,
        audit_exactly_once=audit_exactly_once,
        create_lease_table=create_lease_table,
        kill_all=kill_all,
        load_fake=load_fake,
        sigkill_first_to_store=sigkill_first_to_store,
        wait_for=wait_for,
    )


def create_lease_table(ddb: Any, name: str) -> None:
    """The Kinesis lease table as ``infra/aws`` declares it: hash key ``lease_key`` (S)."""
    ddb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "lease_key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "lease_key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
