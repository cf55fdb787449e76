"""Claims and fenced batch commits (``saip_ingestion.backends.claims``): a consumer killed at
EVERY step of a batch leaves nothing stored twice and nothing lost once another consumer drains
the subscription; a live consumer that lost its messages is fenced; tampered records refused.

The subscription here is a FAKE (``FakeSubscription``, below): an in-memory at-least-once queue
with message ids that redelivers a dead or fenced consumer's un-acked messages. The engine, the
claim log and the commit store (``LocalCommitStore``) are the real ones; the multi-process test
against the Pub/Sub emulator is ``test_ing_pubsub_scaleout.py``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_ingestion.backends.base import StreamMessage
from saip_ingestion.backends.claims import (
    ClaimConflictError,
    ClaimedStream,
    ClaimError,
    ClaimingStore,
    ClaimLog,
    LocalCommitStore,
    _parse_decision,
)
from saip_ingestion.backends.local import LocalObjectStore
from saip_ingestion.engine import ACCEPTED_PREFIX, IngestEngine, read_batch
from saip_ingestion.quarantine import QuarantineStore


class Crash(BaseException):
    """Stands for SIGKILL at a chosen step (nothing catches it, nothing is cleaned up)."""


class FakeSubscription:
    """FAKE at-least-once subscription (NOT Pub/Sub): each message has a stable id; a consumer
    view leases what it polls; ``expire(view)`` hands its un-acked messages to the next poller."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.data = {f"m{i:04d}": p for i, p in enumerate(payloads)}
        self.acked: set[str] = set()
        self.leased: dict[str, FakeView] = {}

    def expire(self, view: FakeView) -> None:
        for mid in [m for m, v in self.leased.items() if v is view]:
            del self.leased[mid]


class FakeView:
    """One consumer's streaming pull on the FAKE subscription."""

    def __init__(self, sub: FakeSubscription, ops: OpCounter) -> None:
        self.sub, self.ops, self.ids, self.n = sub, ops, {}, 0
        self.ids: dict[str, str] = {}

    def publish(self, payloads: Any, *, partition_key: str) -> None:
        raise NotImplementedError

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        out = []
        for mid, data in self.sub.data.items():
            if mid in self.sub.acked or mid in self.sub.leased:
                continue
            self.sub.leased[mid] = self
            self.n += 1
            ack = f"{mid}.{id(self)}.{self.n}"
            self.ids[ack] = mid
            out.append(StreamMessage(data, "p", ack))
            if len(out) >= max_messages:
                break
        return out

    def message_id(self, message: StreamMessage) -> str:
        return self.ids[message.position]

    def checkpoint(self, messages: Any) -> None:
        for m in messages:
            mid = self.ids.pop(m.position)
            if self.sub.leased.get(mid) is self:
                self.sub.acked.add(mid)
                del self.sub.leased[mid]
            self.ops.step(f"ack {mid}")


class OpCounter:
    """Counts the durable steps of a run; raises :class:`Crash` right after step ``at``."""

    def __init__(self, at: int | None = None) -> None:
        self.at, self.n, self.log = at, 0, []
        self.log: list[str] = []

    def step(self, what: str) -> None:
        self.n += 1
        self.log.append(what)
        if self.at is not None and self.n == self.at:
            raise Crash(what)


class CountingCommits(LocalCommitStore):
    def __init__(self, root: Path, ops: OpCounter) -> None:
        super().__init__(root)
        self.ops = ops

    def create(self, key: str, data: bytes) -> bool:
        done = super().create(key, data)
        self.ops.step(f"create {key.split('/', 1)[1]} -> {done}")
        return done


class CountingStore(LocalObjectStore):
    def __init__(self, root: Path, ops: OpCounter) -> None:
        super().__init__(root)
        self.ops = ops

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        super().put(key, data, metadata=metadata)
        self.ops.step(f"put {key.split('/')[0]}")


def payloads(env: Any) -> tuple[list[bytes], set[tuple[str, int]], list[bytes]]:
    a, b = env.producer("pa"), env.producer("pb")
    v1 = a.sign([a.record(label=i % 10) for i in range(7)])
    v2 = [b.record(label=i % 10) for i in range(6)]
    b.sign_v2(v2)  # one v2 batch read 4 at a time: held across polls
    bad = [b"{oops", b"[]"]
    lines = [env.line(r) for r in v1[:3]] + bad[:1] + [env.line(r) for r in v2]
    lines += [env.line(r) for r in v1[3:]] + bad[1:]
    return lines, {(r["producer_id"], r["seq"]) for r in v1 + v2}, bad


