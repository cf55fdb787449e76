"""Adversarial review of the set-aside (``ScanReport.set_aside``): label-noise flags within the
clean allowance are not counted as poison when a flagged pattern explains the poison.

Attacker: a cheap visible backdoor (found, so "a pattern explains the poison") plus a targeted
label flip of 1 % of N (18 digits "1" relabelled "7") — within the 2 % allowance, so the flips
are set aside. They must still never reach training with their wrong labels, whichever way the
data is cleaned (relabelled, or dropped through a keep-mask), and the report must say why each
set-aside sample was set aside.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from saip.commands.scan import _summary
from saip_poisoning import mitigate, scan
from saip_poisoning.attacks import poison
from saip_poisoning.client import client_filter
from saip_poisoning.scan import ScanReport


@pytest.fixture(scope="module")
def backdoor_plus_targeted_flips() -> tuple[np.ndarray, np.ndarray, np.ndarray, ScanReport]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x / 16.0, y.astype(np.int64)
    p = poison(x, y, attack="a2o", rate=0.05, rng=np.random.default_rng(7))
    pick = np.random.default_rng(11).choice(
        np.flatnonzero((p.y == 1) & ~p.is_poison), 18, replace=False
    )
    y_bad = p.y.copy()
    y_bad[pick] = 7
    flip = np.zeros(len(y), dtype=bool)
    flip[pick] = True
    return p.x, y_bad, flip, scan(p.x, y_bad, seed=0)


def test_poi_set_aside_flips_never_kept_with_their_wrong_label_by_a_keep_mask(
    backdoor_plus_targeted_flips: tuple[np.ndarray, np.ndarray, np.ndarray, ScanReport],
) -> None:
    """The pipeline step (``mitigate(relabel=False)``) and federated clients (``client_filter``)
    train on a keep-mask and cannot relabel: a set-aside flip must be dropped there, as any
    label-noise flag is, not kept with the attacker's label."""
    x, y, flip, r = backdoor_plus_targeted_flips
    assert r.set_aside is not None
    assert r.set_aside[flip].sum() >= 10  # the attack does reach the set-aside
    m = mitigate(x, y, report=r, relabel=False, seed=0)
    assert not (m.keep & r.set_aside).any()
    keep = client_filter(x, y, seed=0)
    assert not (keep & r.set_aside).any()
    # the default (relabel) path fixes them and keeps them
    m2 = mitigate(x, y, report=r, seed=0)
    assert m2.keep[r.set_aside].all()
    assert (m2.labels[flip & r.set_aside] == 1).all()


def test_poi_set_aside_samples_have_a_reason_in_report_json_and_cli(
    backdoor_plus_targeted_flips: tuple[np.ndarray, np.ndarray, np.ndarray, ScanReport],
) -> None:
    """Never an empty reason: every set-aside sample has one (report, JSON), it says it was set
    aside and what the label-noise rule saw; the CLI summary counts them."""
    _, y, _, r = backdoor_plus_targeted_flips
    assert r.set_aside is not None
    idx = [int(i) for i in np.flatnonzero(r.set_aside)]
    assert idx
    assert set(r.set_aside_reasons) == set(idx)
    assert all("set aside" in r.set_aside_reasons[i] for i in idx)
    assert all(
        "disagrees" in r.set_aside_reasons[i] or "cluster" in r.set_aside_reasons[i] for i in idx
    )
    doc = json.loads(r.to_json())
    assert doc["label_noise_set_aside"] == idx
    assert set(doc["label_noise_set_aside_reasons"]) == {str(i) for i in idx}
    caption = str(_summary(r, n=len(y)).caption)
    assert f"{len(idx)} label-noise flags set aside" in caption
