"""Build the saip OCI images and run the federated deployment in containers, without a registry.

``python containers/ctr.py <command>`` (what ``make images`` and ``make fl-deploy-containers``
call; the engine is ``podman`` unless ``--engine docker``):

``context``
    Writes the build context ``<out>/context``: the wheels of the project's lock, built on the
    host with the host's pip configuration (``pip wheel -c <frozen .venv>``), so the images hold
    **the versions of the tested ``.venv``**, hash-pinned. ``deps/requirements.lock`` (third
    party) and ``project/requirements.lock`` (the saip wheel) are separate, so a source change
    rebuilds only the small top layer. Refuses CUDA/NVIDIA wheels and any version that differs
    from the ``.venv``. Nothing but wheels and lock files is in the context: no key, certificate
    or configuration can reach an image layer.
``sbom IMAGE OUT``
    A CycloneDX 1.5 JSON SBOM of an image: every Python distribution in ``/opt/saip`` (with the
    wheel's SHA-256 from the lock) and every Debian package of the base, read from inside the
    image (``--network none``, read-only root file system).
``deploy``
    The federation of ``make fl-deploy-local`` in containers: see :func:`deploy`.

Every container and network gets the label ``io.saip.run=<run id>``; IDs are recorded in
``containers.json`` as soon as they exist and everything is stopped and removed **by ID** in a
``finally`` block (also on SIGINT/SIGTERM/SIGHUP), then checked to be gone.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parents[1]
VERSION: Final = "0.1.0"
UID: Final = 10001
IMAGES: Final = {
    "runtime": f"localhost/saip/runtime:{VERSION}",
    "superlink": f"localhost/saip/superlink:{VERSION}",
    "supernode": f"localhost/saip/supernode:{VERSION}",
    "ingest": f"localhost/saip/ingest:{VERSION}",
}
LABEL: Final = "io.saip.run"
#: wheels of the lock left out of the images, with the reason (documented in containers/README.md)
EXCLUDED: Final = {
    "ray": "simulation-only (flwr[simulation]); the deployment images never start Ray",
}
_FORBIDDEN_WHEEL = re.compile(r"^(nvidia[_-]|triton-|cuda)", re.IGNORECASE)


class ContainerError(Exception):
    """A build or deployment step failed; the message names the step."""


class InterruptedRunError(ContainerError):
    """SIGINT/SIGTERM/SIGHUP stopped the run (everything was removed)."""


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------
# engine
# --------------------------------------------------------------------------------------------


class Engine:
    """A container engine CLI (``podman`` or ``docker``); every call is logged to ``log``."""

    def __init__(self, name: str, *, log: Path | None = None) -> None:
        if name not in ("podman", "docker"):
            raise ValueError(f"engine must be 'podman' or 'docker', got {name!r}")
        exe = shutil.which(name)
        if exe is None:
            raise ContainerError(
                f"{name} not found: install it (Debian: apt-get install podman buildah runc "
                "mmdebstrap uidmap iptables) or set CONTAINER_ENGINE"
            )
        self.name = name
        self.exe = exe
        self.log = log
        if name == "podman" and not os.environ.get("CONTAINERS_CONF"):
            raise ContainerError(
                "CONTAINERS_CONF is not set: run through make (it writes .run/images/"
                "containers.conf with this host's ulimits and runc)"
            )

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 300.0, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        argv = [self.exe, *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=timeout, check=False, input=stdin
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(
                f"'{self.name} {shlex.join(args)}' timed out ({timeout} s)"
            ) from exc
        if self.log is not None:
            with self.log.open("a", encoding="utf-8") as out:
                out.write(f"$ {self.name} {shlex.join(args)}\n[exit {done.returncode}]\n")
                out.write(done.stdout.decode(errors="replace")[-4000:])
                out.write(done.stderr.decode(errors="replace")[-4000:] + "\n")
        if check and done.returncode != 0:
            raise ContainerError(
                f"'{self.name} {shlex.join(args[:3])} ...' failed (exit {done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()[-600:]}"
            )
        return done

    def text(self, *args: str, **kw: Any) -> str:
        return self(*args, **kw).stdout.decode(errors="replace").strip()

    def exists(self, kind: str, ident: str) -> bool:
        """Whether a ``container``/``network``/``image`` with this ID or name exists."""
        return self(kind, "inspect", ident, check=False, timeout=60).returncode == 0


# --------------------------------------------------------------------------------------------
# build context: the wheels of the lock
# --------------------------------------------------------------------------------------------


def _frozen(venv_python: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(venv_python), "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pins: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, version = line.partition("==")
        if sep and not line.startswith(("#", "-")):
            pins[_norm(name)] = version.strip()
    return pins


def _wheel_name(path: Path) -> tuple[str, str]:
    parts = path.name.split("-")
    if len(parts) < 5 or not path.name.endswith(".whl"):
        raise ContainerError(f"not a wheel file name: {path.name}")
    return _norm(parts[0]), parts[1]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_lock(directory: Path) -> str:
    """``requirements.lock`` of every wheel in ``directory`` (name==version + sha256)."""
    lines = []
    for wheel in sorted(directory.glob("*.whl")):
        name, version = _wheel_name(wheel)
        lines.append(f"{name}=={version} --hash=sha256:{_sha256(wheel)}")
    text = "\n".join(lines) + "\n"
    (directory / "requirements.lock").write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def select_wheels(wheels: Sequence[Path], *, pins: Mapping[str, str], context: Path) -> None:
    """Copy ``wheels`` into ``context/deps`` and ``context/project`` after checking each one.

    Raises
    ------
    ContainerError
        A CUDA/NVIDIA/Triton wheel or a non-CPU torch; a third-party wheel whose version is not
        the one pinned in ``pins`` (the tested ``.venv``); no project wheel, or the wrong version.
    """
    shutil.rmtree(context, ignore_errors=True)
    (context / "deps").mkdir(parents=True)
    (context / "project").mkdir()
    project_name = "secure-ai-pipelines"
    for wheel in wheels:
        name, version = _wheel_name(wheel)
        if _FORBIDDEN_WHEEL.match(wheel.name) or (name == "torch" and "+cpu" not in version):
            raise ContainerError(
                f"refusing {wheel.name}: GPU/CUDA wheels never enter the images "
                "(install the CPU torch wheel in .venv first)"
            )
        if name in EXCLUDED:
            continue
        if name == project_name:
            if version != VERSION:
                raise ContainerError(f"project wheel is {version}, expected {VERSION}")
            shutil.copy2(wheel, context / "project" / wheel.name)
            continue
        if pins.get(name) != version:
            raise ContainerError(
                f"{wheel.name}: version {version} is not the .venv's ({pins.get(name)}): "
                "the images must hold the tested versions"
            )
        shutil.copy2(wheel, context / "deps" / wheel.name)
    if not list((context / "project").glob("*.whl")):
        raise ContainerError("no secure_ai_pipelines wheel among the wheels")


def build_context(*, out: Path, venv_python: Path, project: Path = ROOT) -> dict[str, str]:
    """Write ``out/context/{deps,project}`` (wheels + hash lock); return the two lock digests.

    Raises
    ------
    ContainerError
        A CUDA/NVIDIA wheel, a version that differs from the ``.venv``, or a wheel without a pin.
    """
    pins = _frozen(venv_python)
    ctx = out / "context"
    staging = out / "wheelhouse"  # pip's output; kept so pip can skip what it already built
    staging.mkdir(parents=True, exist_ok=True)
    for old in staging.glob("*.whl"):
        old.unlink()
    constraints = out / "constraints.txt"
    constraints.write_text(
        "".join(f"{n}=={v}\n" for n, v in sorted(pins.items())), encoding="utf-8"
    )
    done = subprocess.run(
        [
            str(venv_python),
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--wheel-dir",
            str(staging),
            "--constraint",
            str(constraints),
            str(project),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise ContainerError(f"pip wheel failed:\n{done.stderr[-2000:]}")
    select_wheels(sorted(staging.glob("*.whl")), pins=pins, context=ctx)
    digests = {"deps": _write_lock(ctx / "deps"), "project": _write_lock(ctx / "project")}
    (out / "lock.json").write_text(json.dumps(digests, indent=2), encoding="utf-8")
    return digests


# --------------------------------------------------------------------------------------------
# SBOM
# --------------------------------------------------------------------------------------------

_INVENTORY: Final = r"""
import importlib.metadata as md, json, subprocess
py = sorted({(d.metadata["Name"], d.version, d.metadata.get("License-Expression") or "")
             for d in md.distributions(path=__import__("sys").path)})
