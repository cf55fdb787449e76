"""ENC-02 in isolation: the key commitment alone refuses a ciphertext, before any AES-GCM call.

The other tamper tests change bytes that several checks cover at once (a flipped wrapped key also
fails to unwrap). Here every other check passes: the wrapped key unwraps, the header parses, the
payload is untouched; only the commitment disagrees with the data key. The decrypt must fail with
the opaque error *and* never reach a segment decryption (Albertini et al., "How to Abuse and Fix
Authenticated Encryption Without Key Commitment", USENIX Security 2022)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, envelope, wire
from saip_encryption.providers.base import WrappedKey

CTX = {"dataset": "digits", "tenant": "acme"}


class _CountingAESGCM:
    """Wraps the real AESGCM class and counts decrypt calls (test double around the real cipher)."""

    calls = 0

    def __init__(self, key: bytes) -> None:
        self._inner = envelope_real_aesgcm(key)

    def encrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        return self._inner.encrypt(nonce, data, aad)

    def decrypt(self, nonce: bytes, data: bytes, aad: bytes | None) -> bytes:
        type(self).calls += 1
        return self._inner.decrypt(nonce, data, aad)


envelope_real_aesgcm: Any = envelope.AESGCM


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[_CountingAESGCM]:
    _CountingAESGCM.calls = 0
    monkeypatch.setattr(envelope, "AESGCM", _CountingAESGCM)
    return _CountingAESGCM


def _swapping(static_cls: type[Any]) -> Any:
    class _SwappingProvider(static_cls):  # type: ignore[misc, valid-type]
        """FAKE provider whose unwrap returns another data key (a malicious key service)."""

        def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
            return bytearray(bytes(range(1, 33)))

    return _SwappingProvider()


def _encrypt(provider: Any) -> bytes:
    return EnvelopeEncryptor(provider, cache=False).encrypt(b"x" * 300, context=CTX)


def test_commitment_alone_refuses_before_any_segment_is_decrypted(
    counting: type[_CountingAESGCM], static_provider_cls: type[Any]
) -> None:
    provider = static_provider_cls()
    blob = _encrypt(provider)
    header = wire.parse_header(blob)
    start = len(header.prefix)
    assert blob[start : start + 32] == header.commitment  # the bytes we flip are the commitment
    for i in (0, 31):
        bad = bytearray(blob)
        bad[start + i] ^= 0x01
        counting.calls = 0
        with pytest.raises(DecryptionError) as info:
            EnvelopeEncryptor(provider, cache=False).decrypt(bytes(bad), context=CTX)
        assert str(info.value) == "decryption failed"
        assert counting.calls == 0, "a segment was decrypted before the commitment was checked"


def test_another_data_key_from_the_key_service_is_refused_by_the_commitment(
    counting: type[_CountingAESGCM], static_provider_cls: type[Any]
) -> None:
    blob = _encrypt(static_provider_cls())
    counting.calls = 0
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(_swapping(static_provider_cls), cache=False).decrypt(blob, context=CTX)
    assert counting.calls == 0


def test_control_intact_ciphertext_reaches_the_cipher(
    counting: type[_CountingAESGCM], static_provider_cls: type[Any]
) -> None:
    """The counter is live: an intact ciphertext decrypts through the counted cipher."""
    provider = static_provider_cls()
    blob = _encrypt(provider)
    counting.calls = 0
    assert EnvelopeEncryptor(provider, cache=False).decrypt(blob, context=CTX) == b"x" * 300
    assert counting.calls >= 1
