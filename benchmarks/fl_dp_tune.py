"""Tune distributed DP-FedSGD on a VALIDATION split, never on the benchmark's test split.

``benchmarks/fl.py`` reports accuracy on the test split that ``split_dataset(digits, seed=0)``
cuts (20 %). Here that test split is removed first: the remaining 1,438 digits are written to an
``.npz`` and the runs use it as their dataset, so their own held-out 20 % (288 images) is the
validation split and no test image is ever seen while choosing hyperparameters. Every run uses
the real mechanism (local engine, grouped SecAgg+, OS-keyed noise, ε = 8, δ = 1e-5), so ε is the
benchmark's; accuracies vary by a few points between runs (fresh noise).

``--mode dpsgd`` tunes the benchmark's DP-SGD section the same way (its own grid, its own base
setup ``bench.DP_SETUP``); ``--try JSON`` adds an ad-hoc candidate (overrides of the base), and
``--repeats N`` runs every candidate N times (fresh noise) and prints the median.

Run: ``.venv/bin/python benchmarks/fl_dp_tune.py [--mode distributed|dpsgd] [--rounds R]
[--grid NAME ...] [--try JSON ...] [--repeats N]`` → prints one line per candidate (validation
accuracy, ε, rolled-back rounds, seconds); writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
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
_PREVIOUS = {"server_learning_rate": 1.0, "server_lr_schedule": "constant"}
GRID: dict[str, dict[str, Any]] = {
    "before": {
        "hidden": 16,
        "learning_rate": 1.0,
        "activation": "relu",
        "dp": {"server_momentum": 0.0, **_PREVIOUS},
    },
    "previous": {"activation": "relu", "dp": _PREVIOUS},  # the setup before tanh and server lr
    "chosen": {},
    "relu": {"activation": "relu"},
    "constant_server_lr": {"dp": {"server_lr_schedule": "constant"}},
    "server_lr2": {"dp": {"server_learning_rate": 2.0}},
    "threshold8_groups2": {"secagg": {"groups": 2, "num_shares": 9, "reconstruction_threshold": 8}},
}


#: DP-SGD candidates: overrides of the benchmark's DP-SGD setup
GRID_DPSGD: dict[str, dict[str, Any]] = {
    "before": {
        "hidden": 16,
        "learning_rate": 0.05,
        "activation": "relu",
        "batch_size": 16,
        "local_epochs": 3,
        "num_rounds": 12,
        "dp": {"sample_rate": None},
    },
    "minibatch_tanh": {
        "hidden": 16,
        "learning_rate": 0.1,
        "batch_size": 16,
        "local_epochs": 3,
        "num_rounds": 12,
        "dp": {"sample_rate": None},
    },
    "fullbatch_3x12": {"learning_rate": 0.5, "local_epochs": 3, "num_rounds": 12},
    "chosen": {},
    "rounds36": {"num_rounds": 36},
    "rounds100": {"num_rounds": 100},
    "rounds36_lr2": {"num_rounds": 36, "learning_rate": 2.0},
    "rounds36_hidden64": {"num_rounds": 36, "hidden": 64},
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
    parser.add_argument("--mode", choices=("distributed", "dpsgd"), default="distributed")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--grid", nargs="*", default=None)
    parser.add_argument("--try", dest="extra", nargs="*", default=[], metavar="JSON")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    grid, base = (GRID, bench.DIST) if args.mode == "distributed" else (GRID_DPSGD, bench.DPSGD)
    names = list(grid) if args.grid is None and not args.extra else (args.grid or [])
    unknown = set(names) - set(grid)
    if unknown:
        parser.error(f"unknown candidates {sorted(unknown)}; choose from {list(grid)}")
    candidates = {n: grid[n] for n in names} | {e: json.loads(e) for e in args.extra}
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("saip_fl").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="saip-fldp-") as tmp:
        data = validation_dataset(Path(tmp) / "validation.npz")
        for i, (name, cand) in enumerate(candidates.items()):
            over = _merge(base, cand)
            over["validation"] = {
                **over.get("validation", {}),
                "max_rollback_fraction": 1.0,  # report, do not stop
            }
            if args.rounds is not None:
                over["num_rounds"] = args.rounds
            cfg = validate_run_config({**bench.BASE, **over, "dataset": f"npz:{data}"})
            accs, lines = [], []
            for r in range(args.repeats):
                started = time.perf_counter()
                res = runner.run(cfg, Path(tmp) / f"c{i}r{r}", engine="local")
                rounds = res.metrics["rounds"]
                accs.append(res.metrics["final"]["accuracy"])
                lines.append(
                    f"{accs[-1]:.3f} (eps {res.metrics['final']['epsilon']:.2f}, rolled back "
                    f"{sum(1 for x in rounds if x['rolled_back'])}/{len(rounds)}, "
                    f"{time.perf_counter() - started:.0f}s)"
                )
            print(
                f"{name}: validation accuracy median {statistics.median(accs):.3f} of "
                + "; ".join(lines),
                flush=True,
            )


if __name__ == "__main__":
    main()