deb = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${Architecture}\n"],
                     capture_output=True, text=True).stdout.splitlines()
print(json.dumps({"python": py, "deb": [l.split("\t") for l in deb if l]}))
"""


def _lock_hashes(context: Path) -> dict[tuple[str, str], str]:
    hashes: dict[tuple[str, str], str] = {}
    for lock in context.glob("*/requirements.lock"):
        for line in lock.read_text(encoding="utf-8").splitlines():
            spec, _, digest = line.partition(" --hash=sha256:")
            name, _, version = spec.partition("==")
            hashes[(_norm(name), version)] = digest.strip()
    return hashes


def sbom(engine: Engine, *, image: str, out: Path, context: Path | None = None) -> dict[str, Any]:
    """Write a CycloneDX 1.5 JSON SBOM of ``image`` to ``out``; return it."""
    raw = engine.text(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "/opt/saip/bin/python",
        image,
        "-c",
        _INVENTORY,
        timeout=120,
    )
    inventory = json.loads(raw.splitlines()[-1])
    digest = engine.text("image", "inspect", "--format", "{{.Id}}", image)
    hashes = _lock_hashes(context) if context else {}
    components: list[dict[str, Any]] = []
    for name, version, lic in inventory["python"]:
        purl = f"pkg:pypi/{_norm(name)}@{version}"
        comp: dict[str, Any] = {
            "type": "library",
            "bom-ref": purl,
            "name": name,
            "version": version,
            "purl": purl,
        }
        if lic:
            comp["licenses"] = [{"expression": lic}]
        wheel_hash = hashes.get((_norm(name), version))
        if wheel_hash:
            comp["hashes"] = [{"alg": "SHA-256", "content": wheel_hash}]
        components.append(comp)
    for package, version, arch in inventory["deb"]:
        purl = f"pkg:deb/debian/{package}@{version}?arch={arch}"
        components.append(
            {"type": "library", "bom-ref": purl, "name": package, "version": version, "purl": purl}
        )
    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "saip containers/ctr.py"}]},
            "component": {
                "type": "container",
                "bom-ref": image,
                "name": image.rsplit(":", 1)[0],
                "version": digest,
            },
        },
        "components": components,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bom, indent=1), encoding="utf-8")
    return bom


# --------------------------------------------------------------------------------------------
# deployment
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise InterruptedRunError(f"interrupted by {signal.Signals(signum).name}")

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in sigs}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class Resources:
    """Everything a run created in the engine, by ID (written to ``containers.json``)."""

    path: Path
    run_id: str
    containers: dict[str, str] = field(default_factory=dict)  # role -> container ID
    networks: dict[str, str] = field(default_factory=dict)  # name -> network ID
    removed: bool = False

    def save(self) -> None:
        data = {
            "run_id": self.run_id,
            "controller": {"pid": os.getpid(), "start": _proc_start(os.getpid())},
            "containers": self.containers,
            "networks": self.networks,
            "removed": self.removed,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(self.path)


def _proc_start(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return int(raw[raw.rfind(")") + 2 :].split()[19])


def remove_all(engine: Engine, res: Resources, *, grace: int = 10) -> list[str]:
    """Stop and remove every recorded container, then every network, by ID; return what is left."""
    ids = list(res.containers.values())
    if ids:
        engine("stop", "--time", str(grace), *ids, check=False, timeout=grace + 120)
        engine("rm", "--force", *ids, check=False, timeout=120)
    for net in res.networks.values():
        engine("network", "rm", net, check=False, timeout=60)
    left = [f"container {i}" for i in ids if engine.exists("container", i)]
    left += [f"network {n}" for n in res.networks.values() if engine.exists("network", n)]
    listed = engine.text("ps", "--all", "--quiet", "--filter", f"label={LABEL}={res.run_id}")
    left += [f"container {i} (by label)" for i in listed.split()]
    res.removed = not left
    res.save()
    return left


def remove_stale(engine: Engine, parent: Path) -> list[str]:
    """Remove, by recorded ID, what earlier runs under ``parent`` left (their controller died)."""
    removed: list[str] = []
    for state in sorted(parent.glob("run-*/containers.json")):
        try:
            data = json.loads(state.read_text(encoding="utf-8"))
            ctl = data["controller"]
        except (OSError, ValueError, KeyError):
            continue
        if data.get("removed") or _proc_start(int(ctl["pid"])) == ctl.get("start"):
            continue  # done, or its controller is still running
        res = Resources(path=state, run_id=str(data["run_id"]))
        res.containers = dict(data.get("containers", {}))
        res.networks = dict(data.get("networks", {}))
        left = remove_all(engine, res)
        removed += list(res.containers.values()) + list(res.networks.values())
        if left:
            raise ContainerError(f"could not remove what {state.parent} left: {left}")
    return removed


def _stage(
    files: Mapping[str, Path], target: Path, *, engine: Engine, readonly: bool = True
) -> Path:
    """Copy ``files`` (name in the mount -> source) into ``target`` owned by the image user.

    Each container gets only the files it needs (a SuperNode never sees the SuperLink's key, no
    container sees the CA key). Files are ``0400``/directory ``0500`` (``0700`` if writable),
    owned by UID 10001, the user every image runs as.
    """
    target.mkdir(parents=True, mode=0o700)
    for name, source in files.items():
        shutil.copyfile(source, target / name)
        os.chmod(target / name, 0o400)
    os.chmod(target, 0o500 if readonly else 0o700)
    _chown(target, engine)
    return target


def _chown(path: Path, engine: Engine) -> None:
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.chown(p, UID, UID)
    elif engine.name == "podman":  # rootless: UID 10001 inside is a sub-UID outside
        engine("unshare", "chown", "-R", f"{UID}:{UID}", str(path))
    else:
        raise ContainerError("rootless docker: run as root or use podman")


def _hardening(run_id: str, role: str) -> list[str]:
    return [
        "--label",
        f"{LABEL}={run_id}",
        "--label",
        f"io.saip.role={role}",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        f"{UID}:{UID}",
        "--pids-limit",
        "512",
        "--memory",
        "1536m",
        "--tmpfs",
        "/tmp:rw,nosuid,nodev,size=512m,mode=1777",  # noqa: S108 (a tmpfs inside the container)
    ]


_PROBE: Final = r"""
import http.client, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def answer(conn):
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()
tls = answer(http.client.HTTPSConnection(
    host, port, timeout=10, context=ssl.create_default_context(cafile=ca)))
