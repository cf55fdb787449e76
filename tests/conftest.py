"""Shared fixtures: the local cloud stand-ins and the ``live`` marker.

Services come from ``$SAIP_SERVICES_FILE`` (written by ``make services-up``, which ``make test``
runs first). When a test module is run on its own without it, the fixtures start the service they
need in a temporary run directory and stop it by PID at the end of the session. A service that
cannot start fails the test with the reason: tests never skip silently because a stand-in is
missing.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from saip import devservices

_LIVE_ENV = {
    "aws": ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ROLE_ARN"),
    "azure": ("AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE"),
    "gcp": ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"),
}


@pytest.fixture(scope="session", autouse=True)
def _sigint_not_ignored() -> Iterator[None]:
    """A suite started in the background of a non-interactive shell (``make test &``) inherits
    SIGINT *ignored*, and so would every CLI it spawns: the Ctrl-C tests would then test the
    shell, not saip. Restore Python's handler here so children start with SIGINT at default."""
    before = signal.getsignal(signal.SIGINT)
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if before == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.fixture(scope="session", autouse=True)
def _key_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Default local master keys (``saip.compose.key_home``) go to a temp dir for the whole
    session, subprocesses included — never to the user's ``~/.config``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAIP_KEY_DIR", str(tmp_path_factory.mktemp("key-home")))
        yield


@pytest.fixture(autouse=True)
def _cpu_set_unchanged() -> Iterator[None]:
    """A test that leaves pytest's process pinned to fewer cores (``os.sched_setaffinity``, as
    the benchmarks' ``main`` does) slows every later test and every subprocess they start: the
    test fails at teardown and the CPU set is restored."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    yield
    after = os.sched_getaffinity(0)
    if after != before:
        os.sched_setaffinity(0, before)
        pytest.fail(f"the test changed pytest's CPU set {sorted(before)} -> {sorted(after)}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``live`` tests, naming the missing variables, unless ``SAIP_LIVE=1`` and creds exist."""
    for item in items:
        marker = item.get_closest_marker("live")
        if marker is None:
            continue
        cloud = marker.args[0] if marker.args else "aws"
        names = _LIVE_ENV.get(cloud, ())
        if os.environ.get("SAIP_LIVE") != "1" or not any(os.environ.get(n) for n in names):
            item.add_marker(
                pytest.mark.skip(
                    reason=f"live {cloud} test: set SAIP_LIVE=1 and one of {', '.join(names)} "
                    "(plus the resource variables the test names) to run it against a real account"
                )
            )


class _Services:
    """Services recorded by ``make services-up``, or started here on demand."""

    def __init__(self, tmp_root: Path) -> None:
        env_file = os.environ.get("SAIP_SERVICES_FILE")
        self._shared = devservices.read(Path(env_file)) if env_file else {}
        self._run_dir = tmp_root / "services"
        self._own: dict[str, devservices.Service] = {}

    def get(self, name: str) -> devservices.Service:
        if name in self._shared:
            return self._shared[name]
        if name not in self._own:
            try:
                self._own[name] = devservices.start(name, self._run_dir)
            except devservices.ServiceError as exc:
                pytest.fail(f"local stand-in '{name}' could not start: {exc}", pytrace=False)
        return self._own[name]

    def stop_own(self) -> None:
        for service in self._own.values():
            devservices.stop(service)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Services]:
    """Access to the stand-ins; stops the ones it started itself."""
    registry = _Services(tmp_path_factory.mktemp("run"))
    yield registry
    registry.stop_own()


def _post(url: str, body: bytes = b"") -> None:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        json.loads(resp.read() or b"{}")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials and region, so no test can ever reach a real AWS account by accident."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def moto_url(services: _Services, aws_env: None) -> str:
    """Endpoint URL of a moto server whose state was reset for this test."""
    url = services.get("moto").url
    _post(f"{url}/moto-api/reset")
    return url


@dataclass(frozen=True)
class MotoIam:
    """A moto server with IAM enforcement that a test switches on when its set-up is done."""

    url: str

    def enforce_after(self, free_actions: int = 0) -> None:
        """From now on, every request after ``free_actions`` more must be signed by an IAM user."""
        _post(f"{self.url}/moto-api/reset-auth", str(free_actions).encode())


@pytest.fixture
def moto_iam(services: _Services, aws_env: None) -> Iterator[MotoIam]:
    """The IAM-enforcing moto server, reset, with authentication off until the test enables it."""
    url = services.get("moto_iam").url
    _post(f"{url}/moto-api/reset-auth", b"inf")
    _post(f"{url}/moto-api/reset")
    yield MotoIam(url)
    _post(f"{url}/moto-api/reset-auth", b"inf")


@pytest.fixture
def pubsub_emulator(services: _Services, monkeypatch: pytest.MonkeyPatch) -> str:
    """``host:port`` of the Pub/Sub emulator; ``PUBSUB_EMULATOR_HOST`` is set for the test."""
    service = services.get("pubsub")
    for key, value in service.env().items():
        monkeypatch.setenv(key, value)
    return service.url


@dataclass(frozen=True)
class Azurite:
    """Azurite Blob endpoint with the public development-account credentials."""

    blob_url: str
    account: str = devservices.AZURITE_ACCOUNT
    key: str = devservices.AZURITE_KEY

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_url};"
        )


@pytest.fixture
def azurite(services: _Services) -> Azurite:
    """The Azurite Blob service (tests use their own uniquely named containers)."""
    return Azurite(services.get("azurite").url)
