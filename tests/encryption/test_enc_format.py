"""Wire format of SAIP v2 (v1 still read): layout, key derivation (RFC 5869), golden vectors."""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
import json
import struct
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from saip_encryption import DecryptionError, EnvelopeEncryptor, wire
from saip_encryption.envelope import DEFAULT_KEY_SLOT_CAPACITY

CTX = {"dataset": "digits", "tenant": "acme", "purpose": "training"}


def counter_rng():
    counter = itertools.count()

    def rng(n: int) -> bytes:
        return bytes([next(counter) & 0xFF]) * n

    return rng


def test_hkdf_expand_matches_rfc5869_test_case_1() -> None:
    # RFC 5869 Appendix A.1 (SHA-256)
    ikm = bytes.fromhex("0b" * 22)
    salt = bytes.fromhex("000102030405060708090a0b0c")
    info = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9")
    prk = hmac.digest(salt, ikm, "sha256")
    assert prk.hex() == "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
    okm = wire.hkdf_expand(wire.HmacKey(prk, "sha256"), info, 42, hash_len=32)
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )


def test_hmac_key_equals_stdlib_hmac() -> None:
    for key in (b"", b"k", bytes(64), bytes(range(200))):
        for name in ("sha256", "sha512"):
            for msg in (b"", b"abc", bytes(300)):
                assert wire.HmacKey(key, name).digest(msg) == hmac.digest(key, msg, name)


def test_message_keys_equal_cryptography_hkdf_sha512() -> None:
    data_key = bytes(range(32))
    prefix = wire.pack_prefix(4096, b"\x07" * 32, wire.encode_context(CTX))
    k_msg, commitment = wire.message_keys(wire.hkdf_extract(data_key), prefix)
    okm = HKDF(
        algorithm=hashes.SHA512(),
        length=64,
        salt=b"SAIP-v1 HKDF-Extract",
        info=b"SAIP-v1 AES-256-GCM" + prefix,
    ).derive(data_key)
    assert k_msg + commitment == okm


def test_context_encoding_is_canonical_and_injective() -> None:
    a = wire.encode_context({"b": "1", "a": "2"})
    assert a == wire.encode_context({"a": "2", "b": "1"})
    assert a == b"\x00\x02" + b"\x00\x01a\x00\x012" + b"\x00\x01b\x00\x011"
    assert wire.decode_context(a) == {"a": "2", "b": "1"}
    assert wire.encode_context({"a": "bc"}) != wire.encode_context({"ab": "c"})
    assert wire.encode_context({}) == b"\x00\x00"
    with pytest.raises(ValueError):
        wire.encode_context({"": "x"})
    with pytest.raises(TypeError):
        wire.encode_context({"a": 1})  # type: ignore[dict-item]
    with pytest.raises(wire.MalformedError):  # unsorted keys are not canonical
        wire.decode_context(b"\x00\x02\x00\x01b\x00\x00\x00\x01a\x00\x00")


def _enc(provider, **kwargs) -> EnvelopeEncryptor:  # type: ignore[no-untyped-def]
    enc = EnvelopeEncryptor(provider, **kwargs)
    enc._rng = counter_rng()  # private test hook: deterministic IDs and nonces
    return enc


def test_record_layout_byte_by_byte(static_provider_cls) -> None:
    """SAIP v2 record (suite 2): epoch header A || C || S || K, then nonce || AES-GCM."""
    provider = static_provider_cls()
    enc = _enc(provider, cache=False)
    plaintext = b"hello, envelope"
    blob = enc.encrypt(plaintext, context=CTX)
    ctx = wire.encode_context(CTX)
    epoch_id = b"\x00" * 32
    # A: magic, version, suite, segment size (0 for records), epoch ID, context
    assert blob[:4] == b"SAIP"
    assert blob[4] == 2
    assert blob[5] == 2
    assert struct.unpack(">I", blob[6:10])[0] == 0
    assert blob[10:42] == epoch_id
    assert struct.unpack(">H", blob[42:44])[0] == len(ctx)
    end = 44 + len(ctx)
    assert blob[44:end] == ctx
    # C: commitment = OKM[32:64]
    k_epoch, commitment = wire.message_keys(wire.hkdf_extract(bytes(range(32))), blob[:end])
    assert blob[end : end + 32] == commitment
    # S: unsigned
    pos = end + 32
    assert blob[pos : pos + 2] == b"\x00\x00"
    pos += 2
    # K: one slot, exactly the size it needs
    slot_count, capacity = struct.unpack(">BH", blob[pos : pos + 3])
    assert slot_count == 1
    slot = blob[pos + 3 : pos + 3 + capacity]
    gen, count = struct.unpack(">IB", slot[:5])
    assert (gen, count) == (1, 1)
    edk = (
        b"\x06static" + b"\x00\x0dstatic-key/v1" + b"\x00\x20" + bytes(b ^ 0x5C for b in range(32))
    )
    assert slot[5 : 5 + len(edk)] == edk
    assert capacity == 5 + len(edk) + 4
    assert struct.unpack(">I", slot[-4:])[0] == zlib.crc32(slot[:-4])
    # P: random 96-bit nonce, then one AES-256-GCM ciphertext under the epoch key
    body = blob[pos + 3 + capacity :]
    nonce = body[:12]
    assert nonce == b"\x01" * 12
    assert len(body) == 12 + len(plaintext) + 16
    assert AESGCM(k_epoch).decrypt(nonce, body[12:], None) == plaintext