plain = answer(http.client.HTTPConnection(host, port, timeout=10))
print(f"tls_http_status={tls} plaintext_http_status={plain}")
"""


def _probe_ok(line: str) -> bool:
    """TLS answers with an HTTP status (any); plaintext gets no HTTP answer at all."""
    fields = dict(part.partition("=")[::2] for part in line.split())
    return (
        fields.get("tls_http_status", "").isdigit()
        and not fields.get("plaintext_http_status", "0").isdigit()
    )


def _json_out(text: str) -> Any:
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in output")
    return json.loads(text[start:])


def make_pki(run_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    """The run's PKI with :mod:`saip_fl.pki` (as ``make fl-deploy-local``) under ``run_dir/pki``.

    A run CA (ECDSA P-384, 1 day); the SuperLink certificate with SAN ``DNS:superlink``,
    ``DNS:localhost``, ``IP:127.0.0.1``; per SuperNode an OpenSSH ECDSA P-384 key pair and a
    certificate for its own Runtime API (so no node holds the SuperLink's key); a local master
    key sealing the model. Returns the files by path relative to ``run_dir/pki``; all are 0600.
    """
    from saip_fl.pki import create_ca, create_node_keypair, issue_server_certificate

    pki = run_dir / "pki"
    ca = create_ca(directory=pki, common_name="saip federated-learning container CA")
    files = {"ca.pem": ca.cert_path}
    server = issue_server_certificate(
        ca=ca,
        directory=pki / "superlink",
        dns_names=("superlink", "localhost"),
        ip_addresses=("127.0.0.1",),
    )
    files |= {"superlink/server.pem": server.cert_path, "superlink/server.key": server.key_path}
    for n in names:
        key = create_node_keypair(directory=pki / "nodes", name=n)
        files |= {f"nodes/{n}.key": key.private_key_path, f"nodes/{n}.pub": key.public_key_path}
        rt = issue_server_certificate(
            ca=ca, directory=pki / f"runtime-{n}", dns_names=("localhost",)
        )
        files |= {f"runtime-{n}/server.pem": rt.cert_path, f"runtime-{n}/server.key": rt.key_path}
    seal_key = pki / "model-master.key"
    subprocess.run(
        [sys.executable, "-m", "saip", "keys", "create-local", str(seal_key)],
        check=True,
        capture_output=True,
        env={**os.environ, "SAIP_DATA_DIR": str(run_dir / "saip-data")},
    )
    files["model-master.key"] = seal_key
    return files


def flwr_config(connection: str = "saip") -> str:
    """``config.toml`` for the ``flwr`` CLI: TLS to ``superlink:8000`` pinned to the run CA."""
    text = (
        f'[superlink]\ndefault = "{connection}"\n\n'
        f'[superlink.{connection}]\naddress = "superlink:8000"\n'
        'root-certificates = "/run/saip/cli/ca.pem"\n'
    )
    if tomllib.loads(text)["superlink"][connection].get("insecure"):
        raise ContainerError("internal error: the flwr connection must not be insecure")
    return text


def compose_pki(out: Path, *, num_supernodes: int = 6) -> None:
    """The files ``compose.yaml`` mounts, under ``out`` (``pki/``, ``cli/``, ``sealed/``)."""
    if out.exists() and any(out.iterdir()):
        raise ContainerError(f"{out} is not empty: use a fresh directory")
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    names = [f"node-{i}" for i in range(num_supernodes)]
    files = make_pki(out, names)
    cli = out / "cli"
    cli.mkdir(mode=0o700)
    (cli / "config.toml").write_text(flwr_config(), encoding="utf-8")
    shutil.copyfile(files["ca.pem"], cli / "ca.pem")
    for n in names:
        shutil.copyfile(files[f"nodes/{n}.pub"], cli / f"{n}.pub")
    (out / "sealed").mkdir(mode=0o700)
    if os.geteuid() == 0:  # the containers run as UID 10001 and must read their files
        for p in [out, *out.rglob("*")]:
            os.chown(p, UID, UID)


def deploy(
    *,
    engine: Engine,
    run_parent: Path,
    num_supernodes: int = 6,
    num_rounds: int = 1,
    groups: int = 2,
    secagg: bool = True,
    run_timeout: float = 900.0,
    startup_timeout: float = 180.0,
    app_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the saip Flower app on a SuperLink and SuperNodes in containers; remove them all.

    1. PKI with :mod:`saip_fl.pki` (the code of ``make fl-deploy-local``): a run CA, the
       SuperLink certificate (SAN ``DNS:superlink``, ``DNS:localhost``, ``IP:127.0.0.1``), one
       OpenSSH ECDSA P-384 key per SuperNode, and one Runtime API certificate per SuperNode; a
       local master key that seals the model (``saip keys create-local``).
    2. An ``--internal`` network (no route out), labelled; the SuperLink (alias ``superlink``)
       with TLS and ``--enable-supernode-auth``; a CLI container for ``flwr``.
    3. Attacker first: a plaintext HTTP request to ``superlink:8000`` must get no HTTP answer
       while the same request over TLS with the run CA gets one (the control).
    4. Every SuperNode's public key registered, then the SuperNodes started with their own key.
    5. ``flwr run`` of the saip app with grouped SecAgg+; the ServerApp writes its model to a
       tmpfs inside the SuperLink, which seals it (``saip encrypt``) onto the mounted volume
       ``<run>/sealed``; the plaintext never reaches a disk.
    6. Every container and the network stopped and removed by ID; nothing may be left.

    Every container: non-root (UID 10001), read-only root file system, all capabilities dropped,
    ``no-new-privileges``, memory and PID limits, secrets mounted read-only per container.
    """
    from saip_fl.deploy import DEPLOY_MODEL_CONTEXT, check_app

    if not 2 <= num_supernodes <= 16:
        raise ValueError("num_supernodes must be between 2 and 16")
    app = (app_dir or ROOT / "federated-learning" / "deploy" / "app").resolve()
    run_config: dict[str, bool | int | float | str] = {
        "num-clients": num_supernodes,
        "num-rounds": num_rounds,
        "secagg.enabled": secagg,
        "out-dir": "/run/saip/result",
    }
    if secagg:
        run_config["secagg.groups"] = groups
    check_app(app, run_config)
    from saip_fl.config import RunConfig

    flat = {k: v for k, v in run_config.items() if k != "out-dir"}
    RunConfig.from_flower(flat)  # grouped SecAgg+ guards (group size >= num-shares, ...) up front

    for image in ("superlink", "supernode"):
        if not engine.exists("image", IMAGES[image]):
            raise ContainerError(f"image {IMAGES[image]} missing: run 'make images' first")
    run_parent.mkdir(parents=True, exist_ok=True)
    remove_stale(engine, run_parent)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dt%H%M%S%f")
    run_id = f"saip-fl-{stamp}"
    run_dir = run_parent / f"run-{stamp}"
    run_dir.mkdir(mode=0o700)
    logs = run_dir / "logs"
    logs.mkdir(mode=0o700)
    engine.log = logs / "engine.log"
    res = Resources(path=run_dir / "containers.json", run_id=run_id)
    res.save()
    summary: dict[str, Any] = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "engine": engine.name,
        "images": {k: IMAGES[k] for k in ("superlink", "supernode")},
        "run_config": run_config,
        "timings": {},
    }
    started = time.monotonic()

    def mark(step: str) -> None:
        summary["timings"][step] = round(time.monotonic() - started, 1)

    names = [f"node-{i}" for i in range(num_supernodes)]
    pki_files = make_pki(run_dir, names)
    ca_pem, seal_key = pki_files["ca.pem"], pki_files["model-master.key"]
    mounts = run_dir / "mounts"
    connection = "saip"
    (run_dir / "config.toml").write_text(flwr_config(connection), encoding="utf-8")
    m_superlink = _stage(
        {n: pki_files[f"superlink/{n}"] for n in ("server.pem", "server.key")} | {"ca.pem": ca_pem},
        mounts / "superlink-tls",
        engine=engine,
    )
    m_seal = _stage({"model-master.key": seal_key}, mounts / "seal", engine=engine)
    sealed = run_dir / "sealed"
    sealed.mkdir(mode=0o700)
    _chown(sealed, engine)
    m_cli = _stage(
        {
            "ca.pem": ca_pem,
            "config.toml": run_dir / "config.toml",
            **{f"{n}.pub": pki_files[f"nodes/{n}.pub"] for n in names},
        },
        mounts / "cli",
        engine=engine,
    )
    m_nodes = {
        n: _stage(
            {
                "ca.pem": ca_pem,
                "node.key": pki_files[f"nodes/{n}.key"],
                "runtime.pem": pki_files[f"runtime-{n}/server.pem"],
                "runtime.key": pki_files[f"runtime-{n}/server.key"],
            },
            mounts / f"tls-{n}",
            engine=engine,
        )
        for n in names
    }
    mark("pki")

    def cli(*args: str, timeout: float = 120.0, check: bool = True) -> str:
        done = engine("exec", res.containers["cli"], "flwr", *args, timeout=timeout, check=False)
        text = (done.stdout + done.stderr).decode(errors="replace")
        with (logs / "flwr-cli.log").open("a", encoding="utf-8") as out:
            out.write(f"$ flwr {shlex.join(args)}\n[exit {done.returncode}]\n{text}\n")
        if check and done.returncode != 0:
            raise ContainerError(f"flwr {' '.join(args[:2])} failed: {text.strip()[-600:]}")
        return done.stdout.decode(errors="replace")

    left: list[str] = []
    try:
        try:
            with _signals_raise():
                net = run_id
                engine("network", "create", "--internal", "--label", f"{LABEL}={run_id}", net)
                res.networks[net] = str(_inspect(engine, "network", net).get("id") or net)
                res.save()
                sl_args = [
                    "run",
                    "--detach",
                    "--name",
                    f"{run_id}-superlink",
                    "--network",
                    net,
                    "--network-alias",
                    "superlink",
                    *_hardening(run_id, "superlink"),
                    "--tmpfs",
                    "/run/saip/state:rw,nosuid,nodev,noexec,size=64m,mode=1777",
                    "--tmpfs",
                    "/run/saip/result:rw,nosuid,nodev,noexec,size=64m,mode=1777",
                    "--volume",
                    f"{m_superlink}:/run/saip/tls:ro",
                    "--volume",
                    f"{m_seal}:/run/saip/seal:ro",
                    "--volume",
                    f"{sealed}:/var/lib/saip/sealed:rw",
                    IMAGES["superlink"],
                ]
                res.containers["superlink"] = _start(engine, sl_args, res)
                cli_args = [
                    "run",
                    "--detach",
                    "--name",
                    f"{run_id}-cli",
                    "--network",
                    net,
                    *_hardening(run_id, "cli"),
                    "--volume",
                    f"{m_cli}:/run/saip/cli:ro",
                    "--volume",
                    f"{app}:/run/saip/app:ro",
                    "--entrypoint",
                    "/usr/bin/tini",
                    IMAGES["superlink"],
                    "--",
                    "sh",
                    "-c",
                    # FLWR_HOME (/tmp/flwr, tmpfs) must be writable: flwr keeps credentials there
                    'mkdir -p "$FLWR_HOME" && cp /run/saip/cli/config.toml "$FLWR_HOME"/ '
                    "&& exec sleep infinity",
                ]
                res.containers["cli"] = _start(engine, cli_args, res)
                _wait_superlink(engine, res, startup_timeout, logs)
                mark("superlink_ready")
                # attacker first: a plaintext channel must fail where a TLS one (control) works
                probe = engine.text(
                    "exec",
                    res.containers["cli"],
                    "python3",
                    "-c",
                    _PROBE,
                    "superlink",
                    "8000",
                    "/run/saip/cli/ca.pem",
                    timeout=60,
                )
                summary["plaintext_probe"] = probe.splitlines()[-1] if probe else ""
                if not _probe_ok(summary["plaintext_probe"]):
                    raise ContainerError(f"plaintext/TLS probe of the SuperLink: {probe!r}")
                mark("probe")
                node_ids = {}
                for n in names:
                    out = cli(
                        "supernode",
                        "register",
                        f"/run/saip/cli/{n}.pub",
                        connection,
                        "--name",
                        n,
                        "--format",
                        "json",
                    )
                    try:
                        node_ids[n] = int(_json_out(out)["node-id"])
                    except (ValueError, KeyError, TypeError) as exc:
                        raise ContainerError(f"registering {n} failed: {out[-600:]}") from exc
                summary["node_ids"] = node_ids
                for i, n in enumerate(names):
                    args = [
                        "run",
                        "--detach",
                        "--name",
                        f"{run_id}-{n}",
                        "--network",
                        net,
                        *_hardening(run_id, "supernode"),
                        "--volume",
                        f"{m_nodes[n]}:/run/saip/tls:ro",
                        IMAGES["supernode"],
                        "--superlink",
                        "superlink:8000",
                        "--root-certificates",
                        "/run/saip/tls/ca.pem",
                        "--auth-supernode-private-key",
                        "/run/saip/tls/node.key",
                        "--ssl-certfile",
                        "/run/saip/tls/runtime.pem",
                        "--ssl-keyfile",
                        "/run/saip/tls/runtime.key",
                        "--ssl-ca-certfile",
                        "/run/saip/tls/ca.pem",
                        "--node-config",
                        f"partition-id={i} num-partitions={num_supernodes}",
                    ]
                    res.containers[n] = _start(engine, args, res)
                _wait_online(cli, engine, res, set(node_ids.values()), startup_timeout, connection)
                mark("supernodes_online")
                overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
                out = cli(
                    "run",
                    "/run/saip/app",
                    connection,
                    "--format",
                    "json",
                    "--run-config",
                    overrides,
                    timeout=180,
                )
                payload = _json_out(out)
                if not payload.get("success"):
                    raise ContainerError(f"flwr run refused: {out[-600:]}")
                flwr_run = int(payload["run-id"])
                summary["flwr_run_id"] = flwr_run
                status = _wait_run(cli, engine, res, flwr_run, run_timeout, connection)
                summary["status"] = status
                mark("run_finished")
                (logs / f"run-{flwr_run}.log").write_text(
                    cli("log", str(flwr_run), connection, "--show", check=False), encoding="utf-8"
                )
                if status != "finished:completed":
                    raise ContainerError(f"run {flwr_run} ended as {status}; see {logs}")
                metrics = engine.text(
                    "exec", res.containers["superlink"], "cat", "/run/saip/result/metrics.json"
                )
                (run_dir / "metrics.json").write_text(metrics, encoding="utf-8")
                summary["metrics"] = _summarise_metrics(json.loads(metrics))
                ctx_args = [
                    a for k, v in DEPLOY_MODEL_CONTEXT.items() for a in ("--context", f"{k}={v}")
                ]
                engine(
                    "exec",
                    res.containers["superlink"],
                    "saip",
                    "encrypt",
                    "/run/saip/result/model.npz",
                    "/var/lib/saip/sealed/model.saipenc",
                    "--key",
                    "local:/run/saip/seal/model-master.key",
                    *ctx_args,
                )
                engine(
                    "exec", res.containers["superlink"], "rm", "-f", "/run/saip/result/model.npz"
                )
                summary["sealed_model"] = str(sealed / "model.saipenc")
                summary["seal_key"] = str(seal_key)
                summary["model_context"] = dict(DEPLOY_MODEL_CONTEXT)
                mark("sealed")
        finally:
            with _signals_ignored():
                # the security view of every container, from the engine, even when a step failed
                summary["containers"] = {
                    role: _security_view(_inspect(engine, "container", cid))
                    for role, cid in res.containers.items()
                    if engine.exists("container", cid)
                }
                for role, cid in res.containers.items():
                    done = engine("logs", cid, check=False, timeout=60)
                    (logs / f"{role}.log").write_bytes(done.stdout + done.stderr)
                left = remove_all(engine, res)
                summary["removed"] = {
                    "containers": sorted(res.containers.values()),
                    "networks": sorted(res.networks.values()),
                }
                summary["left"] = left
                mark("removed")
    except ContainerError as exc:
        summary["error"] = str(exc)
        raise
    finally:
        summary["total_seconds"] = round(time.monotonic() - started, 1)
        (run_dir / "deployment.json").write_text(
            json.dumps(summary, indent=2, default=str), encoding="utf-8"
        )
    if left:
        raise ContainerError(f"left after removal: {left}")
    return summary


