"""Tune distributed DP-FedSGD on a VALIDATION split, never on the benchmark's test split.

``benchmarks/fl.py`` reports accuracy on the test split that ``split_dataset(digits, seed=0)``
cuts (20 %). Here that test split is removed first: the remaining 1,438 digits are written to an
``.npz`` and the runs use it as their dataset, so their own held-out 20 % (288 images) is the
validation split and no test image is ever seen while choosing hyperparameters. Every run uses
the real mechanism (local engine, grouped SecAgg+, OS-keyed noise, ε = 8, δ = 1e-5), so ε is the
benchmark's; accuracies vary by a few points between runs (fresh noise).

Run: ``.venv/bin/python benchmarks/fl_dp_tune.py [--rounds 30] [--grid NAME ...]`` → prints one
line per candidate (validation accuracy, ε, rolled-back rounds, seconds); writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from saip_fl import runner
from saip_fl.config import validate_run_config

sys.path.insert(0, str(Path(__file__).parent))
import fl as bench  # the benchmark's own settings

#: candidates: overrides of the benchmark's distributed-DP setup
GRID: dict[str, dict[str, Any]] = {
    "before": {"hidden": 16, "learning_rate": 1.0, "dp": {"server_momentum": 0.0}},
    "chosen": {},
    "hidden16": {"hidden": 16},
    "no_momentum": {"dp": {"server_momentum": 0.0}},
    "lr1": {"learning_rate": 1.0},
    "threshold4": {"secagg": {"reconstruction_threshold": 4}},
}


def validation_dataset(path: Path) -> Path:
    """Digits minus the benchmark's test rows (same permutation as ``split_dataset``)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(bench.BASE["seed"]).permutation(len(digits.target))
    keep = np.sort(order[round(0.2 * len(order)) :])
    np.savez(path, x=digits.data[keep], y=digits.target[keep])
    return path


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=bench.DIST_ROUNDS)
    parser.add_argument("--grid", nargs="*", default=list(GRID), choices=list(GRID))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("saip_fl").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="saip-fldp-") as tmp:
        data = validation_dataset(Path(tmp) / "validation.npz")
        for name in args.grid:
            over = _merge(bench.DIST, GRID[name])
            over["validation"] = {"max_rollback_fraction": 1.0}  # report, do not stop
            cfg = validate_run_config(
                {**bench.BASE, **over, "dataset": f"npz:{data}", "num_rounds": args.rounds}
            )
            started = time.perf_counter()
            res = runner.run(cfg, Path(tmp) / name, engine="local")
            rounds = res.metrics["rounds"]
            print(
                f"{name}: validation accuracy {res.metrics['final']['accuracy']:.3f} "
                f"eps {res.metrics['final']['epsilon']:.2f} "
                f"rolled back {sum(1 for r in rounds if r['rolled_back'])}/{len(rounds)} "
                f"({time.perf_counter() - started:.0f}s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
