"""Shared fixtures of the poisoning tests: digits (8×8) with injected poison, and probes."""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import ScanReport, scan
from saip_poisoning.attacks import Poisoned, poison
from saip_poisoning.data import prepare
from saip_poisoning.model import ProbeView, fit_probe
from sklearn.datasets import load_digits


def _digits() -> tuple[np.ndarray, np.ndarray]:
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y.astype(np.int64)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    return _digits()


def _poisoned(attack: str, rate: float) -> tuple[Poisoned, ProbeView]:
    x, y = _digits()
    p = poison(x, y, attack=attack, rate=rate, rng=np.random.default_rng(7))  # type: ignore[arg-type]
    d = prepare(p.x, p.y)
    return p, fit_probe(d.xs, d.y, n_classes=d.n_classes, seed=0)


@pytest.fixture(scope="session")
def a2o() -> tuple[Poisoned, ProbeView]:
    """Digits with a 10 % all-to-one BadNets patch into class 0, and a probe trained on it."""
    return _poisoned("a2o", 0.10)


@pytest.fixture(scope="session")
def flips() -> tuple[Poisoned, ProbeView]:
    """Digits with 10 % random label flips."""
    return _poisoned("flip", 0.10)


@pytest.fixture(scope="session")
def clean() -> tuple[Poisoned, ProbeView]:
    """Clean digits and a probe."""
    return _poisoned("clean", 0.0)


@pytest.fixture(scope="session")
def boundary_flips() -> tuple[np.ndarray, np.ndarray]:
    """Digits labels with the 10 % of samples nearest the class boundary (smallest
    cross-validated margin of a linear model, among those it classifies right) flipped to their
    runner-up class — an attacker's flips where a wrong label looks most like natural
    ambiguity; returns the flipped labels and the flipped indices."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict

    x, y = _digits()
    prob = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=5, method="predict_proba")
    order = np.sort(prob, axis=1)
    margin = order[:, -1] - order[:, -2]
    right = np.flatnonzero(prob.argmax(1) == y)
    chosen = right[np.argsort(margin[right])][: len(y) // 10]
    y_bad = y.copy()
    y_bad[chosen] = np.argsort(prob, axis=1)[chosen, -2]
    return y_bad, chosen


# Scans that several tests only read (a ScanReport is frozen; ``mitigate`` reads it): each is
# computed once per session, so the same default scan of the same data is not rerun per test.


@pytest.fixture(scope="session")
def clean_digits_scan(digits: tuple[np.ndarray, np.ndarray]) -> ScanReport:
    """``scan`` of the clean digits with the defaults (``seed=0``)."""
    return scan(*digits, seed=0)


@pytest.fixture(scope="session")
def a2o_scan(a2o: tuple[Poisoned, ProbeView]) -> ScanReport:
    """``scan`` of the :func:`a2o` digits with the defaults (``seed=0``)."""
    p, _ = a2o
    return scan(p.x, p.y, seed=0)
