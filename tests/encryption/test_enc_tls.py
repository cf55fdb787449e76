"""TLS ≥ 1.2 on the wire for every SDK client the project builds (``saip_encryption.tls``).

For each client — boto3 KMS, azure-keyvault-keys ``CryptographyClient`` and ``KeyClient``,
google-cloud-kms over gRPC (through ``GcpKmsProvider``), plain requests/urllib3 — two facts:

1. against a local server that speaks **only TLS 1.0–1.1** (a permissive probe proves it
   negotiates TLS 1.1), the client fails and the server records a *protocol-version* handshake
   failure;
2. against a TLS 1.2-only and a TLS 1.3 server whose certificate is signed by the **same** test
   CA, the same client completes the handshake and its request arrives — so the refusal is about
   the version, not a broken set-up.

Note: Python ≥ 3.10, urllib3 2 and gRPC already default to TLS 1.2 on this stack; the helpers
pin it explicitly so that a dependency change or a caller-supplied context cannot lower it.
"""

from __future__ import annotations

import importlib.util
import json
import ssl
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ServiceRequestError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from botocore.config import Config
from botocore.exceptions import SSLError as BotoSSLError
from saip_encryption import tls
from saip_encryption.errors import EncryptionConfigError, KeyProviderError
from saip_encryption.providers import gcp


def _load(name: str) -> ModuleType:
    qual = f"saip_tests_{name}"
    if qual not in sys.modules:
        spec = importlib.util.spec_from_file_location(qual, Path(__file__).with_name(f"{name}.py"))
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[qual] = module
        spec.loader.exec_module(module)
    return sys.modules[qual]


helpers = _load("tls_helpers")
fake_gcp_kms = _load("fake_gcp_kms")
V = ssl.TLSVersion
#: What OpenSSL reports when the peer's versions do not overlap with ours.
VERSION_FAILURES = ("UNSUPPORTED_PROTOCOL", "VERSION", "NO_PROTOCOLS_AVAILABLE")
GCP_KEY = "projects/p/locations/l/keyRings/r/cryptoKeys/k"


