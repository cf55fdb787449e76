"""Fusion: risk bands, flags, per-producer naming, mitigations, the client hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
from saip_poisoning import BANDS, band, client_filter, scan
from saip_poisoning.attacks import Poisoned, add_patch
from saip_poisoning.model import ProbeView
from saip_poisoning.scan import CLEAN_ALLOWANCE, risk_from_fraction


def test_poi_bands_documented_and_monotone() -> None:
    assert [b for _, b in BANDS] == ["low", "guarded", "high", "critical"]
    assert band(0) == "low"
    assert band(19.9) == "low"
    assert band(20) == "guarded"
    assert band(40) == "high"
    assert band(69.9) == "high"
    assert band(70) == "critical"
    risks = [risk_from_fraction(f) for f in np.linspace(0, 1, 21)]
    assert risks == sorted(risks)
    assert risk_from_fraction(CLEAN_ALLOWANCE) == 0.0
    assert risk_from_fraction(0.10) > 90
    assert risk_from_fraction(0.0, class_evidence=True) == 50.0
    with pytest.raises(ValueError):
        risk_from_fraction(1.5)


def test_poi_scan_clean_is_low(clean: tuple[Poisoned, ProbeView]) -> None:
    p, view = clean
    r = scan(p.x, p.y, model=view)
    assert r.band == "low"
    assert r.risk_score < 20
    assert r.flags.mean() <= 0.05
    assert [m.action for m in r.mitigations] == ["proceed"]


def test_poi_scan_a2o_high_risk_and_finds_poison(a2o: tuple[Poisoned, ProbeView]) -> None:
    p, view = a2o
    r = scan(p.x, p.y, model=view)
    assert r.risk_score >= 70
    tp = (r.flags & p.is_poison).sum()
    # digits a2o_10 is the weakest case measured (F1 ≈ 0.55–0.6, benchmarks/results/poisoning.json)
    assert tp / r.flags.sum() > 0.45
    assert tp / p.is_poison.sum() > 0.5
    # the fused score ranks poison above clean
    assert np.median(r.scores[p.is_poison]) > np.median(r.scores[~p.is_poison])
    assert r.per_class[0]["class_tests"]  # the target class is named
    actions = [m.action for m in r.mitigations]
    assert "drop_flagged_and_retrain" in actions
    assert "audit_target_class" in actions
    audit = next(m for m in r.mitigations if m.action == "audit_target_class")
    assert audit.evidence["class"] == 0
    assert audit.evidence["size_ratio_to_median"] > 1.5
    assert set(r.reasons) == set(r.flagged)


def test_poi_scan_flips_recommend_relabel(flips: tuple[Poisoned, ProbeView]) -> None:
    p, view = flips
    r = scan(p.x, p.y, model=view)
    tp = (r.flags & p.is_poison).sum()
    assert tp / r.flags.sum() > 0.7
    assert tp / p.is_poison.sum() > 0.7
    assert "relabel_or_review" in [m.action for m in r.mitigations]


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
    pp = r.per_producer
    assert pp["kinesis-shard-2"]["risk_score"] > max(
        v["risk_score"] for k, v in pp.items() if k != "kinesis-shard-2"
    )
    q = next(m for m in r.mitigations if m.action == "quarantine_producer")
    assert q.evidence["producer"] == "kinesis-shard-2"
    assert q.evidence["p_value"] < 1e-3
    doc = json.loads(r.to_json())
    for key in ("risk_score", "flagged", "scores", "per_class", "per_producer", "mitigations"):
        assert key in doc
    assert doc["per_producer"]["kinesis-shard-2"]["flagged"] == pp["kinesis-shard-2"]["flagged"]
    assert {"action", "reason", "evidence"} == set(doc["mitigations"][0])
    assert len(doc["scores"]) == len(y)


def test_poi_client_filter_drops_poison(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y, _, truth = _producer_dataset(digits)
    keep = client_filter(x, y)
    assert keep.dtype == np.bool_
    assert keep.shape == y.shape
    assert (~keep & truth).sum() > 0.6 * truth.sum()
    assert (~keep & ~truth).sum() < 0.05 * (~truth).sum()


def test_poi_client_filter_small_shard_and_cap(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    # a shard where only one class has enough samples: nothing to compare, keep all
    sel = np.concatenate([np.flatnonzero(y == 1)[:20], np.flatnonzero(y == 2)[:2]])
    assert client_filter(x[sel], y[sel]).all()
    with pytest.raises(ValueError, match="max_drop_fraction"):
        client_filter(x, y, max_drop_fraction=0)
