"""Label groups (``saip_poisoning.labelgroups``): label noise judged at the resolution the probe
can separate when it cannot judge every class. Attacker first: flips hidden inside a group,
flips planted to force a grouping, clean natural crops and overlapping data; then the happy path.

The crops here are 600-crop subsets of the benchmark's ``crops`` evaluation set (sklearn's two
sample photographs; classes = photo × upper/lower half): the upper and lower half of one photo
are confused by the probe, the two photos are not.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from saip_poisoning import ScanReport, mitigate, scan
from saip_poisoning.attacks import poison
from saip_poisoning.labelgroups import coarsen

from tests.poisoning._data import bench_load, natural_crops


@pytest.fixture(scope="module")
def crops() -> tuple[np.ndarray, np.ndarray]:
    return natural_crops(150, seed=0)


def _swap(
    y: np.ndarray, a: int, b: int, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel ``k`` samples of class ``a`` as ``b`` and ``k`` of ``b`` as ``a``."""
    rng = np.random.default_rng(seed)
    ia = rng.choice(np.flatnonzero(y == a), k, replace=False)
    ib = rng.choice(np.flatnonzero(y == b), k, replace=False)
    out = y.copy()
    out[ia], out[ib] = b, a
    return out, ia, ib


def _together(groups: list[list[str]], a: int, b: int) -> bool:
    return any(str(a) in g and str(b) in g for g in groups)


def test_poi_groups_flips_inside_a_group_are_declared_undetectable(
    crops: tuple[np.ndarray, np.ndarray],
) -> None:
    # attacker: swap 30 + 30 labels between the two halves of one photo (a pair the probe
    # cannot separate). Not found — and the report says so instead of staying silent
    x, y = crops
    ya, ia, ib = _swap(y, 0, 1, 30, seed=5)
    r = scan(x, ya, seed=0)
    lg = r.calibration["label_groups"]
    assert r.calibrated is False  # never a class-level claim
    assert lg["calibrated"] is True
    assert _together(lg["groups"], 0, 1)
    assert "not detectable" in lg["undetectable"]
    assert "{0, 1}" in lg["undetectable"]
    assert r.flags[np.concatenate([ia, ib])].sum() <= 3
    assert r.risk_score < 20


@pytest.mark.parametrize("k", [20, 40])
def test_poi_groups_planted_flips_never_hide_behind_a_grouping(
    crops: tuple[np.ndarray, np.ndarray], k: int
) -> None:
    # attacker: a targeted flip between two photos (class 2 → 0) plus as many planted flips the
    # other way (0 → 2), to make the probe confuse 0 and 2 symmetrically so that they are merged
    # into one group and the targeted flips become "within-group". Whatever the grouping, the
    # flips are either flagged, or the report names {0, 2} as one group whose flips it cannot
    # see, or the group level abstains (uncalibrated: the gate refuses by default) — never a
    # grouping that keeps 0 and 2 apart while the flips pass unflagged
    x, y = crops
    ya, ia, ib = _swap(y, 2, 0, k, seed=7)
    r = scan(x, ya, seed=0)
    lg = r.calibration["label_groups"]
    recall = float(r.flags[np.concatenate([ia, ib])].mean())
    if lg["calibrated"] and not _together(lg["groups"], 0, 2):
        assert recall >= 0.6, (lg["groups"], recall)
    else:
        assert r.calibrated is False
        assert lg["calibrated"] is False or "{0, 2}" in lg["undetectable"]
        assert lg.get("reason") or lg.get("undetectable")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_poi_groups_clean_crops_not_flagged(
    crops: tuple[np.ndarray, np.ndarray], seed: int
) -> None:
    x, y = crops
    r = scan(x, y, seed=seed)
    lg = r.calibration["label_groups"]
    assert r.calibrated is False
    assert lg["calibrated"] is True
    assert lg["groups"] == [["0", "1"], ["2", "3"]]
    assert r.flags.mean() <= 0.02  # the rule's clean allowance
    assert r.risk_score < 20
    json.dumps(r.to_dict())  # the group calibration is JSON-able


