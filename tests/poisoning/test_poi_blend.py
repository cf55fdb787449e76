"""Blended-trigger search (``saip_poisoning.blendsearch``): attacker first, then clean data.

A blended key (Chen et al. 2017) on natural-texture crops and on a tabular set is invisible to
neighbour disagreement and to the stamp search; the whitened split must find it, the scan must
verify it as a working trigger, and ``mitigate`` must bring the true trigger's attack success
below 5 %. On clean data of the same kinds nothing may be flagged.
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import mitigate, scan
from saip_poisoning.attacks import blend, poison
from saip_poisoning.blendsearch import blend_candidates, split_1d
from saip_poisoning.data import prepare
from saip_poisoning.model import predict_proba, train_mlp

from tests.poisoning._data import bench_load as _bench_load


def _crops() -> tuple[np.ndarray, np.ndarray]:
    """12×12 grayscale crops of scikit-learn's two sample photographs, 4 classes."""
    return _bench_load("crops")


def _breast() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's breast cancer table, min–max scaled, 2 classes."""
    return _bench_load("breast_cancer")


@pytest.mark.parametrize("loader", [_crops, _breast], ids=["crops", "tabular"])
def test_poi_blend_key_found_verified_and_removed(loader: object) -> None:
    x, y = loader()  # type: ignore[operator]
    perm = np.random.default_rng(0).permutation(len(y))
    tr, te = perm[: int(0.8 * len(y))], perm[int(0.8 * len(y)) :]
    p = poison(x[tr], y[tr], attack="blend", rate=0.10, rng=np.random.default_rng(1))
    report = scan(p.x, p.y, seed=0)
    live = [t for t, ok in zip(report.triggers, report.verified, strict=True) if ok]
    assert [t.kind for t in live] == ["blend"]
    assert live[0].target == 0
    assert report.risk_score >= 70
    tp = int((report.flags & p.is_poison).sum())
    assert tp / p.is_poison.sum() >= 0.95
    assert tp / report.flags.sum() >= 0.9
    flagged = np.flatnonzero(report.flags & p.is_poison)
    assert all("blended key" in report.reasons[int(i)] for i in flagged)
    # the attacker's key, regenerated exactly as poison() drew it (after choosing the samples)
    g = np.random.default_rng(1)
    g.choice(np.flatnonzero(y[tr] != 0), round(0.10 * len(tr)), replace=False)
    key_state = g.bit_generator.state

    def key_rng_asr(xa: np.ndarray, ya: np.ndarray) -> tuple[float, float]:
        # ASR with training seed 0; clean accuracy averaged over training seeds 0-2: on crops
        # (4 classes, accuracy ≈ 0.5) one training seed moves it by ±5 points when 8 samples
        # are removed at random
        flat = xa.reshape(len(xa), -1)
        scale = float(flat.std())
        tf = x[te].reshape(len(te), -1)
        asr, accs = 0.0, []
        for seed in (0, 1, 2):
            net = train_mlp(flat / scale, ya, n_classes=int(y.max()) + 1, seed=seed)
            pred = predict_proba(net, tf / scale).argmax(1)
            accs.append(float((pred == y[te]).mean()))
            if seed == 0:
                g2 = np.random.default_rng()
                g2.bit_generator.state = key_state
                src = (y[te] != 0) & (pred == y[te])
                trig = blend(tf[src], rng=g2)
                asr = float((predict_proba(net, trig / scale).argmax(1) == 0).mean())
        return asr, float(np.mean(accs))

    before, acc_before = key_rng_asr(p.x, p.y)
    assert before >= 0.9  # the backdoor works before mitigation
    res = mitigate(p.x, p.y, report=report, seed=0, unlearn=0.2)
    assert res.passed, res.reason
    xa = p.x[res.keep].reshape(int(res.keep.sum()), -1)
    ya = res.labels[res.keep]
    if res.counter_x is not None and res.counter_y is not None:
        # only where removal alone leaves the reconstructed trigger working
        assert max(res.asr_removal_only.values()) > 0.05
        xa, ya = np.vstack([xa, res.counter_x]), np.concatenate([ya, res.counter_y])
    after, acc_after = key_rng_asr(xa, ya)
    assert after < 0.05
    assert acc_after >= acc_before - 0.02


@pytest.mark.parametrize("loader", [_crops, _breast], ids=["crops", "tabular"])
def test_poi_blend_search_quiet_on_clean_data(loader: object) -> None:
    x, y = loader()  # type: ignore[operator]
    data = prepare(x, y)
    assert blend_candidates(data, seed=0) == []
    report = scan(data, seed=0)
    assert not any(t.kind == "blend" for t in report.triggers)
    assert report.risk_score < 20
    assert report.flags.mean() <= 0.05


def test_poi_blend_search_quiet_on_clean_digits(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # digits "1" is genuinely bimodal (serif and plain ones): it must stay below the cut
    for seed in (0, 1, 2):
        assert blend_candidates(prepare(*digits), seed=seed) == []


def test_poi_split_1d_separation() -> None:
    rng = np.random.default_rng(0)
    gauss = rng.normal(size=4000)
    d, _, frac = split_1d(gauss, min_frac=0.08)
    assert 2.3 < d < 3.0
    assert frac > 0.3
    two = np.r_[rng.normal(size=3000), rng.normal(8.0, 1.0, size=1000)]
    d2, cut, frac2 = split_1d(two, min_frac=0.08)
    assert d2 > 7
    assert 2 < cut < 6
    assert abs(frac2 - 0.25) < 0.01
    assert split_1d(np.arange(5.0), min_frac=0.4)[0] == 0.0


@pytest.mark.parametrize(
    "kwargs", [{"n_dirs": 0}, {"min_frac": 0.6}, {"min_frac": 0.0}, {"min_relative": 1.0}]
)
def test_poi_blend_search_config_validated(
    digits: tuple[np.ndarray, np.ndarray], kwargs: dict[str, float]
) -> None:
    with pytest.raises(ValueError, match="n_dirs"):
        blend_candidates(prepare(*digits), **kwargs)  # type: ignore[arg-type]
