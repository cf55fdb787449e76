"""Run the Flower app on real processes on 127.0.0.1: TLS, SuperNode authentication, clean stop.

``python -m saip_fl.deploy --run-dir DIR`` (what ``make fl-deploy-local`` calls):

1. creates a fresh run directory ``DIR/run-<UTC timestamp>`` (``0700``) and, with
   :mod:`saip_fl.pki`, a CA, the SuperLink's TLS certificate (SAN ``IP:127.0.0.1``,
   ``DNS:localhost``) and one OpenSSH ECDSA P-384 key pair per SuperNode;
2. writes a Flower configuration (``$FLWR_HOME/config.toml`` inside the run directory) whose
   SuperLink connection pins the run's CA (``root-certificates``), so the ``flwr`` CLI talks TLS;
3. starts ``flower-superlink`` with ``--ssl-certfile/--ssl-keyfile/--ssl-ca-certfile`` and
   ``--enable-supernode-auth`` on a free loopback port, runtime dependency installation off,
   and polls until a TLS handshake that verifies the certificate against the CA succeeds;
4. registers every SuperNode's public key (``flwr supernode register``), then starts three
   ``flower-supernode`` processes, each with its own private key, ``--root-certificates`` and a
   unique Runtime API ``--port``, and polls ``flwr supernode ls`` until all are ``online``;
5. submits the app with ``flwr run`` (the app directory ``federated-learning/deploy/app``), polls
   ``flwr ls`` until the run is finished, saves its log (``flwr log --show``) and the app's
   result;
6. stops every process group it started, and every group their children opened (the SuperLink
   starts ``flower-superexec`` in a new session, which starts ``flwr-serverapp``), by PID:
   ``SIGTERM``, then ``SIGKILL`` after a grace period, then checks that none is left. This runs
   in ``finally`` and on ``SIGINT``/``SIGTERM``/``SIGHUP``; a leftover process is an error.

Each process runs in its own session (``start_new_session``); PIDs, process groups and ports are
recorded in ``processes.json`` and ``deployment.json`` in the run directory, logs in ``logs/``.

Notes
-----
Scope and limits (also in ``federated-learning/deploy/README.md``): loopback only; SuperNodes
authenticate with a signature over their requests (Flower's SuperNode authentication), not with
client TLS certificates (no mTLS); the ``flwr`` CLI reaches the Control API over the same TLS
port without account authentication (Flower's OIDC account auth is an enterprise feature); the
SuperNodes' Runtime API (SuperNode ↔ ``flower-superexec`` ↔ ``flwr-clientapp``) is served with
TLS from the same run certificate. Descendant tracking reads ``/proc`` (Linux).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from saip_fl.errors import FLError
from saip_fl.pki import NodeKeyPair, RunPki, create_node_keypair, create_run_pki

__all__ = [
    "DEFAULT_APP_DIR",
    "AppRun",
    "DeploymentError",
    "DeploymentInterruptedError",
    "DeploymentResult",
    "LocalFederation",
    "ProcessSupervisor",
    "SuperNodeHandle",
    "check_app",
    "free_port",
    "main",
    "run_local_deployment",
    "stop_stale",
]

_LOG = logging.getLogger(__name__)
HOST: Final = "127.0.0.1"
CONNECTION: Final = "saip-local"
#: the encryption context bound to a deployment's sealed model (``saip fl deploy`` on processes and
#: ``make fl-deploy-containers`` alike); ``saip decrypt`` of the model needs exactly this context
DEPLOY_MODEL_CONTEXT: Final = {"purpose": "saip-fl-model", "format": "npz", "run": "deploy"}
#: The Flower app submitted by :func:`run_local_deployment` (``federated-learning/deploy/app``).
DEFAULT_APP_DIR: Final = Path(__file__).resolve().parents[2] / "deploy" / "app"
_RUN_FINISHED: Final = "finished"
_RUN_COMPLETED: Final = "finished:completed"
ConfigValue = bool | int | float | str


class DeploymentError(FLError):
    """The local deployment failed; the message names the step and points at its log."""


class DeploymentInterruptedError(DeploymentError):
    """A signal (SIGINT, SIGTERM, SIGHUP) stopped the deployment; every process was stopped."""


# --------------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _ProcInfo:
    pid: int
    ppid: int
    pgid: int
    start: int  # start time in clock ticks since boot: (pid, start) names a process uniquely
    zombie: bool


def _read_proc(pid: int) -> _ProcInfo | None:
    """Parse ``/proc/<pid>/stat`` (see proc(5)); ``None`` if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and ')'
    # after "pid (comm) ": state ppid pgrp session ... starttime is field 22 (index 19 here)
    return _ProcInfo(
        pid=pid,
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        start=int(rest[19]),
        zombie=rest[0] in ("Z", "X"),
    )


def _all_procs() -> list[_ProcInfo]:
    procs = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _read_proc(int(entry.name))
            if info is not None:
                procs.append(info)
    return procs


@dataclass(frozen=True)
class ManagedProcess:
    """A process started by :class:`ProcessSupervisor` (leader of its own process group)."""

    name: str
    pid: int
    argv: tuple[str, ...]
    log: Path