def consumer(
    env: Any, tmp: Path, name: str, sub: FakeSubscription, ops: OpCounter, landing: Any
) -> tuple[IngestEngine, ClaimedStream]:
    log = ClaimLog(
        store=CountingCommits(env.tmp / "commits", ops), namespace="sub", owner=name, workers=1
    )
    stream = ClaimedStream(FakeView(sub, ops), log=log, landing=landing)
    env.registry.reload()
    engine = IngestEngine(
        store=ClaimingStore(landing, stream),
        encryptor=env.encryptor,
        registry=env.registry,
        state_dir=tmp / name,
        clock=lambda: env.now,
    )
    stream.held = engine.held_messages
    return engine, stream


def stored(env: Any, landing: Any) -> list[tuple[str, int]]:
    out = []
    for key in landing.list(ACCEPTED_PREFIX):
        out += [(e["producer_id"], e["seq"]) for e in read_batch(landing, env.encryptor, key)]
    return out


def drain(env: Any, tmp: Path, name: str, sub: FakeSubscription, ops: OpCounter) -> None:
    landing = CountingStore(env.tmp / "objects", ops)
    engine, stream = consumer(env, tmp, name, sub, ops, landing)
    engine.run(stream, batch_size=4, poll_timeout=0, idle_polls=1)
    engine.close()
    stream.log.close()


def kill_at_every_step(env: Any, tmp_path: Path, *, restart: bool) -> None:
    """Kill a consumer after each durable step of a run, then drain the subscription with
    another consumer (``restart=False``) or the same one restarted on its own state."""
    lines, want, bad = payloads(env)
    clean = OpCounter()
    drain(env, tmp_path / "clean", "c0", FakeSubscription(lines), clean)
    steps = clean.n
    assert steps > 20, clean.log  # claims, decisions, puts, acks of several batches
    for at in range(1, steps + 1):
        env.tmp = tmp_path / f"at{at}"
        sub = FakeSubscription(lines)
        ops = OpCounter(at)
        landing = CountingStore(env.tmp / "objects", ops)
        engine, stream = consumer(env, tmp_path / f"at{at}", "victim", sub, ops, landing)
        with pytest.raises(Crash):
            engine.run(stream, batch_size=4, poll_timeout=0, idle_polls=1)
        stream.log.close()
        if restart:
            engine.state.close()  # the process died: the OS drops its state lock
        sub.expire(stream.inner)  # its leases lapse: everything un-acked is redelivered
        heir = "victim" if restart else "heir"
        drain(env, tmp_path / f"at{at}", heir, sub, OpCounter())
        got = stored(env, LocalObjectStore(env.tmp / "objects"))
        twice = sorted({x for x in got if got.count(x) > 1})
        assert not twice, f"crash after step {at} ({ops.log[-1]}): stored twice {twice}"
        assert set(got) == want, f"crash after step {at} ({ops.log[-1]}): missing {want - set(got)}"
        assert sub.acked == set(sub.data), f"crash after step {at}: not all acked"
        enc = env.encryptor
        raws = [
            e.raw for e in QuarantineStore(LocalObjectStore(env.tmp / "objects"), enc).entries()
        ]
        assert sorted(set(raws)) == sorted(bad), f"crash after step {at}: quarantine {raws}"


def test_killed_at_every_step_another_consumer_stores_each_record_once(
    env: Any, tmp_path: Path
) -> None:
    kill_at_every_step(env, tmp_path, restart=False)


def test_live_consumer_that_lost_its_messages_is_fenced_and_publishes_nothing(
    env: Any, tmp_path: Path
) -> None:
    lines, _want, _bad = payloads(env)
    lines = lines[:3]  # three v1 records
    sub = FakeSubscription(lines)
    landing = LocalObjectStore(env.tmp / "objects")
    slow, slow_stream = consumer(env, tmp_path, "slow", sub, OpCounter(), landing)
    got = slow_stream.poll(max_messages=10, timeout=0)
    assert len(got) == 3
    sub.expire(slow_stream.inner)  # its ack deadline lapses while it works on the batch
    drain(env, tmp_path, "fast", sub, OpCounter())  # stores and acks the three
    assert sorted(stored(env, landing)) == sorted(("pa", i) for i in range(3))
    with pytest.raises(Exception) as info:  # the slow one's commit is refused: nothing published
        slow.process_and_commit(got)
    assert isinstance(info.value, ClaimConflictError) or isinstance(
        info.value.__cause__ or info.value.__context__, ClaimConflictError
    )
    assert sorted(stored(env, landing)) == sorted(("pa", i) for i in range(3))
    slow_stream.log.close()


