"""Targeted pair flips inside a label group (``saip_poisoning.pairflip``): the directional
mixture-proportion test. Attacker first (a targeted flip the per-sample rules cannot see, an
adaptive flip against the pair's natural asymmetry, a symmetric swap), then clean data whose
confusion is asymmetric by nature, then the known limit.
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import mitigate, scan
from saip_poisoning.attacks import poison
from saip_poisoning.data import prepare
from saip_poisoning.labelgroups import LabelGroups
from saip_poisoning.pairflip import MAX_PAIR_WORK, group_pair_flips, pair_flips

from tests.poisoning._data import bench_load


def _pair(
    n_a: int, n_b: int, *, sep: float, sd_a: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes in 5-d (``0``: ``n_a`` samples, ``1``: ``n_b``),
    ``sep`` SD apart on the first axis."""
    rng = np.random.default_rng(seed)
    za = rng.normal(size=(n_a, 5)) * sd_a
    zb = rng.normal(size=(n_b, 5))
    zb[:, 0] += sep
    return np.vstack([za, zb]), np.repeat([0, 1], [n_a, n_b]).astype(np.int64)


def test_poi_pairflip_targeted_flip_between_overlapping_classes_found() -> None:
    # attacker: 40 % of class 1 relabelled 0; the classes overlap (1.5 SD), so no per-sample
    # rule can tell a flipped sample from a genuine boundary one — the mixture can
    z, y = _pair(600, 600, sep=1.5)
    rng = np.random.default_rng(1)
    idx = rng.choice(np.flatnonzero(y == 1), 240, replace=False)
    ya = y.copy()
    ya[idx] = 0
    found, tried = pair_flips(ya, z, [[0, 1]], seed=0)
    assert [(f.target, f.source) for f in found] == [(0, 1)]
    f = found[0]
    assert f.lower > 0.087
    flagged = np.zeros(len(y), dtype=bool)
    flagged[f.members] = True
    truth = np.zeros(len(y), dtype=bool)
    truth[idx] = True
    precision = (flagged & truth).sum() / flagged.sum()
    recall = (flagged & truth).sum() / truth.sum()
    # flagged only where a flipped 1 is more likely than a genuine 0 (Bayes, P ≥ 0.5): precise,
    # and the flips inside the overlap stay unflagged (measured: precision 0.74, recall 0.25)
    assert precision >= 0.6, (precision, recall)
    assert recall >= 0.2, (precision, recall)
    assert all(int(ya[i]) == 0 for i in f.members)  # only the inflated label is flagged
    assert len(tried) == 2  # both directions measured, one fired


def test_poi_pairflip_symmetric_swap_cancels_and_is_not_claimed() -> None:
    # attacker: as many flips each way (the documented blind spot): Δ cancels, nothing fires —
    # the group's flips stay "undetectable" in the report rather than half-flagged
    z, y = _pair(600, 600, sep=1.5)
    rng = np.random.default_rng(2)
    ia = rng.choice(np.flatnonzero(y == 0), 120, replace=False)
    ib = rng.choice(np.flatnonzero(y == 1), 120, replace=False)
    ya = y.copy()
    ya[ia], ya[ib] = 1, 0
    found, _ = pair_flips(ya, z, [[0, 1]], seed=0)
    assert found == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poi_pairflip_clean_imbalanced_pair_with_asymmetric_confusion_not_flagged(
    seed: int,
) -> None:
    # clean classes 3:1 in size, 1.5 SD apart: a probe sends the small class into the large
    # one far more often than the reverse (asymmetric confusion), but the mixture proportion is
    # prior-free — neither class holds a copy of the other's core
    z, y = _pair(900, 300, sep=1.5, seed=seed)
    pred = (z[:, 0] > 0.75 + np.log(3) / 1.5).astype(int)
    small_into_large = float((pred[y == 1] == 0).mean())
    large_into_small = float((pred[y == 0] == 1).mean())
    assert small_into_large > 2 * large_into_small  # the confusion is asymmetric
    found, tried = pair_flips(y, z, [[0, 1]], seed=seed)
    assert found == [], tried


def test_poi_pairflip_clean_broad_class_around_a_narrow_one_not_flagged() -> None:
    # a broad class (SD 2.5) centred on a narrow one (SD 1): both directions overlap, but the
    # broad class's samples in the narrow one's region are no copy of it: nothing fires
    z, y = _pair(900, 300, sep=0.0, sd_a=2.5)
    found, _ = pair_flips(y, z, [[0, 1]], seed=0)
    assert found == []


@pytest.fixture(scope="module")
def crops_split() -> tuple[np.ndarray, np.ndarray]:
    """The benchmark's crops training split (an evaluation set: nothing here is tuned on it)."""
    x, y = bench_load("crops")
    perm = np.random.default_rng(0).permutation(len(y))
    tr = perm[: int(0.8 * len(y))]
    return x[tr], y[tr]


def test_poi_pairflip_crops_pair_flip_found_and_removed(
    crops_split: tuple[np.ndarray, np.ndarray],
) -> None:
    # the benchmark's pair flip (class 1 → 0: two halves of one photograph, inside one label
    # group) — declared undetectable before this test existed (F1 0.01)
    x, y = crops_split
    p = poison(x, y, attack="pair_flip", rate=0.10, rng=np.random.default_rng(1))
    r = scan(p.x, p.y, seed=0)
    lg = r.calibration["label_groups"]
    assert lg["calibrated"] is True
    assert ["0", "1"] in lg["groups"]
    fired = [d for d in lg["pair_flips"]["pairs"] if d["fires"]]
    assert [(d["target"], d["source"]) for d in fired] == [("0", "1")]
    tp = int((r.flags & p.is_poison).sum())
    precision, recall = tp / r.flags.sum(), tp / p.is_poison.sum()
    assert precision >= 0.5, (precision, recall)
    assert recall >= 0.5, (precision, recall)
    assert r.risk_score >= 40
    assert any("targeted flip 1 → 0" in r.reasons[int(i)] for i in np.flatnonzero(r.flags))
    m = mitigate(p.x, p.y, report=r, seed=0)
    # removed, never relabelled: the two halves cannot be told apart per sample
    hit = np.flatnonzero(r.flags & p.is_poison)
    assert not m.keep[hit].any()
    assert (m.labels[hit] == p.y[hit]).all()


