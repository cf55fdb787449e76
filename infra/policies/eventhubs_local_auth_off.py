"""CKV_SAIP_4: an Event Hubs namespace must have local (SAS key) authentication disabled.

With ``local_authentication_enabled`` left at its default (true) anyone holding a shared access key
can send or read; only Entra ID identities with data-plane roles should. The attribute must be set
to ``false`` explicitly.
"""

from __future__ import annotations

from typing import Any

from _policy_doc import unwrap
from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck


class EventHubsLocalAuthDisabled(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Ensure Event Hubs namespaces disable local (SAS) authentication",
            id="CKV_SAIP_4",
            categories=[CheckCategories.IAM],
            supported_resources=["azurerm_eventhub_namespace"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        value = unwrap(conf.get("local_authentication_enabled"))
        return (
            CheckResult.PASSED
            if value is False or str(value).lower() == "false"
            else CheckResult.FAILED
        )


check = EventHubsLocalAuthDisabled()
