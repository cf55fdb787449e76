"""Hypothesis fuzzing of the parser and the decryptors: only the typed errors, never a crash."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from saip_encryption import DecryptionError, EnvelopeEncryptor, wire
from saip_encryption.providers.local import LocalKeyProvider, create_local_key

CTX = {"dataset": "fuzz"}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def env(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("fuzz") / "k.key"
    create_local_key(path)
    provider = LocalKeyProvider(path)
    enc = EnvelopeEncryptor(provider, cache=False, segment_size=64, stream_segment_size=64)
    record = enc.encrypt(bytes(range(150)), context=CTX)
    out = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(bytes(range(150))), out, context=CTX)
    return enc, record, out.getvalue()


@SETTINGS
@given(st.binary(max_size=2048))
def test_parser_accepts_or_raises_malformed(data: bytes) -> None:
    for strict in (True, False):
        try:
            header = wire.parse_header(data, strict=strict)
        except wire.MalformedError:
            continue
        assert header.payload_offset <= len(data)


@SETTINGS
@given(st.binary(max_size=1024))
def test_random_bytes_never_decrypt(env, data: bytes) -> None:  # type: ignore[no-untyped-def]
    enc, _record, _artifact = env
    with pytest.raises(DecryptionError):
        enc.decrypt(b"SAIP\x01\x01" + data, context=CTX)
    with pytest.raises(DecryptionError):
        enc.decrypt_stream(io.BytesIO(data), io.BytesIO(), context=CTX)


@SETTINGS
@given(st.data())
def test_mutated_ciphertexts_never_decrypt(env, data) -> None:  # type: ignore[no-untyped-def]
    enc, record, artifact = env
    original = data.draw(st.sampled_from([record, artifact]))
    blob = bytearray(original)
    edits = data.draw(
        st.lists(
            st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)), min_size=1, max_size=4
        )
    )
    for pos, xor in edits:
        blob[pos] ^= xor
    cut = data.draw(st.integers(0, len(blob)))
    if data.draw(st.booleans()):
        blob = blob[:cut]
    assume(bytes(blob) != original)
    with pytest.raises(DecryptionError):
        enc.decrypt(bytes(blob), context=CTX)
    out = io.BytesIO()
    with pytest.raises(DecryptionError):
        enc.decrypt_stream(io.BytesIO(bytes(blob)), out, context=CTX)


@SETTINGS
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=5))
def test_context_round_trips(ctx: dict[str, str]) -> None:
    assert wire.decode_context(wire.encode_context(ctx)) == ctx
