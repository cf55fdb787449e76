"""The pixel probe's agreement floor against the measurement's own uncertainty.

Run: ``.venv/bin/python benchmarks/poisoning_floor_margin.py`` (~3 min on a shared 2-core
machine) → ``benchmarks/results/poisoning_floor_margin.json``. Development measurement behind
``saip_poisoning.scan._ONE_LOOK_Z`` and the README's calibration text: nothing in ``src/``
reads it.

For each scan the pixel probe's probe/neighbour agreement (``calibration.probes[0]``) and ``n``
are recorded over scan seeds; per case the spread across scan seeds (PCA, probe and k-means
randomness) is set beside the binomial standard error at the floor ``sqrt(0.8·0.2/n)``, and
for each candidate ``z`` the table says which scans would clear ``0.8 + z·SE``
(:func:`saip_poisoning.scan.floor_margin`). ``flagged_pct``/``risk`` are the committed scan's.

Data. **Tuning**: fresh synthetic draws nobody scored on — three clean Gaussian classes of 250
on a line 2 SD apart in 10-d (draws 100–107), two clean Gaussian classes 2 SD apart (600,
draws 100–103) and the same with 5 % flips on the samples deepest inside their class (the
detection the margin must keep). (The tuning sets digits, MNIST-5k and MNIST 3-vs-8 have
agreement ≥ 0.884 at n ≥ 800 in every benchmark cell: any z ≤ 3 keeps them.) **Evaluation
only**, measured after ``z`` was chosen: the full boston3 set (scan seeds 0–5), the xfail
test's three-class line draws 0 and 3, the 2 SD core-flip test's draw 0, the Student-t classes
(3 dof, 2 SD) of the heavy-tail xfail; breast_cancer flip 20 % is in ``benchmarks/poisoning.py``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from saip_poisoning import scan  # noqa: E402
from saip_poisoning.scan import floor_margin  # noqa: E402

from tests.poisoning._data import bench_load  # noqa: E402

FLOOR = 0.8
ZS = (0.0, 1.0, 1.645, 2.0, 2.5)


def _line(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 250)
    x = rng.normal(size=(len(y), 10))
    x[:, 0] += 2.0 * y
    return x, y


def _gauss(seed: int, *, core: bool, t_dof: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 600).astype(np.int64)
    x = rng.standard_t(t_dof, size=(600, 10)) if t_dof else rng.normal(size=(600, 10))
    x[:, 0] += 2.0 * y
    if core:
        depth = np.where(y == 1, x[:, 0] - 1.0, 1.0 - x[:, 0])
        idx = np.argsort(-depth)[:30]
        y = y.copy()
        y[idx] = 1 - y[idx]
    return x, y


def _case(
    name: str, role: str, kind: str, x: np.ndarray, y: np.ndarray, seeds: range
) -> dict[str, Any]:
    rows = []
    for s in seeds:
        r = scan(x, y, seed=s, verify=kind == "clean_bench")
        pr = r.calibration["probes"][0]
        rows.append(
            {
                "seed": s,
                "agreement": pr["probe_neighbour_agreement"],
                "calibrated": r.calibrated,
                "flagged_pct": round(100 * float(r.flags.mean()), 2),
                "risk": r.risk_score,
            }
        )
        print(name, rows[-1], flush=True)
    n = len(y)
    agree = np.array([row["agreement"] for row in rows])
    return {
        "case": name,
        "role": role,
        "kind": "flips" if kind == "flips" else "clean",
        "n": n,
        "binomial_se_at_floor": round(math.sqrt(FLOOR * (1 - FLOOR) / n), 4),
        "agreement_seed_sd": round(float(agree.std(ddof=1)), 4) if len(agree) > 1 else None,
        "agreement_seed_range": [float(agree.min()), float(agree.max())],
        "clears_floor_at_z": {
            str(z): int((agree >= FLOOR + floor_margin(FLOOR, n, z=z)).sum()) for z in ZS
        },
        "scans": rows,
    }


def main() -> None:
    cases: list[dict[str, Any]] = []
    for d in range(100, 108):
        cases.append(_case(f"line 2 SD draw {d}", "tuning", "clean", *_line(d), range(3)))
    for d in range(100, 104):
        cases.append(
            _case(f"2 gaussians 2 SD draw {d}", "tuning", "clean", *_gauss(d, core=False), range(3))
        )
        cases.append(
            _case(
                f"2 gaussians 2 SD core flips 5 % draw {d}",
                "tuning",
                "flips",
                *_gauss(d, core=True),
                range(3),
            )
        )
    # evaluation only, after z was chosen
    cases.append(
        _case("boston3 full (506)", "evaluation", "clean_bench", *bench_load("boston3"), range(6))
    )
    for d in (0, 3):
        cases.append(
            _case(f"line 2 SD draw {d} (xfail test's)", "evaluation", "clean", *_line(d), range(3))
        )
    cases.append(
        _case(
            "2 gaussians 2 SD core flips 5 % draw 0",
            "evaluation",
            "flips",
            *_gauss(0, core=True),
            range(3),
        )
    )
    cases.append(
        _case(
            "student-t 3 dof 2 SD draw 0",
            "evaluation",
            "clean",
            *_gauss(0, core=False, t_dof=3),
            range(3),
        )
    )
    out = {"floor": FLOOR, "z_candidates": list(ZS), "chosen_z": 1.645, "cases": cases}
    path = ROOT / "benchmarks" / "results" / "poisoning_floor_margin.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
