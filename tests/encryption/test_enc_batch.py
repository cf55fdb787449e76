"""Epoch records and the bound-context batch API (``enc.bind(ctx)``: seal, open, batches)."""

from __future__ import annotations

import pytest
from saip_encryption import DataKeyCache, DecryptionError, EnvelopeEncryptor, wire
from saip_encryption.providers.local import LocalKeyProvider

CTX = {"dataset": "digits", "tenant": "t1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_batch_round_trip_and_interop(local: LocalKeyProvider) -> None:
    enc = EnvelopeEncryptor(local)
    sealer = enc.bind(CTX)
    records = [bytes([i]) * i for i in range(70)]
    blobs = sealer.seal_many(records)
    assert sealer.open_many(blobs) == records
    assert [enc.decrypt(b, context=CTX) for b in blobs] == records  # same format as encrypt()
    single = enc.encrypt(b"one", context=CTX)
    other = EnvelopeEncryptor(local).bind(dict(CTX))
    assert other.open_many([*blobs[:3], single]) == [*records[:3], b"one"]
    assert other.open(sealer.seal(b"two")) == b"two"
    assert sealer.seal_many([]) == []
    assert sealer.open_many([]) == []
    assert sealer.context == CTX
    heads = {wire.parse_header(b).message_id for b in blobs}
    assert len(heads) == 1  # one epoch
    nonces = {b[wire.parse_header(b).payload_offset :][:12] for b in blobs}
    assert len(nonces) == len(blobs)


def test_one_random_call_per_batch(local: LocalKeyProvider) -> None:
    enc = EnvelopeEncryptor(local)
    calls: list[int] = []
    real = enc._rng

    def counting(n: int) -> bytes:
        calls.append(n)
        return real(n)

    enc._rng = counting
    sealer = enc.bind(CTX)
    sealer.seal_many([b"x"] * 64)  # first batch: epoch ID + nonces
    calls.clear()
    sealer.seal_many([b"x"] * 64)
    assert calls == [12 * 64]


def test_batch_is_all_or_nothing_and_context_bound(local: LocalKeyProvider) -> None:
    enc = EnvelopeEncryptor(local)
    blobs = enc.bind(CTX).seal_many([b"a", b"b", b"c"])
    bad = bytearray(blobs[1])
    bad[-1] ^= 1
    with pytest.raises(DecryptionError):
        enc.bind(CTX).open_many([blobs[0], bytes(bad), blobs[2]])
    with pytest.raises(DecryptionError):
        enc.bind({**CTX, "tenant": "t2"}).open_many(blobs)
    with pytest.raises(DecryptionError):
        enc.bind(CTX).open_many([blobs[0], blobs[1][:-20]])
    with pytest.raises(TypeError):
        enc.bind(CTX).seal_many(["text"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        enc.bind([("a", "b")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        enc.bind({"a": 1})  # type: ignore[dict-item]


def test_epoch_caps_messages_bytes_and_age(local: LocalKeyProvider, counting_cls) -> None:  # type: ignore[no-untyped-def]
    provider = counting_cls(local)
    clock = Clock()
    enc = EnvelopeEncryptor(
        provider, cache=DataKeyCache(max_messages=10, max_bytes=1000, max_age=60, clock=clock)
    )
    sealer = enc.bind(CTX)
    epochs = {wire.parse_header(b).message_id for b in sealer.seal_many([b"x"] * 25)}
    assert len(epochs) >= 3  # a batch larger than the cap spans several epochs
    before = provider.generated
    sealer.seal(b"y" * 600)
    sealer.seal(b"y" * 600)  # 1200 bytes > 1000: new epoch
    assert provider.generated >= before + 1
    n = provider.generated
    sealer.seal(b"z")
    clock.now += 61
    sealer.seal(b"z")
    assert provider.generated == n + 1  # aged out


def test_decrypt_side_reverifies_after_max_age(local: LocalKeyProvider, counting_cls) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    writer = EnvelopeEncryptor(local)
    blobs = writer.bind(CTX).seal_many([b"a", b"b"])
    provider = counting_cls(local)
    reader = EnvelopeEncryptor(provider, cache=DataKeyCache(max_age=30, clock=clock))
    assert reader.decrypt(blobs[0], context=CTX) == b"a"
    assert reader.decrypt(blobs[1], context=CTX) == b"b"
    assert reader.bind(CTX).open_many(blobs) == [b"a", b"b"]
    assert provider.unwrapped == 1  # one unwrap per epoch
    clock.now += 31
    assert reader.decrypt(blobs[0], context=CTX) == b"a"
    assert provider.unwrapped == 2
    no_cache = EnvelopeEncryptor(counting_cls(local), cache=False)
    for b in blobs:
        no_cache.decrypt(b, context=CTX)
    assert no_cache.providers[0].unwrapped == 2  # type: ignore[attr-defined]
