"""Local PKI for a Flower deployment: a CA, a SuperLink TLS certificate and SuperNode keys.

Everything is generated with ``cryptography`` (no ``openssl`` shell-outs) into one run directory
created ``0700``; every file is created ``0600`` with ``O_EXCL`` so an existing file is never
overwritten or followed through a symlink.

What is generated
-----------------
``ca.pem`` / ``ca.key``
    A self-signed root CA (ECDSA P-384, SHA-384). ``basicConstraints`` is critical with ``cA=TRUE``
    and ``pathLenConstraint=0`` (it can only sign end-entity certificates) and ``keyUsage`` is
    critical with ``keyCertSign`` and ``cRLSign`` only (RFC 5280 §4.2.1.9 and §4.2.1.3).
``server.pem`` / ``server.key``
    The SuperLink certificate (ECDSA P-384), signed by the CA: ``basicConstraints cA=FALSE``
    (critical), ``keyUsage digitalSignature`` (critical; ECDHE key exchange needs only a
    signature, RFC 5280 §4.2.1.3), ``extendedKeyUsage serverAuth`` (RFC 5280 §4.2.1.12),
    ``subjectAltName`` with ``IP:127.0.0.1`` and ``DNS:localhost`` (RFC 5280 §4.2.1.6; clients
    match the SAN, never the CN, per RFC 6125 §6.4.4), subject and authority key identifiers
    (RFC 5280 §4.2.1.1-2) and a random 159-bit serial (RFC 5280 §4.1.2.2 allows up to 20 octets).
``<node>.key`` / ``<node>.pub``
    One ECDSA P-384 key pair per SuperNode in OpenSSH format (private key in the
    ``openssh-key-v1`` container, public key as an ``ecdsa-sha2-nistp384`` line, RFC 5656 §3.1),
    which is what ``flower-supernode --auth-supernode-private-key`` and
    ``flwr supernode register`` read in Flower 1.42.

Validity is short by default (one day for both the CA and the server certificate), starting one
minute in the past to absorb clock skew. The clock is injectable for tests.

Notes
-----
The CA private key is kept on disk (``0600``) only so the run directory is self-describing; a
real deployment keeps the CA offline and ships only ``ca.pem`` to the SuperNodes. Private keys are
not encrypted at rest: they live in a per-run directory that is deleted with the run.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from saip_fl.errors import FLError

__all__ = [
    "CertificateAuthority",
    "NodeKeyPair",
    "PkiError",
    "RunPki",
    "ServerCertificate",
    "create_ca",
    "create_node_keypair",
    "create_run_pki",
    "issue_server_certificate",
]

_LOG = logging.getLogger(__name__)
_CURVE = ec.SECP384R1
_HASH = hashes.SHA384
_SKEW = dt.timedelta(minutes=1)
_MAX_VALIDITY = dt.timedelta(days=30)
_NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

Clock = Callable[[], dt.datetime]


class PkiError(FLError):
    """The run PKI could not be created (existing file, bad directory, bad parameter)."""


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class CertificateAuthority:
    """A root CA whose certificate and key live in the run directory.

    Attributes
    ----------
    cert_path, key_path
        PEM certificate and PKCS#8 PEM private key (``0600``).
    certificate
        The parsed certificate.
    private_key
        The CA signing key (kept in memory to issue the server certificate).
    """

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ServerCertificate:
    """The SuperLink's TLS certificate and key."""

    cert_path: Path
    key_path: Path
    certificate: x509.Certificate


@dataclass(frozen=True)
class NodeKeyPair:
    """A SuperNode authentication key pair in OpenSSH format."""

    name: str
    private_key_path: Path
    public_key_path: Path
    public_key_openssh: str


@dataclass(frozen=True)
class RunPki:
    """Everything a local deployment needs: CA, server certificate, one key pair per node."""

    directory: Path
    ca: CertificateAuthority
    server: ServerCertificate
    nodes: tuple[NodeKeyPair, ...]


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600; refuse to overwrite or follow a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise PkiError(f"refusing to overwrite existing file {path}") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # the umask could only have narrowed it; make it exact


