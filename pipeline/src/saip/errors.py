"""Error types of the ``saip`` CLI layer.

Each capability package raises its own error type at its security boundary (for example
``saip_encryption.DecryptionError``); the CLI turns any of them into one clear line and a
non-zero exit code. Errors defined here are the CLI's own: configuration and usage.
"""

from __future__ import annotations


class SaipError(Exception):
    """Base class of errors raised by the ``saip`` CLI layer itself."""


class ConfigError(SaipError):
    """The configuration file or a setting is invalid; the message names the setting."""


class PipelineError(SaipError):
    """A pipeline step failed or a gate (e.g. the poisoning risk gate) refused to continue."""


class GateError(PipelineError):
    """A security gate ran and refused (risk over ``--max-risk``, quarantine rate over its limit,
    a degraded federated run). The CLI exits with code 3 for it, distinct from a crash (1)."""


class InputError(SaipError):
    """An input or output path given on the command line cannot be used (missing, a directory,
    unwritable, an output that exists without ``--force``). Raised before any heavy work starts."""


class HintedDecryptionError(SaipError):
    """``decryption failed`` plus a hint read from the file's *public* header (a key version the
    given key does not hold, a context key not supplied). Raised only when the header alone explains
    the failure; tampering and wrong keys keep the one opaque ``DecryptionError`` (no oracle)."""

    def __init__(self, hint: str) -> None:
        super().__init__(f"decryption failed; hint (from the unauthenticated header): {hint}")
