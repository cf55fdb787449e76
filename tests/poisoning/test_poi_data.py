"""Input validation: malformed datasets get one typed error naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from saip_poisoning import PoisoningInputError, scan
from saip_poisoning.data import prepare


def _ok(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 6)), np.arange(n) % 2


def test_poi_accepts_images_and_flattens() -> None:
    x = np.random.default_rng(0).random((40, 4, 4))
    d = prepare(x, np.arange(40) % 2)
    assert d.x.shape == (40, 16)
    assert d.n_classes == 2
    assert np.isclose(d.xs.std(), 1.0)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (np.zeros((10,)), np.zeros(10), "N×D or N×H×W"),
        (np.zeros((4, 2, 2, 2)), np.zeros(4), "N×D or N×H×W"),
        (np.zeros((40, 3)), np.zeros((40, 1)), "1-D"),
        (np.zeros((40, 3)), np.arange(39) % 2, "40 samples but y has 39"),
        (np.array([["a", "b"]] * 40), np.arange(40) % 2, "numeric"),
        (np.zeros((40, 3)), (np.arange(40) % 2) + 0.5, "integer labels"),
        (np.zeros((40, 3)), np.zeros(40, dtype=int), "two classes"),
        (np.zeros((40, 3)), -(np.arange(40) % 2), ">= 0"),
    ],
)
def test_poi_rejects_malformed(x: np.ndarray, y: np.ndarray, match: str) -> None:
    with pytest.raises(PoisoningInputError, match=match):
        prepare(x, y)


def test_poi_rejects_nan_and_names_first_row() -> None:
    x, y = _ok()
    x[7, 2] = np.nan
    with pytest.raises(PoisoningInputError, match=r"NaN.*first index 7"):
        scan(x, y)


def test_poi_rejects_too_few_per_class() -> None:
    x, y = _ok()
    y[:3] = 5  # class 5 has 3 samples
    with pytest.raises(PoisoningInputError, match=r"too few samples per class: class\(es\) \[5\]"):
        prepare(x, y)


def test_poi_rejects_producer_length_mismatch() -> None:
    x, y = _ok()
    with pytest.raises(PoisoningInputError, match="producer"):
        prepare(x, y, producer=["p"] * 39)


def test_poi_error_is_a_valueerror() -> None:
    assert issubclass(PoisoningInputError, ValueError)
