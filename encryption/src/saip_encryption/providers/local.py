"""Local key provider (``local:PATH``): a 256-bit master key in an owner-only file.

The key file is created by :func:`create_local_key` (``saip keys create-local PATH``): JSON with a
random key ID and one or more key *versions* (``saip keys create-local --rotate PATH`` adds one;
new data keys are wrapped under the newest, old versions keep old data readable). The file is
written ``0600`` with ``O_CREAT | O_EXCL`` and is refused on load if it is readable or writable by
group or others, or owned by another user — the same rule OpenSSH applies to private keys.

Wrapping is AES-256-GCM (NIST SP 800-38D) under the master key with a random 96-bit nonce and the
encryption context as additional authenticated data::

    wrapped = nonce(12) || AES-256-GCM(master_v, nonce, data_key, aad) (32 + 16 bytes)
    aad     = b"saip-local-wrap/v1" || uint16(len(key_id)) || key_id || encode_context(context)

Random nonces bound the number of wraps per master-key version to 2^32 (SP 800-38D §8.3); a
local key wraps one data key per artifact or per cache period, far below that. Rotate it anyway.

Limits: the master key versions are held in ``bytearray`` objects zeroed by
:meth:`LocalKeyProvider.close`, but every wrap and unwrap copies the key into a Python ``bytes``
and into a new ``AESGCM`` object (``cryptography`` keeps its own copy), and those copies cannot be
wiped — they are dropped when the call returns. A local key file is only as safe as the account
and disk that hold it. Use a cloud KMS/HSM key in production.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from saip_encryption.errors import DecryptionError, EncryptionConfigError, KeyProviderError
from saip_encryption.providers.base import WrappedKey
from saip_encryption.wire import LOCAL_KEY_ID, encode_context

__all__ = ["SCHEME", "LocalKeyProvider", "create_local_key", "from_uri"]

SCHEME = "local"
_FORMAT = "saip-local-key"
_AAD_LABEL = b"saip-local-wrap/v1"
_LOG = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_new(path: Path, document: dict[str, Any]) -> None:
    data = (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask cannot widen it, but make it explicit
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_local_key(path: str | os.PathLike[str], *, rotate: bool = False) -> str:
    """Create a local master key file (mode 0600), or add a new version to it.

    Parameters
    ----------
    path:
        Where to write the key. Its parent directory is created owner-only (0700) if missing.
    rotate:
        Add a new key version to an existing file (the newest version wraps new data keys; the
        older ones still unwrap old data). Without it an existing file is never overwritten.

    Returns
    -------
    str
        The new key ID (``<key uuid>/v<version>``), as recorded in wrapped keys.

    Raises
    ------
    EncryptionConfigError
        The file exists (without ``rotate``), or (with ``rotate``) is missing or unsafe.
    """
    p = Path(path)
    if rotate:
        provider = LocalKeyProvider(p)
        doc = provider._load()
        version = max(int(v["version"]) for v in doc["versions"]) + 1
        doc["versions"].append(
            {
                "version": version,
                "created": _now(),
                "key": base64.b64encode(secrets.token_bytes(32)).decode(),
            }
        )
        provider.close()
        tmp = p.with_name(p.name + f".tmp-{secrets.token_hex(4)}")
        _write_new(tmp, doc)
        os.replace(tmp, p)
        return f"{doc['key_uuid']}/v{version}"
    if p.exists() or p.is_symlink():
        raise EncryptionConfigError(f"local key file {p} already exists (refusing to overwrite)")
    if not p.parent.exists():
        p.parent.mkdir(parents=True, mode=0o700)
    key_uuid = secrets.token_hex(16)
    _write_new(
        p,
        {
            "format": _FORMAT,
            "format_version": 1,
            "key_uuid": key_uuid,
            "versions": [
                {
                    "version": 1,
                    "created": _now(),
                    "key": base64.b64encode(secrets.token_bytes(32)).decode(),
                }
            ],
        },
    )
    return f"{key_uuid}/v1"


class LocalKeyProvider:
    """A master key held in a local, owner-only key file.

    Parameters
    ----------
    path:
        The key file written by :func:`create_local_key`.

    Raises
    ------
    EncryptionConfigError
        The file is missing, not a regular file, owned by another user, accessible to group or
        others (the message says how to fix it), or not a valid key file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._keys: dict[int, bytearray] = {}
        doc = self._load()
        self._uuid: str = doc["key_uuid"]
        for entry in doc["versions"]:
            raw = base64.b64decode(entry["key"], validate=True)
            if len(raw) != 32:
                raise EncryptionConfigError(f"local key file {self._path}: key is not 256 bits")
            self._keys[int(entry["version"])] = bytearray(raw)
        if not self._keys:
            raise EncryptionConfigError(f"local key file {self._path} holds no key version")
        self._primary = max(self._keys)

    def _load(self) -> dict[str, Any]:
        try:
            fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            raise EncryptionConfigError(
                f"local key file {self._path} not found "
                f"(create one with: saip keys create-local {self._path})"
            ) from None
        except OSError as exc:
            raise EncryptionConfigError(
                f"local key file {self._path} cannot be opened: {exc.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise EncryptionConfigError(f"local key file {self._path} is not a regular file")
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                raise EncryptionConfigError(
                    f"local key file {self._path} is accessible by group/others "
                    f"(mode {mode:04o}); refusing to use it: run chmod 600 {self._path}"
                )
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                raise EncryptionConfigError(
                    f"local key file {self._path} is owned by uid {st.st_uid}, not by you"
                )
            data = b""
            while chunk := os.read(fd, 65536):
                data += chunk
        finally:
            os.close(fd)
        try:
            doc = json.loads(data)
            if doc.get("format") != _FORMAT or doc.get("format_version") != 1:
                raise ValueError("unknown format")
            if not isinstance(doc["key_uuid"], str) or not isinstance(doc["versions"], list):
                raise ValueError("bad fields")
        except (ValueError, KeyError, TypeError) as exc:
            raise EncryptionConfigError(
                f"local key file {self._path} is not a saip local key file ({exc})"
            ) from None
        return dict(doc)

    # -- KeyProvider ----------------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """``local:`` followed by the key file path."""
        return f"{SCHEME}:{self._path}"

    @property
    def key_uuid(self) -> str:
        """Random identifier of this key file (stable across versions)."""
        return self._uuid

    @property
    def primary_key_id(self) -> str:
        """Key ID of the version that wraps new data keys."""
        return f"{self._uuid}/v{self._primary}"

    def accepts(self, key_id: str) -> bool:
        """True if ``key_id`` is ``<this key's uuid>/v<version>`` (the decrypt allow-list)."""
        match = LOCAL_KEY_ID.fullmatch(key_id) if isinstance(key_id, str) else None
        return match is not None and match.group("uuid") == self._uuid

    def generate_data_key(self, *, context: Mapping[str, str]) -> tuple[bytearray, WrappedKey]:
        """A fresh random 256-bit data key and its wrap under the newest version."""
        data_key = bytearray(secrets.token_bytes(32))
        return data_key, self.wrap(data_key, context=context)

    def wrap(self, data_key: bytes | bytearray, *, context: Mapping[str, str]) -> WrappedKey:
        """Wrap ``data_key`` under the newest version with ``context`` as AAD."""
        if not isinstance(data_key, bytes | bytearray) or len(data_key) != 32:
            raise ValueError("data_key must be 32 bytes")
        key_id = self.primary_key_id
        nonce = secrets.token_bytes(12)
        aead = AESGCM(bytes(self._master(self._primary)))
        ct = aead.encrypt(nonce, bytes(data_key), self._aad(key_id, context))
        return WrappedKey(SCHEME, key_id, nonce + ct)

    def unwrap(self, wrapped: WrappedKey, *, context: Mapping[str, str]) -> bytearray:
        """Unwrap; :class:`DecryptionError` if it fails authentication (tampered, wrong context).

        Raises
        ------
        DecryptionError
            A key ID that breaks the grammar ``<32 hex>/v<digits>`` (e.g. a malformed version),
            or a wrapped key that does not authenticate under that version and context.
        KeyProviderError
            A well-formed key ID of another key file or of a version this file no longer holds
            (the message names the version).
        """
        match = LOCAL_KEY_ID.fullmatch(wrapped.key_id) if isinstance(wrapped.key_id, str) else None
        if wrapped.provider != SCHEME or match is None:
            raise DecryptionError()
        if match.group("uuid") != self._uuid:
            raise KeyProviderError(
                f"local: key {wrapped.key_id} is not held by key file {self._path}"
            )
        version = int(match.group("version"))
        if version not in self._keys:
            raise KeyProviderError(
                f"local: key {self._uuid} version v{version} is not in key file "
                f"{self._path} (was it removed?)"
            )
        if len(wrapped.ciphertext) != 12 + 32 + 16:
            raise DecryptionError()
        aead = AESGCM(bytes(self._master(version)))
        try:
            out = aead.decrypt(
                wrapped.ciphertext[:12],
                wrapped.ciphertext[12:],
                self._aad(wrapped.key_id, context),
            )
        except InvalidTag:
            raise DecryptionError() from None
        return bytearray(out)

    def close(self) -> None:
        """Zero the in-memory master key versions."""
        for key in self._keys.values():
            key[:] = bytes(len(key))
        self._keys.clear()

    # -- internals ------------------------------------------------------------------------------

    def _master(self, version: int) -> bytearray:
        try:
            return self._keys[version]
        except KeyError:
            raise KeyProviderError(f"local: key {self._uuid} has been closed") from None

    @staticmethod
    def _aad(key_id: str, context: Mapping[str, str]) -> bytes:
        kid = key_id.encode("utf-8")
        return _AAD_LABEL + len(kid).to_bytes(2, "big") + kid + encode_context(context)

    def __repr__(self) -> str:
        return f"LocalKeyProvider({str(self._path)!r}, key_id={self.primary_key_id!r})"


def from_uri(uri: str, **options: Any) -> LocalKeyProvider:
    """Build a :class:`LocalKeyProvider` from ``local:PATH`` (no options)."""
    if not uri.startswith(f"{SCHEME}:") or len(uri) == len(SCHEME) + 1:
        raise EncryptionConfigError(f"key URI {uri!r} must look like 'local:PATH'")
    if options:
        raise TypeError(f"local: unknown option(s) {', '.join(sorted(options))} (none allowed)")
    return LocalKeyProvider(uri[len(SCHEME) + 1 :])
