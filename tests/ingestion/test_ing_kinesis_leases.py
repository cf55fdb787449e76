"""Kinesis scale-out with DynamoDB leases on moto server: fencing, takeover of a crashed
consumer's half-done batch, tampered lease rows, option validation (attacker/failure first).

The consumers here are in-process objects with injected monotonic clocks (lease expiry is
measured on the observer's clock, so a test advances the taker's clock instead of waiting);
the multi-process SIGKILL run is ``test_ing_kinesis_scaleout.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_ingestion.backends import open_backend
from saip_ingestion.backends.aws import S3ObjectStore
from saip_ingestion.backends.kinesis_leases import (
    LeasedKinesisStream,
    LeaseFencedStore,
    LeaseLostError,
    LeaseTableError,
    ShardLeaseTable,
    parse_row,
)
from saip_ingestion.engine import ACCEPTED_PREFIX, IngestEngine, read_batch

REGION = "us-east-1"
TABLE = "saip-leases"


class FakeClock:
    """A monotonic clock a test moves by hand (lease expiry without waiting)."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def aws(moto_url: str, helpers: Any) -> dict[str, Any]:
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_url)
    kinesis.create_stream(StreamName="lease-s", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="lease-s", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_url)
    s3.create_bucket(Bucket="lease-b")
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    helpers.create_lease_table(ddb, TABLE)
    return {"kinesis": kinesis, "s3": s3, "ddb": ddb, "url": moto_url}


_OPEN: list[LeasedKinesisStream] = []


@pytest.fixture(autouse=True)
def _stop_renewers() -> Any:
    """Every consumer a test opened stops its renewal thread when the test ends."""
    yield
    while _OPEN:
        rs = _OPEN.pop()
        rs._stop.set()


def consumer(
    aws: dict[str, Any], name: str, clock: FakeClock | None = None, duration: float = 60.0
) -> tuple[LeasedKinesisStream, LeaseFencedStore]:
    """One consumer's stream and fenced store (renewer thread too slow to fire in a test)."""
    kw: dict[str, Any] = {} if clock is None else {"clock": clock}
    leases = ShardLeaseTable(
        dynamodb=aws["ddb"],
        table=TABLE,
        stream="lease-s",
        owner=name,
        lease_duration=duration,
        **kw,
    )
    store = S3ObjectStore(s3=aws["s3"], bucket="lease-b")
    rs = LeasedKinesisStream(
        kinesis=aws["kinesis"], stream="lease-s", leases=leases, exists=store.exists, **kw
    )
    _OPEN.append(rs)
    return rs, LeaseFencedStore(store, rs)


def take_over(rs: LeasedKinesisStream, clock: FakeClock) -> None:
    """Observe the other owner's counters, then let ``lease_duration`` pass on ``clock``."""
    rs.rebalance()
    clock.t += rs.leases.lease_duration + 1
    rs.rebalance()


def publish(env: Any, aws: dict[str, Any], n: int, name: str = "alpha") -> list[bytes]:
    prod = env.producer(name)
    lines = [env.line(r) for r in prod.sign([prod.record(label=i % 10) for i in range(n)])]
    aws["kinesis"].put_records(
        StreamName="lease-s", Records=[{"Data": x, "PartitionKey": name} for x in lines]
    )
    return lines


def row(aws: dict[str, Any], shard: str = "shardId-000000000000") -> dict[str, Any]:
    item = aws["ddb"].get_item(
        TableName=TABLE, Key={"lease_key": {"S": f"lease-s/{shard}"}}, ConsistentRead=True
    )
    return dict(item["Item"])


def engine(env: Any, store: Any, state: Path) -> IngestEngine:
    env.registry.reload()
    return IngestEngine(
        store=store,
        encryptor=env.encryptor,
        registry=env.registry,
        state_dir=state,
        clock=lambda: env.now,
    )


def stored_ids(env: Any, store: Any) -> list[str]:
    """Record ids in every accepted object (NOT collapsed: a copy in two objects counts twice)."""
    return [
        e["record_id"]
        for key in store.list(ACCEPTED_PREFIX)
        for e in read_batch(store, env.encryptor, key)
    ]


