"""CKV_SAIP_2: no IAM policy may allow a wildcard action.

Covers identity policies, KMS key policies, bucket policies and VPC endpoint policies on AWS, and
Azure custom role definitions. An ``Allow`` with an action containing ``*`` (``*``, ``s3:*``,
``kms:Get*``) or any ``NotAction`` fails; ``Deny`` statements may use wildcards (denying broadly is
the safe direction). A VPC endpoint without a policy fails (AWS then allows everything). A policy
checkov cannot render at all is reported UNKNOWN, never PASSED.
"""

from __future__ import annotations

from typing import Any

from _policy_doc import as_list, load_policy, statement_texts, statements, text_actions, unwrap
from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

_POLICY_ATTRS = {
    "aws_iam_role_policy": "policy",
    "aws_iam_policy": "policy",
    "aws_iam_user_policy": "policy",
    "aws_iam_group_policy": "policy",
    "aws_kms_key": "policy",
    "aws_kms_key_policy": "policy",
    "aws_s3_bucket_policy": "policy",
    "aws_vpc_endpoint": "policy",
    "aws_vpc_endpoint_policy": "policy",
}


class NoWildcardIamActions(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure no IAM policy allows wildcard actions",
            id="CKV_SAIP_2",
            categories=[CheckCategories.IAM],
            supported_resources=[*_POLICY_ATTRS, "azurerm_role_definition"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if self.entity_type == "azurerm_role_definition":
            for block in as_list(conf.get("permissions")):
                if not isinstance(block, dict):
                    continue
                for key in ("actions", "data_actions"):
                    if any("*" in str(a) for a in as_list(block.get(key))):
                        return CheckResult.FAILED
            return CheckResult.PASSED
        raw = conf.get(_POLICY_ATTRS[self.entity_type])
        if raw is None or unwrap(raw) in (None, ""):
            # No policy: aws_vpc_endpoint without one gets the AWS default "allow all".
            return (
                CheckResult.FAILED if self.entity_type == "aws_vpc_endpoint" else CheckResult.PASSED
            )
        policy = load_policy(raw)
        if policy is None:
            texts = statement_texts(raw)
            if not texts:
                return CheckResult.UNKNOWN  # an unrendered expression: nothing to judge
            for effect, text in texts:
                actions, not_action = text_actions(text)
                if effect == "Allow" and (not_action or any("*" in a for a in actions)):
                    return CheckResult.FAILED
            return CheckResult.PASSED
        for stmt in statements(policy):
            if unwrap(stmt.get("Effect")) != "Allow":
                continue
            if stmt.get("NotAction") is not None:
                return CheckResult.FAILED
            if any("*" in str(a) for a in as_list(stmt.get("Action"))):
                return CheckResult.FAILED
        return CheckResult.PASSED


check = NoWildcardIamActions()
