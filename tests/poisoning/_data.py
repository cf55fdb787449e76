"""Datasets shared by the poisoning tests (not fixtures: plain functions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def natural_crops(per_class: int = 150, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """12×12 grayscale crops of the two photographs shipped with scikit-learn (the benchmark's
    ``crops`` set, smaller): 4 classes = photo × upper/lower half, ``per_class`` each."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for photo, img in enumerate(load_sample_images().images):
        gray = img.mean(axis=2) / 255.0
        for half, part in enumerate(np.array_split(gray, 2, axis=0)):
            grid = np.lib.stride_tricks.sliding_window_view(part, (12, 12))[::7, ::7]
            grid = grid.reshape(-1, 12, 12)
            crops.append(grid[rng.choice(len(grid), per_class, replace=False)])
            labels += [2 * photo + half] * per_class
    return np.concatenate(crops), np.array(labels)


def bench_load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's own datasets (``benchmarks/poisoning.py::_load``), so the test and the
    measured figures use the same data."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "poisoning.py"
    spec = importlib.util.spec_from_file_location("_saip_poisoning_bench", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    x, y = mod._load(name)
    return np.asarray(x), np.asarray(y)
