"""Label noise vs natural class overlap with three or more classes: the side test
(``saip_poisoning.scan._side_test``, run with the depth test).

Under the flip model a flipped label is independent of where its sample lies inside its true
class; a sample that natural overlap carries into another class lies on its own class's side.
Among flags predicted as one class, label and side agree beyond a permutation null. The test is
**reported only** (``label_noise_depth.side_overlap``): flipping each sample to its most
similar class — a standard targeted flip — makes labels follow the side just as overlap does,
and the abstention it caused lost that attack on the tuning set digits (recall 0.98 → 0.00).
What decides instead is the depth *within* the side (``_side_depth``): nearest-class flips are
spread like the part of their class that faces the label, overlap sits at its edge.

Attacker first: flips to each sample's nearest class are found and counted; flips sized to sit
inside the null are found; flips placed on their label's side at the boundary make the depth
test abstain; two classes carry no side information.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from saip_poisoning import client_filter, scan

from tests.poisoning._data import bench_load


def _line(sep: float, seed: int, k: int = 3, n: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """``k`` clean isotropic Gaussian classes in 10-d, class ``c`` at ``c · sep`` SD on axis 0
    (not tuning data: nothing was set on these draws)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), n)
    x = rng.normal(size=(len(y), 10))
    x[:, 0] += sep * y
    return x, y


def _middle_core(x: np.ndarray, y: np.ndarray, sep: float, m: int) -> np.ndarray:
    """The ``m`` samples of the middle class (1) nearest its centre on axis 0."""
    mid = np.flatnonzero(y == 1)
    return mid[np.argsort(np.abs(x[mid, 0] - sep))[:m]]


def test_poi_side_flips_to_the_nearest_class_are_found() -> None:
    """Hostile: 5 % of the tuning set digits, drawn at random, each flipped to the class whose
    centroid is nearest (labels then follow the side as overlap's do: side excess 0.52,
    p = 0.002). With the side test deciding, the scan abstained: recall 0.00, risk 0; without
    it: recall 0.98, risk 74 (scan seed 0)."""
    x, y = bench_load("digits")
    rng = np.random.default_rng(1)
    cent = np.stack([x[y == c].mean(axis=0) for c in range(10)])
    dist = ((x[:, None, :] - cent[None]) ** 2).sum(axis=-1)
    dist[np.arange(len(y)), y] = np.inf
    idx = rng.choice(len(y), int(0.05 * len(y)), replace=False)
    yp = y.copy()
    yp[idx] = dist[idx].argmin(axis=1)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    depth = r.calibration["label_noise_depth"]
    assert depth["side_overlap"] is True  # reported, not decisive
    # the side depth decides, and these flips are spread like the part of their class that
    # faces the label (mean 0.51 here; overlap 0.23-0.42)
    assert depth["side_depth_shallow"] is False
    assert depth["side_depth_mean"] >= 0.45
    assert r.flags[idx].mean() >= 0.9
    assert r.risk_score >= 50


def test_poi_side_flips_sized_inside_the_null_are_found() -> None:
    """Hostile: core flips in the middle class whose labels do not follow their side (each
    flipped to the class on the *other* side for half of them, the same side for the rest):
    the side test stays quiet and the flips are found."""
    x, y = _line(3.0, 21)
    core = _middle_core(x, y, 3.0, 40)
    yp = y.copy()
    own_side = np.where(x[core, 0] < 3.0, 0, 2)
    yp[core] = np.where(np.arange(len(core)) % 2 == 0, own_side, 2 - own_side)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.calibration["label_noise_depth"]["side_overlap"] is False
    assert r.flags[core].mean() >= 0.7  # the rule's own recall here (0.7), not cut by the test
    assert r.risk_score >= 70