def test_golden_vectors_lock_the_wire_format(static_provider_cls) -> None:
    """Any change of layout, derivation or nonce scheme changes these digests: bump VERSION."""
    enc = _enc(static_provider_cls(), cache=False, segment_size=64)
    record = enc.encrypt(bytes(range(200)), context=CTX)
    assert hashlib.sha256(record).hexdigest() == GOLDEN_RECORD
    out = io.BytesIO()
    enc2 = _enc(static_provider_cls(), cache=False, stream_segment_size=64)
    enc2.encrypt_stream(io.BytesIO(bytes(range(200))), out, context=CTX)
    assert hashlib.sha256(out.getvalue()).hexdigest() == GOLDEN_STREAM
    assert enc.decrypt(record, context=CTX) == bytes(range(200))
    assert enc.decrypt(out.getvalue(), context=CTX) == bytes(range(200))


GOLDEN_RECORD = "355dbfb8860daa8c2834aadec3a2a8a96d05a9866bee0f43eb375e3264f77a79"
GOLDEN_STREAM = "29838cb3ae044358d14cc9074e72f0d3bfb792b8f539cb4c224751b0ac76c95d"

_DATA = Path(__file__).with_name("data")


@pytest.mark.parametrize("kind", ["record", "artifact"])
def test_frozen_v1_envelopes_still_decrypt(static_provider_cls, kind: str) -> None:
    """Files written by the v1 code (tests/encryption/data, never regenerated) stay readable."""
    ctx = json.loads((_DATA / "v1-context.json").read_text())
    blob = (_DATA / f"v1-static-{kind}.saip").read_bytes()
    plain = (_DATA / f"v1-{kind}.plain").read_bytes()
    assert blob[4] == 1
    enc = EnvelopeEncryptor(static_provider_cls())
    assert enc.decrypt(blob, context=ctx) == plain
    back = io.BytesIO()
    assert enc.decrypt_stream(io.BytesIO(blob), back, context=ctx) == len(plain)
    assert back.getvalue() == plain
    for i in (4, 5, 50, len(blob) - 1):  # still tamper-evident
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(DecryptionError):
            enc.decrypt(bytes(bad), context=ctx)


def test_artifact_has_two_slots_with_reserved_capacity(static_provider_cls) -> None:
    enc = EnvelopeEncryptor(static_provider_cls(), cache=False)
    out = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(b"x" * 10), out, context=CTX)
    header = wire.parse_header(out.getvalue())
    assert header.slot_count == 2
    assert header.slot_capacity == DEFAULT_KEY_SLOT_CAPACITY
    assert header.slots[0].generation == 1
    assert len(header.slots[0].keys) == 1
    assert header.slots[1].generation == 0
    assert header.slots[1].keys == ()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 127, 128, 129, 1000, 70_000])
def test_record_round_trip_sizes(static_provider_cls, size: int) -> None:
    enc = EnvelopeEncryptor(static_provider_cls(), segment_size=64)
    data = bytes(i % 251 for i in range(size))
    blob = enc.encrypt(data, context=CTX)
    header = wire.parse_header(blob)
    assert len(blob) - header.payload_offset == 12 + size + 16  # nonce, one AEAD call
    assert enc.decrypt(blob, context=CTX) == data
    assert enc.bind(CTX).open(blob) == data


