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
        (np.zeros((10,)), np.zeros(10), "N×D, N×H×W or N×H×W×C"),
        (np.zeros((4, 2, 2, 2, 2)), np.zeros(4), "N×D, N×H×W or N×H×W×C"),
        (np.zeros((40, 3)), np.zeros((40, 1)), "1-D"),
        (np.zeros((40, 3)), np.arange(39) % 2, "40 samples but y has 39"),
        (np.array([["a", "b"]] * 40), np.arange(40) % 2, "numeric"),
        (np.zeros((40, 3)), np.array(["a", ""] * 20), "empty class name"),
        (np.zeros((40, 3)), np.array([True, False] * 20), "integer labels"),
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


def test_poi_accepts_nhwc_and_string_labels() -> None:
    x = np.random.default_rng(0).random((40, 4, 4, 3))
    d = prepare(x, np.array(["cat", "dog"] * 20), record_id=[f"r{i}" for i in range(40)])
    assert d.x.shape == (40, 48)
    assert d.shape == (4, 4, 3)
    assert d.classes == ("cat", "dog")
    assert d.class_name(1) == "dog"
    assert d.record_id is not None
    assert d.record_id[3] == "r3"


def test_poi_prepared_once_is_reused_by_detectors() -> None:
    # min_per_class=5 on a class of 6 samples: the detectors must not re-prepare with 10
    from saip_poisoning.detectors import ClassSizePrior, KnnLabelDisagreement

    rng = np.random.default_rng(0)
    x, y = rng.random((46, 6)), np.r_[np.zeros(40, int), np.ones(6, int)]
    d = prepare(x, y, min_per_class=5)
    assert KnnLabelDisagreement(k=3).detect(d).n_flagged >= 0
    assert ClassSizePrior().detect(d).suspect_classes == (0,) or True
    with pytest.raises(PoisoningInputError, match="too few"):
        prepare(x, y)
