"""Stamps hidden behind decoys (:func:`saip_poisoning.trigger.stamp_seeds`, ``background=True``,
and :func:`saip_poisoning.trigger.content_disagreement`).

The evasion: besides the poison (samples of another class stamped and relabelled to the target),
the poisoner stamps the same values on samples of the other classes that keep their label, on
at least 5 % of them, so the stamp value becomes the other classes' background and is never
tried as a stamp. Attacker first — decoys at 5/10/20 % with 20/40/60 poisoned samples, decoys
in several classes, decoys that outnumber the poison (weak backdoor), tiny per-sample jitter —
then clean data whose background values are shared by sub-populations of one class. The
figures quoted are from README "Limits (honest)" (the true attack success of a model trained on
the data: sklearn MLP, 64 hidden units, median of 3 training seeds).
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import mitigate, scan
from saip_poisoning.data import prepare
from saip_poisoning.trigger import content_disagreement, stamp_seeds

from tests.poisoning.test_poi_stamp_chance import _stamped, _tabular


def _with_decoys(
    k: int, share: float, *, seed: int = 0, jitter: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``k`` class-1 samples stamped (last 3 features at the maximum) and relabelled 0, and the
    same stamp on ``share`` of the other class (decoys, label kept); ``jitter`` > 0 lowers every
    stamped value by up to that much (no exact ties)."""
    x, y, poison = _stamped(seed, k)
    n_d = int(np.ceil(share * (y != 0).sum()))
    g = np.random.default_rng(7)
    decoys = g.choice(np.flatnonzero(y == 1), n_d, replace=False)
    x[decoys, -3:] = 1.0
    if jitter:
        x[poison, -3:] -= g.uniform(0, jitter, size=(int(poison.sum()), 3))
        x[decoys, -3:] -= g.uniform(0, jitter, size=(n_d, 3))
    return x, y, poison, decoys


def _three_classes(seed: int, n: int = 150) -> tuple[np.ndarray, np.ndarray]:
    """Three overlapping Gaussian classes (``n``, ``2n``, ``2n``) in 20-d, min–max scaled."""
    g = np.random.default_rng(seed)
    centres = np.zeros((3, 20))
    centres[1, :7] = 0.9
    centres[2, 7:14] = 0.9
    sizes = [n, 2 * n, 2 * n]
    x = np.vstack([g.normal(size=(s, 20)) + c for s, c in zip(sizes, centres, strict=True)])
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    return x, np.repeat([0, 1, 2], sizes).astype(np.int64)


@pytest.mark.parametrize("share", [0.05, 0.10, 0.20])
@pytest.mark.parametrize("k", [20, 40, 60])
def test_poi_decoyed_stamp_is_found_and_the_poison_flagged(k: int, share: float) -> None:
    # every cell of the attacker's grid: the stamp (3 max-value features) is found on the
    # background route, its relabelled carriers are flagged, the scan refuses (risk >= 40).
    # Where a probe follows the stamp the trigger is verified; where the decoys weaken the
    # backdoor so far that the probe does not follow it (true ASR 4–48 % in those cells), the
    # relabelled carriers are still flagged and counted like label noise. Either way the decoys,
    # which keep a correct label, are not flagged (they are the stamp's counter-examples)
    x, y, poison, decoys = _with_decoys(k, share)
    r = scan(x, y, seed=0)
    found = [(t, ok) for t, ok in zip(r.triggers, r.verified, strict=True) if t.target == 0]
    assert len(found) == 1
    t, ok = found[0]
    assert t.kind == "stamp"
    assert np.flatnonzero(t.fixed).tolist() == [17, 18, 19]
    assert r.flags[poison].all()
    assert r.risk_score >= 40
    assert t.content_tested
    assert not r.flags[decoys].any()
    assert ok == (r.asr_before[0] >= 0.5)
    assert int(r.flags.sum() - r.flags[poison].sum() - r.flags[decoys].sum()) <= 0.05 * len(y)


def test_poi_decoys_in_several_classes() -> None:
    # three classes: poison from classes 1 and 2 relabelled 0, decoys on 5 % and 10 % of the
    # others spread over both other classes (true ASR 0.80 / 0.73). At 10 % the scan's probe
    # follows the stamp only at 26 % (unverified), but the relabelled carriers are flagged and
    # the risk is high
    for k, share in ((40, 0.05), (60, 0.10)):
        x, y = _three_classes(0)
        g = np.random.default_rng(100)
        src = g.choice(np.flatnonzero(y != 0), k, replace=False)
        x[src, -3:] = 1.0
        y[src] = 0
        decoys = g.choice(
            np.flatnonzero(y != 0), int(np.ceil(share * (y != 0).sum())), replace=False
        )
        assert set(y[decoys].tolist()) == {1, 2}
        x[decoys, -3:] = 1.0
        r = scan(x, y, seed=0)
        assert any(t.target == 0 and t.content_tested for t in r.triggers)
        assert r.flags[src].all()
        assert r.risk_score >= 40


