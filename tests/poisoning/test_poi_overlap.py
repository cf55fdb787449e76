"""Label noise vs natural class overlap: the depth test that lets the label-noise rule abstain
(``saip_poisoning.scan._depth_test``).

Where classes overlap everywhere, uniform label noise and natural overlap look alike to any
per-sample rule; the rule flagged 4–13 % of clean overlapping Gaussians at risk 55–99. Under the
flip model a flipped sample lies as deep inside its true class as that class's own members;
overlap puts the flagged samples nearer the boundary. When they are (significantly, and by more
than the tuning sets' flip cells), the rule abstains and the scan reports ``calibrated: false``.

Attacker first: flips planted deep inside overlapping classes (where the test must keep them),
core flips hidden behind boundary flips that pull the mean depth down, and boundary-only flips
(indistinguishable from overlap: the scan abstains, and the gate refuses — never a pass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from saip_poisoning import scan


def _gaussians(sep: float, seed: int, n: int = 600) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two isotropic Gaussian classes in 10 d, means ``sep`` SD apart; each sample's signed
    distance into its own class along the axis joining the means."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int64)
    x = rng.normal(size=(n, 10))
    x[:, 0] += sep * y
    depth = np.where(y == 1, x[:, 0] - sep / 2, sep / 2 - x[:, 0])
    return x, y, depth


def _flip(y: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = y.copy()
    out[idx] = 1 - out[idx]
    truth = np.zeros(len(y), dtype=bool)
    truth[idx] = True
    return out, truth


@pytest.mark.parametrize("sep", [2.0, 3.0])
def test_poi_overlap_flips_planted_deep_in_overlapping_classes_found(sep: float) -> None:
    """Hostile: 5 % flips on the samples deepest inside their class, in data whose classes
    overlap (the clean data alone abstains at 2 SD): found, critical."""
    x, y, depth = _gaussians(sep, 0)
    core = np.argsort(-depth)[:30]
    yp, _ = _flip(y, core)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.calibration["label_noise_depth"]["identifiable"] is True
    assert r.flags[core].mean() >= 0.95
    assert r.risk_score >= 70


def test_poi_overlap_core_flips_hidden_behind_boundary_flips_found() -> None:
    """Hostile: 5 % core flips plus 10 % flips at the boundary, meant to pull the flags' mean
    depth down into the abstention zone: the core flips keep it near the flip model's."""
    x, y, depth = _gaussians(3.0, 0)
    core = np.argsort(-depth)[:30]
    edge = np.argsort(np.abs(depth))[:60]
    yp, _ = _flip(y, np.union1d(core, edge))
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.flags[core].mean() >= 0.95
    assert r.risk_score >= 70


def test_poi_overlap_random_flips_on_overlapping_classes_found() -> None:
    """Hostile: 10 % random flips on classes 3 SD apart (natural overlap plus real noise)."""
    x, y, _ = _gaussians(3.0, 0)
    idx = np.random.default_rng(5).choice(len(y), 60, replace=False)
    yp, truth = _flip(y, idx)
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated, r.calibration.get("reason")
    assert r.flags[truth].mean() >= 0.7
    assert r.risk_score >= 70