def _inspect(engine: Engine, kind: str, ident: str) -> dict[str, Any]:
    data = json.loads(engine.text(kind, "inspect", ident, timeout=60))
    item = data[0] if isinstance(data, list) else data
    return dict(item)


def _security_view(info: Mapping[str, Any]) -> dict[str, Any]:
    host = info.get("HostConfig", {})
    cfg = info.get("Config", {})
    return {
        "id": info.get("Id"),
        "image": cfg.get("Image"),
        "user": cfg.get("User"),
        "read_only_rootfs": host.get("ReadonlyRootfs"),
        "cap_drop": host.get("CapDrop"),
        "cap_add": host.get("CapAdd"),
        "effective_caps": info.get("EffectiveCaps"),
        "security_opt": host.get("SecurityOpt"),
        "privileged": host.get("Privileged"),
        "mounts": [
            {"destination": m.get("Destination"), "rw": m.get("RW")} for m in info.get("Mounts", [])
        ],
        "port_bindings": host.get("PortBindings"),
    }


def _start(engine: Engine, args: Sequence[str], res: Resources) -> str:
    cid = engine.text(*args, timeout=120).splitlines()[-1].strip()
    if not re.fullmatch(r"[0-9a-f]{64}", cid):
        raise ContainerError(f"unexpected container ID from '{engine.name} run': {cid!r}")
    res.save()
    return cid