class FakeCredential:
    """A token credential that hands out a dummy bearer token (no identity service offline)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake-token", int(time.time()) + 3600)


def _kms_json(method: str, path: str, headers: dict[str, str], body: bytes) -> Any:
    if headers.get("X-Amz-Target", "").endswith("ListKeys"):
        return (
            200,
            {"Content-Type": "application/x-amz-json-1.1"},
            b'{"Keys": [], "Truncated": false}',
        )
    error = {"error": {"code": "Forbidden", "message": "test server: no access"}}
    return 403, {"Content-Type": "application/json"}, json.dumps(error).encode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return helpers.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def legacy_server(pki: Any) -> Iterator[Any]:
    with helpers.TlsHttpServer(
        pki, min_version=V.TLSv1, max_version=V.TLSv1_1, responder=_kms_json
    ) as server:
        yield server


@pytest.fixture(scope="module", params=[V.TLSv1_2, V.TLSv1_3], ids=["tls1.2", "tls1.3"])
def modern_server(pki: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    version = request.param
    with helpers.TlsHttpServer(
        pki, min_version=version, max_version=version, responder=_kms_json
    ) as server:
        server.version = version
        yield server


def _assert_refused_for_version(server: Any, before: int) -> None:
    # the server thread records the failed handshake after the client has already raised
    deadline = time.monotonic() + 5
    while len(server.seen.handshakes) <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    new = server.seen.handshakes[before:]
    assert new, "the client never reached the server"
    assert all(h.startswith("error:") for h in new), new
    assert any(any(tag in h.upper() for tag in VERSION_FAILURES) for h in new), new
    assert server.seen.requests == []


def _assert_connected(server: Any, before: int, path_prefix: str) -> None:
    expected = "TLSv1.2" if server.version == V.TLSv1_2 else "TLSv1.3"
    assert expected in server.seen.handshakes[before:]
    assert any(path.startswith(path_prefix) for _, path in server.seen.requests)


def test_legacy_server_really_speaks_tls11(legacy_server: Any, pki: Any) -> None:
    assert helpers.probe(legacy_server.port, pki.ca_pem, allow_legacy=True) == "TLSv1.1"
    with pytest.raises(ssl.SSLError):
        helpers.probe(legacy_server.port, pki.ca_pem, allow_legacy=False)


# -- boto3 -----------------------------------------------------------------------------------


def _boto(url: str, pki: Any) -> Any:
    return tls.boto3_client(
        "kms",
        endpoint_url=url,
        region="us-east-1",
        ca_bundle=pki.ca_pem,
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=5),
    )


def test_boto3_refuses_tls11(legacy_server: Any, pki: Any, aws_env: None) -> None:
    before = len(legacy_server.seen.handshakes)
    with pytest.raises(BotoSSLError):
        _boto(legacy_server.url, pki).list_keys()
    _assert_refused_for_version(legacy_server, before)


def test_boto3_connects_over_tls12_and_13(modern_server: Any, pki: Any, aws_env: None) -> None:
    before = len(modern_server.seen.handshakes)
    assert _boto(modern_server.url, pki).list_keys()["Keys"] == []
    _assert_connected(modern_server, before, "/")


def test_boto3_session_pins_every_client_it_builds(
    legacy_server: Any, modern_server: Any, pki: Any, aws_env: None
) -> None:
    """``tls.boto3_session`` is for code that builds its own clients (ingestion backends)."""
    session = tls.boto3_session(session=boto3.session.Session(region_name="us-east-1"))
    config = Config(retries={"max_attempts": 1, "mode": "standard"})
    before = len(legacy_server.seen.handshakes)
    kinesis = session.client(
        "kinesis", endpoint_url=legacy_server.url, verify=str(pki.ca_pem), config=config
    )
    with pytest.raises(BotoSSLError):
        kinesis.list_streams()
    s3 = session.resource("s3", endpoint_url=legacy_server.url, verify=str(pki.ca_pem))
    with pytest.raises(BotoSSLError):
        s3.meta.client.list_buckets()
    _assert_refused_for_version(legacy_server, before)
    kms = session.client("kms", endpoint_url=modern_server.url, verify=str(pki.ca_pem))
    assert kms.list_keys()["Keys"] == []
    with pytest.raises(EncryptionConfigError, match="endpoint_url: plaintext"):
        session.client("kinesis", endpoint_url="http://kinesis.example.com")


def test_boto3_client_refuses_plaintext_to_remote_host(aws_env: None) -> None:
    with pytest.raises(EncryptionConfigError, match="endpoint_url"):
        tls.boto3_client("kms", endpoint_url="http://kms.us-east-1.amazonaws.com")
    assert tls.boto3_client("s3", endpoint_url="http://127.0.0.1:1", region="us-east-1")


# -- azure -----------------------------------------------------------------------------------


def _crypto(url: str, pki: Any) -> Any:
    return CryptographyClient(
        f"{url}/keys/k/0123456789abcdef0123456789abcdef",
        FakeCredential(),
        transport=tls.azure_transport(ca_bundle=pki.ca_pem),
        verify_challenge_resource=False,
        retry_total=0,
    )


def _keys(url: str, pki: Any) -> Any:
    return KeyClient(
        url,
        FakeCredential(),
        transport=tls.azure_transport(ca_bundle=pki.ca_pem),
        verify_challenge_resource=False,
        retry_total=0,
    )


def test_azure_clients_refuse_tls11(legacy_server: Any, pki: Any) -> None:
    before = len(legacy_server.seen.handshakes)
    with pytest.raises(ServiceRequestError):
        _crypto(legacy_server.url, pki).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    with pytest.raises(ServiceRequestError):
        _keys(legacy_server.url, pki).get_key("k")
    _assert_refused_for_version(legacy_server, before)


def test_azure_clients_connect_over_tls12_and_13(modern_server: Any, pki: Any) -> None:
    before = len(modern_server.seen.handshakes)
    with pytest.raises(HttpResponseError) as crypto_info:
        _crypto(modern_server.url, pki).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    assert crypto_info.value.status_code == 403  # the server's answer: TLS worked
    with pytest.raises(HttpResponseError) as keys_info:
        _keys(modern_server.url, pki).get_key("k")
    assert keys_info.value.status_code == 403
    _assert_connected(modern_server, before, "/keys/k")


# -- requests / urllib3 ----------------------------------------------------------------------


def test_requests_session_refuses_tls11(legacy_server: Any, pki: Any) -> None:
    before = len(legacy_server.seen.handshakes)
    with pytest.raises(requests.exceptions.SSLError):
        tls.requests_session(ca_bundle=pki.ca_pem).get(legacy_server.url + "/", timeout=5)
    _assert_refused_for_version(legacy_server, before)


def test_requests_session_connects_over_tls12_and_13(modern_server: Any, pki: Any) -> None:
    before = len(modern_server.seen.handshakes)
    response = tls.requests_session(ca_bundle=pki.ca_pem).get(modern_server.url + "/h", timeout=5)
    assert response.status_code == 403
    _assert_connected(modern_server, before, "/h")


def test_ssl_context_is_verifying_and_pinned_to_tls12() -> None:
    context = tls.ssl_context()
    assert context.minimum_version == V.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname


# -- gRPC (google-cloud-kms) ---------------------------------------------------------------


def test_grpc_kms_client_refuses_tls11(legacy_server: Any, pki: Any) -> None:
    before = len(legacy_server.seen.handshakes)
    provider = gcp.from_uri(
        f"gcp-kms:{GCP_KEY}",
        api_endpoint=f"127.0.0.1:{legacy_server.port}",
        root_certificates=pki.ca_bytes,
        timeout=2,
    )
    with pytest.raises(KeyProviderError, match="unreachable"):
        provider.wrap(b"k" * 32, context={})
    _assert_refused_for_version(legacy_server, before)


def test_grpc_kms_client_works_over_tls_with_the_same_ca(pki: Any) -> None:
    creds = fake_gcp_kms.grpc.ssl_server_credentials(
        [(pki.key_pem.read_bytes(), pki.cert_pem.read_bytes())]
    )
    with fake_gcp_kms.serve(server_credentials=creds) as running:
        provider = gcp.from_uri(
            f"gcp-kms:{GCP_KEY}",
            api_endpoint=running.target,
            root_certificates=pki.ca_bytes,
            timeout=5,
        )
        admin = provider.client
        admin.create_key_ring(
            request={"parent": "projects/p/locations/l", "key_ring_id": "r", "key_ring": {}}
        )
        admin.create_crypto_key(
            request={
                "parent": "projects/p/locations/l/keyRings/r",
                "crypto_key_id": "k",
                "crypto_key": {"purpose": 1},
            }
        )
        data_key, wrapped = provider.generate_data_key(context={"a": "b"})
        assert provider.unwrap(wrapped, context={"a": "b"}) == data_key
        assert running.tls
