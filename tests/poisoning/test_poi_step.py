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
    assert ctx.artifacts["dataset_npz_filtered"] == path


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
