"""CKV_SAIP_1: an S3 bucket policy must deny every request not made over TLS.

checkov has no rule for this (DESIGN.md §3). Passes when the policy holds a ``Deny`` statement for
``s3:*`` (or ``*``) on the bucket and its objects with ``"Bool": {"aws:SecureTransport": "false"}``.
A policy checkov cannot render at all is reported UNKNOWN, never PASSED.
"""

from __future__ import annotations

import re
from typing import Any

from _policy_doc import as_list, load_policy, statement_texts, statements, text_actions, unwrap
from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

_INSECURE = re.compile(r"""['"]aws:SecureTransport['"]\s*:\s*\[?\s*['"]?false""", re.IGNORECASE)


def _denies_plain_http(stmt: dict[str, Any]) -> bool:
    if unwrap(stmt.get("Effect")) != "Deny":
        return False
    if not {str(a) for a in as_list(stmt.get("Action"))} & {"s3:*", "*"}:
        return False
    resources = [str(r) for r in as_list(stmt.get("Resource"))]
    if not any(r.endswith("/*") for r in resources) or all(r.endswith("/*") for r in resources):
        return False
    cond = unwrap(stmt.get("Condition")) or {}
    flag = unwrap((unwrap(cond.get("Bool")) or {}).get("aws:SecureTransport"))
    return str(flag).lower() == "false"


def _text_denies_plain_http(effect: str, text: str) -> bool:
    actions, _ = text_actions(text)
    return effect == "Deny" and bool({"s3:*", "*"} & set(actions)) and bool(_INSECURE.search(text))


class S3TlsOnlyBucketPolicy(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure the S3 bucket policy denies requests that are not made over TLS",
            id="CKV_SAIP_1",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["aws_s3_bucket_policy"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        raw = conf.get("policy")
        policy = load_policy(raw)
        if policy is not None:
            ok = any(_denies_plain_http(s) for s in statements(policy))
            return CheckResult.PASSED if ok else CheckResult.FAILED
        texts = statement_texts(raw)
        if not texts:
            return CheckResult.UNKNOWN
        ok = any(_text_denies_plain_http(effect, text) for effect, text in texts)
        return CheckResult.PASSED if ok else CheckResult.FAILED


check = S3TlsOnlyBucketPolicy()