def test_poi_side_flips_placed_on_their_side_abstain_and_are_dropped() -> None:
    """Hostile: core flips each given the label of the class on its side (what overlap looks
    like): the depth test fires (mean depth 0.39), the rules abstain, the scan is uncalibrated
    (the gate refuses by default), and the flips the first pass found are set aside, so a
    keep-mask drops them. The side test reports them (not decisive)."""
    x, y = _line(3.0, 21)
    core = _middle_core(x, y, 3.0, 40)
    yp = y.copy()
    yp[core] = np.where(x[core, 0] < 3.0, 0, 2)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated is False
    depth = r.calibration["label_noise_depth"]
    assert depth["side_overlap"] is True
    assert depth["identifiable"] is False
    assert not r.flags[core].any()
    # abstention keeps the first pass's flags only (set aside): 22 of 40 here; this is the
    # depth test's known cost (README, Limits: boundary flips)
    assert r.set_aside is not None
    assert r.set_aside[core].mean() >= 0.5
    assert (~client_filter(x, yp)[core]).mean() >= 0.5


def test_poi_side_two_classes_carry_no_side_information() -> None:
    """With two classes the side is always the other class: the test never fires (the depth
    test alone decides), so core flips in two overlapping classes are still found."""
    x, y = _line(3.0, 22, k=2, n=300)
    core = np.flatnonzero(y == 1)[np.argsort(-x[y == 1, 0])[:30]]
    yp = y.copy()
    yp[core] = 0
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.calibration["label_noise_depth"]["side_overlap"] is False
    assert r.flags[core].mean() >= 0.9


@pytest.mark.parametrize(("sep", "seed"), [(2.5, 12), (2.5, 13), (2.5, 16)])
def test_poi_side_clean_three_classes_on_a_line_not_flagged(sep: float, seed: int) -> None:
    """Clean three classes on a line 2.5 SD apart (fresh draws, not the review's; scan seed 0
    before the side depth: 5.5 % / 7.2 % / 4.3 % flagged at risk 75 / 88 / 60, a strict xfail):
    the flags lie on their label's edge of the class they sit in (side depth 0.32–0.34 < 0.40,
    ``_side_depth``), the label-noise rules abstain — ≤ 5 %, risk < 20 on scan seeds 0–2.
    Evaluation data: scored after the cut was set on the tuning flips."""
    x, y = _line(sep, seed)
    for s in (0, 1, 2):
        r = scan(x, y, seed=s, verify=False)
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20


@pytest.mark.parametrize(("sep", "seed"), [(2.5, 30), (2.5, 31), (3.0, 30), (3.0, 31)])
def test_poi_side_depth_nearest_class_flips_on_a_line_found_or_refused(
    sep: float, seed: int
) -> None:
    """Hostile: 5 % of a fresh three-class line, drawn at random, each flipped to its nearest
    class — the flip the side test could not tell from overlap. Against the side depth they
    are spread like the part of their class that faces the label, but the line's own overlap
    flags are mixed in: on draw 31 the flips are found (recall 0.65 / 0.78, risk 94), on draw
    30 the rules abstain (2.5 SD: mean depth 0.41, the old test; 3 SD: side depth 0.36 — found
    before the side depth, a loss of detection, not of refusal) — the scan is uncalibrated, the
    gate refuses, and the flips the first pass caught are set aside (a keep-mask drops them).
    Never a calibrated pass with the flips kept (scan seed 0)."""
    x, y = _line(sep, seed)
    cent = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    dist = ((x[:, None, :] - cent[None]) ** 2).sum(axis=-1)
    dist[np.arange(len(y)), y] = np.inf
    idx = np.random.default_rng(7).choice(len(y), int(0.05 * len(y)), replace=False)
    yp = y.copy()
    yp[idx] = dist[idx].argmin(axis=1)
    r = scan(x, yp, seed=0, verify=False)
    if r.calibrated:
        assert r.flags[idx].mean() >= 0.6
        assert r.risk_score >= 70
    else:
        assert r.calibration["label_noise_depth"]["identifiable"] is False
        assert "overlap" in r.calibration["reason"]
        assert r.set_aside is not None
        assert r.set_aside[idx].mean() >= 0.5
        assert (~client_filter(x, yp)[idx]).mean() >= 0.5


