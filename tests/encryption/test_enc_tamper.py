"""Tampering of any kind raises the one opaque DecryptionError and releases no plaintext."""

from __future__ import annotations

import io

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, wire
from saip_encryption.providers.local import LocalKeyProvider

CTX = {"dataset": "digits", "tenant": "acme"}
SEG = 64
TAG = 16


def _fresh(provider, **kw) -> EnvelopeEncryptor:
    # no decrypt cache: every attempt goes through the full strict path
    return EnvelopeEncryptor(provider, cache=False, **kw)


def _expect_opaque(fn) -> None:
    with pytest.raises(DecryptionError) as info:
        fn()
    assert str(info.value) == "decryption failed"
    assert info.value.__cause__ is None


def _segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    header = wire.parse_header(blob)
    head, body = blob[: header.payload_offset], blob[header.payload_offset :]
    step = header.segment_size + TAG
    return head, [body[i : i + step] for i in range(0, len(body), step)]


@pytest.fixture
def record(local: LocalKeyProvider) -> bytes:
    return _fresh(local, segment_size=SEG).encrypt(bytes(range(200)), context=CTX)


@pytest.fixture
def segmented(local: LocalKeyProvider) -> bytes:
    """A segmented message (suite 1) of 200 bytes in 64-byte segments, held in memory."""
    out = io.BytesIO()
    _fresh(local, stream_segment_size=SEG).encrypt_stream(
        io.BytesIO(bytes(range(200))), out, context=CTX
    )
    return out.getvalue()


@pytest.fixture
def artifact(local: LocalKeyProvider) -> bytes:
    out = io.BytesIO()
    _fresh(local, stream_segment_size=SEG, key_slot_capacity=256).encrypt_stream(
        io.BytesIO(bytes(range(200))), out, context=CTX
    )
    return out.getvalue()


def test_every_header_byte_of_a_record(local: LocalKeyProvider, record: bytes) -> None:
    enc = _fresh(local)
    header_len = wire.parse_header(record).payload_offset
    for i in range(header_len):
        for flip in (0x01, 0x80):
            bad = bytearray(record)
            bad[i] ^= flip
            _expect_opaque(lambda b=bytes(bad): enc.decrypt(b, context=CTX))


def test_every_header_byte_of_an_artifact_including_the_empty_slot(
    local: LocalKeyProvider, artifact: bytes
) -> None:
    enc = _fresh(local)
    header_len = wire.parse_header(artifact).payload_offset
    assert header_len > 2 * 256  # both slots are covered
    for i in range(header_len):
        bad = bytearray(artifact)
        bad[i] ^= 0x04
        _expect_opaque(
            lambda b=bytes(bad): enc.decrypt_stream(io.BytesIO(b), io.BytesIO(), context=CTX)
        )


def test_each_wrapped_key_byte(local: LocalKeyProvider, other_local: LocalKeyProvider) -> None:
    """Two wrapped keys (multi-provider): corrupting either one's bytes is caught.

    As stored, the slot CRC fails (strict parse). With the CRC recomputed, the provider that owns
    the corrupted wrap rejects it; a decryptor that also holds the *other* master key still
    decrypts correctly from the intact wrap (that is what multi-provider is for), and the key
    commitment guarantees it is the right data key.
    """
    blob = _fresh([local, other_local]).encrypt(b"payload", context=CTX)
    header = wire.parse_header(blob)
    assert len(header.wrapped_keys()) == 2
    slot_start = header.key_area_offset + 3
    raw = header.slots[0].raw
    for owner, w in zip((local, other_local), header.wrapped_keys(), strict=True):
        offset = slot_start + raw.index(w.ciphertext)
        for j in range(len(w.ciphertext)):
            bad = bytearray(blob)
            bad[offset + j] ^= 0x01
            fixed = _fix_crc(bytes(bad), header)
            for enc in (_fresh([local, other_local]), _fresh([other_local, local])):
                _expect_opaque(lambda b=bytes(bad), e=enc: e.decrypt(b, context=CTX))
                assert enc.decrypt(fixed, context=CTX) == b"payload"
            _expect_opaque(lambda b=fixed, o=owner: _fresh(o).decrypt(b, context=CTX))


def _fix_crc(blob: bytes, header: wire.Header) -> bytes:
    import struct
    import zlib

    start = header.key_area_offset + 3
    cap = header.slot_capacity
    slot = bytearray(blob[start : start + cap])
    slot[-4:] = struct.pack(">I", zlib.crc32(bytes(slot[:-4])))
    return blob[:start] + bytes(slot) + blob[start + cap :]


