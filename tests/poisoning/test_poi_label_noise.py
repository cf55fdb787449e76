"""Label-noise rule with one round of iterative cleaning, and the relabelled-cluster rule run
without the per-sample flags (``saip_poisoning.scan._label_noise``, ``reclassify_clusters(...,
exclude=...)``).

Attacker first: heavy random flips that hide each other (20 %, and two-class data), an attacker
who flips only the samples nearest the class boundary, and a pair flip on a two-class table whose
scattered flips used to pull genuine boundary samples into a relabelled cluster. Each case failed
on the one-pass rule (numbers in the test docstrings). Clean data must keep the one-pass rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import ScanReport, mitigate, scan
from saip_poisoning.attacks import poison
from saip_poisoning.detectors.reclassify import reclassify_clusters
from sklearn.datasets import load_breast_cancer
from sklearn.neighbors import NearestNeighbors


def _prec_rec(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    hit = float((flags & truth).sum())
    return hit / max(1.0, float(flags.sum())), hit / max(1.0, float(truth.sum()))


def _two_class(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    x, y = digits
    keep = np.isin(y, [3, 8])
    return x[keep], (y[keep] == 8).astype(np.int64)


def test_poi_noise_twenty_percent_flips_found_after_cleaning(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """20 % random flips: the one-pass rule found 90.5 % of them (a flipped sample's neighbours
    carry flipped labels too); the second pass on corrected labels finds ≥ 95 %."""
    x, y = digits
    p = poison(x, y, attack="flip", rate=0.2, rng=np.random.default_rng(7))
    r = scan(p.x, p.y, seed=0)
    prec, rec = _prec_rec(r.noise, p.is_poison)
    assert r.calibration["label_noise_passes"] == 2
    assert rec >= 0.95, (prec, rec)
    assert prec >= 0.95, (prec, rec)
    second = [i for i, why in r.reasons.items() if "once the" in why]
    assert second
    assert all("retrained on the corrected labels" in r.reasons[i] for i in second)


def test_poi_noise_two_class_pair_flip_precision(digits: tuple[np.ndarray, np.ndarray]) -> None:
    """Two classes (digits 3 vs 8), 10 % of N relabelled 8 → 3: the relabelled cluster also took
    genuine 3s (precision 0.81); with the per-sample flags left out first it does not."""
    x, y = _two_class(digits)
    p = poison(x, y, attack="pair_flip", rate=0.1, rng=np.random.default_rng(7))
    r = scan(p.x, p.y, seed=0)
    prec, rec = _prec_rec(r.flags, p.is_poison)
    assert prec >= 0.9, (prec, rec)
    assert rec >= 0.9, (prec, rec)


def test_poi_noise_pair_flip_on_a_table_beats_the_knn_baseline() -> None:
    """breast_cancer (an evaluation set of the benchmark: used here as a regression case only, no
    cut was set on it), 10 % of N relabelled benign → malignant with another draw than the
    benchmark's: precision was 0.64 (25+ genuine boundary samples relabelled with the cluster),
    F1 below the plain 10-NN vote."""
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    p = poison(x, y.astype(np.int64), attack="pair_flip", rate=0.1, rng=np.random.default_rng(1))
    r = scan(p.x, p.y, seed=0)
    prec, rec = _prec_rec(r.flags, p.is_poison)
    ind = NearestNeighbors(n_neighbors=11).fit(p.x).kneighbors(p.x, return_distance=False)
    knn = (p.y[ind[:, 1:]] != p.y[:, None]).mean(1) >= 0.5
    kp, kr = _prec_rec(knn, p.is_poison)
    assert prec >= 0.9, (prec, rec)
    assert 2 * prec * rec / (prec + rec) > 2 * kp * kr / (kp + kr)


def test_poi_noise_boundary_flips_attacker(
    digits: tuple[np.ndarray, np.ndarray], boundary_flips: tuple[np.ndarray, np.ndarray]
) -> None:
    """Hostile: the attacker flips the 10 % of samples nearest the class boundary (smallest
    cross-validated margin of a linear model) to their runner-up class, where a wrong label looks
    most like natural ambiguity. One pass: F1 0.68 (recall 0.54), two passes 0.81. The flags sit
    nearer the boundary than the classes' own members (mean depth percentile 0.20), which is
    what natural overlap looks like: since the depth test the label-noise rule abstains — the
    scan is not calibrated, so the gate refuses (never a calibrated pass), but the flips are
    not flagged or relabelled (README, Limits)."""
    x, y = digits
    y_bad, chosen = boundary_flips
    truth = np.zeros(len(y), dtype=bool)
    truth[chosen] = True
    r = scan(x, y_bad, seed=0)
    prec, rec = _prec_rec(r.flags, truth)
    if r.calibrated:  # flagged: precisely
        assert prec >= 0.85, (prec, rec)
        assert 2 * prec * rec / (prec + rec) >= 0.75, (prec, rec)
        assert r.risk_score >= 40
    else:  # abstained: says why (the gate refuses uncalibrated scans by default)
        assert r.calibration["label_noise_depth"]["identifiable"] is False
        assert "overlap" in r.calibration["reason"]


def test_poi_noise_clean_data_keeps_the_one_pass_rule(clean_digits_scan: ScanReport) -> None:
    """Clean data never reaches the guarded band, so the refit never runs and nothing changes."""
    r = clean_digits_scan
    assert r.calibration["label_noise_passes"] == 1
    assert r.flags.mean() <= 0.01
    assert r.risk_score < 20
    assert not any("once the" in why for why in r.reasons.values())


def test_poi_reclassify_exclude_keeps_full_indices(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    p = poison(x, y, attack="pair_flip", rate=0.05, rng=np.random.default_rng(3))
    z = p.x.reshape(len(p.y), -1)
    excl = np.zeros(len(p.y), dtype=bool)
    excl[np.flatnonzero(p.is_poison)[::4]] = True  # a quarter of the flips already known
    found = reclassify_clusters(z, p.y, 10, exclude=excl)
    members = np.concatenate([c.members for c in found])
    assert len(members)
    assert not excl[members].any()
    assert p.is_poison[members].mean() > 0.9  # indices refer to the full data
    with pytest.raises(ValueError, match="exclude must have shape"):
        reclassify_clusters(z, p.y, 10, exclude=excl[:-1])
    # a 0/1 integer mask would be inverted bitwise (~1 == -2: nothing excluded)
    with pytest.raises(TypeError, match="boolean mask"):
        reclassify_clusters(z, p.y, 10, exclude=excl.astype(np.int64))


def test_poi_noise_clean_gaussian_overlap_abstains() -> None:
    """Clean classes that overlap everywhere (no pure core) look like uniform label noise to a
    per-sample rule: the one-pass rule flagged 10.5 % (risk 97), two passes 13 % (99). The
    flags lie nearer the boundary than the classes' own members (depth test), so the rule
    abstains and says why (was a known-false-alarm xfail). Its probe/neighbour agreement
    (0.825, n = 600) now also misses the agreement floor raised by the one-look margin
    (0.827), so by default the rule is not run at all; with a floor lowered to let the probe
    pass, the depth test still abstains."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600).astype(np.int64)
    x = rng.normal(size=(600, 10))
    x[:, 0] += 1.5 * y
    d = scan(x, y, seed=0, verify=False)
    assert d.calibrated is False
    assert "binomial standard errors" in d.calibration["reason"]
    assert not d.flags.any()
    assert d.risk_score < 20
    assert [m.action for m in d.mitigations] == ["review_manually"]
    r = scan(x, y, seed=0, verify=False, min_agreement=0.78)
    assert r.calibration["probes"][0]["calibrated"] is True
    assert r.calibrated is False
    assert "overlap" in r.calibration["reason"]
    assert r.calibration["label_noise_depth"]["identifiable"] is False
    assert not r.flags.any()
    assert r.risk_score < 20
    # a low risk from a scan that could not judge is not a reason to go ahead
    assert [m.action for m in r.mitigations] == ["review_manually"]


