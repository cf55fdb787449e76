"""Adversarial review of encryption v2 (second pass): regression tests for what it found.

* a shared data-key cache must never hand one encryptor's epoch to another whose master keys
  merely *print* the same (an AWS alias or bare key ID names a different key per region,
  account or endpoint);
"""

from __future__ import annotations

import boto3
import pytest
from saip_encryption import DataKeyCache, DecryptionError, EnvelopeEncryptor, from_uri, wire

CTX = {"dataset": "d1", "tenant": "t1"}


def test_shared_cache_separates_same_alias_in_two_regions(moto_url: str) -> None:
    """Attack: two tenants' encryptors share one cache and both name ``alias/saip-data`` — in
    different regions (or accounts). Keyed by the URI text, tenant B's records were sealed under
    tenant A's epoch, i.e. wrapped only under A's KMS key: A's key holders could read B's data
    and B's own key could not."""
    arns = {}
    for region in ("us-east-1", "eu-west-1"):
        kms = boto3.client("kms", endpoint_url=moto_url, region_name=region)
        arns[region] = kms.create_key(Description=region)["KeyMetadata"]["Arn"]
        kms.create_alias(AliasName="alias/saip-data", TargetKeyId=arns[region])
    shared = DataKeyCache()
    enc_a = EnvelopeEncryptor(
        from_uri("aws-kms:alias/saip-data", endpoint_url=moto_url, region="us-east-1"),
        cache=shared,
    )
    enc_b = EnvelopeEncryptor(
        from_uri("aws-kms:alias/saip-data", endpoint_url=moto_url, region="eu-west-1"),
        cache=shared,
    )
    enc_a.encrypt(b"a", context=CTX)
    b = enc_b.bind(CTX).seal_many([b"b1", b"b2"])
    assert wire.parse_header(b[0]).wrapped_keys()[0].key_id == arns["eu-west-1"]
    mine = EnvelopeEncryptor(from_uri(f"aws-kms:{arns['eu-west-1']}", endpoint_url=moto_url))
    assert mine.bind(CTX).open_many(b) == [b"b1", b"b2"]
    theirs = EnvelopeEncryptor(from_uri(f"aws-kms:{arns['us-east-1']}", endpoint_url=moto_url))
    with pytest.raises(DecryptionError):
        theirs.decrypt(b[0], context=CTX)