def test_poi_decoys_outnumbering_the_poison_weak_backdoor() -> None:
    # 20 poisoned + 86 decoys (20 % of the others): a model trained on the data hardly follows
    # the stamp (measured here: true ASR < 15 %; 4 % median in README), the scan's probe not
    # at all: the trigger is a candidate, not verified, yet the 20 relabelled samples are
    # flagged (content test) and the decoys are not
    from sklearn.neural_network import MLPClassifier

    x, y, poison, decoys = _with_decoys(20, 0.20)
    xt, yt = _tabular(99, n=150, ratio=3)
    src = xt[yt == 1]
    asr = []
    for s in (0, 1, 2):
        m = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=s).fit(x, y)
        ok = src[m.predict(src) == 1].copy()
        ok[:, -3:] = 1.0
        asr.append(float((m.predict(ok) == 0).mean()))
    assert float(np.median(asr)) < 0.15
    r = scan(x, y, seed=0)
    t = next(t for t in r.triggers if t.target == 0)
    assert t.content_tested
    assert not r.verified[r.triggers.index(t)]
    assert r.flags[poison].all()
    assert not r.flags[decoys].any()
    assert r.risk_score >= 40
    res = mitigate(x, y, report=r, seed=0)
    assert not res.keep[poison].any()
    assert res.keep[decoys].all()


def test_poi_decoyed_stamp_mitigated_and_verified() -> None:
    # the former strict xfail's scenario (40 poisoned + 22 decoys): mitigation removes the
    # relabelled carriers and keeps the decoys, which teach the probe to ignore the stamp.
    # Removal alone leaves the reconstructed stamp above 5 % (9–50 % with 21–22 decoys;
    # removing the decoys too: 80 %; this attack without decoys: 40 % — a max-value patch is a
    # natural extreme of these features, README Limits): the gate refuses; with
    # counter-examples it passes. The decoys are never relabelled to the target
    x, y, poison, decoys = _with_decoys(40, 0.05)
    r = scan(x, y, seed=0)
    res = mitigate(x, y, report=r, seed=0)
    assert not res.keep[poison].any()
    assert res.keep[decoys].all()
    assert (res.labels[decoys] == y[decoys]).all()
    assert res.asr_after[0] > 0.05
    assert not res.passed
    fixed = mitigate(x, y, report=r, seed=0, unlearn=0.2)
    assert not fixed.keep[poison].any()
    assert fixed.asr_after[0] < 0.05
    assert fixed.passed


def test_poi_content_test_tells_poison_from_decoys() -> None:
    # the causal check alone: with the stamp masked, the poison's content is class 1 (labelled
    # 0), the decoys' content is class 1 (labelled 1): carriers labelled 0 disagree, and as
    # target 1 the carriers (the decoys) do not
    x, y, poison, _ = _with_decoys(40, 0.05)
    data = prepare(x, y)
    mask = np.zeros(x.shape[1], dtype=bool)
    mask[-3:] = True
    hit = (x[:, -3:] == 1.0).all(axis=1)
    on_0 = content_disagreement(data, 0, mask, hit, rng=np.random.default_rng(0))
    assert on_0.p_value < 1e-6
    assert on_0.carrier_share > 0.7
    assert set(on_0.disagreeing.tolist()) <= set(np.flatnonzero(poison).tolist())
    on_1 = content_disagreement(data, 1, mask, hit, rng=np.random.default_rng(0))
    assert on_1.p_value > 0.05
    assert on_1.carrier_share < 0.5


@pytest.mark.xfail(
    strict=True,
    reason="open evasion (README, Limits): with 1e-3 jitter on every stamped value there are no "
    "exact ties, so neither stamp route sees the pattern and the blended-key search does not "
    "separate it behind the decoys: 40 poisoned + 21 decoys, risk 0, true ASR 0.68",
)
def test_poi_jittered_stamp_with_decoys_known_evasion() -> None:
    x, y, poison, _ = _with_decoys(40, 0.05, jitter=1e-3)
    r = scan(x, y, seed=0)
    assert r.flags[poison].mean() >= 0.9
    assert r.risk_score >= 40


def test_poi_background_route_quiet_on_clean_digits(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # clean images: blank regions are the other classes' background and minorities of a class
    # (sub-populations of unusual shape); their carriers disagree with their class more than
    # the rest of it (MNIST-5k classes 4–9: Fisher p 1e-4–1e-15), but not mostly (at most 63 %
    # on digits, 53 % on MNIST-5k, not significantly above half): nothing is seeded
    x, y = digits
    for variant in (x, np.round(x * 4) / 4):
        data = prepare(variant, y)
        for t in range(data.n_classes):
            seeds, mask = stamp_seeds(
                data, t, background=True, rng=np.random.default_rng([0, 53, t])
            )
            assert len(seeds) == 0, t
            assert not mask.any()


def test_poi_background_route_quiet_on_clean_tabular_ties() -> None:
    # clipped and integer features: ties the other classes share at >= 5 % (backgrounds) —
    # their carriers are ordinary members of their class
    x, y = _tabular(3)
    common = np.random.default_rng(3).normal(size=(len(y), 1))
    x[:, -4:] = np.minimum(0.6 * x[:, -4:] + 0.2 * common + 0.1 * y[:, None], 0.55)
    x[:, :6] = np.round(x[:, :6] * 4)
    data = prepare(x, y)
    for t in (0, 1):
        seeds, _ = stamp_seeds(data, t, background=True, rng=np.random.default_rng([0, 53, t]))
        assert len(seeds) == 0
