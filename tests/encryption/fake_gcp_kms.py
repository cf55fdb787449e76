"""FAKE Google Cloud KMS gRPC server, for tests only (there is no Cloud KMS emulator).

This is a FAKE, not a Google product and not a faithful emulator: it answers the REAL
``google.cloud.kms_v1.KeyManagementServiceClient`` over real gRPC (HTTP/2, optionally TLS), using
the library's own proto-plus request/response types for (de)serialisation, so the client's wire
behaviour — request building, routing headers, status-code mapping, CRC32C fields — is exercised.

What it implements, with real cryptography:

* ``CreateKeyRing``, ``CreateCryptoKey`` (ENCRYPT_DECRYPT, version 1 becomes primary),
  ``CreateCryptoKeyVersion``, ``UpdateCryptoKeyPrimaryVersion`` (rotation),
  ``UpdateCryptoKeyVersion`` (``state`` ENABLED/DISABLED), ``DestroyCryptoKeyVersion``,
  ``GetCryptoKey``, ``GetCryptoKeyVersion``.
* ``Encrypt``: AES-256-GCM under the primary version (or a named version), with the
  ``additional_authenticated_data`` and the key name bound as AAD; verifies the request's
  ``plaintext_crc32c`` / ``additional_authenticated_data_crc32c`` (INVALID_ARGUMENT on mismatch),
  returns ``ciphertext_crc32c`` and the ``verified_*`` flags, ``name`` = the version used.
* ``Decrypt``: finds the version from the ciphertext header, refuses a version that is not
  ENABLED with FAILED_PRECONDITION naming it, fails with INVALID_ARGUMENT on an AAD mismatch or a
  tampered ciphertext, checks ``ciphertext_crc32c``, returns ``plaintext_crc32c`` and
  ``used_primary``.

* ``AsymmetricSign`` and ``GetPublicKey`` for ``EC_SIGN_P256_SHA256`` key versions added with
  :meth:`FakeKms.add_signing_key` (header signatures): ECDSA P-256 over the request's SHA-256
  digest, ``digest_crc32c`` verified, ``signature_crc32c`` returned, PEM public key.

Ciphertext layout (fake-specific): ``b"FKMS" || u32 version || 12-byte nonce || GCM ct+tag``.
``corrupt_next`` lets a test flip a bit of the next response's payload (after its CRC32C was
computed) to prove the client-side integrity checks catch corruption in transit.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import google_crc32c
import grpc
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1
from google.protobuf import timestamp_pb2

SERVICE = "google.cloud.kms.v1.KeyManagementService"
_MAGIC = b"FKMS"
State = kms_v1.CryptoKeyVersion.CryptoKeyVersionState


@dataclass
class _Version:
    key: bytes
    state: int = State.ENABLED


@dataclass
class _CryptoKey:
    versions: dict[int, _Version] = field(default_factory=dict)
    primary: int = 1


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _crc(data: bytes) -> int:
    return int(google_crc32c.value(data))


class FakeKms:
    """State and handlers of the FAKE service (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.key_rings: set[str] = set()
        self.keys: dict[str, _CryptoKey] = {}
        self.corrupt_next: str | None = None  # "encrypt" or "decrypt"
        self.calls: list[str] = []
        self.signing_keys: dict[str, ec.EllipticCurvePrivateKey] = {}

    def add_signing_key(self, version_name: str) -> str:
        """Create an ``EC_SIGN_P256_SHA256`` key version named ``version_name`` (test set-up)."""
        with self._lock:
            self.signing_keys[version_name] = ec.generate_private_key(ec.SECP256R1())
        return version_name

    def AsymmetricSign(self, req: kms_v1.AsymmetricSignRequest) -> kms_v1.AsymmetricSignResponse:
        key = self.signing_keys.get(req.name)
        if key is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKeyVersion {req.name} not found.")
        digest = req.digest.sha256
        if len(digest) != 32:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "digest must be a SHA-256 digest")
        if "digest_crc32c" in req and req.digest_crc32c != _crc(digest):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "digest_crc32c mismatch")
        sig = key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        return kms_v1.AsymmetricSignResponse(
            signature=sig,
            signature_crc32c=_crc(sig),
            verified_digest_crc32c="digest_crc32c" in req,
            name=req.name,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    def GetPublicKey(self, req: kms_v1.GetPublicKeyRequest) -> kms_v1.PublicKey:
        key = self.signing_keys.get(req.name)
        if key is None:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKeyVersion {req.name} not found.")
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return kms_v1.PublicKey(
            pem=pem.decode(),
            algorithm=kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.EC_SIGN_P256_SHA256,
            pem_crc32c=_crc(pem),
            name=req.name,
        )

    # -- helpers ----------------------------------------------------------------------------
    def _key(self, name: str) -> _CryptoKey:
        if name not in self.keys:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKey {name} not found.")
        return self.keys[name]

    @staticmethod
    def _split(name: str) -> tuple[str, int | None]:
        if "/cryptoKeyVersions/" in name:
            key, _, num = name.partition("/cryptoKeyVersions/")
            try:
                return key, int(num)
            except ValueError:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad name {name}") from None
        return name, None

    def _version_pb(self, key_name: str, number: int) -> kms_v1.CryptoKeyVersion:
        version = self.keys[key_name].versions[number]
        return kms_v1.CryptoKeyVersion(
            name=f"{key_name}/cryptoKeyVersions/{number}",
            state=version.state,
            algorithm=kms_v1.CryptoKeyVersion.CryptoKeyVersionAlgorithm.GOOGLE_SYMMETRIC_ENCRYPTION,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    def _key_pb(self, key_name: str) -> kms_v1.CryptoKey:
        key = self.keys[key_name]
        return kms_v1.CryptoKey(
            name=key_name,
            purpose=kms_v1.CryptoKey.CryptoKeyPurpose.ENCRYPT_DECRYPT,
            primary=self._version_pb(key_name, key.primary),
            create_time=timestamp_pb2.Timestamp(seconds=0),
        )

    def _add_version(self, key_name: str) -> int:
        key = self.keys[key_name]
        number = max(key.versions, default=0) + 1
        key.versions[number] = _Version(os.urandom(32))
        return number

    # -- admin RPCs -------------------------------------------------------------------------
    def CreateKeyRing(self, req: kms_v1.CreateKeyRingRequest) -> kms_v1.KeyRing:
        name = f"{req.parent}/keyRings/{req.key_ring_id}"
        self.key_rings.add(name)
        return kms_v1.KeyRing(name=name)

    def CreateCryptoKey(self, req: kms_v1.CreateCryptoKeyRequest) -> kms_v1.CryptoKey:
        if req.parent not in self.key_rings:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"KeyRing {req.parent} not found.")
        name = f"{req.parent}/cryptoKeys/{req.crypto_key_id}"
        if name in self.keys:
            raise _Abort(grpc.StatusCode.ALREADY_EXISTS, f"CryptoKey {name} already exists.")
        self.keys[name] = _CryptoKey()
        self._add_version(name)
        return self._key_pb(name)

    def GetCryptoKey(self, req: kms_v1.GetCryptoKeyRequest) -> kms_v1.CryptoKey:
        self._key(req.name)
        return self._key_pb(req.name)

    def CreateCryptoKeyVersion(
        self, req: kms_v1.CreateCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        self._key(req.parent)
        return self._version_pb(req.parent, self._add_version(req.parent))

    def GetCryptoKeyVersion(
        self, req: kms_v1.GetCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        key_name, number = self._split(req.name)
        if number not in self._key(key_name).versions:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"CryptoKeyVersion {req.name} not found.")
        return self._version_pb(key_name, number)

    def UpdateCryptoKeyPrimaryVersion(
        self, req: kms_v1.UpdateCryptoKeyPrimaryVersionRequest
    ) -> kms_v1.CryptoKey:
        key = self._key(req.name)
        number = int(req.crypto_key_version_id)
        if key.versions.get(number, _Version(b"", State.DESTROYED)).state != State.ENABLED:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{req.name}/cryptoKeyVersions/{number} is not enabled",
            )
        key.primary = number
        return self._key_pb(req.name)

    def UpdateCryptoKeyVersion(
        self, req: kms_v1.UpdateCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        key_name, number = self._split(req.crypto_key_version.name)
        key = self._key(key_name)
        if number not in key.versions or list(req.update_mask.paths) != ["state"]:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "only 'state' of an existing version")
        state = req.crypto_key_version.state
        if state not in (State.ENABLED, State.DISABLED):
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "state must be ENABLED or DISABLED")
        if key.versions[number].state == State.DESTROYED:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION, "version is destroyed")
        key.versions[number].state = state
        return self._version_pb(key_name, number)

    def DestroyCryptoKeyVersion(
        self, req: kms_v1.DestroyCryptoKeyVersionRequest
    ) -> kms_v1.CryptoKeyVersion:
        key_name, number = self._split(req.name)
        version = self._key(key_name).versions[number]  # type: ignore[index]
        version.state = State.DESTROYED
        version.key = b""
        return self._version_pb(key_name, number)  # type: ignore[arg-type]

    # -- crypto RPCs ------------------------------------------------------------------------
    def Encrypt(self, req: kms_v1.EncryptRequest) -> kms_v1.EncryptResponse:
        key_name, number = self._split(req.name)
        key = self._key(key_name)
        number = key.primary if number is None else number
        version = key.versions.get(number)
        if version is None or version.state != State.ENABLED:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"The request cannot be fulfilled. Resource {key_name}/cryptoKeyVersions/{number} "
                f"has value {State(version.state).name if version else 'MISSING'} in field "
                "crypto_key_version.state.",
            )
        if "plaintext_crc32c" in req and req.plaintext_crc32c != _crc(req.plaintext):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The checksum in field plaintext_crc32c did not match the data in field plaintext.",
            )
        aad = req.additional_authenticated_data
        if "additional_authenticated_data_crc32c" in req and (
            req.additional_authenticated_data_crc32c != _crc(aad)
        ):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The checksum in field additional_authenticated_data_crc32c did not match the "
                "data in field additional_authenticated_data.",
            )
        header = _MAGIC + struct.pack(">I", number)
        nonce = os.urandom(12)
        sealed = AESGCM(version.key).encrypt(nonce, req.plaintext, self._aad(key_name, header, aad))
        ciphertext = header + nonce + sealed
        crc = _crc(ciphertext)
        if self.corrupt_next == "encrypt":
            self.corrupt_next = None
            ciphertext = ciphertext[:-1] + bytes([ciphertext[-1] ^ 1])
        return kms_v1.EncryptResponse(
            name=f"{key_name}/cryptoKeyVersions/{number}",
            ciphertext=ciphertext,
            ciphertext_crc32c=crc,
            verified_plaintext_crc32c="plaintext_crc32c" in req,
            verified_additional_authenticated_data_crc32c="additional_authenticated_data_crc32c"
            in req,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    def Decrypt(self, req: kms_v1.DecryptRequest) -> kms_v1.DecryptResponse:
        key_name, number = self._split(req.name)
        if number is not None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "Decrypt takes a CryptoKey name")
        key = self._key(key_name)
        if "ciphertext_crc32c" in req and req.ciphertext_crc32c != _crc(req.ciphertext):
            raise _Abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "The checksum in field ciphertext_crc32c did not match the data in field "
                "ciphertext.",
            )
        invalid = _Abort(
            grpc.StatusCode.INVALID_ARGUMENT, "Decryption failed: the ciphertext is invalid."
        )
        data = req.ciphertext
        if len(data) < 8 + 12 + 16 or data[:4] != _MAGIC:
            raise invalid
        header = data[:8]
        (version_no,) = struct.unpack(">I", data[4:8])
        version = key.versions.get(version_no)
        if version is None:
            raise invalid
        if version.state != State.ENABLED:
            raise _Abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"The request cannot be fulfilled. Resource {key_name}/cryptoKeyVersions/"
                f"{version_no} has value {State(version.state).name} in field "
                "crypto_key_version.state.",
            )
        try:
            plaintext = AESGCM(version.key).decrypt(
                data[8:20],
                data[20:],
                self._aad(key_name, header, req.additional_authenticated_data),
            )
        except Exception:
            raise invalid from None
        crc = _crc(plaintext)
        if self.corrupt_next == "decrypt":
            self.corrupt_next = None
            plaintext = plaintext[:-1] + bytes([plaintext[-1] ^ 1])
        return kms_v1.DecryptResponse(
            plaintext=plaintext,
            plaintext_crc32c=crc,
            used_primary=version_no == key.primary,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )

    @staticmethod
    def _aad(key_name: str, header: bytes, aad: bytes) -> bytes:
        name = key_name.encode()
        return struct.pack(">I", len(name)) + name + header + aad

    # -- gRPC plumbing ----------------------------------------------------------------------
    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, Any] = {}
        for method, (req_type, resp_type) in _TYPES.items():
            methods[method] = grpc.unary_unary_rpc_method_handler(
                self._wrap(method, getattr(self, method)),
                request_deserializer=req_type.deserialize,
                response_serializer=resp_type.serialize,
            )
        return grpc.method_handlers_generic_handler(SERVICE, methods)

    def _wrap(self, method: str, fn: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.calls.append(method)
                try:
                    return fn(request)
                except _Abort as exc:
                    context.abort(exc.code, exc.message)

        return call


_TYPES: dict[str, tuple[Any, Any]] = {
    "CreateKeyRing": (kms_v1.CreateKeyRingRequest, kms_v1.KeyRing),
    "CreateCryptoKey": (kms_v1.CreateCryptoKeyRequest, kms_v1.CryptoKey),
    "GetCryptoKey": (kms_v1.GetCryptoKeyRequest, kms_v1.CryptoKey),
    "CreateCryptoKeyVersion": (kms_v1.CreateCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "GetCryptoKeyVersion": (kms_v1.GetCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "UpdateCryptoKeyPrimaryVersion": (
        kms_v1.UpdateCryptoKeyPrimaryVersionRequest,
        kms_v1.CryptoKey,
    ),
    "UpdateCryptoKeyVersion": (kms_v1.UpdateCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "DestroyCryptoKeyVersion": (kms_v1.DestroyCryptoKeyVersionRequest, kms_v1.CryptoKeyVersion),
    "Encrypt": (kms_v1.EncryptRequest, kms_v1.EncryptResponse),
    "Decrypt": (kms_v1.DecryptRequest, kms_v1.DecryptResponse),
    "AsymmetricSign": (kms_v1.AsymmetricSignRequest, kms_v1.AsymmetricSignResponse),
    "GetPublicKey": (kms_v1.GetPublicKeyRequest, kms_v1.PublicKey),
}


@dataclass
class RunningFake:
    """A started FAKE server: its state, ``host:port`` and the port's TLS-ness."""

    fake: FakeKms
    target: str
    tls: bool


@contextmanager
def serve(*, server_credentials: grpc.ServerCredentials | None = None) -> Iterator[RunningFake]:
    """Run the FAKE on ``127.0.0.1`` (plaintext, or TLS with ``server_credentials``)."""
    fake = FakeKms()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((fake.handler(),))
    if server_credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", server_credentials)
    server.start()
    try:
        yield RunningFake(fake, f"127.0.0.1:{port}", server_credentials is not None)
    finally:
        server.stop(grace=None)