def successor_stores_the_rest(
    aws: dict[str, Any], env: Any, tmp_path: Path, *, after: str, rest: int, total: int
) -> None:
    """B takes the dead owner's lease over: its checkpoint is ``after`` (rolled forward), B reads
    ``rest`` records, stores them, and every accepted object holds ``total`` distinct records."""
    clock = FakeClock()
    b_rs, b_store = consumer(aws, "b", clock)
    take_over(b_rs, clock)
    item = row(aws)
    assert item["checkpoint"]["S"] == after
    assert "pending_keys" not in item
    msgs = b_rs.poll(max_messages=100, timeout=2)
    assert len(msgs) == rest
    eng_b = engine(env, b_store, tmp_path / "b")
    eng_b.process_and_commit(msgs)
    b_rs.checkpoint(msgs)
    eng_b.close()
    ids = stored_ids(env, b_store)
    assert len(ids) == len(set(ids)) == total
    assert "pending_keys" not in row(aws)


# ---------------------------------------------------------------- hostile first


def test_expired_lease_holder_can_neither_write_nor_checkpoint(
    aws: dict[str, Any], env: Any, tmp_path: Path
) -> None:
    """Fencing: A polled a batch, then its lease expired and B took the shard over. A's write
    intent and A's checkpoint are refused (stale counter), so A stores nothing B will read again."""
    publish(env, aws, 20)
    a_rs, a_store = consumer(aws, "a")
    msgs = a_rs.poll(max_messages=50, timeout=2)
    assert len(msgs) == 20
    assert set(a_rs.leases.owned) == {"shardId-000000000000"}
    clock = FakeClock()
    b_rs, _ = consumer(aws, "b", clock)
    take_over(b_rs, clock)  # A did not renew within the lease duration (paused, partitioned)
    assert set(b_rs.leases.owned) == {"shardId-000000000000"}

    eng = engine(env, a_store, tmp_path / "a")
    with pytest.raises(LeaseLostError, match="taken over"):
        eng.process_and_commit(msgs)  # the write intent before the object write is fenced
    eng.state.close()
    assert list(a_store.list(ACCEPTED_PREFIX)) == []
    with pytest.raises(LeaseLostError, match="shardId-000000000000"):
        a_rs.checkpoint(msgs)
    item = row(aws)
    assert item["owner"]["S"] == "b"
    assert "checkpoint" not in item
    # B reads everything from the start: nothing lost
    assert len(b_rs.poll(max_messages=50, timeout=2)) == 20


def test_two_consumers_racing_for_one_free_lease_only_one_wins(aws: dict[str, Any]) -> None:
    a = ShardLeaseTable(dynamodb=aws["ddb"], table=TABLE, stream="lease-s", owner="a")
    b = ShardLeaseTable(dynamodb=aws["ddb"], table=TABLE, stream="lease-s", owner="b")
    a.sync([{"ShardId": "shardId-000000000000"}])
    seen_a = a.rows()["shardId-000000000000"]
    seen_b = b.rows()["shardId-000000000000"]
    won = [a.acquire("shardId-000000000000", seen_a), b.acquire("shardId-000000000000", seen_b)]
    assert sum(x is not None for x in won) == 1
    assert won[0] is not None
    assert row(aws)["owner"]["S"] == "a"
    with pytest.raises(LeaseLostError):
        b.checkpoint("shardId-000000000000", "1")


def test_crash_after_durable_write_is_rolled_forward_not_stored_twice(
    aws: dict[str, Any], env: Any, tmp_path: Path
) -> None:
    """A stores a batch (intent, object, journal) and dies before its checkpoint: B finds the
    object named by A's intent, moves the checkpoint past it and never reads those records."""
    publish(env, aws, 30)
    a_rs, a_store = consumer(aws, "a")
    first = a_rs.poll(max_messages=12, timeout=2)
    eng = engine(env, a_store, tmp_path / "a")
    eng.process_and_commit(first)  # durable; then SIGKILL: no checkpoint
    eng.state.close()
    assert row(aws)["pending_seq"]["S"] == first[-1].position

    successor_stores_the_rest(aws, env, tmp_path, after=first[-1].position, rest=18, total=30)