@pytest.mark.parametrize("size", [0, 1, 255, 256, 257, 1024, 5000])
def test_stream_round_trip_at_segment_edges(static_provider_cls, size: int) -> None:
    enc = EnvelopeEncryptor(static_provider_cls(), stream_segment_size=256)
    data = bytes(i % 253 for i in range(size))
    out = io.BytesIO()
    assert enc.encrypt_stream(io.BytesIO(data), out, context=CTX) == size
    back = io.BytesIO()
    assert enc.decrypt_stream(io.BytesIO(out.getvalue()), back, context=CTX) == size
    assert back.getvalue() == data
    # an artifact held in memory decrypts with decrypt() too
    assert enc.decrypt(out.getvalue(), context=CTX) == data


class _Trickle(io.RawIOBase):
    """A pipe-like reader that returns at most 7 bytes per call."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def,override]
        chunk = self._buf.read(min(7, len(b)))
        b[: len(chunk)] = chunk
        return len(chunk)


def test_stream_handles_short_reads(static_provider_cls) -> None:
    enc = EnvelopeEncryptor(static_provider_cls(), stream_segment_size=100)
    data = bytes(range(256)) * 3
    out = io.BytesIO()
    enc.encrypt_stream(_Trickle(data), out, context=CTX)
    back = io.BytesIO()
    enc.decrypt_stream(_Trickle(out.getvalue()), back, context=CTX)
    assert back.getvalue() == data


def test_records_share_an_epoch_header_and_differ_in_nonce(local) -> None:
    enc = EnvelopeEncryptor(local)
    x, y = enc.encrypt(b"same", context=CTX), enc.encrypt(b"same", context=CTX)
    a, b = wire.parse_header(x), wire.parse_header(y)
    assert x[: a.payload_offset] == y[: b.payload_offset]  # one epoch: one header
    assert (
        x[a.payload_offset : a.payload_offset + 12] != y[b.payload_offset : b.payload_offset + 12]
    )
    assert x != y
    other = wire.parse_header(enc.encrypt(b"same", context={**CTX, "tenant": "t2"}))
    assert other.message_id != a.message_id  # a new context: a new epoch
    streams = [io.BytesIO(), io.BytesIO()]
    for out in streams:
        enc.encrypt_stream(io.BytesIO(b"a"), out, context=CTX)
    s1, s2 = (wire.parse_header(o.getvalue()) for o in streams)
    assert s1.message_id != s2.message_id
    assert s1.commitment != s2.commitment


def test_constructor_validates_eagerly(local) -> None:
    with pytest.raises(ValueError, match="segment_size"):
        EnvelopeEncryptor(local, segment_size=1)
    with pytest.raises(TypeError, match="segment_size"):
        EnvelopeEncryptor(local, segment_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_wrapped_keys"):
        EnvelopeEncryptor(local, max_wrapped_keys=0)
    with pytest.raises(TypeError):
        EnvelopeEncryptor([object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="at least one"):
        EnvelopeEncryptor([])
    with pytest.raises(TypeError, match="cache"):
        EnvelopeEncryptor(local, cache="yes")  # type: ignore[arg-type]


def test_rng_is_not_a_public_parameter(local) -> None:
    """A caller-supplied rng could repeat nonces: it is a private test hook, not an argument."""
    with pytest.raises(TypeError, match="rng"):
        EnvelopeEncryptor(local, rng=lambda n: bytes(n))  # type: ignore[call-arg]


def test_bytes_like_inputs(local) -> None:
    enc = EnvelopeEncryptor(local)
    blob = enc.encrypt(bytearray(b"abc"), context=CTX)
    for form in (blob, bytearray(blob), memoryview(blob)):
        assert enc.decrypt(form, context=CTX) == b"abc"  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        enc.decrypt("text", context=CTX)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        enc.encrypt("text", context=CTX)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        enc.encrypt(b"x", context=[("a", "b")])  # type: ignore[arg-type]


def test_non_blocking_source_is_refused_not_truncated(tmp_path) -> None:
    """A non-blocking source returning None must not be taken for end of input."""
    import io

    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.providers.local import create_local_key

    class NotReady(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b):  # type: ignore[no-untyped-def]
            return None

    create_local_key(tmp_path / "k")
    enc = EnvelopeEncryptor([from_uri(f"local:{tmp_path / 'k'}")])
    with pytest.raises(ValueError, match="non-blocking"):
        enc.encrypt_stream(NotReady(), io.BytesIO(), context={})
