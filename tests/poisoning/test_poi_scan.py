"""The scan: calibration, trigger reconstruction and verification, label noise, producers,
mitigation, the client hook. Attack cases first, then the clean controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
from saip_poisoning import BANDS, ScanReport, band, client_filter, mitigate, scan
from saip_poisoning.attacks import Poisoned, add_patch, poison
from saip_poisoning.model import ProbeView
from saip_poisoning.scan import CLEAN_ALLOWANCE, risk_from_fraction


def test_poi_scan_a2o_reconstructs_trigger_and_mitigation_removes_backdoor(
    a2o: tuple[Poisoned, ProbeView], a2o_scan: ScanReport
) -> None:
    p, _ = a2o
    r = a2o_scan
    assert r.band == "critical"
    # exactly one *working* trigger, into the target class (other shared patterns may be
    # reported as unverified candidates)
    assert [t.target for t, ok in zip(r.triggers, r.verified, strict=True) if ok] == [0]
    assert r.asr_before[0] >= 0.5  # the reconstructed trigger works on a probe
    # every poison sample carries it, and (almost) nothing clean does
    assert (r.carrier & p.is_poison).sum() == p.is_poison.sum()
    assert (r.carrier & ~p.is_poison).sum() <= 2
    assert set(r.reasons) == set(r.flagged)
    assert all(r.reasons.values())  # never an empty reason
    assert "remove_trigger_carriers" in [m.action for m in r.mitigations]
    m = mitigate(p.x, p.y, report=r)
    assert m.passed, m.reason
    assert m.asr_after[0] <= 0.05
    assert not m.keep[p.is_poison].any()


def test_poi_scan_replacing_a2o_keeps_class_sizes_and_is_caught(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    p = poison(x, y, attack="a2o_replace", rate=0.05, rng=np.random.default_rng(2))
    assert (np.bincount(p.y) == np.bincount(y)).all()
    r = scan(p.x, p.y)
    assert r.risk_score >= 70
    assert (r.flags & p.is_poison).sum() >= 0.7 * p.is_poison.sum()


def test_poi_scan_two_class_backdoor(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    sel = np.isin(y, [3, 8])
    x2, y2 = x[sel], (y[sel] == 8).astype(np.int64)
    p = poison(x2, y2, attack="a2o", rate=0.1, rng=np.random.default_rng(4), target=1)
    r = scan(p.x, p.y)
    assert r.risk_score >= 70
    assert (r.flags & p.is_poison).sum() >= 0.7 * p.is_poison.sum()


def test_poi_scan_flips_relabelled_by_neighbours(flips: tuple[Poisoned, ProbeView]) -> None:
    p, _ = flips
    r = scan(p.x, p.y)
    tp = (r.flags & p.is_poison).sum()
    assert tp / r.flags.sum() > 0.8
    assert tp / p.is_poison.sum() > 0.7
    assert "relabel_by_neighbours" in [m.action for m in r.mitigations]
    m = mitigate(p.x, p.y, report=r)
    clean_y = np.asarray(p.y).copy()
    assert m.relabelled == r.noise.sum()
    # most relabelled samples get their true label back
    x0, y0 = _digits_truth()
    assert (m.labels[r.noise] == y0[r.noise]).mean() > 0.8
    assert (clean_y != m.labels).sum() == m.relabelled
    assert x0.shape[0] == len(m.labels)


def _digits_truth() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x, y.astype(np.int64)


def _producer_dataset(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    x, y = digits
    x, y = x.copy(), y.copy()
    rng = np.random.default_rng(3)
    producer = np.array([f"kinesis-shard-{i}" for i in rng.integers(0, 4, len(y))])
    own = np.flatnonzero((producer == "kinesis-shard-2") & (y != 0))
    pick = rng.choice(own, 130, replace=False)
    x[pick] = add_patch(x[pick])
    y[pick] = 0
    truth = np.zeros(len(y), dtype=bool)
    truth[pick] = True
    return x, y, producer, truth


def test_poi_scan_names_poisoned_producer(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y, producer, _ = _producer_dataset(digits)
    r = scan(x, y, producer=producer)
    assert r.poisoned_producers == ["kinesis-shard-2"]
    q = next(m for m in r.mitigations if m.action == "quarantine_producer")
    assert q.evidence["producer"] == "kinesis-shard-2"
    assert q.evidence["p_value_bonferroni"] < 1e-3
    doc = json.loads(r.to_json())
    for key in ("risk_score", "calibrated", "flagged", "scores", "per_class", "triggers"):
        assert key in doc
    assert {"action", "reason", "evidence"} == set(doc["mitigations"][0])


def test_poi_producers_of_one_class_each_not_named_on_clean_data(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    # each producer supplies (mostly) one class: class mix must not be mistaken for poison
    x, y = digits
    rng = np.random.default_rng(0)
    producer = np.where(rng.random(len(y)) < 0.9, y, rng.integers(0, 10, len(y))).astype(str)
    r = scan(x, y, producer=producer)
    assert r.poisoned_producers == []


def test_poi_scan_uncalibrated_on_unlearnable_data_not_critical() -> None:
    # random labels on random features: nothing to learn; the scan must say so, not alarm
    rng = np.random.default_rng(0)
    x, y = rng.random((600, 20)), rng.integers(0, 3, 600)
    r = scan(x, y)
    assert r.calibrated is False
    assert r.calibration["reason"]
    assert r.risk_score < 20
    assert r.flags.mean() <= 0.05
    assert r.mitigations[0].action == "review_manually"


def test_poi_scan_clean_is_low(clean_digits_scan: ScanReport) -> None:
    r = clean_digits_scan  # the ``clean`` fixture's data is the digits unchanged
    assert r.calibrated is True
    assert r.band == "low"
    assert r.flags.mean() <= 0.05
    assert r.mitigations[-1].action == "proceed"


def test_poi_scan_larger_easy_class_not_flagged(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # a clean class 1.5× larger than the others (item 4: the low-loss rule is within-class)
    from saip_poisoning.detectors import LossTrajectory
    from saip_poisoning.model import fit_probe

    x, y = digits
    keep = (y == 0) | (np.random.default_rng(0).random(len(y)) < 0.67)
    x2, y2 = x[keep], y[keep]
    r = scan(x2, y2)
    assert r.risk_score < 20
    assert r.per_class[0]["flagged_fraction"] < 0.05
    from saip_poisoning.data import prepare

    d = prepare(x2, y2)
    assert (
        LossTrajectory().detect(d, model=fit_probe(d.xs, d.y, n_classes=10)).suspect_classes == ()
    )


def test_poi_bands_and_noise_risk_monotone() -> None:
    assert [b for _, b in BANDS] == ["low", "guarded", "high", "critical"]
    assert band(19.9) == "low"
    assert band(20) == "guarded"
    assert band(70) == "critical"
    risks = [risk_from_fraction(f) for f in np.linspace(0, 1, 21)]
    assert risks == sorted(risks)
    assert risk_from_fraction(CLEAN_ALLOWANCE) == 0.0
    with pytest.raises(ValueError):
        risk_from_fraction(1.5)


def test_poi_client_filter_drops_poison(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y, _, truth = _producer_dataset(digits)
    keep = client_filter(x, y)
    assert keep.dtype == np.bool_
    assert (~keep & truth).sum() > 0.9 * truth.sum()
    assert (~keep & ~truth).sum() < 0.05 * (~truth).sum()


def test_poi_client_filter_caps_the_dropped_share(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # 130 poisoned samples, but the client may drop at most 2% of its shard: only the
    # highest-scoring ones go, so a scan that over-flags cannot silently empty a shard
    x, y, _, truth = _producer_dataset(digits)
    keep = client_filter(x, y, max_drop_fraction=0.02)
    cap = int(np.floor(0.02 * len(y)))
    assert cap < truth.sum()
    assert (~keep).sum() == cap
    assert (~keep & truth).sum() > cap // 2  # the highest scores kept out are mostly poison


def test_poi_client_filter_min_per_class_5(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    # classes with 5–9 samples: prepared once with min_per_class=5, no detector re-prepares
    sel = np.concatenate([np.flatnonzero(y == c)[: 7 if c < 3 else 60] for c in range(10)])
    keep = client_filter(x[sel], y[sel], min_per_class=5)
    assert keep.shape == sel.shape
    one = np.concatenate([np.flatnonzero(y == 1)[:20], np.flatnonzero(y == 2)[:2]])
    assert client_filter(x[one], y[one]).all()
    with pytest.raises(ValueError, match="max_drop_fraction"):
        client_filter(x, y, max_drop_fraction=0)


def test_poi_scan_under_float64_default_dtype(digits: tuple[np.ndarray, np.ndarray]) -> None:
    # torch used elsewhere in the process with float64 as its default dtype: the probe's layers
    # must stay float32 like its inputs (else the first forward pass raises an untyped
    # RuntimeError), and the report must be the one a float32 default gives
    import torch

    x, y = digits
    x, y = x[:400], y[:400]
    ref = scan(x, y, seed=0, verify=False).to_json()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = scan(x, y, seed=0, verify=False).to_json()
    finally:
        torch.set_default_dtype(old)
    assert got == ref