def test_crash_before_the_object_write_rereads_the_batch(
    aws: dict[str, Any], env: Any, tmp_path: Path
) -> None:
    """An intent whose object was never written (crash between intent and put) is dropped:
    the records are read again, nothing lost."""
    publish(env, aws, 10)
    a_rs, _ = consumer(aws, "a")
    polled = a_rs.poll(max_messages=50, timeout=2)
    a_rs.before_put("accepted/deadbeef/000000000001-0123456789abcdef")  # then SIGKILL
    clock = FakeClock()
    b_rs, _b_store = consumer(aws, "b", clock)
    take_over(b_rs, clock)
    assert "pending_keys" not in row(aws)
    assert "checkpoint" not in row(aws)
    again = b_rs.poll(max_messages=50, timeout=2)
    assert [m.position for m in again] == [m.position for m in polled]


def test_only_a_quarantine_object_is_not_taken_for_a_stored_batch(
    aws: dict[str, Any], env: Any
) -> None:
    """The engine writes a batch's quarantine object before its accepted object: an intent
    naming only the former may precede an accepted write that never happened → read again."""
    publish(env, aws, 5)
    a_rs, a_store = consumer(aws, "a")
    polled = a_rs.poll(max_messages=50, timeout=2)
    a_store.put("quarantine-batches/x/000000000001-00", b"q")  # exists, then SIGKILL
    clock = FakeClock()
    b_rs, _ = consumer(aws, "b", clock)
    take_over(b_rs, clock)
    assert len(b_rs.poll(max_messages=50, timeout=2)) == len(polled)


@pytest.mark.parametrize(
    ("attr", "value", "match"),
    [
        ("checkpoint", {"S": "9" * 60}, "names no record"),
        ("checkpoint", {"S": "12; DROP"}, "checkpoint: not a sequence number"),
        ("counter", {"N": "-1"}, "counter"),
        ("owner", {"S": "a\x1b[31m"}, "owner"),
        ("pending_keys", {"L": [{"S": "../../etc"}]}, "pending"),
    ],
)
def test_tampered_lease_row_fails_typed(
    aws: dict[str, Any], env: Any, attr: str, value: dict[str, Any], match: str
) -> None:
    """A row edited to an absurd value refuses to start (typed), never skips records silently."""
    publish(env, aws, 3)
    a_rs, _ = consumer(aws, "a")
    a_rs.poll(max_messages=1, timeout=2)
    a_rs.checkpoint([])
    item = row(aws)
    item[attr] = value
    if attr == "checkpoint":
        item["owner"] = {"S": "a"}
    aws["ddb"].put_item(TableName=TABLE, Item=item)
    fresh, _ = consumer(aws, "a")  # a restart of the same consumer reads the row again
    with pytest.raises(LeaseTableError, match=match):
        fresh.poll(max_messages=10, timeout=1)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["owner", "counter", "checkpoint", "parents", "pending_keys", "x"]),
        st.one_of(
            st.dictionaries(st.sampled_from(["S", "N", "L"]), st.text(max_size=30), max_size=2),
            st.dictionaries(
                st.just("L"), st.lists(st.fixed_dictionaries({"S": st.text()}), max_size=3)
            ),
            st.text(max_size=5),
        ),
    )
)
def test_parse_row_property_any_item_parses_or_fails_typed(item: dict[str, Any]) -> None:
    try:
        lease = parse_row("shardId-000000000000", item)
    except LeaseTableError:
        return
    assert lease.counter >= 0


# ---------------------------------------------------------------- balance and happy path


def test_leases_split_between_consumers_and_a_graceful_close_hands_them_over(
    moto_url: str, helpers: Any
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_url)
    kinesis.create_stream(StreamName="lease-s", ShardCount=4)
    kinesis.get_waiter("stream_exists").wait(
        StreamName="lease-s", WaiterConfig={"Delay": 0.1, "MaxAttempts": 50}
    )
    ddb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_url)
    helpers.create_lease_table(ddb, TABLE)
    aws = {"kinesis": kinesis, "ddb": ddb, "s3": boto3.client("s3", endpoint_url=moto_url)}
    aws["s3"].create_bucket(Bucket="lease-b")
    a, _ = consumer(aws, "a")
    b, _ = consumer(aws, "b")
    b.leases.heartbeat()  # b is alive before a balances
    a.rebalance()
    b.rebalance()
    assert len(a.leases.owned) == 2
    assert len(b.leases.owned) == 2
    assert not set(a.leases.owned) & set(b.leases.owned)
    a.close()  # graceful: leases given back at once
    b.rebalance()
    assert len(b.leases.owned) == 4


