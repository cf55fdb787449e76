"""Experiment tracking with MLflow (optional extra ``secure-ai-pipelines[mlflow]``).

Scans, federated runs and the demo log one MLflow run each: parameters, metrics (per round for
federated training: accuracy, loss, ε, accepted/rejected groups), and artifacts — the JSON
reports, the HTML report *without* sample thumbnails, and the sealed model's path (a text file;
the model itself stays encrypted where it is). Never logged: training data, decrypted models,
key material or key URIs.

Where: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store under the data directory
(``<data-dir>/mlflow/mlflow.db``, artifacts in ``<data-dir>/mlflow/artifacts``). MLflow 3's file
store is in maintenance mode and refuses to start by default, so SQLite is the local default.

``--mlflow/--no-mlflow`` on ``scan`` and ``fl run``: by default a run is logged when
``MLFLOW_TRACKING_URI`` is set (you declared where runs go); ``--mlflow`` logs to the local store.
``saip demo`` logs whenever MLflow is installed. ``--mlflow`` without MLflow fails at start-up
naming the extra.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from saip.errors import ConfigError

EXPERIMENT = "saip"

MlflowOpt = Annotated[
    bool | None,
    typer.Option(
        "--mlflow/--no-mlflow",
        help="Log this run to MLflow (default: when MLFLOW_TRACKING_URI is set; else the store "
        "is <data-dir>/mlflow/mlflow.db).",
    ),
]


def available() -> bool:
    """Whether the MLflow client is installed."""
    return importlib.util.find_spec("mlflow") is not None


def wanted(flag: bool | None) -> bool:
    """Resolve ``--mlflow/--no-mlflow``; call it before any long work (fails fast)."""
    if flag is None:
        flag = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    if flag and not available():
        raise ConfigError(
            "--mlflow: MLflow is not installed (pip install 'secure-ai-pipelines[mlflow]')"
        )
    return flag


def tracking_uri(data_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` or the SQLite store under ``data_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = (data_dir / "mlflow" / "mlflow.db").resolve()
    return f"sqlite:///{db}"


_NAME = re.compile(r"[^\w\-. /]")


def metric_name(text: str) -> str:
    """MLflow accepts only ``[A-Za-z0-9_\\-. /]`` in names; producer ids are untrusted."""
    return _NAME.sub("_", text)[:200] or "_"


@dataclass
class RunRecord:
    """What one tracked run logs."""

    name: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    #: (name, value, step) of per-step metrics (e.g. per federated round)
    steps: list[tuple[str, float, int]] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    #: small text artifacts written for the run: file name → content
    texts: dict[str, str] = field(default_factory=dict)


def log_run(record: RunRecord, *, data_dir: Path) -> tuple[str, str]:
    """Log ``record`` as one finished MLflow run; return ``(run_id, tracking_uri)``."""
    from mlflow.tracking import MlflowClient

    for noisy in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..." etc.
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uri = tracking_uri(data_dir)
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    if local:  # the store under the data directory, owner-only
        (data_dir / "mlflow").mkdir(parents=True, exist_ok=True, mode=0o700)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = None
        if local:
            location = (data_dir / "mlflow" / "artifacts").resolve().as_uri()
        experiment_id = client.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    run = client.create_run(experiment_id, run_name=record.name, tags={"saip.kind": record.kind})
    run_id = run.info.run_id
    status = "FAILED"
    try:
        for key, value in record.params.items():
            client.log_param(run_id, metric_name(key), str(value)[:6000])
        for key, value in record.metrics.items():
            client.log_metric(run_id, metric_name(key), float(value))
        for key, value, step in record.steps:
            client.log_metric(run_id, metric_name(key), float(value), step=step)
        for path in record.artifacts:
            if path.is_file():
                client.log_artifact(run_id, str(path))
        if record.texts:
            with tempfile.TemporaryDirectory() as tmp:
                for name, text in record.texts.items():
                    (Path(tmp) / name).write_text(text, encoding="utf-8")
                    client.log_artifact(run_id, str(Path(tmp) / name))
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return run_id, uri


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def scan_record(
    report: Mapping[str, Any], *, name: str, params: Mapping[str, Any], artifacts: Iterable[Path]
) -> RunRecord:
    """A scan: risk, flagged count, per-class and per-producer risk; the JSON report."""
    rec = RunRecord(name=name, kind="scan", params=dict(params), artifacts=list(artifacts))
    rec.metrics["risk_score"] = float(report["risk_score"])
    rec.metrics["flagged"] = float(len(report.get("flagged", [])))
    rec.metrics["n_samples"] = float(report.get("n_samples", 0))
    for c, v in report.get("per_class", {}).items():
        rec.metrics[f"class.{c}.risk"] = float(v.get("risk_score", 0))
    for p, v in report.get("per_producer", {}).items():
        rec.metrics[f"producer.{p}.risk"] = float(v.get("risk_score", 0))
    return rec


def fl_record(
    metrics: Mapping[str, Any], *, name: str, artifacts: Iterable[Path], model_path: str | None
) -> RunRecord:
    """A federated run: its configuration, per-round metrics, final metrics, the model's path."""
    params: dict[str, Any] = {}
    _flatten("", metrics.get("config", {}), params)
    rec = RunRecord(name=name, kind="fl", params=params, artifacts=list(artifacts))
    for r in metrics.get("rounds", []):
        step = int(r.get("round", 0))
        for key in ("accuracy", "loss", "epsilon"):
            if isinstance(r.get(key), int | float):
                rec.steps.append((key, float(r[key]), step))
        rec.steps.append(("groups_accepted", float(r.get("accepted", 0)), step))
        rec.steps.append(("groups_rejected", float(len(r.get("rejected", {}))), step))
    for key, value in (metrics.get("final") or {}).items():
        if isinstance(value, int | float):
            rec.metrics[f"final.{key}"] = float(value)
    rec.params["status"] = metrics.get("status", "?")
    if model_path:
        rec.texts["sealed_model_path.txt"] = model_path + "\n"
    rec.texts["summary.json"] = json.dumps(
        {"status": metrics.get("status"), "final": metrics.get("final")}, default=str
    )
    return rec
