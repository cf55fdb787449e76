"""MLflow tracking: runs logged to the local SQLite store (or MLFLOW_TRACKING_URI) and read back
with the real MLflow client; nothing external is started. Never plaintext data or key material."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from saip import tracking
from saip.cli import main
from saip.errors import ConfigError

assert tracking.available(), "mlflow-skinny is a dev dependency: run make venv"

FL_METRICS = {
    "status": "ok",
    "config": {"num_clients": 10, "num_rounds": 2, "dp": {"mode": "dpsgd", "target_epsilon": 8.0}},
    "rounds": [
        {"round": 1, "accuracy": 0.3, "loss": 2.1, "epsilon": 5.0, "accepted": 1,
         "rejected": {"group 1": "norm 8.4 > bound 3"}},
        {"round": 2, "accuracy": 0.5, "loss": 1.9, "epsilon": 7.9, "accepted": 2, "rejected": {}},
    ],
    "final": {"accuracy": 0.5, "loss": 1.9, "epsilon": 7.9, "delta": 1e-5, "backdoor_asr": None},
    "model": {"path": "/data/fl/r1/model.saipenc", "encrypted": True},
}  # fmt: skip


def _client(uri: str) -> object:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_fl_run_round_trips_through_the_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    metrics_path = tmp_path / "metrics.json"
    metrics_path.write_text(json.dumps(FL_METRICS))
    record = tracking.fl_record(
        FL_METRICS, name="fl r1", artifacts=[metrics_path], model_path="/data/fl/r1/model.saipenc"
    )
    run_id, uri = tracking.log_run(record, data_dir=tmp_path / "data")
    assert uri == f"sqlite:///{(tmp_path / 'data' / 'mlflow' / 'mlflow.db').resolve()}"
    client = _client(uri)
    run = client.get_run(run_id)  # type: ignore[attr-defined]
    assert run.info.status == "FINISHED"
    assert run.data.params["num_clients"] == "10"
    assert run.data.params["dp.target_epsilon"] == "8.0"
    history = client.get_metric_history(run_id, "epsilon")  # type: ignore[attr-defined]
    assert [(m.step, m.value) for m in history] == [(1, 5.0), (2, 7.9)]
    rejected = client.get_metric_history(run_id, "groups_rejected")  # type: ignore[attr-defined]
    assert [m.value for m in rejected] == [1.0, 0.0]
    assert run.data.metrics["final.accuracy"] == 0.5
    names = {a.path for a in client.list_artifacts(run_id)}  # type: ignore[attr-defined]
    assert names == {"metrics.json", "sealed_model_path.txt", "summary.json"}
    local = Path(client.download_artifacts(run_id, "sealed_model_path.txt", str(tmp_path)))  # type: ignore[attr-defined]
    assert local.read_text().strip() == "/data/fl/r1/model.saipenc"


def test_tracking_uri_env_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert tracking.wanted(None) is True  # declaring a tracking server turns logging on
    run_id, used = tracking.log_run(
        tracking.RunRecord(name="x", kind="scan", metrics={"risk_score": 12.0}),
        data_dir=tmp_path / "data",
    )
    assert used == uri
    assert not (tmp_path / "data" / "mlflow").exists()
    assert _client(uri).get_run(run_id).data.metrics == {"risk_score": 12.0}  # type: ignore[attr-defined]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.wanted(None) is False


def test_untrusted_producer_names_become_valid_metric_names() -> None:
    rec = tracking.scan_record(
        {"risk_score": 5, "flagged": [], "per_class": {},
         "per_producer": {"evil\n<script>;DROP": {"risk_score": 90}}},
        name="s", params={}, artifacts=[],
    )  # fmt: skip
    (key,) = [k for k in rec.metrics if k.startswith("producer.")]
    assert tracking.metric_name(key) == "producer.evil__script__DROP.risk"


def test_mlflow_flag_without_mlflow_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "available", lambda: False)
    with pytest.raises(ConfigError, match="not installed"):
        tracking.wanted(True)


@pytest.mark.slow
def test_scan_logs_risk_and_report_never_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_digits

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    x, y = load_digits(return_X_y=True)
    np.savez(tmp_path / "in.npz", x=x / 16.0, y=y, producer=np.array(["p0", "p1"] * 898 + ["p0"]))
    data = tmp_path / "data"
    rc = main(["--data-dir", str(data), "scan", str(tmp_path / "in.npz"), "--max-risk", "100",
               "--mlflow"])  # fmt: skip
    assert rc == 0
    err = capsys.readouterr().err
    run_id = err.split("MLflow run ", 1)[1].split()[0]
    client = _client(tracking.tracking_uri(data))
    run = client.get_run(run_id)  # type: ignore[attr-defined]
    assert "risk_score" in run.data.metrics
    assert "producer.p1.risk" in run.data.metrics
    (artifact,) = client.list_artifacts(run_id)  # type: ignore[attr-defined]
    assert artifact.path == "scan_report.json"
    # only the report: no array of the training data was logged anywhere in the store
    stored = b"".join(p.read_bytes() for p in (data / "mlflow").rglob("*") if p.is_file())
    assert np.asarray(x[0] / 16.0, dtype=np.float64).tobytes() not in stored
