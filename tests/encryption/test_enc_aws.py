"""AWS KMS provider: real boto3 against moto server over HTTP (and one live test).

moto gaps (measured, moto 5.2.5): a *disabled* or *pending-deletion* key still encrypts and
decrypts, and DisableKey by ARN returns HTTP 500. The error mapping for those states is therefore
tested with botocore's own ``Stubber`` (real client, real error parsing), labelled below.
"""

from __future__ import annotations

import os

import boto3
import pytest
from botocore.stub import Stubber
from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers import aws
from saip_encryption.providers.base import KeyProvider, WrappedKey

CTX = {"dataset": "digits", "tenant": "t1", "purpose": "records"}


def _kms(url: str) -> object:
    return boto3.client("kms", endpoint_url=url, region_name="us-east-1")


def _key(kms: object, alias: str | None = None) -> str:
    arn: str = kms.create_key(Description="saip test")["KeyMetadata"]["Arn"]  # type: ignore[attr-defined]
    if alias:
        kms.create_alias(AliasName=alias, TargetKeyId=arn)  # type: ignore[attr-defined]
    return arn


def test_generate_and_unwrap_records_full_arn(moto_url: str) -> None:
    kms = _kms(moto_url)
    arn = _key(kms, "alias/saip-records")
    provider = aws.from_uri("aws-kms:alias/saip-records", endpoint_url=moto_url)
    assert isinstance(provider, KeyProvider)
    assert provider.uri == "aws-kms:alias/saip-records"
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert isinstance(data_key, bytearray)
    assert len(data_key) == 32
    assert wrapped.provider == "aws-kms"
    assert wrapped.key_id == arn
    assert bytes(data_key) not in wrapped.ciphertext
    assert provider.unwrap(wrapped, context=dict(reversed(list(CTX.items())))) == data_key


def test_wrap_existing_key_then_unwrap(moto_url: str) -> None:
    arn = _key(_kms(moto_url))
    provider = aws.from_uri(f"aws-kms:{arn}", endpoint_url=moto_url)
    data_key = bytearray(os.urandom(32))
    wrapped = provider.wrap(data_key, context=CTX)
    assert wrapped.key_id == arn
    assert provider.unwrap(wrapped, context=CTX) == data_key


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda w: (w, {**CTX, "tenant": "t2"}), id="wrong-context"),
        pytest.param(lambda w: (w, {}), id="missing-context"),
        pytest.param(
            lambda w: (
                WrappedKey(w.provider, w.key_id, w.ciphertext[:-1] + bytes([w.ciphertext[-1] ^ 1])),
                CTX,
            ),
            id="tampered-ciphertext",
        ),
    ],
)
def test_bad_ciphertext_or_context_is_one_opaque_error(moto_url: str, mutate: object) -> None:
    provider = aws.from_uri(f"aws-kms:{_key(_kms(moto_url))}", endpoint_url=moto_url)
    data_key, wrapped = provider.generate_data_key(context=CTX)
    bad, ctx = mutate(wrapped)  # type: ignore[operator]
    with pytest.raises(DecryptionError) as info:
        provider.unwrap(bad, context=ctx)
    assert str(info.value) == "decryption failed"
    assert data_key.hex() not in repr(info.value.__dict__)


def test_ciphertext_redirected_to_another_key_is_refused_naming_key(moto_url: str) -> None:
    kms = _kms(moto_url)
    arn1, arn2 = _key(kms), _key(kms)
    provider = aws.from_uri(f"aws-kms:{arn1}", endpoint_url=moto_url)
    _, wrapped = provider.generate_data_key(context=CTX)
    with pytest.raises(KeyProviderError, match=arn2):
        provider.unwrap(WrappedKey("aws-kms", arn2, wrapped.ciphertext), context=CTX)


def test_missing_key_names_the_key(moto_url: str) -> None:
    missing = "arn:aws:kms:us-east-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    provider = aws.from_uri(f"aws-kms:{missing}", endpoint_url=moto_url)
    with pytest.raises(KeyProviderError, match=f"aws-kms: key {missing} was not found"):
        provider.generate_data_key(context=CTX)


def test_on_demand_and_automatic_rotation_keep_old_data_readable(moto_url: str) -> None:
    kms = _kms(moto_url)
    arn = _key(kms, "alias/rotating")
    provider = aws.from_uri("aws-kms:alias/rotating", endpoint_url=moto_url)
    old_key, old_wrapped = provider.generate_data_key(context=CTX)
    kms.enable_key_rotation(KeyId=arn, RotationPeriodInDays=90)  # type: ignore[attr-defined]
    assert kms.get_key_rotation_status(KeyId=arn)["KeyRotationEnabled"]  # type: ignore[attr-defined]
    kms.rotate_key_on_demand(KeyId=arn)  # type: ignore[attr-defined]
    rotations = kms.list_key_rotations(KeyId=arn)["Rotations"]  # type: ignore[attr-defined]
    assert [r["RotationType"] for r in rotations] == ["ON_DEMAND"]
    new_key, new_wrapped = provider.generate_data_key(context=CTX)
    assert new_wrapped.key_id == old_wrapped.key_id == arn  # KMS rotation keeps the ARN
    assert provider.unwrap(old_wrapped, context=CTX) == old_key
    assert provider.unwrap(new_wrapped, context=CTX) == new_key


