"""Composition of the capability packages: the one place where they meet.

``saip_ingestion`` and ``saip_fl`` take an ``Encryptor`` (``encrypt``/``decrypt`` with a context);
``saip_encryption`` provides it. This module builds it from the settings and CLI options, binds the
configured ``[encryption] context`` into every call (a KMS key policy may require it, e.g. the
``saip:pipeline`` condition of ``infra/aws``), and gives cloud backends TLS-pinned SDK sessions.
"""

from __future__ import annotations

import hashlib
import os
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


def key_home() -> Path:
    """Where default local master keys live: ``$SAIP_KEY_DIR``, else
    ``$XDG_CONFIG_HOME/saip/keys``, else ``~/.config/saip/keys`` — never inside the data
    directory, so a copy of the data directory (a backup, a shared volume) holds no key."""
    explicit = os.environ.get("SAIP_KEY_DIR")
    if explicit:
        return Path(explicit)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "saip" / "keys"


def default_key_path(data_dir: Path) -> Path:
    """The default local master key of ``data_dir``:
    ``<key_home>/<first 16 hex of SHA-256(resolved data dir)>.key``."""
    ident = hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:16]
    return key_home() / f"{ident}.key"


def resolve_key_uri(
    key: str | None, *, configured: str | None, data_dir: Path, console: Any = None
) -> str:
    """The master key URI: ``key`` (an option), else ``configured`` (``[encryption] key``), else
    the local default key of ``data_dir`` (:func:`default_key_path`, outside the data
    directory), created 0600 in a 0700 directory on first use.

    A key already kept at the old place ``<data-dir>/keys/master.key`` is still used, with a
    warning, so that existing data stays readable.
    """
    from saip_encryption.providers.local import create_local_key

    uri = key or configured
    if uri is not None:
        return uri
    legacy = Path(data_dir) / "keys" / "master.key"
    if legacy.is_file():
        if console is not None:
            console.print(
                f"[yellow]warning:[/] using the master key kept beside the data ({legacy}); "
                f"move it to {key_home()} or pass --key"
            )
        return f"local:{legacy}"
    path = default_key_path(data_dir)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
