"""Data-key cache: one provider call per batch, age/message/byte caps, zeroing on eviction."""

from __future__ import annotations

import pytest
from saip_encryption import DataKeyCache, EnvelopeEncryptor, wire
from saip_encryption.providers.local import LocalKeyProvider

CTX = {"dataset": "d"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stream_of_records_costs_one_kms_call_per_batch(local, counting_cls) -> None:
    provider = counting_cls(local)
    enc = EnvelopeEncryptor(provider, cache=DataKeyCache(max_messages=100))
    blobs = [enc.encrypt(f"rec {i}".encode(), context=CTX) for i in range(1000)]
    assert provider.generated == 10
    dec_provider = counting_cls(LocalKeyProvider(local.uri[len("local:") :]))
    dec = EnvelopeEncryptor(dec_provider, cache=DataKeyCache(max_messages=1000))
    assert [dec.decrypt(b, context=CTX) for b in blobs] == [
        f"rec {i}".encode() for i in range(1000)
    ]
    assert dec_provider.unwrapped == 10


def test_without_cache_every_record_calls_the_provider(local, counting_cls) -> None:
    provider = counting_cls(local)
    enc = EnvelopeEncryptor(provider, cache=False)
    for _ in range(5):
        enc.decrypt(enc.encrypt(b"x", context=CTX), context=CTX)
    assert provider.generated == 5
    assert provider.unwrapped == 5


def test_contexts_get_separate_data_keys(local, counting_cls) -> None:
    provider = counting_cls(local)
    enc = EnvelopeEncryptor(provider)
    for i in range(6):
        enc.encrypt(b"x", context={"tenant": str(i % 3)})
    assert provider.generated == 3


def test_max_age(local, counting_cls) -> None:
    clock = Clock()
    provider = counting_cls(local)
    enc = EnvelopeEncryptor(provider, cache=DataKeyCache(max_age=10, clock=clock))
    enc.encrypt(b"x", context=CTX)
    clock.now += 9.9
    enc.encrypt(b"x", context=CTX)
    assert provider.generated == 1
    clock.now += 0.1
    enc.encrypt(b"x", context=CTX)
    assert provider.generated == 2


def test_max_bytes(local, counting_cls) -> None:
    provider = counting_cls(local)
    enc = EnvelopeEncryptor(provider, cache=DataKeyCache(max_bytes=100))
    for _ in range(4):
        enc.encrypt(b"x" * 50, context=CTX)  # 2 records fit per data key
    assert provider.generated == 2


def test_eviction_zeroes_the_data_key() -> None:
    cache: DataKeyCache[None] = DataKeyCache(max_messages=2, max_entries=1)
    key = bytearray(b"\x11" * 32)
    prk = wire.HmacKey(b"k")
    cache.put("a", data_key=key, prk=prk, extra=None, nbytes=1)
    assert cache.use("a", 1) is not None
    assert cache.use("a", 1) is None  # third message exceeds max_messages=2
    assert key == bytearray(32)
    assert cache.stats.evictions == 1
    other = bytearray(b"\x22" * 32)
    cache.put("b", data_key=other, prk=prk, extra=None, nbytes=1)
    third = bytearray(b"\x33" * 32)
    cache.put("c", data_key=third, prk=prk, extra=None, nbytes=1)  # max_entries=1 → b evicted
    assert other == bytearray(32)
    cache.clear()
    assert third == bytearray(32)
    assert len(cache) == 0


def test_uncached_data_keys_are_zeroed_after_use(local) -> None:
    seen: list[bytearray] = []
    real = local.generate_data_key

    def spy(*, context):  # type: ignore[no-untyped-def]
        key, wrapped = real(context=context)
        seen.append(key)
        return key, wrapped

    local.generate_data_key = spy
    EnvelopeEncryptor(local, cache=False).encrypt(b"x", context=CTX)
    assert seen == [bytearray(32)]


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_age": 0}, ValueError),
        ({"max_age": -1}, ValueError),
        ({"max_age": "1"}, TypeError),
        ({"max_messages": 0}, ValueError),
        ({"max_messages": 1.0}, TypeError),
        ({"max_bytes": 0}, ValueError),
        ({"max_entries": True}, TypeError),
        ({"clock": 3}, TypeError),
    ],
)
def test_cache_caps_are_validated(kwargs, exc) -> None:
    with pytest.raises(exc):
        DataKeyCache(**kwargs)


def test_close_zeroes_both_caches(local) -> None:
    seen: list[bytearray] = []
    real_gen, real_unwrap = local.generate_data_key, local.unwrap

    def gen(*, context):  # type: ignore[no-untyped-def]
        key, wrapped = real_gen(context=context)
        seen.append(key)
        return key, wrapped

    def unwrap(wrapped, *, context):  # type: ignore[no-untyped-def]
        key = real_unwrap(wrapped, context=context)
        seen.append(key)
        return key

    local.generate_data_key, local.unwrap = gen, unwrap
    with EnvelopeEncryptor(local) as enc:
        blob = enc.encrypt(b"x", context=CTX)
        enc.decrypt(blob, context=CTX)
        assert len(seen) == 2
        assert seen[0] != bytearray(32)  # the encrypt side caches its data key
        assert seen[1] == bytearray(32)  # the decrypt side keeps only the epoch key
    assert seen == [bytearray(32), bytearray(32)]
    enc.decrypt(blob, context=CTX)  # verified epochs were forgotten: unwrapped again
    assert len(seen) == 3
