"""Issue #12 item 1 / #10: the engine and quarantine use the encryptor's batch API.

Hostile first: a tampered, dropped, reordered or foreign record in a sealed batch object is
refused and the failing records are named; then the happy path (one ``seal_many`` per batch,
one ``open_many`` per read) and the readability of objects written in the earlier formats.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.engine import IngestEngine, iter_accepted
from saip_ingestion.errors import IngestError, QuarantineError
from saip_ingestion.quarantine import QuarantineStore
from saip_ingestion.sealed import MAGIC, SealedBatchError, content_id, open_lines, seal_lines

_U32 = struct.Struct(">I")
Env = Any


def _ctx(key: str) -> dict[str, str]:
    return {"saip:purpose": "ingest-accepted", "saip:object": key}


def _frames(blob: bytes) -> tuple[bytes, list[bytes]]:
    """(common prefix, suffixes) of a sealed batch — a test-side parser of the documented layout."""
    pos = len(MAGIC)
    (plen,) = _U32.unpack_from(blob, pos)
    prefix = blob[pos + 4 : pos + 4 + plen]
    pos += 4 + plen
    (count,) = _U32.unpack_from(blob, pos)
    pos += 4
    out = []
    for _ in range(count):
        (n,) = _U32.unpack_from(blob, pos)
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    return prefix, out


def _frame(prefix: bytes, suffixes: list[bytes]) -> bytes:
    parts = [MAGIC, _U32.pack(len(prefix)), prefix, _U32.pack(len(suffixes))]
    for s in suffixes:
        parts += [_U32.pack(len(s)), s]
    return b"".join(parts)


def _ingest_three(env: Env) -> str:
    p = env.producer("alpha")
    recs = p.sign([p.record(label=i) for i in range(3)])
    assert [o for o, _ in env.ingest([env.line(r) for r in recs])] == ["accepted"] * 3
    [key] = env.store.list("accepted/")
    return key


def _rewrite(env: Env, key: str, blob: bytes) -> None:
    env.store._path(key).write_bytes(blob)  # an attacker with write access to the store


# ------------------------------------------------------------------------------- hostile


def test_a_flipped_bit_in_one_record_is_refused_and_named(env: Env) -> None:
    key = _ingest_three(env)
    prefix, sfx = _frames(env.store.get(key))
    sfx[1] = sfx[1][:-1] + bytes([sfx[1][-1] ^ 1])
    _rewrite(env, key, _frame(prefix, sfx))
    with pytest.raises(IngestError, match=r"1 of 3 records do not open \(first: 1;"):
        iter_accepted(env.store, env.encryptor)
    with pytest.raises(SealedBatchError) as info:
        open_lines(env.encryptor, _ctx(key), env.store.get(key), digest=None)
    assert info.value.bad == [1]


@pytest.mark.parametrize("edit", ["drop", "repeat", "swap"])
def test_dropped_repeated_or_reordered_records_are_refused(env: Env, edit: str) -> None:
    key = _ingest_three(env)
    prefix, sfx = _frames(env.store.get(key))
    sfx = {"drop": sfx[:2], "repeat": [*sfx, sfx[0]], "swap": [sfx[1], sfx[0], sfx[2]]}[edit]
    _rewrite(env, key, _frame(prefix, sfx))
    with pytest.raises(IngestError, match="content digest differs"):
        iter_accepted(env.store, env.encryptor)


def test_a_record_moved_from_another_object_does_not_open(env: Env) -> None:
    key = _ingest_three(env)
    other = seal_lines(env.encryptor, _ctx("accepted/x/000000000009-0000000000000000"), [b"{}"])
    prefix, sfx = _frames(env.store.get(key))
    oprefix, osfx = _frames(other)
    moved = (oprefix + osfx[0])[len(prefix) :] if (oprefix + osfx[0]).startswith(prefix) else None
    if moved is None:  # another epoch header: rebuild the object without a shared prefix
        full = [prefix + s for s in sfx]
        blob = _frame(b"", [full[0], oprefix + osfx[0], full[2]])
    else:
        blob = _frame(prefix, [sfx[0], moved, sfx[2]])
    _rewrite(env, key, blob)
    with pytest.raises(IngestError, match=r"first: 1;"):
        iter_accepted(env.store, env.encryptor)


@pytest.mark.parametrize(
    "blob",
    [
        MAGIC,
        MAGIC + _U32.pack(9) + b"abc",
        MAGIC + _U32.pack(0) + _U32.pack(0),
        MAGIC + _U32.pack(0) + _U32.pack(2**31) + _U32.pack(1) + b"x",
        MAGIC + _U32.pack(0) + _U32.pack(1) + _U32.pack(50) + b"x",
        MAGIC + _U32.pack(0) + _U32.pack(1) + _U32.pack(1) + b"xy",
    ],
)
def test_malformed_framing_is_a_typed_error(env: Env, blob: bytes) -> None:
    with pytest.raises(SealedBatchError, match="malformed"):
        open_lines(env.encryptor, _ctx("k"), blob, digest=None)


def test_a_tampered_quarantine_entry_is_refused_and_named(env: Env) -> None:
    env.ingest([b"not json", b"{also not", b"[]"])
    [key] = env.store.list("quarantine-batches/")
    prefix, sfx = _frames(env.store.get(key))
    sfx[2] = sfx[2][:-1] + bytes([sfx[2][-1] ^ 0x80])
    _rewrite(env, key, _frame(prefix, sfx))
    with pytest.raises(QuarantineError, match=r"first: 2;"):
        list(QuarantineStore(env.store, env.encryptor).entries())


def test_an_encryptor_without_the_batch_api_is_refused_at_construction(env: Env) -> None:
    class OnlyWholeObjects:  # encrypt/decrypt but no bind
        def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
            return plaintext

        def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
            return ciphertext

    with pytest.raises(TypeError, match=r"protocols\.Encryptor"):
        IngestEngine(
            store=env.store,
            encryptor=OnlyWholeObjects(),
            registry=env.registry,
            state_dir=env.tmp / "state",
        )
    with pytest.raises(TypeError, match=r"protocols\.Encryptor"):
        QuarantineStore(env.store, OnlyWholeObjects())  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- happy path


class CountingEncryptor:
    """TEST-ONLY spy around the real encryptor: counts calls of the batch API."""

    def __init__(self, inner: Any, *, fail_open_many: int = 0) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}
        self.fail_open_many = fail_open_many

    def _count(self, name: str, n: int = 1) -> None:
        self.calls[name] = self.calls.get(name, 0) + n

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        self._count("encrypt")
        return bytes(self.inner.encrypt(plaintext, context=context))

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        self._count("decrypt")
        return bytes(self.inner.decrypt(ciphertext, context=context))

    def bind(self, context: Mapping[str, str]) -> Any:
        spy, sealer = self, self.inner.bind(context)

        class Bound:
            def seal(self, pt: bytes) -> bytes:
                spy._count("seal")
                return bytes(sealer.seal(pt))

            def open(self, ct: bytes) -> bytes:
                spy._count("open")
                return bytes(sealer.open(ct))

            def seal_many(self, pts: Sequence[bytes]) -> list[bytes]:
                spy._count("seal_many")
                return list(sealer.seal_many(pts))

            def open_many(self, cts: Sequence[bytes]) -> list[bytes]:
                spy._count("open_many")
                if spy.fail_open_many:
                    spy.fail_open_many -= 1
                    raise RuntimeError("transient key-provider failure (test)")
                return list(sealer.open_many(cts))

        self._count("bind")
        return Bound()


def test_one_seal_many_per_batch_and_one_open_many_per_read(env: Env) -> None:
    spy = CountingEncryptor(env.encryptor)
    env.encryptor = spy
    p = env.producer("alpha")
    recs = p.sign([p.record(label=i % 10) for i in range(50)])
    lines = [env.line(r) for r in recs] + [b"junk", b"{}"]
    outcomes = env.ingest(lines)
    assert [o for o, _ in outcomes].count("accepted") == 50
    assert spy.calls == {"bind": 2, "seal_many": 2}  # accepted object + quarantine object
    stored = iter_accepted(env.store, spy)
    assert sorted(e["record_id"] for e in stored) == sorted(r["record_id"] for r in recs)
    assert len(list(QuarantineStore(env.store, spy).entries())) == 2
    assert spy.calls["open_many"] == 2
    assert not {"open", "decrypt", "encrypt"} & set(spy.calls)


def test_a_transient_open_many_failure_falls_back_per_record(env: Env) -> None:
    _ingest_three(env)
    spy = CountingEncryptor(env.encryptor, fail_open_many=1)
    assert len(iter_accepted(env.store, spy)) == 3
    assert spy.calls["open"] == 3


def test_the_common_prefix_is_stored_once(env: Env) -> None:
    lines = [json.dumps({"i": i}).encode() for i in range(100)]
    blob = seal_lines(env.encryptor, _ctx("k"), lines)
    separate = env.encryptor.bind(_ctx("k")).seal_many(lines)
    assert len(blob) < sum(len(c) for c in separate)
    assert open_lines(env.encryptor, _ctx("k"), blob, digest=content_id(lines)) == lines


def test_whole_object_batches_of_the_earlier_format_stay_readable(env: Env) -> None:
    entry = {
        "record_id": "r1",
        "producer_id": "alpha",
        "seq": 0,
        "ts": 1,
        "leaf": "00",
        "audit": [],
    }
    plain = json.dumps(entry).encode() + b"\n"
    key = "accepted/c/000000000001-" + content_id([plain[:-1]])
    env.store.put(key, env.encryptor.encrypt(plain, context=_ctx(key)))
    assert iter_accepted(env.store, env.encryptor) == [entry]
    doc = {"format": "saip.quarantine.v1", "qid": "0" * 32, "reason": "malformed_json",
           "detail": "d", "producer_id": None, "record_id": None, "received_at": 1,
           "partition": "p", "position": "1", "raw": "eA=="}  # fmt: skip
    qplain = json.dumps(doc).encode() + b"\n"
    qkey = "quarantine-batches/c/000000000001-" + content_id([qplain[:-1]])
    qctx = {"saip:purpose": "ingest-quarantine", "saip:object": qkey}
    env.store.put(qkey, env.encryptor.encrypt(qplain, context=qctx))
    [e] = QuarantineStore(env.store, env.encryptor).entries()
    assert (e.qid, e.raw) == ("0" * 32, b"x")


@given(tail=st.binary(max_size=300))
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_bytes_after_the_magic_give_the_typed_error(encryptor: Any, tail: bytes) -> None:
    with pytest.raises(SealedBatchError):
        open_lines(encryptor, _ctx("k"), MAGIC + tail, digest=None)


@given(data=st.data())
@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_mutation_of_a_sealed_batch_is_refused(encryptor: Any, data: st.DataObject) -> None:
    lines = [b'{"a":1}', b'{"b":2}', b'{"c":3}']
    blob = seal_lines(encryptor, _ctx("k"), lines)
    i = data.draw(st.integers(0, len(blob) - 1))
    flip = data.draw(st.integers(1, 255))
    bad = blob[:i] + bytes([blob[i] ^ flip]) + blob[i + 1 :]
    try:
        out = open_lines(encryptor, _ctx("k"), bad, digest=content_id(lines))
    except SealedBatchError:
        return
    except Exception:  # a flipped magic byte reads it as the earlier format: the encryptor refuses
        assert not bad.startswith(MAGIC)
        return
    raise AssertionError(f"a flipped byte at {i} was accepted: {out!r}")


# ------------------------------------------------------- issue 12 item 4: compressed batches


def _seal_frames(env: Env, key: str, frames: list[bytes]) -> bytes:
    """A batch object of pre-built plaintext frames, sealed with the real key: what a holder of
    the data key (or a writer bug) could store — decompression must still be bounded."""
    cts = env.encryptor.bind(_ctx(key)).seal_many(frames)
    return _frame(b"", cts)


def test_a_decompression_bomb_is_refused_before_allocation(env: Env) -> None:
    import zstandard
    from saip_ingestion.sealed import MAX_LINE_BYTES

    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (MAX_LINE_BYTES + 1))
    assert len(bomb) < 1024  # ~1 KB that would inflate to > 4 MiB
    blob = _seal_frames(env, "k", [zstandard.ZstdCompressor().compress(b"{}"), bomb])
    with pytest.raises(SealedBatchError, match="above the cap") as info:
        open_lines(env.encryptor, _ctx("k"), blob, digest=None)
    assert info.value.bad == [1]


def test_frames_without_a_declared_size_or_lying_about_it_are_refused(env: Env) -> None:
    import zstandard

    unsized = zstandard.ZstdCompressor(write_content_size=False).compress(b'{"a":1}')
    with pytest.raises(SealedBatchError, match="not declared"):
        open_lines(env.encryptor, _ctx("k"), _seal_frames(env, "k", [unsized]), digest=None)
    sized = bytearray(zstandard.ZstdCompressor().compress(b'{"a":1}'))
    sized[5] ^= 0x01  # the single-byte content size field of this small frame: 7 -> 6
    with pytest.raises(SealedBatchError, match=r"record 0"):
        open_lines(env.encryptor, _ctx("k"), _seal_frames(env, "k", [bytes(sized)]), digest=None)
    with pytest.raises(SealedBatchError, match="not a valid Zstandard frame"):
        open_lines(env.encryptor, _ctx("k"), _seal_frames(env, "k", [b"plain"]), digest=None)


@given(secret=st.binary(min_size=1, max_size=400), other=st.binary(min_size=1, max_size=400))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_records_stored_size_does_not_depend_on_the_other_records(
    encryptor: Any, secret: bytes, other: bytes
) -> None:
    """No compression-ratio side channel across records (CRIME/BREACH): a probe record's stored
    size is the same whatever the other records of the batch hold, even when they repeat it."""
    probe = b'{"probe":"' + secret[:40].hex().encode() + b'"}'
    sizes = []
    for neighbour in (secret, other, probe, probe[: len(probe) // 2]):
        prefix, sfx = _frames(seal_lines(encryptor, _ctx("k"), [neighbour, probe]))
        sizes.append(len(prefix) + len(sfx[1]))  # the probe's whole ciphertext
    assert len(set(sizes)) == 1


def test_batches_are_compressed_and_round_trip(env: Env) -> None:
    p = env.producer("alpha")
    recs = p.sign([p.record(label=i % 10) for i in range(200)])
    env.ingest([env.line(r) for r in recs])
    [key] = env.store.list("accepted/")
    blob = env.store.get(key)
    assert blob.startswith(b"SAIPRB2\n")
    lines = open_lines(env.encryptor, _ctx(key), blob, digest=key.rsplit("-", 1)[1])
    assert len(blob) < 0.75 * sum(len(x) + 1 for x in lines)  # smaller than the plaintext
    assert len(iter_accepted(env.store, env.encryptor)) == 200


_FROZEN = Path(__file__).with_name("data")


def test_frozen_uncompressed_sealed_batches_stay_readable(tmp_path: Path) -> None:
    """Objects written by the SAIPRB1 code (tests/ingestion/data, never regenerated): an accepted
    batch and a quarantine batch, under a TEST-ONLY local key committed beside them (git does not
    keep file modes, and the local provider refuses a group/world-readable key: use a 0600 copy)."""
    import shutil

    from saip_encryption import EnvelopeEncryptor, from_uri

    key = tmp_path / "frozen-test-only.key"
    shutil.copyfile(_FROZEN / "frozen-test-only.key", key)
    key.chmod(0o600)
    enc = EnvelopeEncryptor([from_uri(f"local:{key}")])
    meta = json.loads((_FROZEN / "saiprb1.json").read_text())
    akey, qkey = meta["accepted_key"], meta["quarantine_key"]
    ablob = (_FROZEN / "saiprb1-accepted.bin").read_bytes()
    assert ablob.startswith(b"SAIPRB1\n")
    lines = open_lines(enc, _ctx(akey), ablob, digest=akey.rsplit("-", 1)[1])
    assert [json.loads(x)["record_id"] for x in lines] == meta["record_ids"]
    qctx = {"saip:purpose": "ingest-quarantine", "saip:object": qkey}
    qlines = open_lines(enc, qctx, (_FROZEN / "saiprb1-quarantine.bin").read_bytes(),
                        digest=qkey.rsplit("-", 1)[1])  # fmt: skip
    assert [json.loads(x)["reason"] for x in qlines] == meta["quarantine_reasons"]
