"""Composition of the capability packages: the one place where they meet.

``saip_ingestion`` and ``saip_fl`` take an ``Encryptor`` (``encrypt``/``decrypt`` with a context);
``saip_encryption`` provides it. This module builds it from the settings and CLI options, binds the
configured ``[encryption] context`` into every call (a KMS key policy may require it, e.g. the
``saip:pipeline`` condition of ``infra/aws``), and gives cloud backends TLS-pinned SDK sessions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from saip.context import AppState
from saip.errors import ConfigError


class ContextBoundEncryptor:
    """Wraps an encryptor so that every call also binds a fixed context (the settings').

    A key present in both the fixed and the per-call context is refused (``ConfigError``): the
    caller's binding (dataset, record key, purpose) is never silently overridden.
    """

    def __init__(self, inner: Any, *, context: Mapping[str, str]) -> None:
        self._inner = inner
        self._fixed = MappingProxyType(dict(context))

    def _merge(self, context: Mapping[str, str]) -> dict[str, str]:
        clash = sorted(set(context) & set(self._fixed))
        if clash:
            raise ConfigError(
                f"setting 'encryption.context': key(s) {', '.join(clash)} are reserved by saip"
            )
        return {**self._fixed, **context}

    def encrypt(self, plaintext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Encrypt with the per-call context plus the configured one."""
        return bytes(self._inner.encrypt(plaintext, context=self._merge(context)))

    def decrypt(self, ciphertext: bytes, *, context: Mapping[str, str]) -> bytes:
        """Decrypt; the ciphertext must carry the per-call and the configured context."""
        return bytes(self._inner.decrypt(ciphertext, context=self._merge(context)))

    def bind(self, context: Mapping[str, str]) -> Any:
        """The wrapped encryptor's bound-context batch API for the per-call plus the configured
        context (``seal``/``open``/``seal_many``/``open_many``; see ``EnvelopeEncryptor.bind``)."""
        return self._inner.bind(self._merge(context))

    def close(self) -> None:
        """Zero the cached data keys of the wrapped encryptor."""
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


def resolve_key_uri(
    key: str | None, *, configured: str | None, data_dir: Path, console: Any = None
) -> str:
    """The master key URI: ``key`` (an option), else ``configured`` (``[encryption] key``), else
    the local default key ``<data-dir>/keys/master.key``, created 0600 on first use."""
    from saip_encryption.providers.local import create_local_key

    uri = key or configured
    if uri is not None:
        return uri
    path = Path(data_dir) / "keys" / "master.key"
    if not path.exists():
        create_local_key(path)
        if console is not None:
            console.print(f"created local master key {path}")
    return f"local:{path}"


def provider_options(uri: str, *, endpoint_url: str | None, region: str | None) -> dict[str, Any]:
    """Options for ``saip_encryption.from_uri``: AWS KMS takes the same private endpoint/region
    as the rest of the AWS pipeline (without it, the KMS client would go to the public endpoint)."""
    if not uri.startswith("aws-kms:"):
        return {}
    options: dict[str, Any] = {}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if region:
        options["region"] = region
    return options


def build_encryptor(
    uri: str,
    *,
    context: Mapping[str, str],
    endpoint_url: str | None = None,
    region: str | None = None,
) -> ContextBoundEncryptor:
    """An envelope encryptor (data-key cache on) for ``uri``, ``context`` bound to every call."""
    from saip_encryption import EnvelopeEncryptor, from_uri

    provider = from_uri(uri, **provider_options(uri, endpoint_url=endpoint_url, region=region))
    return ContextBoundEncryptor(EnvelopeEncryptor([provider]), context=context)


def encryptor(
    state: AppState,
    key: str | None,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
) -> ContextBoundEncryptor:
    """The encryptor a CLI command uses: key and context from options and settings."""
    uri = resolve_key_uri(
        key, configured=state.config.encryption.key, data_dir=state.data_dir, console=state.console
    )
    return build_encryptor(
        uri,
        context=state.config.encryption.context,
        endpoint_url=endpoint_url or state.config.ingest.endpoint_url,
        region=region or state.config.ingest.region,
    )


def backend_options(name: str) -> dict[str, Any]:
    """SDK objects injected into a cloud backend so that it refuses TLS < 1.2."""
    if name == "aws":
        from saip_encryption import tls

        return {"session": tls.boto3_session()}
    return {}
