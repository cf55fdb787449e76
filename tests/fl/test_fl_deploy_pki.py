"""The run PKI (saip_fl.pki): RFC 5280 certificate profile, TLS against the run CA, key files."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from saip_fl.pki import (
    PkiError,
    create_ca,
    create_node_keypair,
    create_run_pki,
    issue_server_certificate,
)

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)


def _clock() -> dt.datetime:
    return NOW


@pytest.fixture
def pki(tmp_path: Path):  # type: ignore[no-untyped-def]
    return create_run_pki(directory=tmp_path / "pki", node_names=["node-0", "node-1"], clock=_clock)


def test_ca_profile(pki) -> None:  # type: ignore[no-untyped-def]
    ca = pki.ca.certificate
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca
    assert bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.key_cert_sign
    assert ku.value.crl_sign
    assert not ku.value.digital_signature
    assert ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp384r1"
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA384)
    ca.verify_directly_issued_by(ca)  # self-signed


def test_server_certificate_profile(pki) -> None:  # type: ignore[no-untyped-def]
    cert = pki.server.certificate
    cert.verify_directly_issued_by(pki.ca.certificate)
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical
    assert ku.value.digital_signature
    assert not (ku.value.key_cert_sign)
    assert not (ku.value.crl_sign)
    assert not (ku.value.key_encipherment)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = pki.ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    # short-lived: one minute of skew before "now", one day after it
    assert cert.not_valid_before_utc == NOW - dt.timedelta(minutes=1)
    assert cert.not_valid_after_utc == NOW + dt.timedelta(days=1)
    assert cert.serial_number != pki.ca.certificate.serial_number


@pytest.mark.parametrize(
    "name",
    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    ids=["ip-127.0.0.1", "dns-localhost"],
)
def test_server_certificate_passes_path_validation(pki, name) -> None:  # type: ignore[no-untyped-def]
    verifier = (
        PolicyBuilder()
        .store(Store([pki.ca.certificate]))
        .time(NOW + dt.timedelta(hours=1))
        .build_server_verifier(name)
    )
    chain = verifier.verify(pki.server.certificate, [])
    assert chain[-1] == pki.ca.certificate


def test_server_certificate_rejected_for_other_name_or_after_expiry(pki) -> None:  # type: ignore[no-untyped-def]
    store = Store([pki.ca.certificate])
    wrong_host = (
        PolicyBuilder()
        .store(store)
        .time(NOW)
        .build_server_verifier(x509.DNSName("superlink.example.com"))
    )
    with pytest.raises(VerificationError):
        wrong_host.verify(pki.server.certificate, [])
    expired = (
        PolicyBuilder()
        .store(store)
        .time(NOW + dt.timedelta(days=2))
        .build_server_verifier(x509.DNSName("localhost"))
    )
    with pytest.raises(VerificationError):
        expired.verify(pki.server.certificate, [])


def _serve_once(context: ssl.SSLContext, listener: socket.socket) -> None:
    conn, _ = listener.accept()
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"ok")
    except (ssl.SSLError, OSError):
        pass


def _handshake(pki, cafile: Path) -> bytes:  # type: ignore[no-untyped-def]
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(pki.server.cert_path), str(pki.server.key_path))
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        thread = threading.Thread(target=_serve_once, args=(server_ctx, listener), daemon=True)
        thread.start()
        client_ctx = ssl.create_default_context(cafile=str(cafile))
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                return tls.recv(2)
        finally:
            thread.join(timeout=5)


def test_tls_handshake_with_run_ca_and_refused_with_another(pki, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # real clock here: the handshake checks validity against the wall clock
    live = create_run_pki(directory=tmp_path / "live", node_names=["n"])
    assert _handshake(live, live.ca.cert_path) == b"ok"
    other = create_ca(directory=tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(live, other.cert_path)


def test_files_are_private_and_never_overwritten(pki) -> None:  # type: ignore[no-untyped-def]
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    files = sorted(pki.directory.iterdir())
    assert {f.name for f in files} == {
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
        "node-0.key",
        "node-0.pub",
        "node-1.key",
        "node-1.pub",
    }
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    before = pki.ca.key_path.read_bytes()
    with pytest.raises(PkiError, match="refusing to overwrite"):
        create_ca(directory=pki.directory)
    assert pki.ca.key_path.read_bytes() == before
    with pytest.raises(PkiError, match="refusing to overwrite"):
        create_node_keypair(directory=pki.directory, name="node-0")


def test_symlinked_key_path_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    directory.mkdir()
    target = tmp_path / "elsewhere"
    (directory / "ca.key").symlink_to(target)
    with pytest.raises(PkiError):
        create_ca(directory=directory)
    assert not target.exists()


def test_node_keys_are_openssh_ecdsa_p384(pki) -> None:  # type: ignore[no-untyped-def]
    node = pki.nodes[0]
    private = serialization.load_ssh_private_key(node.private_key_path.read_bytes(), None)
    public = serialization.load_ssh_public_key(node.public_key_path.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.curve.name == public.curve.name == "secp384r1"
    assert node.public_key_path.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert node.private_key_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    signature = private.sign(b"request", ec.ECDSA(hashes.SHA384()))
    public.verify(signature, b"request", ec.ECDSA(hashes.SHA384()))
    assert pki.nodes[0].public_key_openssh != pki.nodes[1].public_key_openssh


def test_server_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    ca = create_ca(directory=tmp_path, validity=dt.timedelta(hours=2), clock=_clock)
    server = issue_server_certificate(
        ca=ca, directory=tmp_path, validity=dt.timedelta(days=5), clock=_clock
    )
    assert server.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_bad_parameters_fail_eagerly(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="validity"):
        create_ca(directory=tmp_path / "a", validity=dt.timedelta(days=365))
    with pytest.raises(ValueError, match="timezone-aware"):
        create_ca(directory=tmp_path / "b", clock=lambda: dt.datetime(2026, 1, 1))
    with pytest.raises(TypeError):
        create_ca(directory=str(tmp_path / "c"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="invalid node name"):
        create_node_keypair(directory=tmp_path / "d", name="../escape")
    with pytest.raises(ValueError, match="unique"):
        create_run_pki(directory=tmp_path / "e", node_names=["x", "x"])
    ca = create_ca(directory=tmp_path / "f")
    with pytest.raises(ValueError, match="IP address"):
        issue_server_certificate(ca=ca, directory=tmp_path / "f", ip_addresses=["not-an-ip"])
    with pytest.raises(ValueError, match="at least one"):
        issue_server_certificate(ca=ca, directory=tmp_path / "f", dns_names=(), ip_addresses=())
