"""The demo step: risk detected → flagged dropped → residual re-scanned under the gate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from saip.config import SaipConfig, ScanSection
from saip.errors import GateError
from saip.pipeline import PipelineContext
from saip.steps import scan as scan_step
from saip_poisoning import MitigationResult


def _ctx(tmp_path: Path, max_risk: float) -> PipelineContext:
    cfg = SaipConfig(scan=ScanSection(max_risk=max_risk))
    return PipelineContext(data_dir=tmp_path, config=cfg, console=Console(stderr=True), seed=0)


def test_poi_step_mitigates_and_names_producer(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, 40)
    result = scan_step.run(ctx)
    assert result.details["risk_score"] > 40
    assert result.details["residual_risk"] <= 40
    verification = result.details["verification"]
    assert verification["passed"] is True
    assert all(a <= 0.05 for a in verification["asr_after"].values())
    assert verification["asr_after"]  # a trigger was reconstructed and verified
    # the training step reads a keep-mask over the ingested x: carriers are removed, never
    # repaired (a repaired carrier would reach training with its trigger still on)
    assert verification["repaired"] == 0
    assert result.details["poisoned_producers"] == [scan_step.POISONED_PRODUCER]
    assert scan_step.POISONED_PRODUCER in result.summary
    keep = np.load(ctx.artifacts["scan_keep_mask"])
    report = json.loads(Path(ctx.artifacts["scan_report"]).read_text())
    assert len(report["flagged"]) == ctx.artifacts["scan_flagged"]
    # everything removed is in the report with a reason: flagged, or a label-noise flag set aside
    # (a keep-mask cannot relabel it, so it is dropped)
    accounted = set(report["flagged"]) | set(report["label_noise_set_aside"])
    assert set(np.flatnonzero(~keep).tolist()) <= accounted
    assert set(report["label_noise_set_aside_reasons"]) == {
        str(i) for i in report["label_noise_set_aside"]
    }
    assert report["flagged_record_ids"][0].startswith("rec-")
    with np.load(ctx.artifacts["dataset_npz_filtered"]) as f:
        assert len(f["y"]) == keep.sum()


def test_poi_step_reads_ingested_dataset_and_passes_clean(
    tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = digits
    path = tmp_path / "ingested.npz"
    np.savez(
        path,
        x=x,
        y=y,
        producer=np.array(["a", "b"] * (len(y) // 2) + ["a"] * (len(y) % 2)),
        record_id=np.array([str(i) for i in range(len(y))]),
    )
    ctx = _ctx(tmp_path, 40)
    ctx.artifacts["dataset_npz"] = path
    result = scan_step.run(ctx)
    assert result.details["built_demo_dataset"] is False
    assert result.details["risk_score"] < 20
    keep = np.load(ctx.artifacts["scan_keep_mask"])
    assert keep.mean() >= 0.99  # clean: at most the clean level of flags is left out
    if keep.all():
        assert ctx.artifacts["dataset_npz_filtered"] == path
    else:
        with np.load(ctx.artifacts["dataset_npz_filtered"]) as f:
            assert len(f["y"]) == keep.sum()


def test_poi_step_fails_when_verification_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = scan_step.mitigate

    def stubborn(*args: object, **kwargs: object) -> MitigationResult:
        # the real mitigation, with the verification forced to fail: the step must stop
        res = real(*args, **kwargs)  # type: ignore[arg-type]
        return dataclasses.replace(res, passed=False, reason="attack success 60% > 5%")

    monkeypatch.setattr(scan_step, "mitigate", stubborn)
    with pytest.raises(GateError, match="verification failed: attack success 60%"):
        scan_step.run(_ctx(tmp_path, 40))


def test_poi_step_under_the_gate_still_leaves_flagged_samples_out(tmp_path: Path) -> None:
    """Hostile: the operator set the gate so high that the demo backdoor passes it. Nothing is
    retrained then, but the samples the scan flagged (the carriers) and the label-noise flags it
    set aside must still not reach training, as ``client_filter`` drops them on FL clients."""
    ctx = _ctx(tmp_path, 100)
    result = scan_step.run(ctx)
    assert result.details["risk_score"] <= 100
    assert result.details["verification"] is None  # under the gate: no retraining
    report = json.loads(Path(ctx.artifacts["scan_report"]).read_text())
    keep = np.load(ctx.artifacts["scan_keep_mask"])
    dropped = set(report["flagged"]) | set(report["label_noise_set_aside"])
    assert dropped  # the backdoor's carriers are flagged
    assert set(np.flatnonzero(~keep).tolist()) == dropped
    with np.load(ctx.artifacts["dataset_npz_filtered"]) as f:
        assert len(f["y"]) == keep.sum()
    assert f"{len(dropped)} flagged left out of training" in result.summary


def test_poi_step_uncalibrated_scan_is_a_gate_refusal(tmp_path: Path) -> None:
    """Hostile (review): flips an attacker places at the class boundary make the label-noise
    rules abstain (``calibrated: false``). The step must stop as a gate that ran and refused
    (``GateError``, exit 3), not as a generic pipeline error (exit 1), and hand nothing on to
    training."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600).astype(np.int64)
    x = rng.normal(size=(600, 10))
    x[:, 0] += 3.0 * y
    depth = np.where(y == 1, x[:, 0] - 1.5, 1.5 - x[:, 0])
    edge = np.argsort(np.abs(depth))[:30]
    y[edge] = 1 - y[edge]
    path = tmp_path / "edge.npz"
    np.savez(path, x=x, y=y)
    ctx = _ctx(tmp_path, 40)
    ctx.artifacts["dataset_npz"] = path
    with pytest.raises(GateError, match="not calibrated"):
        scan_step.run(ctx)
    assert "dataset_npz_filtered" not in ctx.artifacts
