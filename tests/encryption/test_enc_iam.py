"""Least privilege with moto's IAM enforcement: producers wrap, consumers unwrap, nothing else.

The IAM policy documents are the shipped templates ``encryption/policies/aws-producer.json`` and
``aws-consumer.json`` (``${kms_key_arn}`` placeholder, Terraform ``templatefile`` syntax).

moto gap (measured, moto 5.2.5): KMS calls are authorised against resource ``*``, so a policy
scoped to the key ARN denies *every* call in moto, and key policies are never enforced. The test
therefore renders the templates with ``*`` and proves the **action** split only; the resource
scoping to one key is checked statically below and must be verified live (see the live test).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import boto3
import pytest
from saip_encryption import EnvelopeEncryptor, KeyProviderError
from saip_encryption.providers import aws

POLICIES = Path(__file__).resolve().parents[2] / "encryption" / "policies"
CTX = {"dataset": "digits", "tenant": "t1"}


def _render(name: str, key_arn: str) -> dict[str, Any]:
    text = (POLICIES / name).read_text(encoding="utf-8").replace("${kms_key_arn}", key_arn)
    return dict(json.loads(text))


def _user(iam: Any, name: str, policy: dict[str, Any], url: str) -> boto3.session.Session:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-kms", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name="us-east-1",
    )


def test_shipped_policies_grant_only_their_role_on_one_key() -> None:
    producer = _render("aws-producer.json", "KEY")
    consumer = _render("aws-consumer.json", "KEY")
    for doc, actions in (
        (producer, {"kms:GenerateDataKey", "kms:Encrypt"}),
        (consumer, {"kms:Decrypt"}),
    ):
        assert doc["Version"] == "2012-10-17"
        (statement,) = doc["Statement"]
        assert statement["Effect"] == "Allow"
        assert set(statement["Action"]) == actions
        assert statement["Resource"] == "KEY"  # one key, never "*"
        assert "NotAction" not in statement
        assert "NotResource" not in statement


def test_producer_encrypts_but_cannot_decrypt_consumer_the_reverse(moto_iam: Any) -> None:
    url = moto_iam.url
    kms = boto3.client("kms", endpoint_url=url, region_name="us-east-1")
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    arn = kms.create_key()["KeyMetadata"]["Arn"]
    # moto authorises KMS against resource "*" (module docstring): render with "*".
    producer = _user(iam, "saip-producer", _render("aws-producer.json", "*"), url)
    consumer = _user(iam, "saip-consumer", _render("aws-consumer.json", "*"), url)
    moto_iam.enforce_after(0)

    as_producer = aws.from_uri(f"aws-kms:{arn}", endpoint_url=url, session=producer)
    as_consumer = aws.from_uri(f"aws-kms:{arn}", endpoint_url=url, session=consumer)

    data_key, wrapped = as_producer.generate_data_key(context=CTX)
    assert as_producer.wrap(data_key, context=CTX).key_id == arn
    with pytest.raises(KeyProviderError, match=rf"aws-kms: key {arn} access denied .*kms:Decrypt"):
        as_producer.unwrap(wrapped, context=CTX)

    assert as_consumer.unwrap(wrapped, context=CTX) == data_key
    with pytest.raises(KeyProviderError, match=r"access denied .*kms:GenerateDataKey"):
        as_consumer.generate_data_key(context=CTX)
    with pytest.raises(KeyProviderError, match=r"access denied .*kms:Encrypt"):
        as_consumer.wrap(data_key, context=CTX)

    # The same split through the envelope: a producer seals records it cannot open.
    blob = EnvelopeEncryptor([as_producer]).encrypt(b"record", context=CTX)
    assert EnvelopeEncryptor([as_consumer]).decrypt(blob, context=CTX) == b"record"
    with pytest.raises(KeyProviderError, match="access denied"):
        EnvelopeEncryptor([as_producer]).decrypt(blob, context=CTX)


def test_unknown_principal_is_denied(moto_iam: Any) -> None:
    url = moto_iam.url
    arn = boto3.client("kms", endpoint_url=url, region_name="us-east-1").create_key()[
        "KeyMetadata"
    ]["Arn"]
    moto_iam.enforce_after(0)
    provider = aws.from_uri(f"aws-kms:{arn}", endpoint_url=url)  # dummy creds: no IAM user
    with pytest.raises(KeyProviderError, match=f"aws-kms: key {arn}"):
        provider.generate_data_key(context=CTX)


@pytest.mark.live("aws")
def test_live_consumer_role_cannot_generate() -> None:
    """Run with the *consumer* role's credentials and SAIP_LIVE_AWS_KMS_KEY (a key ARN)."""
    key = os.environ.get("SAIP_LIVE_AWS_KMS_KEY")
    if not key or os.environ.get("SAIP_LIVE_AWS_ROLE") != "consumer":
        pytest.skip("set SAIP_LIVE_AWS_KMS_KEY and SAIP_LIVE_AWS_ROLE=consumer")
    with pytest.raises(KeyProviderError, match="access denied"):
        aws.from_uri(f"aws-kms:{key}").generate_data_key(context=CTX)