def test_poi_groups_two_overlapping_classes_abstain() -> None:
    # two clean Gaussian classes 1.0 SD apart in 10-d: too hard to judge, and two classes have
    # no coarser grouping — the group level must abstain, with a reason, and flag nothing
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 300)
    x = rng.normal(size=(600, 10))
    x[:, 0] += 1.0 * y
    r = scan(x, y, seed=0)
    assert r.calibrated is False
    lg = r.calibration["label_groups"]
    assert lg["calibrated"] is False
    assert "two classes" in lg["reason"]
    assert not r.flags.any()
    assert r.risk_score < 20


def test_poi_groups_overlapping_tertiles_abstain() -> None:
    # boston3 (benchmark clean control, an evaluation set): a price cut in tertiles, adjacent
    # tertiles overlap. Merging two of them leaves the overlapping boundary; with floors at the
    # validated range only (agreement 0.88) the group level passed at 0.894-0.896 and flagged
    # 5-6 % of this clean data (risk ≥ 70) — the reason the agreement floor is the clean tuning
    # sets' 0.92 (+ 2 SE)
    from mlxtend.data import boston_housing_data

    x, t = boston_housing_data()
    x = (x - x.min(0)) / (x.max(0) - x.min(0) + 1e-12)
    y = np.digitize(t, np.quantile(t, [1 / 3, 2 / 3])).astype(np.int64)
    train = np.random.default_rng(0).permutation(len(y))[: int(0.8 * len(y))]  # benchmark split
    x, y = x[train], y[train]
    for seed in (0, 1, 2):
        r = scan(x, y, seed=seed)
        assert r.calibrated is False
        assert r.calibration["label_groups"]["calibrated"] is False
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20


def test_poi_groups_not_used_on_calibrated_data(clean_digits_scan: ScanReport) -> None:
    r = clean_digits_scan
    assert r.calibrated is True
    assert "label_groups" not in r.calibration
    assert r.calibration["risk_components"]["label_noise_groups"] == 0.0


def test_poi_groups_find_cross_group_flips_and_mitigation_removes_them() -> None:
    # the benchmark's crops training split (1,920 crops), flip 10 %. On the 600-crop subsets
    # the label-noise rule's depth test reads the group-level flags as natural overlap (mean
    # depth 0.38) and the group level abstains
    x, y = bench_load("crops")
    train = np.random.default_rng(0).permutation(len(y))[: int(0.8 * len(y))]
    x, y = x[train], y[train]
    p = poison(x, y, attack="flip", rate=0.10, rng=np.random.default_rng(1))
    r = scan(p.x, p.y, seed=0)
    lg = r.calibration["label_groups"]
    assert r.calibrated is False
    assert lg["calibrated"] is True
    cross = p.is_poison & (y // 2 != p.y // 2)  # flipped to the other photo
    assert r.flags[cross].mean() >= 0.6
    assert r.flags[p.is_poison].sum() / r.flags.sum() >= 0.6
    assert r.risk_score >= 20
    for i in np.flatnonzero(r.flags):
        assert "label-group level" in r.reasons[int(i)]
    # no class is known well enough to relabel to: every flag removed by mitigate
    assert lg["removed_by_mitigate"] == int(r.flags.sum())
    assert (r.relabel[r.flags] == -1).all()
    actions = [m.action for m in r.mitigations]
    assert "remove_label_group_noise" in actions
    assert "relabel_by_neighbours" not in actions
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert not m.keep[r.flags].any()
    assert (m.labels >= 0).all()
    assert (m.labels[m.keep] == p.y[m.keep]).all()


def test_poi_groups_coarsen_merges_the_confused_pair() -> None:
    # pure function on a synthetic probe: classes 0 and 1 confused (40 % each way), 2 and 3 clean
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 500)
    pred = y.copy()
    swap = (y < 2) & (rng.random(len(y)) < 0.4)
    pred[swap] = 1 - y[swap]
    oof = np.full((len(y), 4), 0.02)
    oof[np.arange(len(y)), pred] = 0.94
    # neighbours: 10 samples of the same predicted class
    by = {c: np.flatnonzero(pred == c) for c in range(4)}
    neigh = np.stack([rng.choice(by[int(c)], 10) for c in pred])
    lg, levels = coarsen(
        y, oof, neigh, probe="pixels", validated_accuracy=0.71, validated_agreement=0.92
    )
    assert lg is not None
    assert [lg.members(g) for g in range(lg.n_groups)] == [[0, 1], [2], [3]]
    assert levels[-1]["calibrated"] is True
    # two classes: nothing coarser
    lg2, levels2 = coarsen(
        y[y < 2],
        oof[y < 2][:, :2],
        neigh[y < 2],
        probe="p",
        validated_accuracy=0.71,
        validated_agreement=0.92,
    )
    assert lg2 is None
    assert levels2 == []


