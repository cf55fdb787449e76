"""The pixel probe's agreement floor applies to a lower confidence bound of the measurement.

Attacker/clean first: clean data whose probe/neighbour agreement sits at the floor must not be
judged (at the floor the decision was a coin toss between scan seeds and what the label-noise
rule then flagged was natural overlap); flips that the rule finds must still be found.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from saip_poisoning import scan
from saip_poisoning.scan import floor_margin

from tests.poisoning._data import bench_load
from tests.poisoning.test_poi_overlap import _gaussians


def test_poi_floor_clean_tabular_control_not_flagged_on_any_scan_seed() -> None:
    """The benchmark's clean tabular control (all 506 samples): scan seed 2 measured an
    agreement of 0.802, passed the bare 0.8 floor and flagged 7.5 % at risk 89 (seeds 0, 1,
    3–5: 0.72–0.80, uncalibrated). With the margin (0.8 + 0.029 at n = 506) no scan seed
    judges its labels. Evaluation data: scored after the margin was set."""
    x, y = bench_load("boston3")
    for s in range(6):
        r = scan(x, y, seed=s)
        pixels = r.calibration["probes"][0]
        assert pixels["probe"] == "pixels"
        assert pixels["min_agreement"] == pytest.approx(0.8 + floor_margin(0.8, 506, z=1.645))
        assert r.flags.mean() <= 0.05, s
        assert r.risk_score < 20, s


@pytest.mark.parametrize("draw", [0, 100])
def test_poi_floor_margin_keeps_core_flips_in_overlapping_classes(draw: int) -> None:
    """Hostile: 5 % flips on the samples deepest inside two classes 2 SD apart (agreement
    0.862 on draw 0, 0.857–0.870 on the fresh draw 100 over scan seeds 0–2): above the raised
    floor (0.827 at n = 600), still calibrated and found."""
    x, y, depth = _gaussians(2.0, draw)
    core = np.argsort(-depth)[:30]
    yp = y.copy()
    yp[core] = 1 - yp[core]
    r = scan(x, yp, seed=0, verify=False)
    pixels = r.calibration["probes"][0]
    assert pixels["agreement_margin"] > 0
    assert pixels["probe_neighbour_agreement"] >= pixels["min_agreement"]
    assert r.calibrated, r.calibration.get("reason")
    assert r.flags[core].mean() >= 0.95
    assert r.risk_score >= 70


def test_poi_floor_margin_is_binomial_standard_errors_at_the_floor() -> None:
    # z · sqrt(p (1 − p) / n) at the floor, rounded to 4 places
    assert floor_margin(0.8, 750, z=1.645) == round(1.645 * math.sqrt(0.16 / 750), 4)
    assert floor_margin(0.8, 750, z=1.645) == pytest.approx(0.024, abs=1e-4)
    assert floor_margin(0.8, 506, z=2.0) == pytest.approx(0.0356, abs=1e-4)
    # shrinks as 1/sqrt(n): negligible at the 60k scale
    assert floor_margin(0.8, 60_000, z=1.645) < 0.003
    assert floor_margin(0.8, 4 * 506, z=2.0) == pytest.approx(
        floor_margin(0.8, 506, z=2.0) / 2, abs=1e-4
    )
    # nothing to clear at a floor of 0 or 1, or with z = 0
    assert floor_margin(1.0, 10, z=2.0) == 0.0
    assert floor_margin(0.0, 10, z=2.0) == 0.0
    assert floor_margin(0.8, 10, z=0.0) == 0.0


@pytest.mark.parametrize(
    ("floor", "n", "z"), [(-0.1, 10, 1.0), (1.1, 10, 1.0), (0.8, 0, 1.0), (0.8, 10, -1.0)]
)
def test_poi_floor_margin_rejects_bad_arguments(floor: float, n: float, z: float) -> None:
    with pytest.raises(ValueError, match="floor_margin"):
        floor_margin(floor, n, z=z)