def test_substituted_wrapped_key_fails_the_commitment(local: LocalKeyProvider) -> None:
    """A well-formed wrap of *another* data key under the same master key is rejected."""
    enc = _fresh(local)
    a = enc.encrypt(b"A" * 10, context=CTX)
    b = enc.encrypt(b"B" * 10, context=CTX)
    ha, hb = wire.parse_header(a), wire.parse_header(b)
    spliced = (
        a[: ha.key_area_offset] + b[hb.key_area_offset : hb.payload_offset] + a[ha.payload_offset :]
    )
    _expect_opaque(lambda: enc.decrypt(spliced, context=CTX))


def test_each_segment_tag_and_body(local: LocalKeyProvider, segmented: bytes) -> None:
    enc = _fresh(local)
    head, segs = _segments(segmented)
    assert len(segs) == 4  # 200 bytes / 64: three full + one short final
    for k in range(len(segs)):
        for pos in (0, len(segs[k]) - TAG, len(segs[k]) - 1):  # body, first and last tag byte
            bad = [bytearray(s) for s in segs]
            bad[k][pos] ^= 0x01
            blob = head + b"".join(bad)
            _expect_opaque(lambda b=blob: enc.decrypt(b, context=CTX))


def test_truncation_at_every_segment_boundary_and_inside(
    local: LocalKeyProvider, segmented: bytes
) -> None:
    record = segmented
    enc = _fresh(local)
    head, segs = _segments(record)
    for k in range(len(segs)):
        cut = head + b"".join(segs[:k])
        _expect_opaque(lambda b=cut: enc.decrypt(b, context=CTX))
        _expect_opaque(lambda b=cut: enc.decrypt_stream(io.BytesIO(b), io.BytesIO(), context=CTX))
    for n in range(len(head), len(record), 7):
        _expect_opaque(lambda b=record[:n]: enc.decrypt(b, context=CTX))
    for n in range(len(head)):
        _expect_opaque(lambda b=record[:n]: enc.decrypt(b, context=CTX))


def test_reordered_duplicated_and_trailing_segments(
    local: LocalKeyProvider, segmented: bytes
) -> None:
    enc = _fresh(local)
    head, segs = _segments(segmented)
    variants = [
        [segs[1], segs[0], segs[2], segs[3]],
        [segs[0], segs[2], segs[1], segs[3]],
        [segs[0], segs[0], segs[1], segs[2], segs[3]],
        [segs[0], segs[1], segs[2], segs[2], segs[3]],
        [segs[0], segs[1], segs[2], segs[3], segs[3]],
        [segs[0], segs[1], segs[3]],
        [*segs, b"trailing data"],
        [*segs, b"\x00"],
    ]
    for v in variants:
        blob = head + b"".join(v)
        _expect_opaque(lambda b=blob: enc.decrypt(b, context=CTX))
        _expect_opaque(lambda b=blob: enc.decrypt_stream(io.BytesIO(b), io.BytesIO(), context=CTX))


def test_segments_from_another_message_are_rejected(local: LocalKeyProvider) -> None:
    enc = _fresh(local, stream_segment_size=SEG)
    a_out, b_out = io.BytesIO(), io.BytesIO()
    enc.encrypt_stream(io.BytesIO(bytes(200)), a_out, context=CTX)
    enc.encrypt_stream(io.BytesIO(bytes(200)), b_out, context=CTX)
    a, b = a_out.getvalue(), b_out.getvalue()
    ha, sa = _segments(a)
    _hb, sb = _segments(b)
    _expect_opaque(lambda: enc.decrypt(ha + sb[0] + b"".join(sa[1:]), context=CTX))


def test_wrong_context(local: LocalKeyProvider, record: bytes, artifact: bytes) -> None:
    enc = _fresh(local)
    for ctx in ({}, {"dataset": "digits"}, {**CTX, "tenant": "other"}, {**CTX, "extra": "1"}):
        _expect_opaque(lambda c=ctx: enc.decrypt(record, context=c))
        _expect_opaque(
            lambda c=ctx: enc.decrypt_stream(io.BytesIO(artifact), io.BytesIO(), context=c)
        )


def test_wrong_context_also_with_a_warm_cache(local: LocalKeyProvider) -> None:
    enc = EnvelopeEncryptor(local)
    blob = enc.encrypt(b"x", context=CTX)
    assert enc.decrypt(blob, context=CTX) == b"x"
    _expect_opaque(lambda: enc.decrypt(blob, context={**CTX, "tenant": "other"}))


