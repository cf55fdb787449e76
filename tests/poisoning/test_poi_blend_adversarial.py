"""Adversarial review of the blended-key search: clean data of new kinds must not be called
poisoned, and degenerate inputs must not crash it.

A genuine sub-population of one class (a class made of two clusters, or a binary feature that
only one class's sub-population has) splits off along a whitened direction just like a blend.
What a blend adds is the shrink of the carriers' natural variation by ``1 − a``: a sub-population
with no shrink (estimated weight below the 0.05 at which a key is estimated at all) is an offset
cluster, not a blended key, and must not become a trigger.
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import scan
from saip_poisoning.blendsearch import blend_candidates
from saip_poisoning.data import prepare
from sklearn.datasets import load_breast_cancer


def _two_gaussians_one_bimodal() -> tuple[np.ndarray, np.ndarray]:
    """Two clean classes in 20-d; 30 % of class 0 form a second cluster 8 SD away."""
    g = np.random.default_rng(0)
    means = g.normal(0, 2.0, (2, 20))
    xs, ys = [], []
    for c in range(2):
        x = g.normal(size=(300, 20)) + means[c]
        if c == 0:
            u = g.normal(size=20)
            x[:90] += 8.0 * u / np.linalg.norm(u)
        xs.append(x)
        ys.append(np.full(300, c))
    return np.vstack(xs), np.concatenate(ys).astype(np.int64)


def _breast_with_class_only_flag() -> tuple[np.ndarray, np.ndarray]:
    """Breast cancer table plus a binary feature set on 30 % of class 0 and never on class 1."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    flag = ((y == 0) & (np.random.default_rng(0).random(len(y)) < 0.3)).astype(float)
    return np.hstack([x, flag[:, None]]), y.astype(np.int64)


@pytest.mark.parametrize(
    "make",
    [_two_gaussians_one_bimodal, _breast_with_class_only_flag],
    ids=["bimodal-two-class", "class-only-binary-feature"],
)
def test_poi_blend_offset_subpopulation_is_not_a_trigger(make: object) -> None:
    x, y = make()  # type: ignore[operator]
    r = scan(x, y, seed=0)
    assert not any(t.kind == "blend" for t in r.triggers)
    assert r.risk_score < 20
    assert r.flags.mean() <= 0.05


@pytest.mark.parametrize(
    "case",
    ["constant", "duplicated-features", "duplicated-rows", "binary", "tiny-class", "many-features"],
)
def test_poi_blend_search_degenerate_inputs_do_not_crash(
    digits: tuple[np.ndarray, np.ndarray], case: str
) -> None:
    x, y = digits
    kw: dict[str, int] = {}
    if case == "constant":
        x = np.ones_like(x)
    elif case == "duplicated-features":
        x = np.hstack([x, np.ones((len(x), 5)), x[:, :10]])
    elif case == "duplicated-rows":
        x, y = np.vstack([x, x]), np.concatenate([y, y])
    elif case == "binary":
        x = np.round(x)
    elif case == "tiny-class":  # classes of 3 samples next to a full one
        sel = np.concatenate(
            [np.flatnonzero(y == c)[:3] for c in range(3)] + [np.flatnonzero(y == 3)]
        )
        x, y, kw = x[sel], y[sel], {"min_per_class": 3}
    elif case == "many-features":  # PCA path (> 100 coordinates)
        x = np.hstack([x, np.random.default_rng(0).normal(0, 0.01, (len(x), 200))])
    with np.errstate(all="raise"):
        cands = blend_candidates(prepare(x, y, **kw), seed=0)
    for c in cands:
        assert np.isfinite(c.separation)
        assert np.isfinite(c.relative)


def test_poi_stamp_review_quiet_on_clean_binary_images(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    # binarised digits: every pixel is 0 or 1, so samples share exact values everywhere; a
    # class's typical strokes must not be reported as a stamped (clean-label) pattern
    x, y = digits
    for seed in (0, 2):
        r = scan(np.round(x), y, seed=seed)
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20
        assert not any("stamped on" in v for v in r.reasons.values())


@pytest.mark.xfail(
    strict=True,
    reason="open false alarm (README, Limits): a far sub-cluster of isotropic data with 3+ "
    "classes reconstructs as a blend with weight 0.3-0.5 that a probe follows",
)
def test_poi_blend_isotropic_subcluster_with_three_classes_known_false_alarm() -> None:
    g = np.random.default_rng(3)
    means = g.normal(0, 2.0, (3, 16))
    x = g.normal(size=(750, 16)) + np.repeat(means, 250, axis=0)
    u = g.normal(size=16)
    x[:100] += 10.0 * u / np.linalg.norm(u)
    y = np.repeat(np.arange(3), 250).astype(np.int64)
    r = scan(x, y, seed=0)
    assert not any(t.kind == "blend" for t in r.triggers)
    assert r.risk_score < 20
    assert r.flags.mean() <= 0.05


def _blend_into_zero(
    x: np.ndarray, y: np.ndarray, groups: list[tuple[float, float]], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blend ``rate`` of the samples (other classes) with a fresh random key at weight ``alpha``
    per group, relabelled 0."""
    g = np.random.default_rng(seed)
    x, y = x.copy(), y.copy()
    hit = np.zeros(len(y), dtype=bool)
    for rate, alpha in groups:
        idx = g.choice(np.flatnonzero((y != 0) & ~hit), round(rate * len(y)), replace=False)
        x[idx] = (1 - alpha) * x[idx] + alpha * g.random(x.shape[1])
        y[idx] = 0
        hit[idx] = True
    return x, y, hit


@pytest.mark.xfail(strict=True, reason="known evasions of the blended-key search (README, Limits)")
@pytest.mark.parametrize(
    "groups",
    [[(0.10, 0.1)], [(0.015, 0.2)], [(0.05, 0.2), (0.05, 0.2)]],
    ids=["weight-0.1", "rate-1.5pct-under-min-frac", "two-keys-5pct-each"],
)
def test_poi_blend_search_known_evasions(groups: list[tuple[float, float]]) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    xp, yp, hit = _blend_into_zero(x, y.astype(np.int64), groups, seed=1)
    r = scan(xp, yp, seed=0)
    assert (r.flags & hit).sum() >= 0.5 * hit.sum()
