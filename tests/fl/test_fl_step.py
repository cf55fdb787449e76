"""The demo step's data preparation (no Ray): scan-flagged samples are removed before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from saip.config import SaipConfig
from saip.pipeline import PipelineContext
from saip.steps import fl as step


def _ctx(tmp_path: Path) -> PipelineContext:
    return PipelineContext(data_dir=tmp_path, config=SaipConfig(), console=Console(stderr=True))


def test_fl_step_trains_on_ingested_data_minus_flagged(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "ds.npz"
    np.savez(src, x=rng.random((600, 64)), y=rng.integers(0, 10, 600))
    keep = np.ones(600, dtype=bool)
    keep[:37] = False
    ctx = _ctx(tmp_path)
    ctx.artifacts.update(dataset_npz=str(src), scan_keep_mask=keep)
    dataset, note = step._dataset(ctx, tmp_path / "out")
    assert dataset == f"npz:{tmp_path / 'out' / 'train.npz'}"
    assert "37 flagged by the scan removed" in note
    with np.load(tmp_path / "out" / "train.npz") as data:
        assert len(data["y"]) == 563


def test_fl_step_falls_back_to_digits_and_rejects_bad_mask(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    assert step._dataset(ctx, tmp_path / "out")[0] == "digits"
    src = tmp_path / "ds.npz"
    np.savez(src, x=np.zeros((10, 4)), y=np.zeros(10, dtype=int))
    ctx.artifacts.update(dataset_npz=str(src), scan_keep_mask=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="scan_keep_mask"):
        step._dataset(ctx, tmp_path / "out")