def test_lease_options_validated_at_start_naming_the_setting(moto_url: str, tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "stream": "s",
        "bucket": "bucket-x",
        "region": REGION,
        "endpoint_url": moto_url,
        "data_dir": tmp_path,
    }
    with pytest.raises(ValueError, match="consumer: required with lease_table"):
        open_backend("aws", **base, lease_table="t-leases")
    with pytest.raises(ValueError, match="lease_duration"):
        open_backend("aws", **base, lease_table="t-leases", consumer="c1", lease_duration=0.5)
    with pytest.raises(TypeError, match="lease_duration"):
        open_backend("aws", **base, lease_table="t-leases", consumer="c1", lease_duration="10")
    with pytest.raises(ValueError, match="lease_table"):
        open_backend("aws", **base, lease_table="x", consumer="c1")
    with pytest.raises(ValueError, match="lease_table: needs sink='s3'"):
        open_backend(
            "aws", **base, lease_table="t-leases", consumer="c1", sink="firehose",
            delivery_stream="d",
        )  # fmt: skip
    rs, store = open_backend("aws", **base, lease_table="t-leases", consumer="c1")
    assert isinstance(rs, LeasedKinesisStream)
    _OPEN.append(rs)
    assert isinstance(store, LeaseFencedStore)
    assert json.dumps(rs.leases.lease_duration) == "10.0"


def test_resharding_children_are_leased_only_after_the_parent_reaches_shard_end(
    aws: dict[str, Any],
) -> None:
    """A split closes the parent: once its records are stored its lease is checkpointed
    SHARD_END and given back, and only then are the children leased (per-key order).

    moto gaps (5.2.5): records published after the split still land in the closed parent (its
    EndingSequenceNumber grows), so this test publishes before the split only; and GetRecords on
    a closed, drained shard never returns a null NextShardIterator, so the end is detected by the
    checkpoint reaching the shard's EndingSequenceNumber (also true on Kinesis)."""
    kinesis = aws["kinesis"]
    rs, _ = consumer(aws, "a", duration=4.0)  # balances every second
    kinesis.put_records(
        StreamName="lease-s", Records=[{"Data": d, "PartitionKey": "k"} for d in (b"b0", b"b1")]
    )
    kinesis.update_shard_count(
        StreamName="lease-s", TargetShardCount=2, ScalingType="UNIFORM_SCALING"
    )
    got: list[bytes] = []
    children_seen_while_parent_open = False
    for _ in range(40):
        msgs = rs.poll(max_messages=10, timeout=0.3)
        got += [m.data for m in msgs]
        rs.checkpoint(msgs)
        rows = rs.leases.rows()
        parent = rows["shardId-000000000000"]
        kids = [r for sid, r in rows.items() if sid != "shardId-000000000000"]
        if parent.checkpoint != "SHARD_END" and any(k.owner for k in kids):
            children_seen_while_parent_open = True
        if parent.checkpoint == "SHARD_END" and kids and all(k.owner == "a" for k in kids):
            break
    assert got == [b"b0", b"b1"]
    assert not children_seen_while_parent_open
    assert parent.checkpoint == "SHARD_END"
    assert parent.owner is None  # given back once drained
    assert len(kids) == 2
    assert all(k.parents == ("shardId-000000000000",) for k in kids)
    assert all(k.owner == "a" for k in kids)


