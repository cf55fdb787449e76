"""Helpers shared by the cloud key providers (context checks, option checks, key-size checks)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from saip_encryption.errors import EncryptionConfigError

#: Every provider wraps 256-bit data keys (AES-256-GCM in the envelope).
DATA_KEY_BYTES = 32


def check_context(context: Mapping[str, str]) -> dict[str, str]:
    """Return the encryption context as a plain ``dict``; ``TypeError`` unless str → str."""
    if not isinstance(context, Mapping):
        raise TypeError(f"context must be a mapping of str to str, got {type(context).__name__}")
    out: dict[str, str] = {}
    for key, value in context.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("context keys and values must be str")
        out[key] = value
    return out


def canonical_context(context: Mapping[str, str]) -> bytes:
    """Deterministic bytes of a context (sorted keys, compact UTF-8 JSON), for use as AAD."""
    return json.dumps(
        dict(sorted(check_context(context).items())),
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def check_data_key(data_key: bytes | bytearray) -> None:
    """``TypeError``/``ValueError`` unless ``data_key`` is 32 bytes (never echoes the key)."""
    if not isinstance(data_key, bytes | bytearray):
        raise TypeError(f"data_key must be bytes or bytearray, got {type(data_key).__name__}")
    if len(data_key) != DATA_KEY_BYTES:
        raise ValueError(f"data_key must be {DATA_KEY_BYTES} bytes, got {len(data_key)}")


def split_uri(uri: str, scheme: str) -> str:
    """Return the identifier after ``scheme:``; :class:`EncryptionConfigError` otherwise."""
    if not isinstance(uri, str):
        raise TypeError(f"key URI must be a string, got {type(uri).__name__}")
    prefix = f"{scheme}:"
    if not uri.startswith(prefix) or len(uri) == len(prefix):
        raise EncryptionConfigError(f"key URI {uri!r} must look like '{scheme}:IDENTIFIER'")
    return uri[len(prefix) :]


def check_options(options: Mapping[str, Any], allowed: frozenset[str], scheme: str) -> None:
    """``TypeError`` naming the first option ``from_uri`` does not know."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"{scheme}: unknown option(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def short(message: object, limit: int = 200) -> str:
    """One line, bounded length: for embedding a service's error text in our messages."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