class ProcessSupervisor:
    """Start processes in their own sessions; stop every process group they led or opened.

    Parameters
    ----------
    run_dir
        Where ``processes.json`` (names, PIDs, process groups) is kept up to date.
    env
        Environment of the started processes.
    grace
        Seconds between ``SIGTERM`` and ``SIGKILL``.

    Notes
    -----
    ``flower-superlink`` starts ``flower-superexec`` with ``start_new_session=True``, so
    killing the SuperLink's process group leaves it running. The supervisor therefore walks
    ``/proc`` for descendants of what it started (on demand and every second from a watcher
    thread), remembers each process as ``(pid, start time)`` and each process group it saw, and
    on :meth:`stop_all` signals every remembered group that still contains a remembered process,
    which protects against signalling a recycled PID.
    """

    def __init__(self, *, run_dir: Path, env: Mapping[str, str], grace: float = 5.0) -> None:
        if grace <= 0:
            raise ValueError("grace must be positive")
        self._run_dir = run_dir
        self._env = dict(env)
        self._grace = grace
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._managed: dict[str, ManagedProcess] = {}
        self._seen: dict[int, _ProcInfo] = {}  # every process seen in our trees, by pid
        self._groups: set[int] = set()
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None
        me = _read_proc(os.getpid())
        if me is None:
            raise DeploymentError("cannot read /proc/self/stat: process tracking needs Linux /proc")
        self._controller = me

    # -- starting --------------------------------------------------------------------------
    def start(self, name: str, argv: Sequence[str], *, log: Path) -> ManagedProcess:
        """Start ``argv`` in a new session, output to ``log``; record it."""
        with self._lock:
            if name in self._managed:
                raise DeploymentError(f"a process named {name!r} was already started")
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                proc = subprocess.Popen(
                    list(argv),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self._env,
                    cwd=self._run_dir,
                    start_new_session=True,
                )
            managed = ManagedProcess(name=name, pid=proc.pid, argv=tuple(argv), log=log)
            self._procs[name] = proc
            self._managed[name] = managed
            self._groups.add(proc.pid)
            info = _read_proc(proc.pid)
            if info is not None:
                self._seen[proc.pid] = info
            _LOG.info("started %s (pid %d): %s", name, proc.pid, " ".join(argv))
            self._write_state()
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="saip-fl-watch")
                self._watcher.daemon = True
                self._watcher.start()
            return managed

    def returncode(self, name: str) -> int | None:
        """Exit code of a started process, ``None`` while it runs."""
        return self._procs[name].poll()

    def wait(self, name: str, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for a started process; its exit code or ``None``."""
        try:
            return self._procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def processes(self) -> dict[str, ManagedProcess]:
        """The processes started so far, by name."""
        return dict(self._managed)

    # -- tracking --------------------------------------------------------------------------
    def refresh(self) -> None:
        """Record every live descendant of the started processes and its process group."""
        with self._lock:
            procs = _all_procs()
            children: dict[int, list[_ProcInfo]] = {}
            for info in procs:
                children.setdefault(info.ppid, []).append(info)
            roots = [p.pid for p in self._procs.values()]
            # processes already seen whose parent died were re-parented: keep walking from them
            live = {(p.pid, p.start) for p in procs}
            roots += [pid for pid, info in self._seen.items() if (pid, info.start) in live]
            stack, visited = list(roots), set()
            while stack:
                pid = stack.pop()
                if pid in visited:
                    continue
                visited.add(pid)
                for child in children.get(pid, []):
                    if child.pid not in self._seen:
                        _LOG.debug("tracking pid %d (group %d)", child.pid, child.pgid)
                    self._seen[child.pid] = child
                    self._groups.add(child.pgid)
                    stack.append(child.pid)
            self._write_state()

    def _watch(self) -> None:
        while not self._stop_watch.wait(1.0):
            try:
                self.refresh()
            except Exception:  # the watcher must never die silently mid-run
                _LOG.exception("process watcher failed to scan /proc")

    def alive(self) -> list[int]:
        """PIDs (not zombies) that are in a remembered group or were remembered themselves."""
        with self._lock:
            out = []
            for info in _all_procs():
                if info.zombie:
                    continue
                known = self._seen.get(info.pid)
                if (known is not None and known.start == info.start) or (
                    info.pgid in self._groups and self._group_is_ours(info.pgid)
                ):
                    out.append(info.pid)
            return sorted(out)

    def _group_is_ours(self, pgid: int) -> bool:
        """Whether group ``pgid`` is still the one we saw (not a recycled ID).

        Linux does not hand out a PID that is still in use as a process group ID, so a group
        whose leader we saw is ours while the leader lives with the same start time, or, once
        the leader is gone, while any member is left.
        """
        leader_seen = self._seen.get(pgid)
        leader_now = _read_proc(pgid)
        if leader_now is not None and not leader_now.zombie:
            return leader_seen is not None and leader_seen.start == leader_now.start
        if leader_seen is not None:
            return True
        for info in _all_procs():
            known = self._seen.get(info.pid)
            if info.pgid == pgid and known is not None and known.start == info.start:
                return True
        return False

    @property
    def process_groups(self) -> list[int]:
        """Every process group seen (started ones and those their children opened)."""
        with self._lock:
            return sorted(self._groups)

    # -- stopping --------------------------------------------------------------------------
    def _signal_groups(self, sig: signal.Signals) -> None:
        for pgid in sorted(self._groups):
            if not self._group_is_ours(pgid):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)

    def stop_all(self) -> list[int]:
        """Stop every remembered process group; return PIDs still alive afterwards (none)."""
        self._stop_watch.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
        with self._lock:
            self.refresh()
            self._signal_groups(signal.SIGTERM)
            deadline = time.monotonic() + self._grace
            while time.monotonic() < deadline and self.alive():
                self._reap()
                time.sleep(0.1)
            if self.alive():
                _LOG.warning("processes ignored SIGTERM, sending SIGKILL: %s", self.alive())
                self.refresh()
                self._signal_groups(signal.SIGKILL)
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and self.alive():
                    self._reap()
                    time.sleep(0.1)
            self._reap()
            left = self.alive()
            self._write_state(stopped=not left)
            if left:
                _LOG.error("processes still alive after SIGKILL: %s", left)
            else:
                _LOG.info("stopped %d process group(s)", len(self._groups))
            return left

    def stop(self, name: str) -> list[int]:
        """Stop one started process's group and the groups its descendants opened.

        Returns the PIDs of that tree still alive afterwards (empty on success).
        """
        with self._lock:
            self.refresh()
            root = self._managed[name].pid
            tree = self._tree(root)
            groups = {root} | {self._seen[pid].pgid for pid in tree if pid in self._seen}
            for sig, wait in ((signal.SIGTERM, self._grace), (signal.SIGKILL, 5.0)):
                for pgid in sorted(groups):
                    if self._group_is_ours(pgid):
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.killpg(pgid, sig)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and self._live_in(groups):
                    self._reap()
                    time.sleep(0.1)
                if not self._live_in(groups):
                    break
            self._reap()
            return self._live_in(groups)

    def _tree(self, root: int) -> set[int]:
        children: dict[int, list[int]] = {}
        for info in self._seen.values():
            children.setdefault(info.ppid, []).append(info.pid)
        out, stack = set(), [root]
        while stack:
            pid = stack.pop()
            if pid not in out:
                out.add(pid)
                stack.extend(children.get(pid, []))
        return out

    @staticmethod
    def _live_in(groups: set[int]) -> list[int]:
        return sorted(i.pid for i in _all_procs() if i.pgid in groups and not i.zombie)

    def _reap(self) -> None:
        for proc in self._procs.values():
            proc.poll()
        # descendants re-parented to us (only when we are a child subreaper, see main())
        started = {p.pid for p in self._procs.values()}
        for pid in list(self._seen):
            if pid not in started:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)

    def _write_state(self, *, stopped: bool = False) -> None:
        state = {
            "processes": [
                {"name": m.name, "pid": m.pid, "pgid": m.pid, "log": str(m.log), "argv": m.argv}
                for m in self._managed.values()
            ],
            "descendants": [
                {"pid": i.pid, "pgid": i.pgid, "start": i.start}
                for i in sorted(self._seen.values(), key=_pid)
            ],
            "process_groups": sorted(self._groups),
            "controller": {"pid": self._controller.pid, "start": self._controller.start},
            "stopped": stopped,
        }
        path = self._run_dir / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2), encoding="utf-8")
        tmp.replace(path)


def _pid(info: _ProcInfo) -> int:
    return info.pid


def stop_stale(parent: Path, *, grace: float = 5.0) -> list[int]:
    """Stop processes left by earlier runs under ``parent`` whose controller died (SIGKILL).

    Reads every ``parent/run-*/processes.json`` not marked ``stopped`` and signals each
    recorded process group that still holds a recorded process with the same start time (so a
    recycled PID is never signalled): SIGTERM, then SIGKILL after ``grace`` seconds. Marks the
    file stopped when nothing is left.

    Returns
    -------
    list of int
        PIDs that were found alive and stopped.
    """
    stopped: list[int] = []
    for state_file in sorted(parent.glob("run-*/processes.json")):
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            _LOG.warning("cannot read %s; not touching its processes", state_file)
            continue
        if state.get("stopped"):
            continue
        try:
            ctl = state["controller"]
            controller = _read_proc(int(ctl["pid"]))
            if controller is not None and controller.start == int(ctl["start"]):
                continue  # its controller is alive: that run is in progress, not stale
            recorded = {
                (int(d["pid"]), int(d["start"])): int(d["pgid"]) for d in state["descendants"]
            }
        except (KeyError, TypeError, ValueError):
            _LOG.warning("%s lacks PID start times; not touching its processes", state_file)
            continue
        alive = [i for i in _all_procs() if not i.zombie and (i.pid, i.start) in recorded]
        groups = {recorded[(i.pid, i.start)] for i in alive}
        if alive:
            _LOG.warning("stopping %d process(es) left by %s", len(alive), state_file.parent)
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            for pgid in sorted(groups):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and ProcessSupervisor._live_in(groups):
                time.sleep(0.1)
            if not ProcessSupervisor._live_in(groups):
                break
        stopped += [i.pid for i in alive]
        if not ProcessSupervisor._live_in(groups):
            state["stopped"] = True
            state_file.write_text(json.dumps(state, indent=2), encoding="utf-8")
    return stopped


# --------------------------------------------------------------------------------------------
# the federation
# --------------------------------------------------------------------------------------------


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _tls_ready(port: int, ca_file: Path) -> bool:
    """A TLS handshake to 127.0.0.1:port that verifies the certificate (chain + IP SAN)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with (
            socket.create_connection((HOST, port), timeout=2) as sock,
            context.wrap_socket(sock, server_hostname=HOST),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


def _tcp_listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def _json_from_stdout(text: str) -> Any:
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in output")
    return json.loads(text[start:])


@dataclass(frozen=True)
class SuperNodeHandle:
    """A started ``flower-supernode``."""

    name: str
    pid: int
    runtime_port: int
    log: Path
    key: NodeKeyPair | None
    node_id: int | None


@dataclass
class AppRun:
    """One ``flwr run`` on a :class:`LocalFederation` (filled in step by step)."""

    app_dir: str
    run_id: int | None = None
    status: str | None = None
    seconds: float | None = None
    log: str | None = None
    result_dir: str | None = None
    result_files: list[str] = field(default_factory=list)
    rounds_completed: int | None = None
    app_status: str | None = None
    final_metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeploymentResult:
    """What :func:`run_local_deployment` did; also written to ``deployment.json``."""

    run_dir: str
    superlink_address: str
    ca_certificate: str
    supernodes: list[dict[str, Any]]
    run: dict[str, Any] | None = None
    process_groups: list[int] = field(default_factory=list)
    processes_left: list[int] = field(default_factory=list)
    error: str | None = None


class LocalFederation:
    """A SuperLink with TLS and SuperNode authentication plus SuperNodes, all on 127.0.0.1.

    Parameters
    ----------
    run_dir
        Fresh directory for PKI, logs, state, Flower home and results (created ``0700``).
    node_names
        SuperNodes whose keys are generated up front (registered on :meth:`register`).
    bin_dir
        Directory holding ``flower-superlink``, ``flower-supernode``, ``flwr`` (the venv).
    startup_timeout
        Seconds to wait for a process to become ready.
    runtime_tls
        Serve each SuperNode's Runtime API (SuperNode ↔ SuperExec ↔ ClientApp) with TLS too.

    Notes
    -----
    Use as a context manager: leaving it stops every process group (see
    :class:`ProcessSupervisor`) and raises :class:`DeploymentError` if any process is left.
    The transport is TLS 1.2+ with the server authenticated by the run CA (RFC 8446/5246); a
    SuperNode proves possession of a registered ECDSA P-384 key by signing its requests (Flower
    SuperNode authentication); there is no client certificate (no mTLS).
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        node_names: Sequence[str] = ("node-0", "node-1", "node-2"),
        bin_dir: Path | None = None,
        startup_timeout: float = 60.0,
        runtime_tls: bool = True,
    ) -> None:
        if not isinstance(run_dir, Path):
            raise TypeError("run_dir must be a pathlib.Path")
        if startup_timeout <= 0:
            raise ValueError("startup_timeout must be positive")
        if not node_names:
            raise ValueError("node_names must not be empty")
        self.bin_dir = (bin_dir or Path(sys.executable).parent).resolve()
        for exe in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
            if not (self.bin_dir / exe).exists():
                raise DeploymentError(f"{exe} not found in {self.bin_dir}: run 'make venv' first")
        if run_dir.exists() and any(run_dir.iterdir()):
            raise DeploymentError(f"run directory {run_dir} is not empty: use a fresh one")
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(run_dir, 0o700)
        self.run_dir = run_dir.resolve()
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(mode=0o700)
        self.flwr_home = self.run_dir / "flwr-home"
        self.flwr_home.mkdir(mode=0o700)
        self.startup_timeout = startup_timeout
        self.runtime_tls = runtime_tls
        self.pki: RunPki = create_run_pki(directory=self.run_dir / "pki", node_names=node_names)
        self.port = free_port()
        self.address = f"{HOST}:{self.port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLWR_", "SSL_", "REQUESTS_CA", "GRPC_"))
        }
        env["FLWR_HOME"] = str(self.flwr_home)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("NO_COLOR", "1")
        self.env = env
        self.supervisor = ProcessSupervisor(run_dir=self.run_dir, env=env)
        self.supernodes: dict[str, SuperNodeHandle] = {}
        self.node_ids: dict[str, int] = {}
        self.last_run: AppRun | None = None
        self._extra_keys: dict[str, NodeKeyPair] = {}
        self._serving: set[str] = set()  # SuperNodes that came online and must stay up
        self._write_flower_config()

    # -- context manager -------------------------------------------------------------------
    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        left = self.close()
        if left and exc[0] is None:
            raise DeploymentError(f"processes left running after stop: {left}")

    def close(self) -> list[int]:
        """Stop every process group; return PIDs still alive (empty on success)."""
        return self.supervisor.stop_all()

    # -- configuration ---------------------------------------------------------------------
    def _write_flower_config(self) -> None:
        """Flower configuration (FLWR_HOME/config.toml) with a TLS connection to our SuperLink."""
        ca = str(self.pki.ca.cert_path).replace("\\", "\\\\").replace('"', '\\"')
        text = (
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\nroot-certificates = "{ca}"\n'
        )
        path = self.flwr_home / "config.toml"
        path.write_text(text, encoding="utf-8")
        os.chmod(path, 0o600)
        parsed = tomllib.loads(text)  # fail here, not inside flwr, if the TOML is wrong
        if parsed["superlink"][CONNECTION].get("insecure"):
            raise DeploymentError("internal error: the flwr connection must not be insecure")

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the ``flwr`` CLI against this federation; output is appended to logs/flwr-cli.log."""
        argv = [str(self.bin_dir / "flwr"), *args]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=self.env,
                cwd=self.run_dir,
                timeout=timeout,
                check=False,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"'flwr {' '.join(args)}' timed out after {timeout} s") from exc
        with (self.logs / "flwr-cli.log").open("a", encoding="utf-8") as log:
            log.write(f"$ flwr {' '.join(args)}\n[exit {done.returncode}]\n")
            log.write(done.stdout + done.stderr + "\n")
        return done

    # -- SuperLink -------------------------------------------------------------------------
    def start_superlink(self) -> None:
        """Start ``flower-superlink`` (TLS, SuperNode auth) and wait for a verified handshake."""
        argv = [
            str(self.bin_dir / "flower-superlink"),
            "--ssl-ca-certfile",
            str(self.pki.ca.cert_path),
            "--ssl-certfile",
            str(self.pki.server.cert_path),
            "--ssl-keyfile",
            str(self.pki.server.key_path),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--database",
            str(self.run_dir / "superlink-state.db"),
        ]
        log = self.logs / "superlink.log"
        self.supervisor.start("superlink", argv, log=log)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            code = self.supervisor.returncode("superlink")
            if code is not None:
                raise DeploymentError(
                    f"flower-superlink exited with code {code} during start-up; "
                    f"log {log}:\n{_log_tail(log)}"
                )
            if _tls_ready(self.port, self.pki.ca.cert_path):
                self.supervisor.refresh()
                _LOG.info("SuperLink ready on https://%s (TLS verified with run CA)", self.address)
                return
            time.sleep(0.2)
        raise DeploymentError(
            f"flower-superlink not ready after {self.startup_timeout} s; log {log}:\n"
            f"{_log_tail(log)}"
        )

    # -- SuperNodes ------------------------------------------------------------------------
    def node_key(self, name: str) -> NodeKeyPair:
        """The generated key pair of node ``name`` (created on demand for extra nodes)."""
        for node in self.pki.nodes:
            if node.name == name:
                return node
        if name not in self._extra_keys:
            self._extra_keys[name] = create_node_keypair(directory=self.pki.directory, name=name)
        return self._extra_keys[name]

    def register(self, name: str) -> int:
        """Register node ``name``'s public key with ``flwr supernode register``; its node ID."""
        key = self.node_key(name)
        done = self.flwr(
            "supernode",
            "register",
            str(key.public_key_path),
            CONNECTION,
            "--name",
            name,
            "--format",
            "json",
        )
        try:
            payload = _json_from_stdout(done.stdout)
            node_id = int(payload["node-id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DeploymentError(
                f"registering {name} failed (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            ) from exc
        self.node_ids[name] = node_id
        _LOG.info("registered %s as node %d", name, node_id)
        return node_id

    def list_nodes(self) -> list[dict[str, Any]]:
        """``flwr supernode ls --format json``: node IDs and status as the SuperLink sees them."""
        done = self.flwr("supernode", "ls", CONNECTION, "--format", "json")
        try:
            nodes = _json_from_stdout(done.stdout)["nodes"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeploymentError(
                f"'flwr supernode ls' failed (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            ) from exc
        return list(nodes)

    def online_node_ids(self) -> set[int]:
        """IDs of nodes the SuperLink reports as ``online``."""
        return {int(n["node-id"]) for n in self.list_nodes() if n.get("status") == "online"}

    def start_supernode(
        self,
        name: str,
        *,
        partition_id: int = 0,
        num_partitions: int = 1,
        authenticate: bool = True,
        insecure: bool = False,
        root_certificates: Path | None = None,
        max_retries: int | None = None,
        extra_node_config: Mapping[str, ConfigValue] | None = None,
    ) -> SuperNodeHandle:
        """Start ``flower-supernode`` ``name`` with its own key and Runtime API port.

        ``authenticate=False``, ``insecure=True`` and ``root_certificates`` (another CA) exist
        to prove the SuperLink refuses such nodes; the defaults are the secure configuration.
        """
        port = free_port()
        node_config: dict[str, ConfigValue] = {
            "partition-id": partition_id,
            "num-partitions": num_partitions,
        }
        node_config.update(extra_node_config or {})
        argv = [
            str(self.bin_dir / "flower-supernode"),
            "--superlink",
            self.address,
            "--port",
            str(port),
            "--node-config",
            " ".join(f"{k}={json.dumps(v)}" for k, v in node_config.items()),
        ]
        if insecure:
            argv.append("--insecure")
        else:
            argv += ["--root-certificates", str(root_certificates or self.pki.ca.cert_path)]
        key = None
        if authenticate:
            key = self.node_key(name)
            argv += ["--auth-supernode-private-key", str(key.private_key_path)]
        if self.runtime_tls and not insecure:
            argv += [
                "--ssl-certfile",
                str(self.pki.server.cert_path),
                "--ssl-keyfile",
                str(self.pki.server.key_path),
                "--ssl-ca-certfile",
                str(self.pki.ca.cert_path),
            ]
        if max_retries is not None:
            argv += ["--max-retries", str(max_retries)]
        log = self.logs / f"supernode-{name}.log"
        managed = self.supervisor.start(f"supernode-{name}", argv, log=log)
        handle = SuperNodeHandle(
            name=name,
            pid=managed.pid,
            runtime_port=port,
            log=log,
            key=key,
            node_id=self.node_ids.get(name),
        )
        self.supernodes[name] = handle
        return handle

    def stop_supernode(self, name: str) -> list[int]:
        """Stop SuperNode ``name`` and its SuperExec/ClientApp children; PIDs left (none)."""
        self._serving.discard(name)
        return self.supervisor.stop(f"supernode-{name}")

    def supernode_exit_code(self, name: str, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for SuperNode ``name`` to exit; its code or ``None``."""
        return self.supervisor.wait(f"supernode-{name}", timeout)

    def register_all(self, names: Sequence[str]) -> dict[str, int]:
        """Register several nodes concurrently (each ``flwr`` call mostly waits on imports)."""
        with ThreadPoolExecutor(max_workers=min(4, len(names))) as pool:
            ids = list(pool.map(self.register, names))
        return dict(zip(names, ids, strict=True))

    def _check_alive(self, names: Sequence[str], during: str) -> None:
        for name in names:
            code = self.supervisor.returncode(f"supernode-{name}")
            if code is not None:
                log = self.supernodes[name].log
                raise DeploymentError(
                    f"SuperNode {name} exited with code {code} {during}; "
                    f"log {log}:\n{_log_tail(log)}"
                )

    def wait_online(self, names: Sequence[str]) -> None:
        """Wait until the named, registered SuperNodes serve their Runtime API and the SuperLink
        lists them as ``online`` (``flwr supernode ls``)."""
        wanted = {self.node_ids[n]: n for n in names}
        deadline = time.monotonic() + self.startup_timeout
        pending = list(names)
        while pending and time.monotonic() < deadline:
            self._check_alive(names, "during start-up")
            pending = [n for n in pending if not _tcp_listening(self.supernodes[n].runtime_port)]
            if pending:
                time.sleep(0.2)
        online: set[int] = set()
        while time.monotonic() < deadline:
            self._check_alive(names, "during start-up")
            online = self.online_node_ids()
            if set(wanted) <= online:
                self._serving.update(names)
                self.supervisor.refresh()
                _LOG.info("SuperNodes online: %s", ", ".join(sorted(names)))
                return
            time.sleep(0.3)
        missing = sorted(n for i, n in wanted.items() if i not in online)
        raise DeploymentError(f"SuperNodes not online after {self.startup_timeout} s: {missing}")

    # -- runs ------------------------------------------------------------------------------
    def submit(self, app_dir: Path, run_config: Mapping[str, ConfigValue]) -> int:
        """``flwr run APP saip-local`` with ``run_config`` overrides; the run ID."""
        if not (app_dir / "pyproject.toml").is_file():
            raise DeploymentError(f"no Flower app (pyproject.toml) in {app_dir}")
        args = ["run", str(app_dir), CONNECTION, "--format", "json"]
        if run_config:
            args += [
                "--run-config",
                " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items()),
            ]
        done = self.flwr(*args, timeout=120)
        try:
            payload = _json_from_stdout(done.stdout)
            if not payload.get("success"):
                raise ValueError("not successful")
            run_id = int(payload["run-id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DeploymentError(
                f"'flwr run' failed (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-800:]}\nSuperLink log "
                f"{self.logs / 'superlink.log'}:\n{_log_tail(self.logs / 'superlink.log', 6)}"
            ) from exc
        _LOG.info("submitted run %d (%s)", run_id, app_dir)
        return run_id

    def run_status(self, run_id: int) -> str:
        """Status of ``run_id`` from ``flwr ls --run-id`` (e.g. ``finished:completed``)."""
        done = self.flwr("ls", CONNECTION, "--run-id", str(run_id), "--format", "json")
        try:
            runs = _json_from_stdout(done.stdout)["runs"]
            return str(runs[0]["status"])
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise DeploymentError(
                f"'flwr ls' failed (exit {done.returncode}): "
                f"{(done.stdout + done.stderr).strip()[-500:]}"
            ) from exc

    def wait_run(self, run_id: int, *, timeout: float, poll: float = 2.0) -> str:
        """Poll until the run is finished; its final status. Fails if a SuperNode dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.run_status(run_id)
            if status.startswith(_RUN_FINISHED):
                return status
            self._check_alive(sorted(self._serving), f"during run {run_id}")
            if self.supervisor.returncode("superlink") is not None:
                raise DeploymentError(f"flower-superlink exited during run {run_id}")
            time.sleep(poll)
        with contextlib.suppress(DeploymentError):
            self.flwr("stop", str(run_id), CONNECTION)
        raise DeploymentError(f"run {run_id} did not finish within {timeout} s (stopped it)")

    def run_app(
        self,
        app_dir: Path,
        run_config: Mapping[str, ConfigValue],
        *,
        run_timeout: float,
        out_dir: Path | None,
        out_key: str = "out-dir",
    ) -> AppRun:
        """Submit the app, wait for it, save its log and check what it wrote to ``out_dir``.

        Raises :class:`DeploymentError` unless the run is ``finished:completed``, wrote files
        to ``out_dir`` and (when it writes ``metrics.json``) reports status ``ok`` with at least
        one round. Progress is kept in :attr:`last_run` even when it fails.
        """
        run = self.last_run = AppRun(app_dir=str(app_dir))
        config = dict(run_config)
        if out_dir is not None:
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            config.setdefault(out_key, str(out_dir))
            run.result_dir = str(out_dir)
        started = time.monotonic()
        run.run_id = self.submit(app_dir, config)
        run.status = self.wait_run(run.run_id, timeout=run_timeout)
        run.seconds = round(time.monotonic() - started, 2)
        run.log = str(self.save_run_log(run.run_id))
        if run.status != _RUN_COMPLETED:
            raise DeploymentError(
                f"run {run.run_id} ended as {run.status}; "
                f"log {run.log}:\n{_log_tail(Path(run.log), 25)}"
            )
        if out_dir is None:
            return run
        files, rounds, final, status = _read_metrics(out_dir)
        run.result_files, run.rounds_completed = files, rounds
        run.final_metrics, run.app_status = final, status
        if not files:
            raise DeploymentError(f"run {run.run_id} completed but wrote nothing to {out_dir}")
        if status is not None and status != "ok":
            raise DeploymentError(f"run {run.run_id}: metrics.json reports status {status!r}")
        if rounds is not None and rounds < 1:
            raise DeploymentError(f"run {run.run_id} completed 0 rounds")
        return run

    def save_run_log(self, run_id: int) -> Path:
        """``flwr log RUN --show`` into ``logs/run-<id>.log``."""
        done = self.flwr("log", str(run_id), CONNECTION, "--show")
        path = self.logs / f"run-{run_id}.log"
        path.write_text(done.stdout + done.stderr, encoding="utf-8")
        return path


# --------------------------------------------------------------------------------------------
# one complete run
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """Turn SIGINT/SIGTERM/SIGHUP into :class:`DeploymentInterruptedError` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise DeploymentInterruptedError(f"interrupted by {signal.Signals(signum).name}")

    previous = {
        s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_ignored(active: bool) -> Iterator[None]:
    """Ignore SIGINT/SIGTERM/SIGHUP while stopping processes (main thread only)."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _read_metrics(result_dir: Path) -> tuple[list[str], int | None, dict[str, Any], str | None]:
    """Files the app wrote, and from ``metrics.json``: rounds done, final metrics, status."""
    files = sorted(str(p.relative_to(result_dir)) for p in result_dir.rglob("*") if p.is_file())
    path = result_dir / "metrics.json"
    if not path.is_file():
        return files, None, {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rounds"), list):
        raise DeploymentError(f"{path} has no 'rounds' list")
    final = data.get("final")
    status = data.get("status")
    return (
        files,
        len(data["rounds"]),
        dict(final) if isinstance(final, dict) else {},
        str(status) if status is not None else None,
    )


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_app(app_dir: Path, run_config: Mapping[str, ConfigValue]) -> dict[str, Any]:
    """Validate a Flower app directory and the overrides before anything is started.

    Flower rejects an override whose key is not in ``[tool.flwr.app.config]`` only after the run
    is submitted, and reports it as a bare "Invalid run configuration" (the key is named only in
    the SuperLink's log); this names the key up front.

    Returns
    -------
    dict
        The app's default run config, flattened (dotted keys).

    Raises
    ------
    ValueError
        Missing ``pyproject.toml``, missing ``serverapp``/``clientapp`` components, or an
        override key the app does not declare.
    """
    pyproject = app_dir / "pyproject.toml"
    if not pyproject.is_file():
        raise ValueError(f"app_dir: no Flower app (pyproject.toml) in {app_dir}")
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"app_dir: {pyproject} is not valid TOML: {exc}") from exc
    app = data.get("tool", {}).get("flwr", {}).get("app", {})
    components = app.get("components", {})
    missing = [c for c in ("serverapp", "clientapp") if c not in components]
    if missing:
        raise ValueError(f"app_dir: {pyproject} lacks [tool.flwr.app.components] {missing}")
    defaults = _flatten(app.get("config", {}))
    unknown = sorted(set(run_config) - set(defaults))
    if unknown:
        raise ValueError(
            f"run_config: {unknown} not declared in [tool.flwr.app.config] of {pyproject} "
            "(Flower only accepts overrides of declared keys)"
        )
    return defaults


def run_local_deployment(
    *,
    run_dir: Path,
    app_dir: Path = DEFAULT_APP_DIR,
    num_supernodes: int = 3,
    run_config: Mapping[str, ConfigValue] | None = None,
    result_config_key: str | None = "out-dir",
    run_timeout: float = 300.0,
    startup_timeout: float = 60.0,
    bin_dir: Path | None = None,
    install_signal_handlers: bool = True,
) -> DeploymentResult:
    """Start SuperLink + SuperNodes on loopback with TLS and node auth, run the app, stop all.

    Parameters
    ----------
    run_dir
        Fresh (empty or missing) directory for everything the run writes.
    app_dir
        Flower app directory (``pyproject.toml`` with ``[tool.flwr.app.components]``).
    num_supernodes
        SuperNodes to start (each gets partition ``i`` of ``num_supernodes``).
    run_config
        ``flwr run --run-config`` overrides (keys must exist in the app's
        ``[tool.flwr.app.config]``).
    result_config_key
        Run-config key through which the app is told where to write its results
        (``<run_dir>/result``); ``None`` to not pass one.
    run_timeout, startup_timeout
        Seconds for the run and for each start-up step.
    bin_dir
        Where the Flower executables are (default: next to this interpreter).
    install_signal_handlers
        Stop cleanly on SIGINT/SIGTERM/SIGHUP (main thread only).

    Returns
    -------
    DeploymentResult
        Also written to ``<run_dir>/deployment.json``.

    Raises
    ------
    DeploymentError
        Any step failed, the run did not finish as ``finished:completed``, or a process was
        left running. Every process group is stopped before it propagates.
    """
    if not isinstance(num_supernodes, int) or isinstance(num_supernodes, bool):
        raise TypeError("num_supernodes must be an int")
    if not 1 <= num_supernodes <= 16:
        raise ValueError("num_supernodes must be between 1 and 16")
    if run_timeout <= 0:
        raise ValueError("run_timeout must be positive")
    app_dir = app_dir.resolve()
    overrides: dict[str, ConfigValue] = dict(run_config or {})
    if result_config_key:
        overrides.setdefault(result_config_key, "")
    defaults = check_app(app_dir, overrides)
    if "num-clients" in defaults:  # saip_fl.apps waits for exactly num-clients nodes
        wanted = overrides.get("num-clients", num_supernodes)
        if wanted != num_supernodes:
            raise ValueError(
                f"run_config num-clients={wanted} differs from num_supernodes={num_supernodes}: "
                "the ServerApp would wait for nodes that never come"
            )
    names = [f"node-{i}" for i in range(num_supernodes)]
    started = time.monotonic()
    fed = LocalFederation(
        run_dir=run_dir, node_names=names, bin_dir=bin_dir, startup_timeout=startup_timeout
    )
    result = DeploymentResult(
        run_dir=str(fed.run_dir),
        superlink_address=f"https://{fed.address}",
        ca_certificate=str(fed.pki.ca.cert_path),
        supernodes=[],
    )
    config: dict[str, ConfigValue] = dict(run_config or {})
    if "num-clients" in defaults:
        config["num-clients"] = num_supernodes
    result_dir = fed.run_dir / "result"
    guard = _signals_raise() if install_signal_handlers else contextlib.nullcontext()
    try:
        try:
            with guard:
                fed.start_superlink()
                fed.register_all(names)
                for i, name in enumerate(names):
                    fed.start_supernode(name, partition_id=i, num_partitions=num_supernodes)
                fed.wait_online(names)
                result.supernodes = [
                    {
                        "name": h.name,
                        "pid": h.pid,
                        "node_id": fed.node_ids[h.name],
                        "runtime_port": h.runtime_port,
                        "public_key": str(h.key.public_key_path) if h.key else None,
                        "log": str(h.log),
                    }
                    for h in fed.supernodes.values()
                ]
                fed.run_app(
                    app_dir,
                    config,
                    run_timeout=run_timeout,
                    out_dir=result_dir if result_config_key else None,
                    out_key=result_config_key or "out-dir",
                )
        finally:
            # a second signal while stopping must not cut the stop short
            with _signals_ignored(install_signal_handlers):
                result.processes_left = fed.close()
            result.process_groups = fed.supervisor.process_groups
            result.run = asdict(fed.last_run) if fed.last_run else None
    except DeploymentError as exc:
        result.error = str(exc)
        raise
    finally:
        _write_result(fed.run_dir, result, seconds=time.monotonic() - started)
    if result.processes_left:
        result.error = f"processes left running after stop: {result.processes_left}"
        _write_result(fed.run_dir, result, seconds=time.monotonic() - started)
        raise DeploymentError(result.error)
    return result


def _write_result(run_dir: Path, result: DeploymentResult, *, seconds: float) -> None:
    data = asdict(result)
    data["total_seconds"] = round(seconds, 2)
    (run_dir / "deployment.json").write_text(json.dumps(data, indent=2), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def _parse_config(items: Sequence[str]) -> dict[str, ConfigValue]:
    out: dict[str, ConfigValue] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--run-config expects KEY=VALUE, got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        if not isinstance(value, bool | int | float | str):
            raise ValueError(f"--run-config {key}: only bool/int/float/str values are allowed")
        out[key] = value
    return out


def _become_subreaper() -> None:
    """Linux ``PR_SET_CHILD_SUBREAPER``: orphaned descendants (e.g. ``flower-superexec`` when the
    SuperLink exits first) are re-parented to this process, which reaps them, instead of to PID 1
    (which in some containers never reaps, leaving zombies)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        _LOG.debug("could not become a child subreaper; orphans go to PID 1")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m saip_fl.deploy``: one local deployment; exit 0 only if it completed cleanly."""
    from rich.console import Console  # CLI-only dependency
    from rich.markup import escape

    parser = argparse.ArgumentParser(
        prog="python -m saip_fl.deploy",
        description="Run the saip Flower app on a local TLS + SuperNode-auth deployment.",
    )
    parser.add_argument("--run-dir", type=Path, required=True, help="parent of the run directory")
    parser.add_argument("--app-dir", type=Path, default=DEFAULT_APP_DIR)
    parser.add_argument("--num-supernodes", type=int, default=3)
    parser.add_argument("--run-timeout", type=float, default=900.0)
    parser.add_argument(
        "--run-config", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if args.run_dir.is_dir():
        stale = stop_stale(args.run_dir)
        if stale:
            err.print(f"fl-deploy: stopped {len(stale)} process(es) left by an earlier run")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    run_dir = args.run_dir / f"run-{stamp}"
    try:
        result = run_local_deployment(
            run_dir=run_dir,
            app_dir=args.app_dir,
            num_supernodes=args.num_supernodes,
            run_config=_parse_config(args.run_config),
            run_timeout=args.run_timeout,
        )
    except (DeploymentError, ValueError, TypeError) as exc:
        err.print(f"[bold red]fl-deploy: FAILED[/]: {escape(str(exc))}")
        if run_dir.exists():
            err.print(f"run directory (logs, processes.json, deployment.json): {run_dir}")
        return 1
    run = result.run or {}
    out.print(f"[bold green]fl-deploy: run {run.get('run_id')} {run.get('status')}[/]")
    out.print(f"  SuperLink     {result.superlink_address} (TLS, CA {result.ca_certificate})")
    for node in result.supernodes:
        out.print(
            f"  SuperNode     {node['name']}: node {node['node_id']}, pid {node['pid']}, "
            f"runtime API https://127.0.0.1:{node['runtime_port']} "
            f"(key {node['public_key']} registered)"
        )
    out.print(f"  run seconds   {run.get('seconds')}")
    out.print(f"  rounds        {run.get('rounds_completed')} (app status {run.get('app_status')})")
    if run.get("final_metrics"):
        out.print(f"  final         {escape(json.dumps(run['final_metrics'], default=str)[:300])}")
    out.print(f"  results       {run.get('result_dir')}: {', '.join(run.get('result_files', []))}")
    out.print(f"  run log       {run.get('log')}")
    out.print(
        f"  stopped       {len(result.process_groups)} process groups; "
        f"processes left: {len(result.processes_left)}"
    )
    out.print(f"  summary       {run_dir / 'deployment.json'}")
    return 0


if __name__ == "__main__":
    _become_subreaper()  # only as a program: never turn an embedding process into a subreaper
    raise SystemExit(main())
