"""Repair of stamped-trigger carriers (``mitigate(repair=True)``): hostile cases first — a repair
that leaves the trigger, a mask that misses part of the patch, carriers whose content is the
target class, the trigger value never left on the mask, nothing lost, determinism — then the
happy path on digits (a tuning set)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import saip_poisoning.mitigation as mitigation
from saip_poisoning import ScanReport, mitigate, prepare, scan
from saip_poisoning.attacks import Poisoned, add_patch, poison
from saip_poisoning.model import predict_proba, train_mlp
from saip_poisoning.trigger import Trigger

#: digits' BadNets patch: 2×2 at rows/columns 5–6 of the 8×8 image, value 1.0
PATCH = np.zeros((8, 8), dtype=bool)
PATCH[5:7, 5:7] = True
PATCH_FLAT = PATCH.ravel()


@pytest.fixture(scope="module")
def a2o_scan(digits: tuple[np.ndarray, np.ndarray]) -> tuple[Poisoned, ScanReport]:
    x, y = digits
    p = poison(x, y, attack="a2o", rate=0.10, rng=np.random.default_rng(7))
    return p, scan(p.x, p.y, seed=0)


def _true_asr(xa: np.ndarray, ya: np.ndarray, x: np.ndarray, y: np.ndarray) -> float:
    """ASR of the attacker's *true* patch on an MLP trained on what the mitigation returned:
    share of non-target samples the model gets right that the patch sends to class 0."""
    scale = float(xa.std())
    net = train_mlp(xa / scale, ya, n_classes=10, seed=0)
    src = x[y != 0]
    right = predict_proba(net, src / scale).argmax(1) == y[y != 0]
    hit = predict_proba(net, add_patch(src[right]) / scale).argmax(1) == 0
    return float(hit.mean())


def _stamp_trigger(r: ScanReport) -> Trigger:
    live = [t for t, ok in zip(r.triggers, r.verified, strict=True) if ok]
    assert len(live) == 1
    assert live[0].kind == "stamp"
    return live[0]


def test_poi_repair_that_leaves_the_trigger_falls_back_to_removal(
    a2o_scan: tuple[Poisoned, ScanReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hostile: a repair that changes nothing (labelled a fake: it returns the carriers as they
    are, with the attacker's label) must not pass. The verification (ASR on kept + repaired, the
    re-scan of kept + repaired) catches it, and mitigate falls back to removal and says so."""
    p, r = a2o_scan

    def no_repair(data, triggers, rows, donors, labels, **kw):  # type: ignore[no-untyped-def]
        return mitigation._Repair(rows=rows, xs=data.xs[rows], labels=labels[rows], dropped={})

    monkeypatch.setattr(mitigation, "_repair", no_repair)
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert "failed the verification" in m.reason
    assert "fell back to removing them" in m.reason
    assert m.n_repaired == 0
    assert not (m.keep & p.is_poison).any()
    assert m.passed, m.reason  # removal itself verifies on digits


def test_poi_repair_mask_missing_half_the_patch_never_passes_a_working_backdoor(
    digits: tuple[np.ndarray, np.ndarray], a2o_scan: tuple[Poisoned, ScanReport]
) -> None:
    """Hostile: the reconstructed mask covers only half of the attacker's patch, so every
    repaired carrier keeps the other half. Either the verification refuses (or mitigate falls
    back to removal), or what it returns no longer teaches the attacker's patch: never a pass
    with the true trigger working."""
    x, y = digits
    p, r = a2o_scan
    t = _stamp_trigger(r)
    assert t.fixed is not None
    half = t.fixed.copy()
    half[np.flatnonzero(half)[2:]] = False  # keep 2 of the 4 patch coordinates
    t_half = dataclasses.replace(t, fixed=half, delta=np.where(half, t.delta, 0.0), n_coords=2)
    forged = dataclasses.replace(r, triggers=(t_half,), verified=(True,))
    m = mitigate(p.x, p.y, report=forged, seed=0)
    xa, ya = m.training_set(p.x)
    fell_back = "fell back to removing" in m.reason
    if m.passed and not fell_back:
        assert _true_asr(xa, ya, x, y) <= 0.05, m.reason
    # whatever happened, the repaired inputs hold none of the forged trigger's values
    if m.n_repaired:
        assert m.repaired_x is not None
        assert not np.isclose(m.repaired_x[:, half], 1.0).any()


