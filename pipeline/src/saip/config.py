"""The ``--config FILE`` TOML settings, validated by pydantic at start-up.

Unknown keys are rejected with their dotted name, so a typo never silently falls back to a
default. Every section is optional; CLI options override the file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from saip.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncryptionSection(_Section):
    """Master key used for data at rest, as a key URI (``local:PATH``, ``aws-kms:ARN``, ...);
    ``sign_with``: a KMS-held EC P-256 key URI that signs envelope headers; ``verify_with``:
    ``SCHEME:KEY_ID=PUBLIC_KEY_PEM`` entries, one of which must have signed every envelope."""

    key: str | None = None
    context: dict[str, str] = Field(default_factory=dict)
    sign_with: str | None = None
    verify_with: list[str] = Field(default_factory=list)


class AwsIngestOptions(_Section):
    """``[ingest.aws]``: options of the AWS backend beyond the generic ones."""

    kms_key_id: str | None = None
    """SSE-KMS key of the landing bucket, sent on every PutObject (``infra/aws`` denies
    ``aws:kms`` without a key ID, which S3 would serve with the AWS managed key)."""
    lease_table: str | None = None
    """DynamoDB lease table shared by several consumers of one stream (scale-out;
    ``infra/aws`` output ``lease_table_name``); each consumer needs ``--consumer-name``."""


class AzureIngestOptions(_Section):
    """``[ingest.azure]``: options of the Azure backend beyond the generic ones."""

    namespace: str | None = None
    """Event Hubs namespace FQDN (``<name>.servicebus.windows.net``)."""
    consumer_group: str | None = None
    checkpoint_container: str | None = None
    commit_store: str | None = None
    """Scale-out: ``az://CONTAINER/PREFIX`` of the claims and batch decisions (``infra/azure``
    output ``commit_store``); each consumer needs ``--consumer-name``."""
    load_balancing_interval: float | None = None
    """Seconds between the SDK's partition ownership rounds (default 10; a dead consumer's
    partitions move after 6 x this)."""


class GcpIngestOptions(_Section):
    """``[ingest.gcp]``: options of the GCP backend beyond the generic ones."""

    project: str | None = None
    subscription: str | None = None
    dead_letter_topic: str | None = None
    pubsub_endpoint: str | None = None
    commit_store: str | None = None
    """Scale-out: shared create-only store of claims and batch decisions (``gs://BUCKET/PREFIX``,
    ``infra/gcp`` output ``commit_bucket``); each consumer needs ``--consumer-name``."""
    max_lease_extension_seconds: int | None = None
    """Cap of each ack-deadline extension (10-600 s): how soon a dead consumer's messages are
    redelivered to the others."""
    max_outstanding_messages: int | None = None
    """Streaming-pull flow control: un-acked messages one consumer holds at most (default
    1000); keep it near the batch size when several consumers share a subscription."""


class IngestSection(_Section):
    """Ingestion backend and its endpoints (private/VPC endpoints go here).

    ``stream``/``bucket``/``endpoint_url``/``region`` are the generic names every backend maps
    (Kinesis stream / Pub/Sub topic / event hub; bucket / BigQuery table / container). The
    backend's own sub-table (``[ingest.aws]``, ``[ingest.azure]``, ``[ingest.gcp]``) holds what
    has no generic name; only the selected backend's sub-table is passed to it.
    """

    backend: Literal["local", "aws", "gcp", "azure"] = "local"
    endpoint_url: str | None = None
    region: str | None = None
    stream: str | None = None
    bucket: str | None = None
    aws: AwsIngestOptions = Field(default_factory=AwsIngestOptions)
    azure: AzureIngestOptions = Field(default_factory=AzureIngestOptions)
    gcp: GcpIngestOptions = Field(default_factory=GcpIngestOptions)

    def backend_options(self, name: str) -> dict[str, Any]:
        """The set options of backend ``name``'s sub-table (empty for ``local``)."""
        section = {"aws": self.aws, "azure": self.azure, "gcp": self.gcp}.get(name)
        if section is None:
            return {}
        return {k: v for k, v in section.model_dump().items() if v is not None}


class ScanSection(_Section):
    """Poisoning gate before training: the pipeline stops above ``max_risk`` (0–100)."""

    max_risk: Annotated[float, Field(ge=0, le=100)] = 40.0


class FLSection(_Section):
    """Federated run settings used by ``saip demo`` (``saip fl run --config`` takes its own)."""

    run_config: Path | None = None


class SaipConfig(_Section):
    """Top-level settings file."""

    data_dir: Path | None = None
    encryption: EncryptionSection = Field(default_factory=EncryptionSection)
    ingest: IngestSection = Field(default_factory=IngestSection)
    scan: ScanSection = Field(default_factory=ScanSection)
    fl: FLSection = Field(default_factory=FLSection)


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming every rejected setting by its dotted path."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting '{loc}'")
        else:
            parts.append(f"setting '{loc}': {err['msg']}")
    return "; ".join(parts)


def load_config(path: Path | None) -> SaipConfig:
    """Read and validate a TOML settings file; ``None`` gives the defaults.

    Raises
    ------
    ConfigError
        The file is missing, is not valid TOML, or holds an unknown or invalid setting
        (the message names it).
    """
    if path is None:
        return SaipConfig()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return SaipConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {path}: {describe_validation_error(exc)}") from None
