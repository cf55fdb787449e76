"""Test-only TLS plumbing: a throw-away CA, and local TLS servers with a capped protocol range.

* :func:`make_pki` — an ECDSA P-256 test CA and a server certificate for ``localhost`` and
  ``127.0.0.1`` (cryptography's x509 builder), written as PEM files.
* :class:`TlsHttpServer` — a threaded HTTPS server on 127.0.0.1 whose ``ssl.SSLContext`` is
  limited to ``[min_version, max_version]``; it records every handshake (negotiated version, or
  the OpenSSL error) and every request (method, path), and answers with a handler function.

OpenSSL 3 refuses to offer TLS 1.0/1.1 at its default security level: the legacy servers set
``@SECLEVEL=0`` ciphers so that they really speak TLS 1.1 (proved by a permissive probe client in
the tests), and any refusal is the client's own doing.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path

    @property
    def ca_bytes(self) -> bytes:
        return self.ca_pem.read_bytes()


def make_pki(directory: Path) -> Pki:
    """Create a CA and a leaf certificate (SAN ``localhost``, ``127.0.0.1``) under ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "saip test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    pki.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pki.key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


#: handler(method, path, headers, body) -> (status, headers, body)
Responder = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


def _default_responder(
    method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "text/plain"}, b"ok"


@dataclass
class Seen:
    handshakes: list[str] = field(default_factory=list)  # "TLSv1.3" or "error: <reason>"
    requests: list[tuple[str, str]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)  # Authorization header of each request


class TlsHttpServer:
    """HTTPS on 127.0.0.1 with a capped TLS version range; records handshakes and requests."""

    def __init__(
        self,
        pki: Pki,
        *,
        min_version: ssl.TLSVersion,
        max_version: ssl.TLSVersion,
        responder: Responder = _default_responder,
    ) -> None:
        self.seen = Seen()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pki.cert_pem, pki.key_pem)
        if min_version < ssl.TLSVersion.TLSv1_2:
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point here
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = min_version
            context.maximum_version = max_version
        self._context = context
        seen, respond = self.seen, responder

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                seen.requests.append((self.command, self.path))
                seen.auth.append(self.headers.get("Authorization", ""))
                status, headers, payload = respond(
                    self.command, self.path, dict(self.headers.items()), body
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: object) -> None:
                return

        outer = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, object]:
                raw, addr = super().get_request()
                raw.settimeout(5)
                try:
                    tls = outer._context.wrap_socket(raw, server_side=True)
                except (ssl.SSLError, OSError) as exc:
                    seen.handshakes.append(f"error: {getattr(exc, 'reason', None) or exc}")
                    raw.close()
                    raise
                seen.handshakes.append(str(tls.version()))
                return tls, addr

            def handle_error(self, request: object, client_address: object) -> None:
                return

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TlsHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def probe(url_port: int, ca_pem: Path, *, allow_legacy: bool) -> str:
    """Handshake with a plain ``ssl`` client; ``allow_legacy`` lowers it to TLS 1.0/SECLEVEL 0."""
    context = ssl.create_default_context(cafile=str(ca_pem))
    if allow_legacy:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
    with (
        socket.create_connection(("127.0.0.1", url_port), timeout=5) as sock,
        context.wrap_socket(sock, server_hostname="127.0.0.1") as tls,
    ):
        return str(tls.version())