def test_poi_repair_carriers_whose_content_is_the_target_class(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """Hostile: besides 10 % relabelled carriers, the attacker stamps 60 genuine "0"s (target
    content, target label). Their repair must give them back class 0 (the relabel uses the
    neighbours' labels, never the carrier's), the others their own class, and no repaired
    sample keeps the patch."""
    x, y = digits
    p = poison(x, y, attack="a2o", rate=0.10, rng=np.random.default_rng(7))
    zeros = np.flatnonzero((y == 0) & ~p.is_poison)[:60]
    xx = p.x.copy()
    xx[zeros] = add_patch(x[zeros])
    r = scan(xx, p.y, seed=0)
    m = mitigate(xx, p.y, report=r, seed=0)
    assert m.passed, m.reason
    assert m.repaired is not None
    assert m.repaired_x is not None
    rep_zeros = zeros[m.repaired[zeros]]
    assert len(rep_zeros) >= 50
    assert (m.labels[rep_zeros] == 0).mean() >= 0.9
    rep_poison = np.flatnonzero(m.repaired & p.is_poison)
    assert (m.labels[rep_poison] == y[rep_poison]).mean() >= 0.9
    assert not np.isclose(m.repaired_x[:, PATCH_FLAT], 1.0).all(axis=1).any()


def test_poi_repair_never_leaves_the_trigger_value_on_the_mask(
    a2o_scan: tuple[Poisoned, ScanReport],
) -> None:
    p, r = a2o_scan
    t = _stamp_trigger(r)
    assert t.fixed is not None
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert m.repaired_x is not None
    assert m.n_repaired > 0
    # not one masked coordinate of a repaired sample keeps the stamped value
    assert not np.isclose(m.repaired_x[:, t.fixed], 1.0).any()
    # and the repaired inputs carry no trigger by the reconstruction's own test
    xa, _ = m.training_set(p.x)
    assert not np.isclose(xa[:, PATCH_FLAT], 1.0).all(axis=1).any()


def test_poi_repair_accounts_for_every_sample(a2o_scan: tuple[Poisoned, ScanReport]) -> None:
    """Nothing is lost: every sample is kept, relabelled, repaired, or removed with a reason."""
    p, r = a2o_scan
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert m.fate is not None
    assert m.repaired is not None
    assert len(m.fate) == len(p.y)
    removed = np.char.startswith(m.fate, "removed: ")
    assert all(len(f) > len("removed: ") for f in m.fate[removed])
    assert np.array_equal(m.keep, np.isin(m.fate, ["kept", "relabelled"]))
    assert np.array_equal(m.repaired, m.fate == "repaired")
    assert np.array_equal(removed, ~m.keep & ~m.repaired)
    assert not (m.keep & m.repaired).any()
    # the poison is repaired or removed, never kept as it was
    assert not (m.keep & p.is_poison).any()
    assert m.to_dict()["repaired"] == m.n_repaired
    _, ya = m.training_set(p.x)
    assert len(ya) == int(m.keep.sum()) + m.n_repaired
    with pytest.raises(ValueError, match="samples"):
        m.training_set(p.x[:-1])


def test_poi_repair_is_deterministic(a2o_scan: tuple[Poisoned, ScanReport]) -> None:
    p, r = a2o_scan
    a = mitigate(p.x, p.y, report=r, seed=0)
    b = mitigate(p.x, p.y, report=r, seed=0)
    assert np.array_equal(a.keep, b.keep)
    assert np.array_equal(a.labels, b.labels)
    assert a.repaired is not None
    assert b.repaired is not None
    assert np.array_equal(a.repaired, b.repaired)
    assert a.repaired_x is not None
    assert b.repaired_x is not None
    assert np.array_equal(a.repaired_x, b.repaired_x)
    assert a.reason == b.reason


def test_poi_repair_options_validated(a2o_scan: tuple[Poisoned, ScanReport]) -> None:
    p, r = a2o_scan
    with pytest.raises(TypeError, match="repair must be a bool"):
        mitigate(p.x, p.y, report=r, repair="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_asr"):
        mitigate(p.x, p.y, report=r, max_asr=1.5)


def test_poi_repair_blend_carriers_are_removed_not_repaired(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """A blended key is only an estimate (its weight is under-estimated): un-blending would
    leave a residue, so its carriers are removed."""
    x, y = digits
    p = poison(x, y, attack="blend", rate=0.10, rng=np.random.default_rng(7))
    r = scan(p.x, p.y, seed=0)
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert m.n_repaired == 0
    assert not (m.keep & p.is_poison).any() or not m.passed


def test_poi_repair_happy_path_digits(
    digits: tuple[np.ndarray, np.ndarray], a2o_scan: tuple[Poisoned, ScanReport]
) -> None:
    """Digits a2o 10 % (tuning set): every carrier repaired, relabelled to its true class, the
    attacker's true patch does not work on a model trained on what mitigate returns."""
    x, y = digits
    p, r = a2o_scan
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert m.passed, m.reason
    assert "carriers repaired and relabelled" in m.reason
    assert m.repaired is not None
    assert m.n_repaired >= 0.9 * p.is_poison.sum()
    rep = m.repaired & p.is_poison
    assert (m.labels[rep] == y[rep]).mean() >= 0.95
    xa, ya = m.training_set(p.x)
    assert _true_asr(xa, ya, x, y) <= 0.05
    # a keep-mask caller can still ask for removal
    m0 = mitigate(prepare(p.x, p.y), report=r, seed=0, repair=False)
    assert m0.n_repaired == 0
    assert not (m0.keep & p.is_poison).any()


def test_poi_repair_not_on_an_uncalibrated_scan(
    a2o_scan: tuple[Poisoned, ScanReport],
) -> None:
    """Where the scan cannot judge labels (here forced: agreement floor 0.999), the vote that
    would relabel a repaired carrier cannot be trusted either (crops: 52 % right new labels):
    the carriers are removed, never repaired, and the reason says why."""
    p, _ = a2o_scan
    r = scan(p.x, p.y, seed=0, min_agreement=0.999)
    assert not r.calibrated
    t = _stamp_trigger(r)
    assert mitigation._repairable(t)
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert m.n_repaired == 0
    assert "removed, not repaired: the scan is uncalibrated" in m.reason
    assert not (m.keep & p.is_poison).any()
    assert all(f.startswith("removed") for f in m.fate[p.is_poison])