def _prepare_directory(directory: Path) -> Path:
    if not isinstance(directory, Path):
        raise TypeError(f"directory must be a pathlib.Path, got {type(directory).__name__}")
    if directory.is_symlink():
        raise PkiError(f"refusing to use a symlinked PKI directory: {directory}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    return directory


def _check_validity(validity: dt.timedelta) -> None:
    if not isinstance(validity, dt.timedelta):
        raise TypeError("validity must be a datetime.timedelta")
    if validity <= _SKEW or validity > _MAX_VALIDITY:
        raise ValueError(f"validity must be longer than {_SKEW} and at most {_MAX_VALIDITY}")


def _now(clock: Clock) -> dt.datetime:
    now = clock()
    if now.tzinfo is None:
        raise ValueError("clock must return a timezone-aware datetime")
    return now.astimezone(dt.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(
    *,
    directory: Path,
    common_name: str = "saip federated-learning local CA",
    validity: dt.timedelta = dt.timedelta(days=1),
    clock: Clock = _utc_now,
) -> CertificateAuthority:
    """Create a self-signed root CA (``ca.pem``, ``ca.key``) in ``directory``.

    Parameters
    ----------
    directory
        Run directory (created ``0700``).
    common_name
        Subject CN of the CA.
    validity
        Lifetime, at most 30 days (short-lived by design).
    clock
        Returns the current time (timezone-aware); injectable for tests.

    Returns
    -------
    CertificateAuthority

    Notes
    -----
    Extensions follow RFC 5280: ``basicConstraints`` critical, ``cA=TRUE``, ``pathLen=0``
    (§4.2.1.9); ``keyUsage`` critical, ``keyCertSign`` + ``cRLSign`` (§4.2.1.3); subject key
    identifier (§4.2.1.2, required for CA certificates) and authority key identifier (§4.2.1.1).
    """
    _check_validity(validity)
    if not common_name:
        raise ValueError("common_name must not be empty")
    directory = _prepare_directory(directory)
    now = _now(clock)
    key = ec.generate_private_key(_CURVE())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secure-ai-pipelines"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, _HASH())
    )
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    _write_private(key_path, _pem_key(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _LOG.info("created CA %s (serial %x) in %s", common_name, cert.serial_number, directory)
    return CertificateAuthority(
        cert_path=cert_path, key_path=key_path, certificate=cert, private_key=key
    )


def issue_server_certificate(
    *,
    ca: CertificateAuthority,
    directory: Path,
    dns_names: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    validity: dt.timedelta = dt.timedelta(days=1),
    clock: Clock = _utc_now,
) -> ServerCertificate:
    """Issue the SuperLink's TLS server certificate (``server.pem``, ``server.key``).

    Parameters
    ----------
    ca
        The issuing CA from :func:`create_ca`.
    directory
        Run directory.
    dns_names, ip_addresses
        Subject alternative names; at least one in total. Flower's clients connect to
        ``127.0.0.1`` so the IP SAN is what they match (RFC 6125 §6.4.4: SAN, not CN).
    validity
        Lifetime; clipped to the CA's ``notAfter`` so the leaf never outlives its issuer.
    clock
        Injectable clock.

    Returns
    -------
    ServerCertificate

    Notes
    -----
    RFC 5280 extensions: ``basicConstraints cA=FALSE`` critical (§4.2.1.9), ``keyUsage
    digitalSignature`` critical (§4.2.1.3), ``extendedKeyUsage serverAuth`` (§4.2.1.12),
    ``subjectAltName`` (§4.2.1.6), SKI/AKI (§4.2.1.1-2).
    """
    _check_validity(validity)
    if not dns_names and not ip_addresses:
        raise ValueError("at least one DNS name or IP address is required for the SAN")
    try:
        ips = [ipaddress.ip_address(ip) for ip in ip_addresses]
    except ValueError as exc:
        raise ValueError(f"invalid IP address in ip_addresses: {exc}") from exc
    for dns in dns_names:
        if not dns or any(c.isspace() for c in dns):
            raise ValueError(f"invalid DNS name {dns!r}")
    directory = _prepare_directory(directory)
    now = _now(clock)
    not_after = min(now + validity, ca.certificate.not_valid_after_utc)
    key = ec.generate_private_key(_CURVE())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ip) for ip in ips]
    subject_cn = dns_names[0] if dns_names else str(ips[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "secure-ai-pipelines"),
                    x509.NameAttribute(NameOID.COMMON_NAME, subject_cn),
                ]
            )
        )
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .sign(ca.private_key, _HASH())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    _write_private(key_path, _pem_key(key))
    _write_private(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    _LOG.info("issued server certificate for %s in %s", [str(s.value) for s in sans], directory)
    return ServerCertificate(cert_path=cert_path, key_path=key_path, certificate=cert)


def create_node_keypair(*, directory: Path, name: str) -> NodeKeyPair:
    """Create a SuperNode's ECDSA P-384 key pair in OpenSSH format.

    Parameters
    ----------
    directory
        Run directory.
    name
        Node name (lower-case letters, digits, ``-``, ``_``); files are ``<name>.key`` and
        ``<name>.pub``.

    Returns
    -------
    NodeKeyPair

    Notes
    -----
    The public key is the ``ecdsa-sha2-nistp384`` encoding of RFC 5656 §3.1; Flower's SuperLink
    authenticates each SuperNode request by an ECDSA signature made with the private key and
    accepts only public keys registered beforehand (``flwr supernode register``).
    """
    if not isinstance(name, str) or not _NODE_NAME.match(name):
        raise ValueError(f"invalid node name {name!r}: use [a-z0-9_-], at most 63 characters")
    directory = _prepare_directory(directory)
    key = ec.generate_private_key(_CURVE())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
    )
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    _write_private(private_path, private)
    _write_private(public_path, f"{public} saip-{name}\n".encode("ascii"))
    return NodeKeyPair(
        name=name,
        private_key_path=private_path,
        public_key_path=public_path,
        public_key_openssh=public,
    )


def create_run_pki(
    *,
    directory: Path,
    node_names: Sequence[str],
    validity: dt.timedelta = dt.timedelta(days=1),
    clock: Clock = _utc_now,
) -> RunPki:
    """Create the CA, the SuperLink certificate and one key pair per SuperNode.

    Parameters
    ----------
    directory
        Run directory for all files (created ``0700``; files ``0600``).
    node_names
        Unique SuperNode names.
    validity
        Lifetime of the CA and the server certificate.
    clock
        Injectable clock.

    Returns
    -------
    RunPki
    """
    names = list(node_names)
    if len(set(names)) != len(names):
        raise ValueError("node_names must be unique")
    ca = create_ca(directory=directory, validity=validity, clock=clock)
    server = issue_server_certificate(ca=ca, directory=directory, validity=validity, clock=clock)
    nodes = tuple(create_node_keypair(directory=directory, name=n) for n in names)
    return RunPki(directory=directory, ca=ca, server=server, nodes=nodes)
