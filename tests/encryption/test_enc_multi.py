"""Multi-provider: one data key wrapped under several master keys; failures reported per key."""

from __future__ import annotations

import io

import pytest
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, wire

CTX = {"dataset": "d"}


def test_any_one_provider_can_decrypt(local, other_local) -> None:
    enc = EnvelopeEncryptor([local, other_local], cache=False)
    blob = enc.encrypt(b"dr", context=CTX)
    keys = wire.parse_header(blob).wrapped_keys()
    assert [k.key_id for k in keys] == [local.primary_key_id, other_local.primary_key_id]
    assert EnvelopeEncryptor(local).decrypt(blob, context=CTX) == b"dr"
    assert EnvelopeEncryptor(other_local).decrypt(blob, context=CTX) == b"dr"
    out = io.BytesIO()
    enc.encrypt_stream(io.BytesIO(b"artifact"), out, context=CTX)
    back = io.BytesIO()
    EnvelopeEncryptor(other_local).decrypt_stream(io.BytesIO(out.getvalue()), back, context=CTX)
    assert back.getvalue() == b"artifact"


def test_providers_are_tried_in_order_and_first_success_wins(
    local, other_local, counting_cls
) -> None:
    blob = EnvelopeEncryptor([local, other_local], cache=False).encrypt(b"x", context=CTX)
    first, second = counting_cls(other_local), counting_cls(local)
    assert EnvelopeEncryptor([first, second], cache=False).decrypt(blob, context=CTX) == b"x"
    assert (first.unwrapped, second.unwrapped) == (1, 0)


def test_fallback_when_the_first_provider_is_down(local, other_local, unavailable_cls) -> None:
    blob = EnvelopeEncryptor([local, other_local], cache=False).encrypt(b"x", context=CTX)
    down = unavailable_cls(local, version="v1")
    assert EnvelopeEncryptor([down, other_local], cache=False).decrypt(blob, context=CTX) == b"x"


def test_all_providers_down_lists_each_failure(local, other_local, unavailable_cls) -> None:
    blob = EnvelopeEncryptor([local, other_local], cache=False).encrypt(b"x", context=CTX)
    dec = EnvelopeEncryptor(
        [unavailable_cls(local, "v1"), unavailable_cls(other_local, "v7")], cache=False
    )
    with pytest.raises(KeyProviderError) as info:
        dec.decrypt(blob, context=CTX)
    message = str(info.value)
    assert local.uri in message
    assert other_local.uri in message
    assert "version v1 is disabled" in message
    assert "version v7 is disabled" in message


def test_tampering_beats_operational_errors(local, other_local, unavailable_cls) -> None:
    """Down + tampered: still the opaque error (no oracle through the error type)."""
    blob = bytearray(EnvelopeEncryptor([local], cache=False).encrypt(b"x", context=CTX))
    blob[-1] ^= 1
    dec = EnvelopeEncryptor([unavailable_cls(other_local), local], cache=False)
    with pytest.raises(DecryptionError):
        dec.decrypt(bytes(blob), context=CTX)


def test_primary_failure_on_encrypt_is_reported(local, unavailable_cls) -> None:
    with pytest.raises(KeyProviderError, match="disabled"):
        EnvelopeEncryptor([unavailable_cls(local)], cache=False).encrypt(b"x", context=CTX)


def test_secondary_wrap_failure_zeroes_the_data_key(local, unavailable_cls) -> None:
    seen = []
    real = local.generate_data_key

    def spy(*, context):  # type: ignore[no-untyped-def]
        key, wrapped = real(context=context)
        seen.append(key)
        return key, wrapped

    local.generate_data_key = spy
    with pytest.raises(KeyProviderError):
        EnvelopeEncryptor([local, unavailable_cls(local)], cache=False).encrypt(b"x", context=CTX)
    assert seen == [bytearray(32)]


def test_no_acceptable_wrapped_key_is_opaque(local, other_local) -> None:
    blob = EnvelopeEncryptor(local, cache=False).encrypt(b"x", context=CTX)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(other_local, cache=False).decrypt(blob, context=CTX)


def test_satisfies_the_ingestion_encryptor_protocol(local) -> None:
    from saip_ingestion.protocols import Encryptor

    assert isinstance(EnvelopeEncryptor(local), Encryptor)


def test_accepts_failure_is_reported_not_raised_early(local, other_local, unavailable_cls) -> None:
    """A provider whose key-ID check itself fails (alias lookup down) is one listed failure."""
    blob = EnvelopeEncryptor([local, other_local], cache=False).encrypt(b"x", context=CTX)

    class Unresolvable(unavailable_cls):  # type: ignore[misc,valid-type]
        def accepts(self, key_id: str) -> bool:
            raise KeyProviderError("aws-kms: alias/a cannot be resolved (DescribeKey → denied)")

    flaky = Unresolvable(local)
    assert EnvelopeEncryptor([flaky, other_local], cache=False).decrypt(blob, context=CTX) == b"x"
    with pytest.raises(KeyProviderError, match="cannot be resolved"):
        EnvelopeEncryptor([flaky], cache=False).decrypt(blob, context=CTX)
