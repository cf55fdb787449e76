"""Run a federated training locally: the Ray-free local engine (default) or Flower's Ray runtime.

With ``engine="local"`` the ServerApp and ClientApp run in this process over
:class:`saip_fl.engine.LocalGrid`. With ``engine="ray"``, :func:`run` writes a small Flower app
project (``pyproject.toml`` with the run's ``[tool.flwr.app.config]``) into the run directory so
that server and clients receive the same ``run_config`` as under ``flwr run``, starts Ray with its
temp directory *inside* the run directory and shuts it down afterwards (no stray processes).
Either way the apps are :data:`saip_fl.apps.server_app` / :data:`saip_fl.apps.client_app`, and the
run leaves ``metrics.json`` plus, only when the run is ``ok``, the final model —
envelope-encrypted when an :class:`~saip_fl.protocols.Encryptor` is given (``model.saipenc``),
plain ``model.npz`` otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from saip_fl.config import RunConfig
from saip_fl.errors import FLConfigError, FLError, ProtocolHaltedError, RunDegradedError
from saip_fl.model import weights_to_bytes
from saip_fl.protocols import Encryptor

log = logging.getLogger(__name__)

_MAX_RAY_TMP = 40
MODEL_CONTEXT = {"purpose": "saip-fl-model", "format": "npz"}


@dataclass(frozen=True)
class RunResult:
    """Outcome of :func:`run`."""

    run_dir: Path
    metrics_path: Path
    model_path: Path
    encrypted: bool
    metrics: dict[str, Any]
    seconds: float


def write_app_project(
    directory: Path, cfg: RunConfig, extra: Mapping[str, str] | None = None
) -> Path:
    """Write a Flower app ``pyproject.toml`` whose ``[tool.flwr.app.config]`` is ``cfg``.

    The same file serves ``flwr run`` in deployment (components point at :mod:`saip_fl.apps`).
    """
    lines = [
        "[build-system]",
        'requires = ["hatchling"]',
        'build-backend = "hatchling.build"',
        "",
        "[project]",
        'name = "saip-fl-app"',
        'version = "1.0.0"',
        "dependencies = []",
        "",
        "[tool.hatch.build.targets.wheel]",
        'packages = ["."]',
        "",
        "[tool.flwr.app]",
        'publisher = "saip"',
        "",
        "[tool.flwr.app.components]",
        'serverapp = "saip_fl.apps:server_app"',
        'clientapp = "saip_fl.apps:client_app"',
        "",
        "[tool.flwr.app.config]",
    ]
    flat: dict[str, Any] = {**cfg.to_flower(), **dict(extra or {})}
    for key, value in sorted(flat.items()):
        lines.append(f'"{key}" = {json.dumps(value)}')
    lines += [
        "",
        "[tool.flwr.federations]",
        'default = "local"',
        "",
        "[tool.flwr.federations.local]",
        f"options.num-supernodes = {cfg.num_clients}",
        "",
    ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pyproject.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


Engine = Literal["local", "ray"]


def run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    encryptor: Encryptor | None = None,
    engine: Engine = "local",
    num_cpus: int = 2,
    verbose: bool = False,
) -> RunResult:
    """Run ``cfg`` under ``run_dir`` on the local engine (default) or Flower's Ray simulation.

    ``engine="local"`` (:mod:`saip_fl.engine`) runs the same ServerApp and ClientApp without Ray;
    ``engine="ray"`` uses Flower's simulation runtime with Ray's temp directory inside
    ``run_dir``. The model is written only when the run is ``ok``.

    Raises
    ------
    KeyboardInterrupt
        SIGINT/SIGTERM: ``metrics.json`` says ``interrupted``; no model is written.
    ProtocolHaltedError
        A round produced no aggregate (e.g. SecAgg+ halted); ``metrics.json`` says ``failed``.
    RunDegradedError
        Too many rounds were rolled back; ``metrics.json`` says ``degraded``.
    FLError
        Any other failure, including a run in which no round was accepted (``failed``).
    """
    from saip_fl import apps

    if engine not in ("local", "ray"):
        raise FLConfigError(f"engine must be 'local' or 'ray', got {engine!r}")
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o700)
    token = secrets.token_hex(8)
    extra = {"out-dir": str(run_dir), "run-token": token}
    run_config = {**cfg.to_flower(), **extra}
    metrics_path = run_dir / "metrics.json"
    metrics_path.unlink(missing_ok=True)
    for stale in ("model.saipenc", "model.npz"):
        (run_dir / stale).unlink(missing_ok=True)
    started = time.perf_counter()
    # Flower logs every round at INFO/DEBUG on its own handlers; the saip CLI prints its own
    # per-round table, so Flower's logger is quieted unless verbose (restored afterwards).
    flwr_logger = logging.getLogger("flwr")
    old_level = flwr_logger.level
    if not verbose:
        flwr_logger.setLevel(logging.WARNING)
    try:
        if engine == "local":
            _run_local(cfg, run_config, num_cpus=num_cpus)
        else:
            _run_ray(cfg, run_dir, run_config, extra, num_cpus=num_cpus, verbose=verbose)
    except KeyboardInterrupt:
        apps.take_result(token)
        _mark_interrupted(metrics_path)
        raise
    finally:
        flwr_logger.setLevel(old_level)
    seconds = time.perf_counter() - started
    weights = apps.take_result(token)
    if not metrics_path.exists():
        raise FLError("the server app wrote no metrics.json: the run did not complete")
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    if metrics.get("status") != "ok" or weights is None:
        err = metrics.get("error") or "the run ended without a final model"
        if metrics.get("status") == "degraded":
            raise RunDegradedError(err)
        raise ProtocolHaltedError(err) if "halted" in err or "no aggregate" in err else FLError(err)
    blob = weights_to_bytes(weights)
    if encryptor is not None:
        model_path = run_dir / "model.saipenc"
        model_path.write_bytes(encryptor.encrypt(blob, context={**MODEL_CONTEXT, "run": token}))
    else:
        model_path = run_dir / "model.npz"
        model_path.write_bytes(blob)
        log.warning("no encryptor given: final model stored UNENCRYPTED at %s", model_path)
    model_path.chmod(0o600)
    metrics["model"] = {
        "path": str(model_path),
        "encrypted": encryptor is not None,
        "context": {**MODEL_CONTEXT, "run": token} if encryptor else None,
    }
    metrics["seconds"] = seconds
    metrics["engine"] = engine
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return RunResult(run_dir, metrics_path, model_path, encryptor is not None, metrics, seconds)


def _mark_interrupted(metrics_path: Path) -> None:
    """Leave ``metrics.json`` saying ``interrupted`` (whatever round the run was in)."""
    doc: dict[str, Any] = {}
    if metrics_path.exists():
        try:
            doc = json.loads(metrics_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            doc = {}
    doc["status"] = "interrupted"
    doc["error"] = "the run was interrupted"
    tmp = metrics_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, metrics_path)


def _wrap_failure(exc: Exception) -> FLError:
    if isinstance(exc, FLError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, FLError):
        return cause
    return FLError(f"federated run failed: {type(exc).__name__}: {exc}")


def _run_local(cfg: RunConfig, run_config: dict[str, Any], *, num_cpus: int) -> None:
    from flwr.app import Context, RecordDict

    from saip_fl import apps, engine

    server_ctx = Context(
        run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    try:
        engine.run_local(
            apps.server_app,
            apps.client_app,
            server_context=server_ctx,
            num_nodes=cfg.num_clients,
            workers=num_cpus,
        )
    except Exception as exc:
        wrapped = _wrap_failure(exc)
        if wrapped is exc:
            raise
        raise wrapped from exc


def _run_ray(
    cfg: RunConfig,
    run_dir: Path,
    run_config: dict[str, Any],
    extra: Mapping[str, str],
    *,
    num_cpus: int,
    verbose: bool,
) -> None:
    import ray
    from flwr.app import Context, RecordDict
    from flwr.simulation.run_simulation import _run_simulation

    from saip_fl import apps

    app_dir = run_dir / "app"
    write_app_project(app_dir, cfg, extra)
    ray_dir = run_dir / "ray"
    ray_dir.mkdir(mode=0o700, exist_ok=True)
    ray_tmp = ray_dir
    link: Path | None = None
    if len(str(ray_dir)) > _MAX_RAY_TMP:
        # Ray's unix-socket paths must stay under 107 bytes: hand Ray a short symlink to the
        # directory inside the run directory (the files stay there); the link is removed below
        link = Path(tempfile.gettempdir()) / f"saip-ray-{extra['run-token']}"
        link.symlink_to(ray_dir, target_is_directory=True)
        ray_tmp = link
    old_threads = os.environ.get("OMP_NUM_THREADS")
    # Ray/Flower export the driver's whole sys.path as PYTHONPATH for their workers and leave it
    # set: every later subprocess of this process (e.g. a tool in another venv) would import from
    # this venv. Restored after the run.
    old_pythonpath = os.environ.get("PYTHONPATH")
    os.environ["OMP_NUM_THREADS"] = "1"
    # clients read run_config from app_dir/pyproject.toml, the server from this context
    server_ctx = Context(
        run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
    )
    backend_config: dict[str, Any] = {
        "init_args": {
            "_temp_dir": str(ray_tmp),
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "logging_level": logging.INFO if verbose else logging.ERROR,
            "log_to_driver": verbose,
        },
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }
    try:
        _run_simulation(
            num_supernodes=cfg.num_clients,
            exit_event=_exit_event(),
            client_app=apps.client_app,
            server_app=apps.server_app,
            backend_config=backend_config,
            server_app_context=server_ctx,
            app_dir=str(app_dir),
            is_app=True,
            verbose_logging=verbose,
        )
    except Exception as exc:  # the simulation runtime wraps app errors
        wrapped = _wrap_failure(exc)
        if wrapped is exc:
            raise
        raise wrapped from exc
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for name, old in (("OMP_NUM_THREADS", old_threads), ("PYTHONPATH", old_pythonpath)):
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        if link is not None:
            link.unlink(missing_ok=True)
        shutil.rmtree(ray_dir, ignore_errors=True)


def _exit_event() -> Any:
    from flwr.supercore.telemetry import EventType

    return EventType.PYTHON_API_RUN_SIMULATION_LEAVE
