"""TLS ≥ 1.2 for every cloud SDK client the project builds.

One small API, reused by the ingestion slice's cloud adapters:

``ssl_context(*, ca_bundle=None)``
    A verifying client ``ssl.SSLContext`` whose ``minimum_version`` is TLS 1.2.
``boto3_client(service, *, endpoint_url=None, region=None, session=None, ca_bundle=None, ...)``
    A boto3 client whose HTTPS connections refuse anything below TLS 1.2.
``boto3_session(*, session=None)``
    A boto3 session whose clients are all pinned (for code that builds its own clients).
``azure_transport(*, ca_bundle=None)``
    An ``azure.core`` ``RequestsTransport`` for any azure-* client (``transport=``).
``requests_session(*, ca_bundle=None)``
    A ``requests.Session`` (and so urllib3) with the same floor, for plain HTTPS calls.
``grpc_channel_credentials(*, root_certificates=None)``
    ``grpc.ChannelCredentials`` for google-cloud-* gRPC clients.
``check_endpoint(url, *, setting)``
    Refuses a plaintext ``http://`` endpoint unless it is a loopback stand-in (moto, emulators).

How each SDK is pinned (checked against the installed versions: botocore 1.44, azure-core 1.41,
requests 2.34, grpcio 1.85):

* **botocore** builds its own ``SSLContext`` inside ``URLLib3Session`` and offers no public
  setting for it (boto/botocore#1822, #2488; the boto3 security guide's only advice is to build
  Python against an OpenSSL without TLS < 1.2). :func:`boto3_client` therefore raises the
  ``minimum_version`` of the context botocore created and of every proxy context it creates later.
  It fails closed (``RuntimeError``) if a botocore upgrade moves those internals.
* **azure-core** accepts a caller-provided ``requests.Session``
  (``RequestsTransport(session=...)``); the session gets an ``HTTPAdapter`` whose urllib3
  pool manager uses :func:`ssl_context`.
* **gRPC** (google-cloud-kms, Pub/Sub) negotiates through its own TLS stack whose minimum is
  TLS 1.2 and which the Python API cannot lower; :func:`grpc_channel_credentials` is the one place
  the project creates channel credentials, and the test suite proves the refusal on the wire.

Python ≥ 3.10 and urllib3 2 already default to TLS 1.2; pinning it explicitly keeps the floor
when a dependency, ``OPENSSL_CONF`` or a caller-supplied context would lower it. The tests start a
TLS-1.1-only server (OpenSSL 3 needs ``@SECLEVEL=0`` to offer 1.1) and show every client refuses
it, and the same clients connect to a TLS 1.2/1.3 server signed by the same test CA.

References
----------
RFC 8996 (deprecating TLS 1.0 and 1.1); NIST SP 800-52 Rev. 2 §3.1 (TLS 1.2 minimum).
"""

from __future__ import annotations

import ipaddress
import ssl
from os import PathLike
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from saip_encryption.errors import EncryptionConfigError

if TYPE_CHECKING:
    import grpc  # type: ignore[import-untyped]
    import requests
    from azure.core.pipeline.transport import RequestsTransport

__all__ = [
    "MINIMUM_TLS_VERSION",
    "TlsPinnedSession",
    "azure_transport",
    "boto3_client",
    "boto3_session",
    "check_endpoint",
    "grpc_channel_credentials",
    "is_loopback_host",
    "pin_boto3_client",
    "requests_session",
    "ssl_context",
]

#: The lowest protocol version any client built here will negotiate.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

CaBundle = str | PathLike[str] | None


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    # TLSVersion is an IntEnum: MINIMUM_SUPPORTED (-2) and TLS 1.0/1.1 are all below TLS 1.2.
    minimum = context.minimum_version
    if minimum != ssl.TLSVersion.MAXIMUM_SUPPORTED and minimum < MINIMUM_TLS_VERSION:
        context.minimum_version = MINIMUM_TLS_VERSION
    maximum = context.maximum_version
    if maximum != ssl.TLSVersion.MAXIMUM_SUPPORTED and maximum < MINIMUM_TLS_VERSION:
        context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    return context