def _scan_poisoned(crops: tuple[np.ndarray, np.ndarray], attack: str) -> tuple[Any, Any]:
    """The crops subset poisoned at 10 % (``attack``, seed 1) and its scan (seed 0)."""
    x, y = crops
    p = poison(x, y, attack=attack, rate=0.10, rng=np.random.default_rng(1))  # type: ignore[arg-type]
    return p, scan(p.x, p.y, seed=0)


def test_poi_groups_abstained_group_level_flags_are_set_aside_not_counted(
    crops: tuple[np.ndarray, np.ndarray],
) -> None:
    # adversarial review: on this 600-crop subset at flip 10 % the group level's depth test
    # reads its flags as natural overlap and the group level abstains ("label noise not
    # judged"), yet its 31 flags were counted as poison (risk 71.8 "critical", recommendation
    # relabel_by_neighbours although relabel is -1). Like the class level: the abstained flags
    # are set aside (no risk), removed by mitigate and dropped by a keep-mask
    p, r = _scan_poisoned(crops, "flip")
    lg = r.calibration["label_groups"]
    assert r.calibrated is False
    assert lg["calibrated"] is False
    assert "depth test" in lg["reason"]
    assert lg["flagged"] > 0
    assert not r.noise.any()
    assert r.calibration["risk_components"]["label_noise_groups"] == 0.0
    assert r.risk_score < 20
    assert r.set_aside is not None
    assert int(r.set_aside.sum()) == lg["flagged"]
    assert not (r.set_aside & r.flags).any()
    assert (r.relabel[r.set_aside] == -1).all()
    for i in np.flatnonzero(r.set_aside):
        assert "abstained" in r.set_aside_reasons[int(i)]
        assert "label-group level" in r.set_aside_reasons[int(i)]
    actions = [m.action for m in r.mitigations]
    assert "relabel_by_neighbours" not in actions
    for relabel in (True, False):
        m = mitigate(p.x, p.y, report=r, relabel=relabel, seed=0)
        assert not m.keep[r.set_aside].any()
        assert (m.labels == p.y).all()  # nothing relabelled
    # the CLI summary said every set-aside flag was "clean-data level next to a flagged
    # pattern" (there is no pattern here)
    from saip.commands.scan import _summary

    assert not r.carrier.any()
    caption = str(_summary(r, n=len(p.y)).caption)
    assert f"{lg['flagged']} label-noise flags set aside" in caption
    assert "next to a flagged pattern" not in caption


def test_poi_groups_depth_evidence_names_groups_without_rewriting_text(
    crops: tuple[np.ndarray, np.ndarray],
) -> None:
    # the group level built its reason with str.replace("class", "group") on the class-level
    # sentence ("than the groupes' own members"; any other "class" in it rewritten too) and
    # its own depth report still said "class boundary": the depth test now takes the noun
    _, r = _scan_poisoned(crops, "flip")
    lg = r.calibration["label_groups"]
    evidence = lg["label_noise_depth"]["overlap_evidence"]
    assert evidence.startswith("lie nearer the group boundary than the groups' own members (")
    assert "class" not in evidence
    assert evidence in lg["reason"]
    assert "groupes" not in lg["reason"]