def test_claimed_but_undecided_batch_is_aborted_by_the_next_consumer(
    env: Any, tmp_path: Path
) -> None:
    """A consumer that claimed its messages but has not decided is fenced: its decision fails."""
    commits = LocalCommitStore(tmp_path / "commits")
    a = ClaimLog(store=commits, namespace="s", owner="a", workers=1)
    b = ClaimLog(store=commits, namespace="s", owner="b", workers=1)
    bid_a = a.new_batch_id()
    a._claim_one("m1", bid_a)
    bid_b = b.new_batch_id()
    b.commit(bid_b, ["m1"], [("accepted/x", b"data", {})])  # aborts a's batch, claims slot 1
    with pytest.raises(ClaimConflictError, match="already stored"):
        a.commit(bid_a, ["m1"], [("accepted/y", b"data", {})])
    res = a.resolve("m1")
    assert res.bid == bid_b
    assert res.committed is not None
    assert res.n == 1
    # fenced between its claims and its decision (nobody committed the message yet)
    bid_a2 = a.new_batch_id()
    a._claim_one("m2", bid_a2)
    b.abort(bid_a2)
    with pytest.raises(ClaimConflictError, match="fenced"):
        a.commit(bid_a2, ["m2"], [("accepted/z", b"data", {})])
    assert a.resolve("m2").committed is None
    a.close()
    b.close()


def test_conflict_with_a_committed_claim_aborts_the_own_batch(tmp_path: Path) -> None:
    commits = LocalCommitStore(tmp_path / "commits")
    a = ClaimLog(store=commits, namespace="s", owner="a", workers=1)
    b = ClaimLog(store=commits, namespace="s", owner="b", workers=1)
    a.commit(a.new_batch_id(), ["m1"], [("accepted/x", b"1", {})])
    bid = b.new_batch_id()
    with pytest.raises(ClaimConflictError, match="already stored"):
        b.commit(bid, ["m2", "m1"], [("accepted/y", b"2", {})])
    assert b.decision(bid) is not None
    assert b.decision(bid).state == "abort"  # type: ignore[union-attr]
    assert b.resolve("m2").committed is None  # m2's claim names the aborted batch: free again
    a.close()
    b.close()


def test_tampered_claims_and_decisions_are_refused(tmp_path: Path) -> None:
    commits = LocalCommitStore(tmp_path / "commits")
    log = ClaimLog(store=commits, namespace="s", owner="a", workers=1)
    assert commits.create("s/claims/m1/0", b"../../etc/passwd")
    with pytest.raises(ClaimError, match="not a batch id"):
        log.resolve("m1")
    bid = "x-0123456789abcdef-1"
    assert commits.create("s/claims/m2/0", bid.encode())
    doc = {"v": 1, "state": "commit", "objects": [{"key": "keys/evil", "data": "", "metadata": {}}]}
    assert commits.create(f"s/batches/{bid}", json.dumps(doc).encode())
    with pytest.raises(ClaimError, match="outside the engine's prefixes"):
        log.resolve("m2")
    with pytest.raises(ClaimError, match="not a stream message id"):
        log.resolve("../m")
    log.close()


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.from_regex(r'\{"v":1,"state":"(commit|abort)".*')))
def test_decision_parser_never_raises_anything_but_claim_error(raw: Any) -> None:
    data = raw.encode() if isinstance(raw, str) else raw
    with contextlib.suppress(ClaimError):
        _parse_decision("b", data)


def test_local_commit_store_create_is_exclusive(tmp_path: Path) -> None:
    store = LocalCommitStore(tmp_path)
    assert store.create("a/b", b"1")
    assert not store.create("a/b", b"2")
    assert store.read("a/b") == b"1"
    assert store.read("a/c") is None
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp")]