def _edge_mix_flips(
    x: np.ndarray, y: np.ndarray, rate: float, edge_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Hostile flips aimed at the side depth: ``rate`` of the samples flipped, each to its
    nearest other class (input-space centroids); ``edge_share`` of them drawn from the samples
    in the lowest quarter of their class along the axis from that nearest class (among their
    class's samples facing it), the rest drawn at random."""
    k = int(y.max()) + 1
    cent = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    dist = ((x[:, None, :] - cent[None]) ** 2).sum(axis=-1)
    dist[np.arange(len(y)), y] = np.inf
    near = dist.argmin(axis=1)
    proj = np.einsum("ij,ij->i", x - cent[near], cent[y] - cent[near])
    pct = np.zeros(len(y))
    for b in range(k):
        for a in range(k):
            g = np.flatnonzero((y == b) & (near == a))
            pct[g] = (np.argsort(np.argsort(proj[g])) + 0.5) / max(len(g), 1)
    rng = np.random.default_rng(seed)
    m = round(rate * len(y))
    n_edge = round(edge_share * m)
    edge = rng.choice(np.flatnonzero(pct < 0.25), n_edge, replace=False)
    rest = rng.choice(np.setdiff1d(np.arange(len(y)), edge), m - n_edge, replace=False)
    idx = np.concatenate([edge, rest])
    yp = y.copy()
    yp[idx] = near[idx]
    return yp, idx


def _standardised(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-12)


def _digits_0_to_4() -> tuple[np.ndarray, np.ndarray]:
    """The tuning set digits, classes 0-4, each pixel standardised."""
    x, y = bench_load("digits")
    keep = y < 5
    return _standardised(x[keep]), y[keep]


def _three_classes_sep_2() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic: ``make_classification`` with 3 classes, ``class_sep`` 2, 900 samples, 10
    features (5 informative), one cluster per class, ``random_state`` 0; standardised."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=900,
        n_features=10,
        n_informative=5,
        n_redundant=0,
        n_classes=3,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=0,
    )
    return _standardised(x), y.astype(np.int64)


@pytest.mark.xfail(
    strict=True,
    reason="side depth regression (adversarial review): flips mixing edge and nearest-class "
    "flips pass the depth test but not the side depth; the scan abstains on an attack it found",
)
@pytest.mark.parametrize(
    ("load", "edge_share"), [(_digits_0_to_4, 0.4), (_three_classes_sep_2, 0.5)]
)
def test_poi_side_depth_edge_mixed_flips_known_detection_loss(
    load: Callable[[], tuple[np.ndarray, np.ndarray]], edge_share: float
) -> None:
    """Hostile: 10 % of the samples flipped to their nearest class, 40 % / 50 % of those
    flips taken from the lowest quarter of their class along the axis towards that class
    (``_edge_mix_flips``), the rest at random. Scan seed 0, before the side depth (a017233) →
    now: digits 0-4 (tuning set) mean depth 0.471 (passes the depth test), recall 0.93,
    9.4 % flagged, risk 95, calibrated → side depth 0.373 < 0.40: calibrated false, recall
    0.00, risk 0 (scan seed 1: 0.90, risk 94 → 0.00, risk 0); three classes, ``class_sep`` 2
    (synthetic) depth 0.463, recall 0.86, risk 93 → side depth 0.382: calibrated false,
    recall 0.20, risk 4 (scan seed 1: 0.87, risk 94 → 0.23, risk 16). The attacker picks
    where the flips lie, which is what the side depth measures: its edge flips lower it more
    than the depth test. Not fixed: any test of where the flags lie can be met by choosing
    where to flip (README Limits)."""
    x, y = load()
    yp, idx = _edge_mix_flips(x, y, 0.10, edge_share, 7)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.flags[idx].mean() >= 0.8