def ssl_context(*, ca_bundle: CaBundle = None) -> ssl.SSLContext:
    """Return a verifying client context that refuses TLS < 1.2.

    Parameters
    ----------
    ca_bundle:
        PEM file of trusted CAs; ``None`` uses the system store.

    Returns
    -------
    ssl.SSLContext
        ``CERT_REQUIRED``, hostname checking on, ``minimum_version`` TLS 1.2 (RFC 8996).
    """
    context = ssl.create_default_context(cafile=None if ca_bundle is None else str(ca_bundle))
    return _harden(context)


def is_loopback_host(host: str | None) -> bool:
    """True for ``localhost`` and loopback IP addresses (where local stand-ins listen)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoint(url: str, *, setting: str) -> str:
    """Validate an endpoint URL: ``https://``, or ``http://`` only to a loopback stand-in.

    Raises
    ------
    EncryptionConfigError
        Naming ``setting`` when the URL is malformed or plaintext to a non-loopback host.
    """
    if not isinstance(url, str):
        raise TypeError(f"{setting} must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EncryptionConfigError(f"{setting}: not an http(s) URL: {url!r}")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise EncryptionConfigError(
            f"{setting}: plaintext http:// is only allowed to a loopback stand-in, got {url!r}"
        )
    return url


def pin_boto3_client(client: Any) -> Any:
    """Raise the TLS floor of an existing boto3/botocore client to TLS 1.2, in place.

    Raises
    ------
    RuntimeError
        botocore's internals moved and the client's SSL context cannot be reached: fail closed
        rather than hand out an unpinned client.
    """
    from botocore.httpsession import URLLib3Session

    http_session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    manager = getattr(http_session, "_manager", None)
    pool_kw = getattr(manager, "connection_pool_kw", None)
    context = pool_kw.get("ssl_context") if isinstance(pool_kw, dict) else None
    if not isinstance(http_session, URLLib3Session) or not isinstance(context, ssl.SSLContext):
        raise RuntimeError(
            "botocore internals changed: cannot pin TLS >= 1.2 on the client's SSL context; "
            "refusing to build an unpinned client"
        )
    _harden(context)
    if not getattr(http_session, "_saip_tls_pinned", False):
        make_context = http_session._get_ssl_context

        def _pinned_context() -> ssl.SSLContext:  # used for proxy connections created later
            return _harden(make_context())

        http_session._get_ssl_context = _pinned_context
        http_session._saip_tls_pinned = True
    return client


class TlsPinnedSession:
    """A ``boto3.session.Session`` stand-in whose ``client()``/``resource()`` are TLS ≥ 1.2 pinned.

    Every other attribute (``region_name``, ``get_credentials``, ...) is the wrapped session's.
    """

    def __init__(self, session: Any) -> None:
        self._saip_session = session

    def client(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.client`` with :func:`check_endpoint` and :func:`pin_boto3_client`."""
        _check_boto_endpoint(args, kwargs)
        return pin_boto3_client(self._saip_session.client(*args, **kwargs))

    def resource(self, *args: Any, **kwargs: Any) -> Any:
        """``Session.resource`` whose underlying client is pinned."""
        _check_boto_endpoint(args, kwargs)
        res = self._saip_session.resource(*args, **kwargs)
        pin_boto3_client(res.meta.client)
        return res

    def __getattr__(self, name: str) -> Any:
        return getattr(self._saip_session, name)


