"""``saip demo`` end to end on the local default: each capability runs and hands over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    data, proc = demo_run
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = data / "report.html"
    assert f"HTML report: {html}" in proc.stderr  # the demo prints where its report is
    assert html.stat().st_mode & 0o777 == 0o600
    # the demo logs one MLflow run to the SQLite store in its data directory (no service)
    assert "MLflow run " in proc.stderr
    assert (data / "mlflow" / "mlflow.db").is_file()
    for n in range(1, 6):
        assert f"step {n}/5" in proc.stderr
    report = json.loads((data / "report.json").read_text())
    names = [s["name"] for s in report["steps"]]
    assert names == ["data directory", "keys", "ingest", "poisoning scan", "federated training"]
    arts = report["artifacts"]

    # ingestion: counts conserved, bad records quarantined with reasons, only alpha drifted
    summary = arts["ingest_summary"]
    assert summary["conserved"]
    assert summary["received"] == summary["accepted"] + summary["quarantined"]
    assert summary["quarantined"] > 0
    assert summary["reasons"]

    # the scan names the poisoned producer and drops flagged samples below the gate
    assert arts["scan_poisoned_producers"] == "alpha"
    assert float(arts["scan_residual_risk"]) <= 40
    keep = np.load(arts["scan_keep_mask"])
    truth = set(json.loads(Path(arts["poison_truth"]).read_text())["poisoned_record_ids"])
    with np.load(arts["dataset_npz"]) as d:
        ids = d["record_id"]
    dropped = set(ids[~keep].tolist())
    assert len(dropped & truth) >= 0.5 * len(truth)  # most of the injected poison removed

    # training ran on the filtered data, reported ε, and sealed the model
    fl = report["steps"][4]["details"]
    assert fl["epsilon"] <= 8.0 + 1e-6
    assert fl["accuracy"] > 0.3  # 10 digit classes: well above chance after 3 DP rounds
    model = Path(fl["model"])
    assert model.exists()
    assert model.stat().st_mode & 0o777 == 0o600
    assert not list(model.parent.glob("*.npz")), "no plaintext model left beside the sealed one"
    inspect = subprocess.run(
        [sys.executable, "-m", "saip", "inspect", str(model), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert "saip-fl-model" in inspect.stdout
