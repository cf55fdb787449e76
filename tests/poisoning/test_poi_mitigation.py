"""Mitigation and its verification gate: attacks the reconstruction misses first, then a trigger
that is a natural extreme of the data (counter-examples), then a blended key flagged by another
detector (reconstructed from the flags)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from saip_poisoning import ScanReport, mitigate, prepare, scan
from saip_poisoning.attacks import Poisoned, poison
from saip_poisoning.trigger import counter_examples
from sklearn.datasets import load_breast_cancer


def _two_triggers(digits: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, Poisoned]:
    """10 % all-to-one into class 0: half with the bottom-right patch, half with a top-left one.
    The scan reconstructs one trigger per class, so the second is missed by the mitigation."""
    x, y = digits
    p = poison(x, y, attack="a2o", rate=0.10, rng=np.random.default_rng(7))
    idx = np.flatnonzero(p.is_poison)
    half = idx[: len(idx) // 2]
    imgs = p.x.copy().reshape(-1, 8, 8)
    imgs[half] = x[half].reshape(-1, 8, 8)
    imgs[half, 1:3, 1:3] = 1.0
    return imgs.reshape(len(y), -1), p


@pytest.mark.parametrize("unlearn", [0.0, 0.2])
def test_poi_mitigation_refuses_a_trigger_the_reconstruction_misses(
    digits: tuple[np.ndarray, np.ndarray], unlearn: float
) -> None:
    xx, p = _two_triggers(digits)
    r = scan(xx, p.y)
    assert r.carrier[p.is_poison].sum() < p.is_poison.sum()  # only one trigger reconstructed
    m = mitigate(xx, p.y, report=r, unlearn=unlearn)
    # the counter-examples teach the probe to ignore the *reconstructed* trigger; they must not
    # hide the missed one: the re-scan of the kept data (without them) still finds it
    assert not m.passed
    assert "a working trigger into class(es) [0] remains" in m.reason
    assert (m.keep & p.is_poison).sum() > 0


def _breast_a2o() -> tuple[np.ndarray, np.ndarray, Poisoned]:
    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.min(0)) / (x.max(0) - x.min(0))
    p = poison(x, y.astype(np.int64), attack="a2o", rate=0.10, rng=np.random.default_rng(1))
    return x, y.astype(np.int64), p


def test_poi_mitigation_removal_alone_fails_on_a_natural_extreme_trigger() -> None:
    # max values on the last features: a clean model already leans to class 0 on them, so
    # removing every carrier is not enough, and the gate says so
    _, _, p = _breast_a2o()
    r = scan(p.x, p.y)
    m = mitigate(p.x, p.y, report=r)
    assert not (m.keep & p.is_poison).any()  # every carrier removed...
    assert not m.passed  # ...and still refused
    assert m.asr_after[0] > 0.05


def test_poi_mitigation_counter_examples_remove_a_natural_extreme_trigger() -> None:
    x, _y, p = _breast_a2o()
    r = scan(p.x, p.y)
    m = mitigate(p.x, p.y, report=r, unlearn=0.2)
    assert m.passed, m.reason
    assert m.asr_after[0] <= 0.05
    assert m.asr_removal_only[0] > 0.05  # the counter-examples did it, and it is reported
    assert m.counter_x is not None
    assert m.counter_y is not None
    # counter-examples: kept clean samples of other classes, triggered, with their own label,
    # in the caller's units
    assert len(m.counter_y) > 0
    assert (m.counter_y != 0).all()
    d = x.shape[1]
    assert np.allclose(m.counter_x[:, d - 3 :], 1.0)
    assert m.counter_x.min() >= 0.0
    assert m.counter_x.max() <= 1.0
    assert m.to_dict()["counter_examples"] == len(m.counter_y)


def test_poi_counter_examples_never_use_carriers_or_removed_samples() -> None:
    _, _, p = _breast_a2o()
    r = scan(p.x, p.y)
    data = prepare(p.x, p.y)
    live = [t for t, ok in zip(r.triggers, r.verified, strict=True) if ok]
    keep = ~r.carrier
    keep[:50] = False
    _, cy, src = counter_examples(data, live, keep=keep, share=0.3, seed=0)
    assert len(src) == len(cy)
    assert keep[src].all()
    assert not p.is_poison[src].any()
    assert np.array_equal(cy, p.y[src])
    with pytest.raises(ValueError, match="unlearn"):
        mitigate(p.x, p.y, report=r, unlearn=1.0)


def test_poi_mitigation_reconstructs_blend_from_another_detectors_flags(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = digits
    p = poison(x, y, attack="blend", rate=0.10, rng=np.random.default_rng(1))
    r = scan(p.x, p.y)
    # another detector flags half of the blended samples (nothing of them is a carrier yet)
    poison_idx = np.flatnonzero(p.is_poison)
    half = np.random.default_rng(3).choice(poison_idx, len(poison_idx) // 2, replace=False)
    flags = np.zeros_like(r.flags)
    flags[half] = True
    empty = np.zeros_like(r.flags)
    fake = dataclasses.replace(
        r, flags=flags, carrier=empty, noise=empty, verified=tuple(False for _ in r.verified)
    )
    m = mitigate(p.x, p.y, report=fake, unlearn=0.2)
    kinds = [t.kind for t in m.triggers]
    assert kinds == ["flagged"]
    # the unflagged half is found through the reconstructed key
    assert (m.keep & p.is_poison).sum() <= 0.1 * p.is_poison.sum()
    assert (~m.keep & ~p.is_poison).sum() <= 0.02 * (~p.is_poison).sum()
    assert m.passed, m.reason


def test_poi_mitigation_counter_examples_only_where_removal_is_not_enough(
    a2o: tuple[Poisoned, object], a2o_scan: ScanReport
) -> None:
    # removing the carriers of a digits patch already kills it: no stamped copies of clean
    # samples are added (they cost clean accuracy on weak models: crops blend 0.51 → 0.31)
    p, _ = a2o
    r = a2o_scan
    m = mitigate(p.x, p.y, report=r, unlearn=0.2)
    assert m.passed, m.reason
    assert m.counter_x is None
    assert m.counter_y is None
    assert m.asr_removal_only == {}
    assert max(m.asr_after.values()) <= 0.05