def test_poi_overlap_boundary_flips_abstain_and_the_gate_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hostile: 5 % flips on the samples nearest the boundary look like overlap (known limit:
    not flagged); the scan abstains — never a calibrated pass — and the CLI gate refuses."""
    from saip.cli import main

    x, y, depth = _gaussians(3.0, 0)
    yp, _ = _flip(y, np.argsort(np.abs(depth))[:30])
    r = scan(x, yp, seed=0, verify=False)
    assert r.calibrated is False
    assert r.calibration["label_noise_depth"]["identifiable"] is False
    assert "overlap" in r.calibration["reason"]
    path = tmp_path / "edge.npz"
    np.savez(path, x=x, y=yp)
    assert main(["scan", str(path)]) == 3
    assert "not calibrated" in capsys.readouterr().err


@pytest.mark.parametrize(("sep", "seed"), [(s, d) for s in (1.5, 2.0, 2.5) for d in (0, 1, 2)])
def test_poi_overlap_clean_gaussians_not_flagged(sep: float, seed: int) -> None:
    """Clean classes overlapping everywhere: before the depth test 2.3–13 % flagged, risk
    46–99; now the label-noise rule abstains with a reason (or flags little)."""
    x, y, _ = _gaussians(sep, seed)
    r = scan(x, y, seed=0, verify=False)
    assert r.flags.mean() <= 0.05
    assert r.risk_score < 20
    if not r.calibrated:
        assert r.calibration["reason"]


def test_poi_overlap_clean_tuning_data_keeps_the_rule(
    digits: tuple[np.ndarray, np.ndarray],
) -> None:
    """Clean digits (a tuning set) stay calibrated: the test only runs in the guarded band."""
    x, y = digits
    r = scan(x, y, seed=0)
    assert r.calibrated
    assert "label_noise_depth" not in r.calibration


# not strict: another branch adds handling for data the probe cannot judge; a pass after a merge
# must not break the suite
@pytest.mark.xfail(
    strict=False,
    reason="open false alarm (README, Limits): heavy-tailed classes put single clean samples "
    "deep inside the other class, where they look exactly like flips (mean depth 0.52-0.55); "
    "10-17.5 % flagged, risk 96-100",
)
def test_poi_overlap_heavy_tailed_clean_classes_known_false_alarm() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600).astype(np.int64)
    x = rng.standard_t(3, size=(600, 10))
    x[:, 0] += 2.0 * y
    r = scan(x, y, seed=0, verify=False)
    assert not r.calibrated or (r.flags.mean() <= 0.05 and r.risk_score < 20)


def test_poi_overlap_abstention_never_keeps_the_flags_in_a_keep_mask(
    digits: tuple[np.ndarray, np.ndarray], boundary_flips: tuple[np.ndarray, np.ndarray]
) -> None:
    """Hostile (review): random flips hidden behind boundary flips on digits pull the flags'
    mean depth to 0.36 and the label-noise rule abstains: the core flips were no longer flagged
    (risk 15) and ``client_filter`` kept every one of them (before the depth test it dropped 82
    of 90 core and 130 of 179 boundary flips). The gate refuses the uncalibrated scan, but a
    keep-mask must not take back what the rule had found: the abstained flags are set aside
    (reason given), so ``client_filter`` and ``mitigate(relabel=False)`` drop them."""
    from saip_poisoning import client_filter, mitigate

    x, y = digits
    # 10 % boundary flips plus 5 % random flips elsewhere ("core" flips)
    yp, edge = boundary_flips
    yp = yp.copy()
    rng = np.random.default_rng(3)
    core = rng.choice(np.setdiff1d(np.arange(len(y)), edge), len(y) // 20, replace=False)
    yp[core] = (y[core] + 1 + rng.integers(0, 9, len(core))) % 10
    r = scan(x, yp, seed=0)
    assert r.calibrated is False
    assert r.calibration["label_noise_depth"]["identifiable"] is False
    assert r.set_aside is not None
    assert r.set_aside[core].mean() >= 0.9
    assert r.calibration["label_noise_set_aside"] == int(r.set_aside.sum())
    assert set(r.set_aside_reasons) == set(np.flatnonzero(r.set_aside).tolist())
    assert all("abstained" in s for s in r.set_aside_reasons.values())
    assert not (r.set_aside & r.flags).any()
    keep = client_filter(x, yp)
    assert (~keep[core]).mean() >= 0.9
    assert (~keep[edge]).mean() >= 0.45  # one pass only (abstained): 89 of 179 here
    m = mitigate(x, yp, report=r, relabel=False)
    assert (~m.keep[core]).mean() >= 0.9
    # relabelling is no way out either: the rule abstained (the flags look like natural
    # overlap), so no class is known well enough to relabel them to — mitigate removes them
    # even with relabel=True, and their reasons say so
    assert (r.relabel[r.set_aside] == -1).all()
    m2 = mitigate(x, yp, report=r)
    assert not m2.keep[r.set_aside].any()
    assert (m2.labels[r.set_aside] == yp[r.set_aside]).all()  # nothing relabelled
    assert all("mitigate removes it" in s for s in r.set_aside_reasons.values())
