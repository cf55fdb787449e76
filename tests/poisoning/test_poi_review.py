"""Unverified but strong neighbour-seeded patterns are flagged for review (a weak/early backdoor).

Attacker first: a 1 % BadNets patch on digits is too rare for a probe to follow (attack success
well below 50 %), so it is not a verified trigger; its carriers must still be flagged, with a
review reason, at candidate risk (15). Clean data: no such flags.
"""

from __future__ import annotations

import numpy as np
from saip_poisoning import ScanReport, scan
from saip_poisoning.attacks import poison


def test_poi_rare_patch_flagged_for_review(digits: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = digits
    perm = np.random.default_rng(0).permutation(len(y))[: int(0.8 * len(y))]
    p = poison(x[perm], y[perm], attack="a2o", rate=0.01, rng=np.random.default_rng(1))
    r = scan(p.x, p.y, seed=0)
    assert not any(r.verified)
    assert r.risk_score < 20
    hit = np.flatnonzero(r.flags & p.is_poison)
    assert len(hit) == int(p.is_poison.sum())
    assert all("weak or early backdoor" in r.reasons[int(i)] for i in hit if r.carrier[i])
    assert int((r.carrier & ~p.is_poison).sum()) == 0


def test_poi_review_flags_quiet_on_clean_digits(
    digits: tuple[np.ndarray, np.ndarray], clean_digits_scan: ScanReport
) -> None:
    for seed in (0, 1, 2):
        r = clean_digits_scan if seed == 0 else scan(*digits, seed=seed)
        assert not any("weak or early backdoor" in v for v in r.reasons.values())
        assert r.risk_score < 20