def _gaussian_line(k: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``k`` clean Gaussian classes of 250 in 10-d, class ``c`` shifted by ``c · sep`` SD on the
    first axis: adjacent classes overlap partially (not tuning data: nothing was set on it)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), 250)
    x = rng.normal(size=(len(y), 10))
    x[:, 0] += sep * y
    return x, y


@pytest.mark.parametrize(("k", "sep", "seed"), [(4, 2.0, 1), (5, 1.5, 2), (3, 2.5, 4), (3, 2.5, 5)])
def test_poi_groups_clean_overlapping_gaussians_not_flagged(k: int, sep: float, seed: int) -> None:
    # adversarial review: the group level abstained (depth test) on these clean classes but its
    # flags still counted: 3.4 % / 4.1 % flagged, risk 42.9 / 56.5 — now set aside, risk 0.
    # 3 classes: the class level abstained (its flags set aside), then the group level flagged
    # 13 / 18 of the same samples — "set aside, not counted as poison" and flagged at once
    # (draw 5: 25 flagged, risk 41.3)
    x, y = _gaussian_line(k, sep, seed)
    r = scan(x, y, seed=0)
    assert r.calibrated is False
    assert r.flags.mean() <= 0.05
    assert r.risk_score < 20
    assert r.set_aside is not None
    assert not (r.set_aside & r.flags).any()
    assert set(r.set_aside_reasons) == {int(i) for i in np.flatnonzero(r.set_aside)}
    assert all(r.reasons[int(i)] for i in np.flatnonzero(r.flags))
    assert all(r.set_aside_reasons.values())


def test_poi_clean_three_gaussian_classes_partial_overlap_draw_0_not_flagged() -> None:
    """Draw 0 of the review's three classes 2 SD apart (was 7.1 % flagged, risk 86.8: it
    passes both depth tests, and its probe/neighbour agreement 0.800 sat exactly on the
    floor): the pixel probe's floor now applies to a one-sided lower bound (the floor plus
    1.645 binomial standard errors, ``floor_margin``; 0.824 at n = 750), which the agreements
    0.800–0.815 of scan seeds 0–2 miss, so the label-noise rule does not run. Evaluation data:
    scored after the margin was set on the tuning sets and fresh draws."""
    x, y = _gaussian_line(3, 2.0, 0)
    for s in (0, 1, 2):  # the clean goal holds over scan seeds 0-2
        r = scan(x, y, seed=s)
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20


def test_poi_clean_three_gaussian_classes_partial_overlap_draw_3_not_flagged() -> None:
    """Draw 3 of the review's three classes 2 SD apart (was 12 % flagged, risk 98, mean depth
    0.44 above the 0.43 cut): its flags sit on their label's edge of the class they lie in (side
    depth 0.38 < 0.40, ``_side_depth``), so the label-noise rules abstain on scan seeds 0–2.
    Evaluation data: scored after the cut was set on other draws and the tuning flips."""
    x, y = _gaussian_line(3, 2.0, 3)
    for s in (0, 1, 2):
        r = scan(x, y, seed=s)
        assert r.flags.mean() <= 0.05
        assert r.risk_score < 20


def test_poi_groups_set_aside_group_flags_say_they_are_removed(
    crops: tuple[np.ndarray, np.ndarray],
) -> None:
    # adversarial review: group-level flags set aside next to a verified trigger (8 here, at
    # most the clean allowance) have relabel -1, so mitigate removes them — their reason said
    # "mitigate relabels it"
    p, r = _scan_poisoned(crops, "a2o")
    assert r.carrier.any()
    assert r.set_aside is not None
    idx = np.flatnonzero(r.set_aside & (r.relabel < 0))
    assert len(idx) > 0
    for i in idx:
        why = r.set_aside_reasons[int(i)]
        assert "mitigate removes it" in why
        assert "mitigate relabels it" not in why
    m = mitigate(p.x, p.y, report=r, seed=0)
    assert not m.keep[idx].any()
    assert (m.labels[idx] == p.y[idx]).all()
