"""Stamped-pattern seeds by a chance test (:func:`saip_poisoning.trigger.stamp_seeds`).

Attacker first: an exact stamp on a handful of samples (fewer than the old fixed minimums of 6
samples and 5 % of the class) must be seeded and reconstructed; then clean data whose values
repeat naturally (features clipped at their maximum, integer-valued features, saturated
pixels) must not be reported; and the search is deterministic.
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import scan
from saip_poisoning.data import prepare
from saip_poisoning.inputspace import input_space
from saip_poisoning.trigger import MIN_STAMP_SEEDS, _chance, carriers, find_triggers, stamp_seeds


def _tabular(seed: int, n: int = 300, d: int = 20, ratio: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two overlapping Gaussian classes (``n`` and ``ratio·n`` samples), min–max scaled to
    [0, 1] (continuous: no natural ties)."""
    g = np.random.default_rng(seed)
    shift = np.r_[np.full(d // 2, 0.8), np.zeros(d - d // 2)]
    x = np.vstack([g.normal(size=(n, d)), g.normal(size=(ratio * n, d)) + shift])
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    return x, np.repeat([0, 1], [n, ratio * n]).astype(np.int64)


def _stamped(seed: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``k`` class-1 samples relabelled 0 with their last 3 features set to the maximum (the
    benchmark's tabular BadNets patch): ``k / (150 + k)`` of the target class."""
    x, y = _tabular(seed, n=150, ratio=3)
    g = np.random.default_rng(seed + 100)
    idx = g.choice(np.flatnonzero(y == 1), k, replace=False)
    x[idx, -3:] = 1.0
    y[idx] = 0
    poison = np.zeros(len(y), dtype=bool)
    poison[idx] = True
    return x, y, poison


def test_poi_stamp_on_five_samples_is_seeded_and_reconstructed() -> None:
    # 5 carriers = 3.2 % of the target class: below the old fixed cuts (6 samples, 5 %)
    for seed in (0, 1, 2):
        x, y, poison = _stamped(seed, 5)
        data = prepare(x, y)
        seeds, mask = stamp_seeds(data, 0, rng=np.random.default_rng(0))
        assert set(seeds.tolist()) == set(np.flatnonzero(poison).tolist())
        assert np.flatnonzero(mask).tolist() == [17, 18, 19]
        space = input_space(data, seed=0)
        found = [t for t in find_triggers(data, space, min_effect=3.0) if t.target == 0]
        assert len(found) == 1
        assert found[0].kind == "stamp"
        assert np.array_equal(carriers(data, found[0]), poison)


def test_poi_stamp_below_the_floor_is_not_seeded() -> None:
    # the floor is two seeds per cross-fitting half: 3 carriers are not searched
    x, y, _ = _stamped(0, MIN_STAMP_SEEDS - 1)
    seeds, mask = stamp_seeds(prepare(x, y), 0, rng=np.random.default_rng(0))
    assert len(seeds) == 0
    assert not mask.any()


def test_poi_chance_is_a_binomial_tail_with_add_one_reference_rate() -> None:
    # 5 of 170 sharing a value none of 285 reference samples has: q = 1/287, P(X >= 5) ≈ 3.3e-4
    assert 3.0e-4 < _chance(5, 170, 0, 285) < 3.6e-4
    # the same count is unremarkable where the reference has the value as often
    assert _chance(5, 170, 9, 285) > 0.5
    assert _chance(0, 170, 0, 285) == 1.0


def _quiet(x: np.ndarray, y: np.ndarray) -> None:
    for seed in (0, 1, 2):
        r = scan(x, y, seed=seed)
        assert not any(r.verified), [t.n_coords for t in r.triggers]
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20


def test_poi_clean_tabular_clipped_at_maximum_not_flagged() -> None:
    # correlated features clipped at a bound that one class reaches far more often: many exact
    # ties at the maximum, more common in one class — natural saturation, not a stamp
    x, y = _tabular(3)
    g = np.random.default_rng(3)
    common = g.normal(size=(len(y), 1))
    x[:, -4:] = np.minimum(0.6 * x[:, -4:] + 0.2 * common + 0.1 * y[:, None], 0.55)
    assert (x[:, -4:] == 0.55).all(axis=1).sum() >= 10
    _quiet(x, y)


def test_poi_clean_integer_features_not_flagged() -> None:
    # integer-valued features (counts, codes — like a housing set's index columns) tie everywhere
    x, y = _tabular(4)
    x[:, :6] = np.round(x[:, :6] * 4)
    _quiet(x, y)


def test_poi_clean_saturated_digits_not_flagged(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # digits with ink clipped at 60 %: strokes saturate at one exact value in every class
    x, y = digits
    _quiet(np.minimum(x, 0.6), y)


def test_poi_clean_quantised_digits_not_flagged(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # 5 grey levels: a class's own strokes share exact values on many coordinates
    x, y = digits
    _quiet(np.round(x * 4) / 4, y)


def test_poi_stamp_seeds_deterministic() -> None:
    x, y, _ = _stamped(5, 5)
    data = prepare(x, y)
    a = stamp_seeds(data, 0, rng=np.random.default_rng(0))
    b = stamp_seeds(data, 0, rng=np.random.default_rng(0))
    assert np.array_equal(a[0], b[0])
    assert np.array_equal(a[1], b[1])
    r1, r2 = scan(x, y, seed=0), scan(x, y, seed=0)
    assert np.array_equal(r1.flags, r2.flags)
    assert r1.risk_score == r2.risk_score


def test_poi_pattern_shared_with_other_classes_is_not_a_trigger() -> None:
    # a sub-population sharing exact values on several graded features (the samples of one
    # district in a housing set: same tax rate, same pupil ratio), mostly of one class but
    # also in the other: improbable by chance — the chance test says "more common in class 0",
    # not "a backdoor" —, so the effect cut and the verification must keep it from being
    # reported: no trigger, none of its samples flagged, risk under the guarded band
    for seed in (6, 0, 1, 2):
        x, y = _tabular(seed)
        g = np.random.default_rng(seed)
        members = np.r_[
            g.choice(np.flatnonzero(y == 0), 15, replace=False),
            g.choice(np.flatnonzero(y == 1), 4, replace=False),
        ]
        x[members, 2:6] = np.array([0.31, 0.52, 0.44, 0.67])
        r = scan(x, y, seed=0)
        assert not r.triggers, seed
        assert not r.flags[members].any(), seed
        assert r.risk_score < 20, seed
    # the same pattern on the 15 class-0 samples only is a stamp
    x, y = _tabular(6)
    g = np.random.default_rng(6)
    members = g.choice(np.flatnonzero(y == 0), 15, replace=False)
    x[members, 2:6] = np.array([0.31, 0.52, 0.44, 0.67])
    seeds, mask = stamp_seeds(prepare(x, y), 0, rng=np.random.default_rng(0))
    assert set(seeds.tolist()) == set(members.tolist())
    assert np.flatnonzero(mask).tolist() == [2, 3, 4, 5]


def test_poi_duplicated_clean_rows_are_not_a_stamp() -> None:
    # a clean row repeated a few times (a re-ingested record): every coordinate "shares" an
    # exact value none of the other classes has, but the block is the whole sample, not a patch
    # stamped on different samples; pasting it on other samples replaces them by the duplicate,
    # so a probe "follows" it — it must not be seeded (counted once, it is one sample)
    for copies in (6, 8):
        x, y = _tabular(0)
        rows = np.flatnonzero(y == 0)[:copies]
        x[rows] = x[rows[0]]
        seeds, mask = stamp_seeds(prepare(x, y), 0, rng=np.random.default_rng(0))
        assert len(seeds) == 0
        assert not mask.any()
        r = scan(x, y, seed=0)
        assert not any(r.verified)
        assert r.risk_score < 20


@pytest.mark.parametrize(("seed", "n_decoys"), [(0, 2), (1, 2), (2, 2), (0, 3), (0, 16)])
def test_poi_stamp_also_planted_on_other_class_samples_is_found(seed: int, n_decoys: int) -> None:
    # evasion from the adversarial review: 20 stamped samples relabelled 0 (12 % of the class),
    # the same stamp on 2 class-1 samples that keep their label. The two ties made 1.0 the
    # others' most common value on each stamp coordinate, which was skipped as "the usual
    # value": nothing seeded, risk 0. A usual value is a background only from 5 % of the
    # others up (16 decoys = 3.7 % of class 1 are still found; from 5 %, README Limits)
    x, y, poison = _stamped(seed, 20)
    g = np.random.default_rng(7)
    decoys = g.choice(np.flatnonzero(y == 1), n_decoys, replace=False)
    x[decoys, -3:] = 1.0
    seeds, mask = stamp_seeds(prepare(x, y), 0, rng=np.random.default_rng(0))
    assert set(np.flatnonzero(poison).tolist()) <= set(seeds.tolist())
    assert np.flatnonzero(mask).tolist() == [17, 18, 19]
    r = scan(x, y, seed=0)
    assert any(t.target == 0 and ok for t, ok in zip(r.triggers, r.verified, strict=True))
    assert r.flags[poison].all()
    assert r.carrier[decoys].all()  # the decoys carry the stamp: removed with the rest
    assert r.risk_score >= 50


def test_poi_stamp_with_decoys_at_the_background_share_is_found() -> None:
    # the poisoner puts the stamp on 22 class-1 samples that keep their label (5.4 % of the 410
    # others: the background share) and on 40 poisoned samples, which outvote the decoys: the
    # backdoor works (a model trained on the data follows the stamp: 67–71 %), and the value is
    # the others' background. Was a strict xfail (risk 0, nothing flagged): the background value
    # is now tried on a second route gated by the content test (test_poi_stamp_decoys.py)
    x, y, poison = _stamped(0, 40)
    g = np.random.default_rng(7)
    decoys = g.choice(np.flatnonzero(y == 1), 22, replace=False)
    x[decoys, -3:] = 1.0
    r = scan(x, y, seed=0)
    assert any(t.target == 0 and ok for t, ok in zip(r.triggers, r.verified, strict=True))
    assert r.flags[poison].mean() >= 0.9
    # the decoys keep their correct label and are the stamp's counter-examples: not flagged,
    # kept by mitigate (test_poi_stamp_decoys.py)
    assert not r.flags[decoys].any()
    assert r.risk_score >= 70
