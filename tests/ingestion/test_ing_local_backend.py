"""The local backend (segment files + object directory), the file source and the factory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from saip_ingestion.backends import open_backend
from saip_ingestion.backends.base import ObjectStore, RecordStream
from saip_ingestion.backends.local import FileRecordStream, LocalObjectStore, LocalStream
from saip_ingestion.errors import IngestError
from saip_ingestion.quarantine import QuarantineStore


def test_factory_opens_local_and_rejects_unknown(tmp_path: Path) -> None:
    stream, store = open_backend("local", data_dir=tmp_path)
    assert isinstance(stream, RecordStream)
    assert isinstance(store, ObjectStore)
    with pytest.raises(ValueError, match="unknown ingestion backend"):
        open_backend("ftp", data_dir=tmp_path)
    with pytest.raises(ValueError, match="endpoint_url"):
        open_backend("local", data_dir=tmp_path, endpoint_url="http://x")


def test_stream_publish_poll_checkpoint_resume(tmp_path: Path) -> None:
    s = LocalStream(tmp_path / "s", segment_bytes=1024)
    payloads = [f"record-{i}".encode() * 10 for i in range(40)]  # spans several segments
    s.publish(payloads[:20], partition_key="p")
    s.publish(payloads[20:], partition_key="p")
    assert len(list((tmp_path / "s").glob("segment-*.log"))) > 1
    first = s.poll(max_messages=15, timeout=0)
    assert [m.data for m in first] == payloads[:15]
    s.checkpoint(first)
    more = s.poll(max_messages=10, timeout=0)  # read but not checkpointed
    assert [m.data for m in more] == payloads[15:25]
    again = LocalStream(tmp_path / "s", segment_bytes=1024)  # restart: from the checkpoint
    rest = again.poll(max_messages=100, timeout=0)
    assert [m.data for m in rest] == payloads[15:]
    assert again.poll(max_messages=10, timeout=0) == []


def test_torn_tail_is_not_delivered_and_is_cut_by_the_next_publisher(tmp_path: Path) -> None:
    s = LocalStream(tmp_path / "s")
    s.publish([b"one", b"two"], partition_key="p")
    seg = next((tmp_path / "s").glob("segment-*.log"))
    with seg.open("ab") as fh:
        fh.write(b"\x10\x00\x00\x00\x00\x00\x00\x00par")  # a frame cut short by a crash
    assert [m.data for m in LocalStream(tmp_path / "s").poll(max_messages=9, timeout=0)] == [
        b"one",
        b"two",
    ]
    s.publish([b"three"], partition_key="p")
    got = LocalStream(tmp_path / "s").poll(max_messages=9, timeout=0)
    assert [m.data for m in got] == [b"one", b"two", b"three"]


def test_corrupt_frame_is_detected(tmp_path: Path) -> None:
    from saip_ingestion.errors import IngestError

    s = LocalStream(tmp_path / "s")
    s.publish([b"payload-bytes"], partition_key="p")
    seg = next((tmp_path / "s").glob("segment-*.log"))
    raw = bytearray(seg.read_bytes())
    raw[-1] ^= 1
    seg.write_bytes(bytes(raw))
    with pytest.raises(IngestError, match="corrupt frame"):
        LocalStream(tmp_path / "s").poll(max_messages=1, timeout=0)


def test_object_store_is_idempotent_and_rejects_unsafe_keys(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "o")
    store.put("a/b/c", b"first", metadata={"k": "v"})
    store.put("a/b/c", b"first")  # same bytes again: no-op
    with pytest.raises(IngestError, match="different content"):
        store.put("a/b/c", b"second")  # never overwritten
    assert store.get("a/b/c") == b"first"
    assert store.metadata("a/b/c") == {"k": "v"}
    store.put("a/x", b"1")
    assert list(store.list("a/")) == ["a/b/c", "a/x"]
    assert store.exists("a/x")
    assert not store.exists("zz")
    with pytest.raises(KeyError):
        store.get("missing")
    for bad in ("../escape", "a//b", "/abs", "a/../b", "", "a/.hidden"):
        with pytest.raises(ValueError, match="key"):
            store.put(bad, b"x")
    assert not list(tmp_path.glob("*.tmp*"))


def test_file_source_oversized_lines_and_checkpoint(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"a":1}\n' + b"x" * 5000 + b"\n\n" + b'{"b":2}\r\n')
    fs = FileRecordStream(src, checkpoint_dir=tmp_path / "ck", max_line_bytes=100)
    msgs = fs.poll(max_messages=10, timeout=0)
    assert [len(m.data) > 100 for m in msgs] == [False, True, False, False]
    assert msgs[2].data == b""  # a blank line is delivered (counted, then quarantined)
    assert msgs[3].data == b'{"b":2}'
    fs.checkpoint(msgs[:3])
    fs.close()
    again = FileRecordStream(src, checkpoint_dir=tmp_path / "ck", max_line_bytes=100)
    assert [m.data for m in again.poll(max_messages=10, timeout=0)] == [b'{"b":2}']
    again.close()


def test_quarantine_entries_are_encrypted_and_tamper_evident(
    tmp_path: Path, encryptor: Any
) -> None:
    from saip_ingestion.errors import QuarantineError

    store = LocalObjectStore(tmp_path / "o")
    qs = QuarantineStore(store, encryptor)
    raw = b'{"secret":"patient-4711"}'
    kwargs: dict[str, Any] = {
        "raw": raw, "reason": "schema_invalid", "detail": "d", "producer_id": None,
        "record_id": None, "received_at": 1, "partition": "p", "position": "0",
    }  # fmt: skip
    qid = qs.put(**kwargs)
    assert qs.put(**kwargs) == qid  # idempotent: same key, stored once
    keys = list(store.list("quarantine/"))
    assert keys == [f"quarantine/schema_invalid/{qid}"]
    blob = store.get(keys[0])
    assert b"patient-4711" not in blob
    assert qs.get(qid).raw == raw
    # a tampered entry gives one opaque error, never plaintext
    path = tmp_path / "o" / "quarantine" / "schema_invalid" / qid
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(QuarantineError, match="cannot be read"):
        qs.get(qid)
    with pytest.raises(ValueError, match="reason"):
        qs.put(**{**kwargs, "reason": "because"})
    # the ciphertext is bound to its key: a copy under another key does not decrypt
    other = tmp_path / "o" / "quarantine" / "malformed_json"
    other.mkdir(parents=True)
    (other / ("0" * 32)).write_bytes(json.dumps({}).encode())
    with pytest.raises(QuarantineError):
        qs.get("0" * 32)


def test_file_source_line_longer_than_the_read_chunk(tmp_path: Path) -> None:
    src = tmp_path / "big.jsonl"
    src.write_bytes(b'{"a":1}\n' + b"y" * (3 << 20) + b'\n{"b":2}')  # last line: no newline
    fs = FileRecordStream(src, checkpoint_dir=tmp_path / "ck", max_line_bytes=1000)
    msgs = fs.poll(max_messages=10, timeout=0)
    assert [len(m.data) for m in msgs] == [7, 1001, 7]
    assert int(msgs[-1].position) == src.stat().st_size
    fs.close()