def _running(engine: Engine, cid: str) -> bool:
    return engine.text("inspect", "--format", "{{.State.Running}}", cid, check=False) == "true"


def _wait_superlink(engine: Engine, res: Resources, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    check = (
        "import socket,ssl,sys\n"
        "c=ssl.create_default_context(cafile='/run/saip/cli/ca.pem')\n"
        "s=socket.create_connection(('superlink',8000),timeout=2)\n"
        "c.wrap_socket(s,server_hostname='superlink').close()\n"
    )
    while time.monotonic() < deadline:
        if not _running(engine, res.containers["superlink"]):
            raise ContainerError(f"the SuperLink container exited; see {logs}/superlink.log")
        done = engine("exec", res.containers["cli"], "python3", "-c", check, check=False)
        if done.returncode == 0:
            return
        time.sleep(1.0)
    raise ContainerError(f"SuperLink not serving verified TLS after {timeout} s")


def _wait_online(
    cli: Any, engine: Engine, res: Resources, wanted: set[int], timeout: float, conn: str
) -> None:
    deadline = time.monotonic() + timeout
    online: set[int] = set()
    last_error = ""
    while time.monotonic() < deadline:
        for role, cid in res.containers.items():
            if role.startswith("node-") and not _running(engine, cid):
                raise ContainerError(f"SuperNode {role} exited during start-up")
        reply = _json_out(cli("supernode", "ls", conn, "--format", "json"))
        if "nodes" not in reply:  # e.g. "Connection to the SuperLink is unavailable": retry
            last_error = str(reply.get("error-message", reply))[-300:]
            time.sleep(2.0)
            continue
        online = {int(n["node-id"]) for n in reply["nodes"] if n.get("status") == "online"}
        if wanted <= online:
            return
        time.sleep(2.0)
    raise ContainerError(
        f"SuperNodes not online after {timeout} s: {sorted(wanted - online)}"
        + (f" (last 'flwr supernode ls' error: {last_error!r})" if last_error else "")
    )


def _wait_run(cli: Any, engine: Engine, res: Resources, run: int, timeout: float, conn: str) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = _json_out(cli("ls", conn, "--run-id", str(run), "--format", "json"))
        runs = reply.get("runs")  # empty on a transient "SuperLink unavailable" answer
        if runs and str(runs[0]["status"]).startswith("finished"):
            return str(runs[0]["status"])
        for role, cid in res.containers.items():
            if not _running(engine, cid):
                raise ContainerError(f"container {role} exited during run {run}")
        time.sleep(3.0)
    cli("stop", str(run), conn, check=False)
    raise ContainerError(f"run {run} did not finish within {timeout} s (stopped it)")


def _summarise_metrics(data: Mapping[str, Any]) -> dict[str, Any]:
    rounds = data.get("rounds")
    return {
        "status": data.get("status"),
        "rounds": len(rounds) if isinstance(rounds, list) else None,
        "final": data.get("final"),
    }


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; exit 0 ok, 1 failure, 2 usage, 130 interrupted."""
    parser = argparse.ArgumentParser(prog="containers/ctr.py", description=__doc__.split("\n")[0])
    parser.add_argument("--engine", default=os.environ.get("CONTAINER_ENGINE", "podman"))
    sub = parser.add_subparsers(dest="command", required=True)
    p_ctx = sub.add_parser("context", help="wheels of the lock + hash locks -> OUT/context")
    p_ctx.add_argument("--out", type=Path, required=True)
    p_ctx.add_argument("--venv-python", type=Path, default=ROOT / ".venv" / "bin" / "python")
    p_sbom = sub.add_parser("sbom", help="CycloneDX SBOM of an image")
    p_sbom.add_argument("image")
    p_sbom.add_argument("out", type=Path)
    p_sbom.add_argument("--context", type=Path)
    p_cmp = sub.add_parser("compose-pki", help="the PKI and CLI files compose.yaml mounts")
    p_cmp.add_argument("--out", type=Path, default=ROOT / ".run" / "compose")
    p_dep = sub.add_parser("deploy", help="the federation in containers (TLS, node auth, SecAgg+)")
    p_dep.add_argument("--run-dir", type=Path, required=True, help="parent of the run directory")
    p_dep.add_argument("--num-supernodes", type=int, default=6)
    p_dep.add_argument("--num-rounds", type=int, default=1)
    p_dep.add_argument("--groups", type=int, default=2)
    p_dep.add_argument(
        "--no-secagg", action="store_true", help="plain FedAvg (a smoke test on a loaded host)"
    )
    p_dep.add_argument("--run-timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    try:
        if args.command == "context":
            digests = build_context(out=args.out, venv_python=args.venv_python)
            print(json.dumps(digests))
            return 0
        if args.command == "compose-pki":
            compose_pki(args.out)
            print(f"compose PKI in {args.out}; register every {args.out}/cli/node-*.pub")
            return 0
        engine = Engine(args.engine)
        if args.command == "sbom":
            bom = sbom(engine, image=args.image, out=args.out, context=args.context)
            print(f"SBOM {args.out}: {len(bom['components'])} components")
            return 0
        summary = deploy(
            engine=engine,
            run_parent=args.run_dir,
            num_supernodes=args.num_supernodes,
            num_rounds=args.num_rounds,
            groups=args.groups,
            secagg=not args.no_secagg,
            run_timeout=args.run_timeout,
        )
    except InterruptedRunError as exc:
        print(f"ctr: {exc}; everything this run created was removed", file=sys.stderr)
        return 130
    except (ContainerError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"ctr {args.command}: FAILED: {exc!r}", file=sys.stderr)
        return 1
    metrics = summary.get("metrics", {})
    print(
        f"fl-deploy-containers: run {summary.get('flwr_run_id')} {summary.get('status')}; "
        f"rounds {metrics.get('rounds')}, final {json.dumps(metrics.get('final'))[:200]}\n"
        f"  plaintext probe  {summary.get('plaintext_probe')}\n"
        f"  sealed model     {summary.get('sealed_model')}\n"
        f"  removed          {len(summary['removed']['containers'])} containers, "
        f"{len(summary['removed']['networks'])} network(s); left: {summary['left']}\n"
        f"  timings (s)      {summary['timings']}\n"
        f"  summary          {summary['run_dir']}/deployment.json"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