def test_wrong_key(other_local: LocalKeyProvider, record: bytes, artifact: bytes) -> None:
    enc = _fresh(other_local)
    _expect_opaque(lambda: enc.decrypt(record, context=CTX))
    _expect_opaque(lambda: enc.decrypt_stream(io.BytesIO(artifact), io.BytesIO(), context=CTX))


def test_key_id_outside_the_allow_list(local: LocalKeyProvider, record: bytes) -> None:
    _expect_opaque(
        lambda: _fresh(local, allowed_key_ids={"some-other-key/v1"}).decrypt(record, context=CTX)
    )
    assert _fresh(local, allowed_key_ids={local.primary_key_id}).decrypt(record, context=CTX)


def test_unknown_suite_and_version_are_rejected(local: LocalKeyProvider, record: bytes) -> None:
    enc = _fresh(local)
    for index, value in ((4, 0), (4, 1), (4, 3), (5, 0), (5, 1), (5, 3), (9, 64)):
        bad = bytearray(record)
        bad[index] = value
        _expect_opaque(lambda b=bytes(bad): enc.decrypt(b, context=CTX))


def test_every_payload_byte_of_a_record_with_a_warm_epoch(local: LocalKeyProvider) -> None:
    """The per-epoch fast path (header matched by its bytes) rejects every flipped byte too."""
    enc = EnvelopeEncryptor(local)
    blob = enc.encrypt(bytes(range(100)), context=CTX)
    assert enc.decrypt(blob, context=CTX) == bytes(range(100))  # epoch verified and remembered
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        _expect_opaque(lambda b=bytes(bad): enc.decrypt(b, context=CTX))
    for n in range(len(blob)):
        _expect_opaque(lambda b=blob[:n]: enc.decrypt(b, context=CTX))
    _expect_opaque(lambda: enc.decrypt(blob + b"\x00", context=CTX))
    _expect_opaque(lambda: enc.decrypt(blob, context={**CTX, "tenant": "other"}))


def test_record_body_under_another_epoch_header_is_rejected(local: LocalKeyProvider) -> None:
    enc = EnvelopeEncryptor(local)
    a = enc.encrypt(b"A" * 10, context=CTX)
    enc.close()  # next record: a new epoch (new data key, new epoch ID)
    b = enc.encrypt(b"B" * 10, context=CTX)
    ha, hb = wire.parse_header(a), wire.parse_header(b)
    assert ha.message_id != hb.message_id
    for dec in (enc, _fresh(local)):
        assert dec.decrypt(a, context=CTX) == b"A" * 10
        _expect_opaque(
            lambda d=dec: d.decrypt(a[: ha.payload_offset] + b[hb.payload_offset :], context=CTX)
        )
        _expect_opaque(
            lambda d=dec: d.decrypt(b[: hb.payload_offset] + a[ha.payload_offset :], context=CTX)
        )


def test_wrapped_key_cap(static_provider_cls) -> None:
    providers = [static_provider_cls(key_id=f"k{i}/v1") for i in range(5)]
    blob = EnvelopeEncryptor(providers, cache=False).encrypt(b"x", context=CTX)
    assert EnvelopeEncryptor(providers, cache=False).decrypt(blob, context=CTX) == b"x"
    capped = EnvelopeEncryptor(providers[:1], cache=False, max_wrapped_keys=4)
    _expect_opaque(lambda: capped.decrypt(blob, context=CTX))


def test_stream_releases_only_authenticated_segments(local: LocalKeyProvider) -> None:
    enc = _fresh(local, stream_segment_size=SEG)
    src = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(bytes(range(200))), src, context=CTX)
    blob = bytearray(src.getvalue())
    header = wire.parse_header(bytes(blob))
    blob[header.payload_offset + (SEG + TAG) + 5] ^= 1  # second segment
    out = io.BytesIO()
    _expect_opaque(lambda: enc.decrypt_stream(io.BytesIO(bytes(blob)), out, context=CTX))
    assert out.getvalue() == bytes(range(SEG))  # only the authentic first segment


def test_not_an_envelope(local: LocalKeyProvider) -> None:
    enc = _fresh(local)
    for junk in (b"", b"SAIP", b"PK\x03\x04" + bytes(300), bytes(1000)):
        _expect_opaque(lambda j=junk: enc.decrypt(j, context=CTX))
        _expect_opaque(lambda j=junk: enc.decrypt_stream(io.BytesIO(j), io.BytesIO(), context=CTX))