def test_intent_never_rolls_forward_past_an_undecided_v2_message(
    aws: dict[str, Any], env: Any
) -> None:
    """The engine holds the records of an incomplete v2 batch (not stored, not checkpointed):
    a write intent stops before the first of them, so a successor re-reads it (never lost)."""
    publish(env, aws, 8)
    rs, store = consumer(aws, "a")
    polled = rs.poll(max_messages=50, timeout=2)
    rs.held = lambda: [polled[5], polled[6]]  # what IngestEngine.held_messages would say
    store.put("accepted/c/000000000001-0123456789abcdef", b"x")
    assert row(aws)["pending_seq"]["S"] == polled[4].position
    rs.checkpoint(polled[:5])  # the engine checkpoints the decided prefix only
    assert row(aws)["checkpoint"]["S"] == polled[4].position
    rs.rebalance()  # un-checkpointed records keep their shard
    assert set(rs.leases.owned) == {"shardId-000000000000"}


def test_cli_refuses_bad_scale_out_flags_naming_them(
    moto_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``saip ingest run`` fails at start-up, exit 1, one line naming the setting."""
    from saip.cli import main

    base = ["--data-dir", str(tmp_path), "ingest", "run", "--source", "stream", "--backend"]
    base += ["aws", "--endpoint-url", moto_url, "--region", REGION, "--stream", "s"]
    base += ["--bucket", "bucket-x", "--lease-table", "t-leases"]
    assert main(base) == 1
    assert "consumer: required with lease_table" in capsys.readouterr().err
    assert main([*base, "--consumer-name", "c1", "--lease-duration", "0.5"]) == 1
    assert "lease_duration" in capsys.readouterr().err
    assert main([*base, "--consumer-name", "bad name"]) == 1
    assert "consumer" in capsys.readouterr().err


@pytest.mark.parametrize("next_batch_reads_the_shard", [True, False])
def test_crash_in_the_next_batch_never_rereads_a_stored_uncheckpointed_batch(
    aws: dict[str, Any], env: Any, tmp_path: Path, next_batch_reads_the_shard: bool
) -> None:
    """A stores batch 1 but may not checkpoint it (the engine checkpoints only up to the first
    held v2 message, of any shard), then dies between batch 2's write intent and its object.
    Batch 2's intent must not hide batch 1's: B rolls forward past batch 1 and reads only what
    was never stored (before the fix B re-read and stored batch 1's records a second time)."""
    publish(env, aws, 20)
    a_rs, a_store = consumer(aws, "a")
    first = a_rs.poll(max_messages=10, timeout=2)
    assert len(first) == 10
    eng = engine(env, a_store, tmp_path / "a")
    eng.process_and_commit(first)  # durable; not checkpointed (held v2 records elsewhere)
    if next_batch_reads_the_shard:  # batch 2 has newer records of the shard
        assert len(a_rs.poll(max_messages=10, timeout=2)) == 10
    # batch 2's accepted write intent, then SIGKILL before the object is written
    a_rs.before_put("accepted/deadbeef/000000000002-0123456789abcdef")
    eng.state.close()

    successor_stores_the_rest(aws, env, tmp_path, after=first[-1].position, rest=10, total=20)


def test_an_owner_roll_forward_leaves_no_intent_behind(
    aws: dict[str, Any], env: Any, tmp_path: Path
) -> None:
    """After the owner settled a stored batch's intent itself, later batches that carry no newer
    record of the shard record no intent at or below the checkpoint (a checkpoint that is not
    newer would never clear it: a stale intent left in the row)."""
    publish(env, aws, 10)
    rs, store = consumer(aws, "a")
    polled = rs.poll(max_messages=10, timeout=2)
    eng = engine(env, store, tmp_path / "a")
    eng.process_and_commit(polled)  # stored, not checkpointed
    store.put("accepted/c/000000000002-0123456789abcdef", b"x")  # batch 2: settles batch 1
    item = row(aws)
    assert item["checkpoint"]["S"] == polled[-1].position
    assert "pending_keys" not in item
    store.put("accepted/c/000000000003-0123456789abcdef", b"y")  # batch 3: nothing to intend
    assert "pending_keys" not in row(aws)
    rs.checkpoint(polled)  # the engine's own (no longer newer) checkpoint
    eng.state.close()
    item = row(aws)
    assert item["checkpoint"]["S"] == polled[-1].position
    assert "pending_keys" not in item
    assert not rs._in_flight
