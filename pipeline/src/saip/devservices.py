"""Local stand-ins for the clouds, started on 127.0.0.1 and stopped by PID.

``python -m saip.devservices up|down|status --run-dir DIR`` is what ``make services-up`` and
``make services-down`` call; the pytest fixtures in ``tests/conftest.py`` reuse the same code (they
read the ``services.json`` that ``up`` writes, or start what they need themselves).

Services
--------
``moto``
    moto server (AWS: KMS, Kinesis, S3, Firehose, IAM) without authentication.
``moto_iam``
    a second moto server whose IAM enforcement is switched on per test through
    ``POST /moto-api/reset-auth`` (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``).
``pubsub``
    Google's Pub/Sub emulator from the Cloud SDK in the image (Java).
``azurite``
    Azurite's Blob service (npm, pinned in ``package.json``), for Event Hubs checkpoints and
    ADLS Gen2 landing through the Blob API.

Free ports are chosen at start; each service runs in its own process group, whose PID is recorded
in ``services.json`` with its port and URL; readiness is polled; ``down`` stops each group by PID
(SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

SERVICES: tuple[str, ...] = ("moto", "moto_iam", "pubsub", "azurite")
HOST = "127.0.0.1"
#: Azurite's well-known development account (public, documented by Microsoft; not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class ServiceError(RuntimeError):
    """A stand-in could not be started or reached; the message says which and why."""


@dataclass(frozen=True)
class Service:
    """A running stand-in, as recorded in ``services.json``."""

    name: str
    pid: int
    port: int
    url: str
    log: str

    def env(self) -> dict[str, str]:
        """Environment variables the real SDKs read to reach this stand-in."""
        if self.name == "pubsub":
            return {"PUBSUB_EMULATOR_HOST": f"{HOST}:{self.port}"}
        return {}


def free_port() -> int:
    """Ask the kernel for a free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _bin(name: str) -> str:
    """An executable next to this interpreter (the project venv) or on PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"'{name}' not found: run 'make venv' first")
    return found


def _project_root() -> Path:
    for parent in [Path.cwd(), *Path.cwd().parents]:
        if (parent / "package.json").exists() and (parent / "pyproject.toml").exists():
            return parent
    return Path.cwd()


def _pubsub_command(port: int, data_dir: Path) -> list[str]:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise ServiceError("Pub/Sub emulator: gcloud (Google Cloud SDK) is not installed")
    sdk_root = subprocess.run(
        [gcloud, "info", "--format=value(installation.sdk_root)"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    ).stdout.strip()
    script = Path(sdk_root) / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    if not script.exists():
        raise ServiceError(
            f"Pub/Sub emulator not found under {sdk_root}: "
            "install the google-cloud-cli 'pubsub-emulator' component"
        )
    return [str(script), f"--host={HOST}", f"--port={port}", f"--dir={data_dir}"]


def _azurite_command(port: int, data_dir: Path) -> list[str]:
    exe = _project_root() / "node_modules/.bin/azurite-blob"
    if not exe.exists():
        raise ServiceError("Azurite not installed: run 'make venv' (npm ci) first")
    return [
        str(exe),
        "--blobHost",
        HOST,
        "--blobPort",
        str(port),
        "--location",
        str(data_dir),
        "--silent",
        "--skipApiVersionCheck",
        "--disableProductStyleUrl",
    ]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
            return 200 <= int(resp.status) < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


def _tcp_ok(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def _spec(
    name: str, port: int, data_dir: Path
) -> tuple[list[str], dict[str, str], str, Callable[[], bool]]:
    env = dict(os.environ)
    if name in ("moto", "moto_iam"):
        url = f"http://{HOST}:{port}"
        if name == "moto_iam":
            # Authentication is off until a test switches it on with POST /moto-api/reset-auth.
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "inf"
        cmd = [_bin("moto_server"), "-H", HOST, "-p", str(port)]
        return cmd, env, url, lambda: _http_ok(f"{url}/moto-api/data.json")
    if name == "pubsub":
        return (
            _pubsub_command(port, data_dir),
            env,
            f"{HOST}:{port}",
            lambda: _http_ok(f"http://{HOST}:{port}/"),
        )
    if name == "azurite":
        return (
            _azurite_command(port, data_dir),
            env,
            f"http://{HOST}:{port}/{AZURITE_ACCOUNT}",
            lambda: _tcp_ok(port),
        )
    raise ServiceError(f"unknown service '{name}' (known: {', '.join(SERVICES)})")


def start(name: str, run_dir: Path, *, timeout: float = 60.0) -> Service:
    """Start one stand-in in its own process group and wait until it answers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data_dir = run_dir / f"{name}-data"
    data_dir.mkdir(exist_ok=True)
    port = free_port()
    cmd, env, url, ready = _spec(name, port, data_dir)
    log_path = run_dir / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    service = Service(name=name, pid=proc.pid, port=port, url=url, log=str(log_path))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(
                f"{name} exited with code {proc.returncode} during start-up; see {log_path}"
            )
        if ready():
            return service
        time.sleep(0.2)
    stop(service)
    raise ServiceError(f"{name} did not become ready within {timeout:.0f}s; see {log_path}")


def stop(service: Service, *, grace: float = 10.0) -> None:
    """Stop a stand-in's whole process group by PID: SIGTERM, then SIGKILL after ``grace``."""
    try:
        os.killpg(service.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(service.pid, os.WNOHANG)
        try:
            os.killpg(service.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGKILL)


def services_file(run_dir: Path) -> Path:
    """Where ``up`` records the running services."""
    return run_dir / "services.json"


def read(path: Path) -> dict[str, Service]:
    """Read a ``services.json`` written by :func:`up`."""
    if not path.exists():
        return {}
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: Service(**entry) for name, entry in raw.items()}


def write(path: Path, services: dict[str, Service]) -> None:
    """Record running services (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({n: asdict(s) for n, s in services.items()}, indent=2) + "\n")
    tmp.replace(path)


def up(run_dir: Path, names: Sequence[str] = SERVICES) -> dict[str, Service]:
    """Start the named stand-ins (those already recorded as running are kept)."""
    path = services_file(run_dir)
    running = {n: s for n, s in read(path).items() if _alive(s)}
    for name in names:
        if name not in running:
            try:
                running[name] = start(name, run_dir)
            finally:
                write(path, running)
    write(path, running)
    return running


def down(run_dir: Path) -> list[str]:
    """Stop every recorded stand-in and forget it; returns the names stopped."""
    path = services_file(run_dir)
    services = read(path)
    for service in services.values():
        stop(service)
    path.unlink(missing_ok=True)
    return sorted(services)


def _alive(service: Service) -> bool:
    try:
        os.killpg(service.pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point used by the Makefile."""
    parser = argparse.ArgumentParser(prog="python -m saip.devservices", description=__doc__)
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--run-dir", type=Path, default=Path(".run/services"))
    parser.add_argument("--only", nargs="*", choices=SERVICES, default=list(SERVICES))
    args = parser.parse_args(argv)
    try:
        if args.action == "up":
            for s in up(args.run_dir, args.only).values():
                print(f"  {s.name:<9} pid {s.pid:<7} {s.url}")
            print(f"services recorded in {services_file(args.run_dir)}")
        elif args.action == "down":
            stopped = down(args.run_dir)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        else:
            for s in read(services_file(args.run_dir)).values():
                state = "running" if _alive(s) else "dead"
                print(f"  {s.name:<9} pid {s.pid:<7} {state:<8} {s.url}")
    except ServiceError as exc:
        print(f"devservices: error: {exc}", file=sys.stderr)
        if args.action == "up":
            down(args.run_dir)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