def test_poi_noise_within_allowance_set_aside_when_a_pattern_explains_the_poison(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """All-to-one patch 5 %: the carriers are the poison; the label-noise rule's few clean-level
    flags (ambiguous digits, 6 here; ≈ 1 % on MNIST-5k, where they halved a2o 1 % precision)
    are set aside, not flagged or relabelled."""
    x, y = digits
    p = poison(x, y, attack="a2o", rate=0.05, rng=np.random.default_rng(7))
    r = scan(p.x, p.y, seed=0)
    prec, rec = _prec_rec(r.flags, p.is_poison)
    assert any(r.verified)
    assert rec == 1.0
    assert prec >= 0.98, (prec, rec)
    assert r.calibration["label_noise_set_aside"] > 0
    assert not r.noise.any()
    # not poison, but still label hygiene: mitigate relabels them and keeps them
    assert r.set_aside is not None
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert (m.labels[r.set_aside] == r.relabel[r.set_aside]).all()
    assert m.keep[r.set_aside].all()
    assert not m.keep[p.is_poison].any()


def test_poi_noise_backdoor_plus_flips_keeps_the_flips(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """Hostile: a backdoor to be found plus 5 % label flips elsewhere. The flips exceed the
    clean allowance, so they stay flagged next to the carriers (the set-aside only covers the
    clean-data level)."""
    x, y = digits
    p = poison(x, y, attack="a2o", rate=0.05, rng=np.random.default_rng(7))
    q = poison(p.x, p.y, attack="flip", rate=0.05, rng=np.random.default_rng(8))
    flips = q.is_poison & ~p.is_poison
    r = scan(q.x, q.y, seed=0)
    assert any(r.verified)
    assert r.calibration["label_noise_set_aside"] == 0
    assert r.flags[p.is_poison].mean() >= 0.95
    assert r.noise[flips].mean() >= 0.85
