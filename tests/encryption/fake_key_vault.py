"""FAKE Azure Key Vault keys REST endpoint, for tests only (there is no Key Vault emulator).

This is a FAKE, not a Microsoft product and not a faithful emulator. It lets the REAL
azure-keyvault-keys ``CryptographyClient`` and ``KeyClient`` run their service path — HTTPS
through :func:`saip_encryption.tls.azure_transport`, the Key Vault bearer challenge (401 with
``WWW-Authenticate``), JSON key bundles, wrap/unwrap calls, error bodies — against a local
HTTPS server (``tls_helpers.TlsHttpServer``), with real RSA-OAEP-256 cryptography.

Implemented (RSA keys only; A256KW is covered by the SDK's local ``from_jwk`` crypto):
``POST /keys/{name}/create``, ``POST /keys/{name}/rotate``, ``GET /keys/{name}[/{version}]``,
``GET /keys/{name}/versions``, ``PATCH /keys/{name}/{version}`` (``attributes.enabled``),
``POST /keys/{name}/{version}/wrapkey|unwrapkey``. Any operation other than PATCH/list on a
disabled version answers 403 ``Operation X is not allowed on a disabled key.`` as the service
does; an unknown key or version answers 404 ``KeyNotFound``; an undecryptable value 400
``BadParameter``. :meth:`FakeKeyVault.delete_key` removes a key outright (the service soft-
deletes whole keys, never single versions).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

OAEP_256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
CHALLENGE = (
    'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000",'
    ' resource="https://vault.azure.net"'
)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def _new_rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class _Version:
    private: rsa.RSAPrivateKey
    enabled: bool = True
    created: int = 0


class FakeKeyVault:
    """State and HTTP responder of the FAKE vault; ``url`` is set once the server runs."""

    def __init__(self) -> None:
        self.url = ""
        self.keys: dict[str, dict[str, _Version]] = {}
        self.order: dict[str, list[str]] = {}
        self._lock = threading.Lock()

    # -- state helpers -----------------------------------------------------------------------
    def _add_version(self, name: str) -> str:
        version = secrets.token_hex(16)
        self.keys.setdefault(name, {})[version] = _Version(_new_rsa(), created=int(time.time()))
        self.order.setdefault(name, []).append(version)
        return version

    def delete_key(self, name: str) -> None:
        self.keys.pop(name, None)
        self.order.pop(name, None)

    def _bundle(self, name: str, version: str) -> dict[str, Any]:
        v = self.keys[name][version]
        pub = v.private.public_key().public_numbers()
        return {
            "key": {
                "kid": f"{self.url}/keys/{name}/{version}",
                "kty": "RSA",
                "key_ops": ["wrapKey", "unwrapKey", "encrypt", "decrypt"],
                "n": _b64(_int(pub.n)),
                "e": _b64(_int(pub.e)),
            },
            "attributes": self._attributes(v),
        }

    @staticmethod
    def _attributes(v: _Version) -> dict[str, Any]:
        return {
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }

    # -- HTTP --------------------------------------------------------------------------------
    def respond(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if not headers.get("Authorization", "").startswith("Bearer "):
            return 401, {"WWW-Authenticate": CHALLENGE, "Content-Type": "application/json"}, b""
        with self._lock:
            try:
                status, payload = self._route(method, urlsplit(path).path, body)
            except _HttpError as exc:
                status, payload = exc.status, {"error": {"code": exc.code, "message": exc.message}}
        return (
            status,
            {"Content-Type": "application/json; charset=utf-8"},
            json.dumps(payload).encode(),
        )

    def _version(self, name: str, version: str | None, operation: str) -> tuple[str, _Version]:
        if name not in self.keys:
            raise _HttpError(404, "KeyNotFound", f"A key with (name/id) {name} was not found")
        version = version or self.order[name][-1]
        if version not in self.keys[name]:
            raise _HttpError(
                404, "KeyNotFound", f"A key with (name/id) {name}/{version} was not found"
            )
        v = self.keys[name][version]
        if not v.enabled and operation not in ("update", "list"):
            raise _HttpError(
                403, "Forbidden", f"Operation {operation} is not allowed on a disabled key."
            )
        return version, v

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        if len(parts) < 2 or parts[0] != "keys":
            raise _HttpError(400, "BadParameter", f"unsupported path {path}")
        name = parts[1]
        rest = parts[2:]
        request = json.loads(body) if body else {}
        if method == "POST" and rest == ["create"]:
            if request.get("kty") not in ("RSA", "RSA-HSM"):
                raise _HttpError(400, "BadParameter", "the FAKE vault creates RSA keys only")
            return 200, self._bundle(name, self._add_version(name))
        if method == "POST" and rest == ["rotate"]:
            self._version(name, None, "rotate")
            return 200, self._bundle(name, self._add_version(name))
        if method == "GET" and rest == ["versions"]:
            self._version(name, None, "list")
            items = [
                {"kid": f"{self.url}/keys/{name}/{ver}", "attributes": self._attributes(v)}
                for ver, v in self.keys[name].items()
            ]
            return 200, {"value": items, "nextLink": None}
        if method == "GET" and len(rest) <= 1:
            version, _ = self._version(name, rest[0] if rest else None, "get")
            return 200, self._bundle(name, version)
        if method == "PATCH" and len(rest) == 1:
            version, v = self._version(name, rest[0], "update")
            if "enabled" in request.get("attributes", {}):
                v.enabled = bool(request["attributes"]["enabled"])
            return 200, self._bundle(name, version)
        if method == "POST" and len(rest) == 2 and rest[1] in ("wrapkey", "unwrapkey"):
            operation = "wrapKey" if rest[1] == "wrapkey" else "unwrapKey"
            version, v = self._version(name, rest[0], operation)
            if request.get("alg") != "RSA-OAEP-256":
                raise _HttpError(400, "BadParameter", "the FAKE vault supports RSA-OAEP-256 only")
            value = _unb64(str(request.get("value", "")))
            if operation == "wrapKey":
                out = v.private.public_key().encrypt(value, OAEP_256)
            else:
                try:
                    out = v.private.decrypt(value, OAEP_256)
                except ValueError:
                    raise _HttpError(400, "BadParameter", "Unwrap operation failed") from None
            return 200, {"kid": f"{self.url}/keys/{name}/{version}", "value": _b64(out)}
        raise _HttpError(405, "MethodNotAllowed", f"{method} {path} is not implemented by the FAKE")


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