def test_cli_refuses_bad_pubsub_scale_out_flags_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``saip ingest run --backend gcp`` fails at start-up, exit 1, naming the setting."""
    from saip.cli import main

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "saip-test")
    base = ["--data-dir", str(tmp_path), "ingest", "run", "--source", "stream", "--backend"]
    base += ["gcp", "--stream", "t-records", "--bucket", "ds.landing"]
    assert main([*base, "--consumer-name", "c1"]) == 1
    assert "commit_store" in capsys.readouterr().err
    assert main([*base, "--commit-store", f"file://{tmp_path}/c"]) == 1
    assert "commit_store" in capsys.readouterr().err
    assert main([*base, "--consumer-name", "c1", "--commit-store", "s3://x/y"]) == 1
    assert "commit_store" in capsys.readouterr().err
    assert main([*base, "--consumer-name", "c1", "--commit-store", "file://rel/dir"]) == 1
    assert "absolute" in capsys.readouterr().err
    assert (
        main([*base, "--consumer-name", "bad name", "--commit-store", f"file://{tmp_path}/x"]) == 1
    )
    assert "consumer" in capsys.readouterr().err
    assert main([*base, "--lease-table", "t-leases", "--consumer-name", "c1"]) == 1
    assert "lease_table" in capsys.readouterr().err  # a Kinesis-only flag is not ignored


class FakeGcs:
    """FAKE Cloud Storage JSON API (NOT GCS; no emulator here): only a media upload honouring
    ``ifGenerationMatch=0`` (412 if the object exists) and ``GET ...?alt=media`` (404 if not),
    the two calls :class:`GcsCommitStore` makes. Proves the request shape the store sends (the
    paths, the URL-quoted object name, the precondition), not GCS's semantics."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, unquote, urlsplit

        objects: dict[tuple[str, str], bytes] = {}
        self.objects = objects

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_a: Any) -> None:
                pass

            def _reply(self, code: int, body: bytes = b"{}") -> None:
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                q = parse_qs(url.query)
                parts = url.path.split("/")  # /upload/storage/v1/b/{bucket}/o
                data = self.rfile.read(int(self.headers["Content-Length"]))
                if parts[1:4] != ["upload", "storage", "v1"] or q.get("uploadType") != ["media"]:
                    return self._reply(400)
                key = (parts[5], q["name"][0])
                if q.get("ifGenerationMatch") == ["0"] and key in objects:
                    return self._reply(412)
                objects[key] = data
                return self._reply(200)

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                parts = url.path.split("/")  # /storage/v1/b/{bucket}/o/{quoted name}
                if parse_qs(url.query).get("alt") != ["media"] or len(parts) != 7:
                    return self._reply(400)
                data = objects.get((parts[4], unquote(parts[6])))
                return self._reply(404) if data is None else self._reply(200, data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_gcs_commit_store_sends_create_only_uploads_against_a_fake() -> None:
    import requests
    from saip_ingestion.backends.claims import GcsCommitStore

    fake = FakeGcs()
    try:
        store = GcsCommitStore(
            session=requests.Session(), bucket="saip-commits", prefix="sub/", endpoint=fake.url
        )
        assert store.create("s/claims/m 1/0", b"a")
        assert not store.create("s/claims/m 1/0", b"b")  # the precondition refused it
        assert store.read("s/claims/m 1/0") == b"a"
        assert store.read("s/claims/m2/0") is None
        assert fake.objects == {("saip-commits", "sub/s/claims/m 1/0"): b"a"}
        log = ClaimLog(store=store, namespace="s", owner="a", workers=2)
        log.commit(log.new_batch_id(), ["m3", "m4"], [("accepted/x", b"1", {})])
        assert log.resolve("m4").committed is not None
        log.close()
    finally:
        fake.close()


class StealingStream(ClaimedStream):
    """The real :class:`ClaimedStream`; ``on_poll(k)`` runs after its k-th non-empty poll, i.e.
    after the claims were checked and before the engine decides (the test lets another
    consumer steal the messages there)."""

    on_poll: Any = None
    polls = 0

    def poll(self, *, max_messages: int, timeout: float) -> list[StreamMessage]:
        out = super().poll(max_messages=max_messages, timeout=timeout)
        if out:
            self.polls += 1
            self.on_poll(self.polls)
        return out


class RejectingView(FakeView):
    """The FAKE view with ``reject`` (Pub/Sub's nack): handed-back messages are leased to
    nobody, so the next poller (any consumer) gets them again."""

    rejected = 0

    def reject(self, messages: Any) -> None:
        for m in messages:
            mid = self.ids.pop(m.position)
            if self.sub.leased.get(mid) is self:
                del self.sub.leased[mid]
            self.rejected += 1


def test_fenced_live_consumer_keeps_consuming_nothing_lost_or_stored_twice(
    env: Any, tmp_path: Path
) -> None:
    """Attack (6): a live consumer loses its in-flight messages to another one after its k-th
    poll (lease lapse / partition steal) — for every k, v2 batches carried across polls
    included. The fenced batch is dropped (nothing of it published), its messages and the
    carried ones are handed back, the consumer re-reads its state and keeps consuming; it does
    NOT stop the run. Every record stored exactly once, rejects quarantined once, all acked."""
    lines, want, bad = payloads(env)
    for k in range(1, 5):  # the live consumer makes 4 non-empty polls of these 15 messages
        env.tmp = tmp_path / f"k{k}"
        sub = FakeSubscription(lines)
        landing = LocalObjectStore(env.tmp / "objects")
        view = RejectingView(sub, OpCounter())

        def steal(
            n: int, k: int = k, sub: FakeSubscription = sub, view: RejectingView = view
        ) -> None:
            if n == k:
                sub.expire(view)  # its leases lapse while it works on the batch
                drain(env, tmp_path / f"k{k}", "thief", sub, OpCounter())

        log = ClaimLog(
            store=LocalCommitStore(env.tmp / "commits"), namespace="sub", owner="live", workers=1
        )
        stream = StealingStream(view, log=log, landing=landing)
        stream.on_poll = steal
        env.registry.reload()
        engine = IngestEngine(
            store=ClaimingStore(landing, stream),
            encryptor=env.encryptor,
            registry=env.registry,
            state_dir=tmp_path / f"k{k}" / "live",
            clock=lambda: env.now,
        )
        stream.held = engine.held_messages
        summary = engine.run(stream, batch_size=4, poll_timeout=0, idle_polls=2)  # no raise
        engine.close()
        log.close()
        got = stored(env, landing)
        twice = sorted({x for x in got if got.count(x) > 1})
        assert not twice, f"steal after poll {k}: stored twice {twice}"
        assert set(got) == want, f"steal after poll {k}: missing {want - set(got)}"
        assert sub.acked == set(sub.data), f"steal after poll {k}: not all acked"
        raws = [e.raw for e in QuarantineStore(landing, env.encryptor).entries()]
        assert sorted(raws) == sorted(bad), f"steal after poll {k}: quarantine {raws}"
        assert summary.fenced_batches >= 1, f"steal after poll {k}: nothing was fenced"
        assert view.rejected >= 1
        d = summary.as_dict()
        assert d["conserved"], d
        # producer health counts each record once: the fenced batch's counts were taken back
        # (before, every record of it was counted again when it came back)
        health = engine.health.state()["windows"]
        assert sum(w["received"] for w in health) == summary.received, (k, health)
        assert sum(w["quarantined"] for w in health) == summary.quarantined
        # the live consumer's own journal names only objects that exist (nothing fenced)
        journal = (tmp_path / f"k{k}" / "live" / "journal.jsonl").read_text().splitlines()
        for row in map(json.loads, journal):
            assert row["key"] is None or landing.exists(row["key"]), row


def test_forged_claim_naming_a_committed_batch_that_does_not_list_the_message_is_refused(
    tmp_path: Path,
) -> None:
    """Attack (4): a claim that points a fresh message at someone's committed batch would make
    every consumer ack it as "already stored" — dropped unseen. A committed batch settles only
    the messages its decision lists; anything else fails typed (the message is not acked)."""
    commits = LocalCommitStore(tmp_path / "commits")
    a = ClaimLog(store=commits, namespace="s", owner="a", workers=1)
    bid = a.new_batch_id()
    a.commit(bid, ["m1"], [("accepted/x", b"1", {})])
    assert commits.create("s/claims/m9/0", bid.encode())  # forged: m9 was never in it
    b = ClaimLog(store=commits, namespace="s", owner="b", workers=1)
    with pytest.raises(ClaimError, match="does not list"):
        b.resolve("m9")
    with pytest.raises(ClaimError, match="does not list"):
        a.resolve("m9")  # also when the batch is this consumer's own (cached) commit
    assert b.resolve("m1").committed is not None
    a.close()
    b.close()


class CountingLanding(LocalObjectStore):
    puts = 0

    def put(self, key: str, data: bytes, *, metadata: Mapping[str, str] | None = None) -> None:
        self.puts += 1
        super().put(key, data, metadata=metadata)


def test_roll_forward_publishes_a_batch_once_and_keeps_no_bytes(tmp_path: Path) -> None:
    """Attack (5): a dead consumer's batch of 50 messages is redelivered in one poll. The heir
    publishes the batch's objects once (not once per message), and its decision cache keeps
    no batch bytes afterwards (memory stays flat during a redelivery storm)."""
    commits = LocalCommitStore(tmp_path / "commits")
    dead = ClaimLog(store=commits, namespace="sub", owner="dead", workers=4)
    ids = [f"m{i:04d}" for i in range(50)]
    objects = [("accepted/a/1-x", b"A" * 100_000, {}), ("quarantine-batches/a/1-y", b"Q", {})]
    dead.commit(dead.new_batch_id(), ids, objects)
    dead.close()
    sub = FakeSubscription([b"{}"] * 50)
    landing = CountingLanding(tmp_path / "objects")
    heir = ClaimLog(store=commits, namespace="sub", owner="heir", workers=4)
    stream = ClaimedStream(FakeView(sub, OpCounter()), log=heir, landing=landing)
    assert stream.poll(max_messages=100, timeout=0) == []  # all settled, none to the engine
    assert sub.acked == set(ids)
    assert landing.puts == len(objects)
    assert landing.get("accepted/a/1-x") == b"A" * 100_000
    held = sum(len(d) for dec in heir._decisions.values() for _k, d, _m in dec.objects or ())
    assert held == 0, f"{held} batch bytes kept in the decision cache"
    heir.close()


def test_dot_segment_message_ids_and_namespaces_fail_typed(tmp_path: Path) -> None:
    """Attack (4): message ids ``.``/``..`` (path segments) never reach the store as keys: they
    fail as :class:`ClaimError` like any other foreign id (not a ValueError from deep inside a
    store), and a namespace of dots is refused at construction, naming the setting."""
    commits = LocalCommitStore(tmp_path / "commits")
    log = ClaimLog(store=commits, namespace="s", owner="a", workers=1)
    for bad in (".", "..", "a/b", "m\u00e9", "x" * 129):
        with pytest.raises(ClaimError, match="not a stream message id"):
            log.resolve(bad)
    with pytest.raises(ClaimError, match="not a stream message id"):
        log.commit(log.new_batch_id(), [".."], [("accepted/x", b"1", {})])
    assert not any((tmp_path / "commits").rglob("*"))
    log.close()
    for ns in (".", ".."):
        with pytest.raises(ValueError, match="namespace"):
            ClaimLog(store=commits, namespace=ns, owner="a", workers=1)


def test_killed_at_every_step_and_restarted_with_its_own_name_and_state_stores_once(
    env: Any, tmp_path: Path
) -> None:
    """Attack (2): the same consumer (same name, same data directory) is killed after every
    durable step and restarted: its own decided-but-unpublished batch is rolled forward by
    itself (the restarted engine reuses that batch number for new content: content-derived
    keys never collide), its undecided claims are aborted by itself. Exactly once, none lost."""
    kill_at_every_step(env, tmp_path, restart=True)


class CountingCommitStore(LocalCommitStore):
    reads = creates = 0

    def read(self, key: str) -> bytes | None:
        self.reads += 1
        return super().read(key)

    def create(self, key: str, data: bytes) -> bool:
        self.creates += 1
        return super().create(key, data)


def test_a_fresh_message_costs_one_read_and_one_create(env: Any, tmp_path: Path) -> None:
    """Attack (5), per-record cost: a message nobody claimed costs one commit-store read (at
    poll) and one create-only write (its claim) — the claim reuses the slot the poll found
    free instead of reading it again; per batch one more create (the decision)."""
    lines, _want, _bad = payloads(env)
    lines = lines[:3] + lines[:3]  # three v1 records, one batch; then the same three re-sent
    commits = CountingCommitStore(tmp_path / "commits")
    landing = LocalObjectStore(tmp_path / "objects")
    log = ClaimLog(store=commits, namespace="sub", owner="a", workers=1)
    sub = FakeSubscription(lines)
    stream = ClaimedStream(FakeView(sub, OpCounter()), log=log, landing=landing)
    env.registry.reload()
    engine = IngestEngine(
        store=ClaimingStore(landing, stream), encryptor=env.encryptor, registry=env.registry,
        state_dir=tmp_path / "a", clock=lambda: env.now,
    )  # fmt: skip
    stream.held = engine.held_messages
    engine.run(stream, batch_size=10, poll_timeout=0, idle_polls=1)
    engine.close()
    log.close()
    assert len(stored(env, landing)) == 3
    # six messages (the re-sent copies are new messages, duplicates in the same batch): one
    # read and one claim each, one decision for the batch
    assert (commits.reads, commits.creates) == (6, 6 + 1)
    assert not stream._free, "per-message state left behind"
    assert not stream._undecided