def test_reencrypt_moves_a_data_key_to_another_kms_key_inside_kms(moto_url: str) -> None:
    kms = _kms(moto_url)
    old_arn, new_arn = _key(kms), _key(kms)
    old = aws.from_uri(f"aws-kms:{old_arn}", endpoint_url=moto_url)
    new = aws.from_uri(f"aws-kms:{new_arn}", endpoint_url=moto_url)
    data_key, wrapped = old.generate_data_key(context=CTX)
    moved = new.reencrypt(wrapped, context=CTX, new_context={**CTX, "purpose": "archive"})
    assert moved.key_id == new_arn
    assert moved.ciphertext != wrapped.ciphertext
    assert new.unwrap(moved, context={**CTX, "purpose": "archive"}) == data_key
    with pytest.raises(DecryptionError):
        new.unwrap(moved, context=CTX)


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        ("DisabledException", "is disabled"),
        ("KeyUnavailableException", "is unavailable"),
        ("KMSInvalidStateException", "is not in a usable state"),
        ("AccessDeniedException", "access denied"),
    ],
)
def test_key_state_errors_name_provider_and_key_stubbed(code: str, phrase: str) -> None:
    """Uses botocore's Stubber, because moto never reports these key states (see module doc)."""
    arn = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    client = boto3.client(
        "kms", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    provider = aws.AwsKmsProvider(key=arn, client=client)
    secret = WrappedKey("aws-kms", arn, b"\x01" * 64)
    with Stubber(client) as stub:
        stub.add_client_error("decrypt", service_error_code=code, service_message="key state")
        with pytest.raises(KeyProviderError) as info:
            provider.unwrap(secret, context=CTX)
    assert str(info.value).startswith(f"aws-kms: key {arn} {phrase}")
    assert "Decrypt" in str(info.value)
    assert code in str(info.value)


def test_wrong_provider_and_bad_data_keys_rejected(moto_url: str) -> None:
    provider = aws.from_uri(f"aws-kms:{_key(_kms(moto_url))}", endpoint_url=moto_url)
    with pytest.raises(KeyProviderError, match="provider 'gcp-kms'"):
        provider.unwrap(WrappedKey("gcp-kms", "x", b"y"), context=CTX)
    with pytest.raises(ValueError, match="32 bytes"):
        provider.wrap(b"short", context=CTX)
    with pytest.raises(TypeError):
        provider.wrap(b"k" * 32, context={"a": 1})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("uri", "options", "error", "match"),
    [
        ("aws-kms:", {}, EncryptionConfigError, "aws-kms:IDENTIFIER"),
        ("gcp-kms:alias/x", {}, EncryptionConfigError, "aws-kms:IDENTIFIER"),
        ("aws-kms:not a key", {}, EncryptionConfigError, "not a KMS key ARN"),
        ("aws-kms:alias/x", {"endpoint": "x"}, TypeError, "unknown option"),
        (
            "aws-kms:arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            {"region": "us-east-1"},
            EncryptionConfigError,
            "contradicts",
        ),
        (
            "aws-kms:alias/x",
            {"endpoint_url": "http://kms.example.com"},
            EncryptionConfigError,
            "endpoint_url: plaintext",
        ),
    ],
)
def test_from_uri_validates_eagerly(
    aws_env: None, uri: str, options: dict[str, str], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        aws.from_uri(uri, **options)


def test_region_defaults_to_the_arn_region(aws_env: None) -> None:
    arn = "arn:aws:kms:eu-central-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    assert aws.from_uri(f"aws-kms:{arn}").client.meta.region_name == "eu-central-1"


@pytest.mark.live("aws")
def test_live_aws_kms_roundtrip() -> None:
    """Set SAIP_LIVE_AWS_KMS_KEY to a key ARN/alias the credentials may use."""
    key = os.environ.get("SAIP_LIVE_AWS_KMS_KEY")
    if not key:
        pytest.skip("set SAIP_LIVE_AWS_KMS_KEY to a KMS key ARN or alias")
    provider = aws.from_uri(f"aws-kms:{key}")
    data_key, wrapped = provider.generate_data_key(context=CTX)
    assert wrapped.key_id.startswith("arn:aws")
    assert provider.unwrap(wrapped, context=CTX) == data_key
    with pytest.raises(DecryptionError):
        provider.unwrap(wrapped, context={**CTX, "tenant": "other"})


@pytest.mark.xfail(
    strict=True,
    raises=pytest.fail.Exception,  # only "DID NOT RAISE" counts as the known gap
    reason="moto 5.2.5 gap: a disabled KMS key still decrypts (real KMS: DisabledException). "
    "Strict: when moto fixes it this XPASSes and fails, so the test gets promoted.",
)
def test_disabled_key_refuses_unwrap_naming_the_key_moto_gap(moto_url: str) -> None:
    kms = _kms(moto_url)
    key_id = kms.create_key()["KeyMetadata"]["KeyId"]  # type: ignore[attr-defined]
    arn = kms.describe_key(KeyId=key_id)["KeyMetadata"]["Arn"]  # type: ignore[attr-defined]
    provider = aws.from_uri(f"aws-kms:{arn}", endpoint_url=moto_url)
    _, wrapped = provider.generate_data_key(context=CTX)
    kms.disable_key(KeyId=key_id)  # type: ignore[attr-defined]  (by ARN moto answers HTTP 500)
    with pytest.raises(KeyProviderError, match=f"aws-kms: key {arn} is disabled"):
        provider.unwrap(wrapped, context=CTX)