def _check_boto_endpoint(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    # Session.client(service_name, region_name, api_version, use_ssl, verify, endpoint_url, ...)
    endpoint_url = kwargs.get("endpoint_url", args[5] if len(args) > 5 else None)
    if endpoint_url is not None:
        check_endpoint(endpoint_url, setting="endpoint_url")


def boto3_session(*, session: Any = None) -> TlsPinnedSession:
    """Return a session whose ``client()``/``resource()`` refuse TLS < 1.2.

    For code that takes a session and builds its own clients (the ingestion backends): it wraps
    ``session`` (default: a new ``boto3.session.Session`` on the SDK's default credential chain),
    so credentials and region are the session's; every client it builds refuses TLS < 1.2 and a
    plaintext ``endpoint_url`` to a non-loopback host.
    """
    import boto3

    if isinstance(session, TlsPinnedSession):
        return session
    return TlsPinnedSession(session if session is not None else boto3.session.Session())


def boto3_client(
    service: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    session: Any = None,
    ca_bundle: CaBundle = None,
    config: Any = None,
) -> Any:
    """Build a boto3 client whose HTTPS connections refuse TLS < 1.2.

    Parameters
    ----------
    service:
        boto3 service name (``"kms"``, ``"kinesis"``, ``"s3"``, ...).
    endpoint_url:
        Override endpoint (moto on loopback, a VPC endpoint); checked by :func:`check_endpoint`.
    region:
        Region name; ``None`` takes the SDK's default chain.
    session:
        A ``boto3.session.Session``; ``None`` creates one (credentials from the default chain).
    ca_bundle:
        PEM bundle to verify the endpoint with; ``None`` uses botocore's default.
    config:
        Optional ``botocore.config.Config``.
    """
    if not isinstance(service, str) or not service:
        raise TypeError("service must be a non-empty string")
    if endpoint_url is not None:
        check_endpoint(endpoint_url, setting="endpoint_url")
    return boto3_session(session=session).client(
        service,
        endpoint_url=endpoint_url,
        region_name=region,
        verify=None if ca_bundle is None else str(ca_bundle),
        config=config,
    )


def _adapter_class() -> type[Any]:
    from requests.adapters import HTTPAdapter

    class _TlsFloorAdapter(HTTPAdapter):
        """``HTTPAdapter`` whose pool managers (direct and proxied) use a TLS ≥ 1.2 context."""

        def __init__(self, context: ssl.SSLContext, **kwargs: Any) -> None:
            self._saip_context = context
            super().__init__(**kwargs)

        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = self._saip_context
            super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
            proxy_kwargs["ssl_context"] = self._saip_context
            return super().proxy_manager_for(proxy, **proxy_kwargs)

    return _TlsFloorAdapter


def requests_session(*, ca_bundle: CaBundle = None, retries: bool = True) -> requests.Session:
    """Return a ``requests.Session`` whose HTTPS connections refuse TLS < 1.2.

    Parameters
    ----------
    ca_bundle:
        PEM file of trusted CAs (also set as the session's ``verify``); ``None``: system store.
    retries:
        Keep requests' default retry policy; ``False`` disables retries (azure-core retries itself).
    """
    import requests
    from urllib3.util.retry import Retry

    session = requests.Session()
    adapter_kwargs: dict[str, Any] = {}
    if not retries:
        adapter_kwargs["max_retries"] = Retry(total=False, redirect=False, raise_on_status=False)
    adapter = _adapter_class()(ssl_context(ca_bundle=ca_bundle), **adapter_kwargs)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if ca_bundle is not None:
        session.verify = str(ca_bundle)
    return session


def azure_transport(*, ca_bundle: CaBundle = None) -> RequestsTransport:
    """Return an azure-core transport that refuses TLS < 1.2 (pass as ``transport=``)."""
    from azure.core.pipeline.transport import RequestsTransport

    return RequestsTransport(
        session=requests_session(ca_bundle=ca_bundle, retries=False),
        session_owner=True,
        connection_verify=True if ca_bundle is None else str(ca_bundle),
    )


def grpc_channel_credentials(*, root_certificates: bytes | None = None) -> grpc.ChannelCredentials:
    """Return gRPC channel credentials (TLS 1.2 or 1.3 only; gRPC's own floor, tested).

    Parameters
    ----------
    root_certificates:
        PEM roots; ``None`` uses gRPC's default roots.
    """
    import grpc

    if root_certificates is not None and not isinstance(root_certificates, bytes):
        raise TypeError("root_certificates must be PEM bytes")
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)