def test_poi_pairflip_adaptive_flip_along_the_natural_asymmetry_is_refused_not_passed(
    crops_split: tuple[np.ndarray, np.ndarray],
) -> None:
    # adaptive attacker: flip where the clean confusion is already asymmetric — class 2 → 3
    # (flower upper → lower; in the image view class 3 already holds a copy-like share of 2's
    # region, which the exchangeability check reads as natural). Known miss: the flips are not
    # flagged (README, Limits) — but the scan never calls the data calibrated, so the gate
    # refuses it by default; and no other pair is accused instead
    x, y = crops_split
    idx = np.random.default_rng(1).choice(np.flatnonzero(y == 2), 192, replace=False)
    ya = y.copy()
    ya[idx] = 3
    r = scan(x, ya, seed=0)
    assert r.calibrated is False
    lg = r.calibration["label_groups"]
    pairs = {(d["target"], d["source"]): d for d in lg["pair_flips"]["pairs"]}
    assert ("3", "2") in pairs  # measured, in the report
    assert not any(d["fires"] for d in pairs.values())
    assert r.flags.mean() <= 0.02


@pytest.mark.parametrize(("n_small", "draw"), [(20, 0), (20, 5), (50, 6), (100, 5)])
def test_poi_pairflip_clean_small_class_beside_a_large_one_not_flagged(
    n_small: int, draw: int
) -> None:
    # clean: a class of 2000 and one of 20–100, 1.0 SD apart (adversarial review). A full-size
    # bootstrap was sure of the large class's side and not of the small one's: these draws fired
    # with 602/712/683/433 of the 2000 flagged (21–36 %); the m-out-of-n bootstrap (m = the
    # smaller class) gives both directions the same noise
    rng = np.random.default_rng(draw)
    z = np.vstack([rng.normal(size=(2000, 5)), rng.normal(size=(n_small, 5)) + np.eye(5)[0]])
    y = np.repeat([0, 1], [2000, n_small]).astype(np.int64)
    found, tried = pair_flips(y, z, [[0, 1]], seed=0)
    assert found == [], tried


def test_poi_pairflip_cost_is_bounded_and_a_skipped_test_says_so() -> None:
    # scale (adversarial review): each ordered pair cross-fits its own probe, so one 10-class
    # group of a 60k set would train 45 probes on 12k samples each (≈ 330 s measured under
    # load, against the scan's 60 s goal). Above MAX_PAIR_WORK the test is not run and the
    # calibration says why; nothing is flagged
    y = np.repeat(np.arange(10), 6000)
    data = prepare(np.zeros((len(y), 1)), y)
    groups = LabelGroups(
        probe="pixels",
        code=np.zeros(10, dtype=np.int64),
        accuracy=1.0,
        agreement=1.0,
        min_accuracy=0.0,
        min_agreement=0.0,
    )
    pf = group_pair_flips(data, [], groups, seed=0)
    assert not pf.flags.any()
    assert pf.reasons == {}
    assert "not_run" in pf.calibration
    assert f"540000 samples (> {MAX_PAIR_WORK}" in pf.calibration["not_run"]


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known limit (README Limits (e)): a heavy-tailed class around a Gaussian one of the "
        "same centre genuinely holds a copy of its core (κ̂ 0.36 vs 0.0; veto AUC 0.55, p 0.13) "
        "and fires like a flip: scan seeds 0-2 flag 203/206/208 of its 600 samples (lower bound "
        "0.22-0.25); no test on the labels alone tells it from a flip"
    ),
)
def test_poi_pairflip_clean_heavy_tailed_class_around_a_gaussian_one_not_flagged() -> None:
    rng = np.random.default_rng(0)
    rng.normal(size=(600, 5))  # the measured draw: two earlier cases consumed the stream
    rng.normal(size=(600, 5))
    z = np.vstack([rng.standard_t(2, size=(600, 5)), rng.normal(size=(600, 5))])
    y = np.repeat([0, 1], [600, 600]).astype(np.int64)
    found, tried = pair_flips(y, z, [[0, 1]], seed=0)
    assert found == [], tried


@pytest.mark.xfail(
    strict=True,
    reason=(
        "known evasion (README Limits (f)): the attacker flips the 240 of class 1's 600 "
        "samples nearest class 0 (1.5 SD apart) — boundary samples, not a copy of 1's core — "
        "the asymmetry's lower bound is 0.0 and nothing fires (a random 240 fires)"
    ),
)
def test_poi_pairflip_flip_of_the_source_samples_nearest_the_target_found() -> None:
    z, y = _pair(600, 600, sep=1.5)
    ib = np.flatnonzero(y == 1)
    idx = ib[np.argsort(z[ib, 0])[:240]]
    ya = y.copy()
    ya[idx] = 0
    found, _ = pair_flips(ya, z, [[0, 1]], seed=0)
    assert [(f.target, f.source) for f in found] == [(0, 1)]
