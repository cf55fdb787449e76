"""Validation and scaling of the dataset handed to a scan.

Every public entry point calls :func:`prepare` first, so malformed input fails with one typed
error (:class:`~saip_poisoning.errors.PoisoningInputError`) before any work is done.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.errors import PoisoningInputError

__all__ = ["Prepared", "prepare"]

#: a class needs this many samples for clustering / robust statistics to mean anything
MIN_PER_CLASS = 10


@dataclass(frozen=True)
class Prepared:
    """A validated dataset.

    Attributes
    ----------
    x
        ``N×D`` float64 inputs, as given (images flattened).
    xs
        ``x`` divided by one global scale (its standard deviation): geometry is preserved, so
        a small trigger stays small, but the probe network sees unit-scale inputs.
    y
        ``N`` int64 labels.
    n_classes
        ``max(y) + 1`` (or the caller's value).
    producer
        ``N`` producer IDs as strings, or ``None``.
    """

    x: NDArray[np.float64]
    xs: NDArray[np.float64]
    y: NDArray[np.int64]
    n_classes: int
    producer: NDArray[np.str_] | None


def prepare(
    x: ArrayLike,
    y: ArrayLike,
    *,
    producer: ArrayLike | None = None,
    n_classes: int | None = None,
    min_per_class: int = MIN_PER_CLASS,
) -> Prepared:
    """Validate ``(x, y[, producer])`` and return a :class:`Prepared` dataset.

    Raises
    ------
    PoisoningInputError
        ``x`` is not N×D or N×H×W numeric, holds NaN/inf, ``y`` is not N non-negative integers,
        lengths differ, fewer than two classes are present, or a present class has fewer
        than ``min_per_class`` samples.
    """
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.dtype == object or not np.issubdtype(xa.dtype, np.number) or xa.dtype == np.bool_:
        raise PoisoningInputError(f"x must be numeric, got dtype {xa.dtype}")
    if xa.ndim not in (2, 3):
        raise PoisoningInputError(
            f"x must be N×D or N×H×W, got shape {xa.shape} ({xa.ndim} dimensions)"
        )
    if ya.ndim != 1:
        raise PoisoningInputError(f"y must be a 1-D array of N labels, got shape {ya.shape}")
    n = xa.shape[0]
    if len(ya) != n:
        raise PoisoningInputError(f"x has {n} samples but y has {len(ya)} labels")
    if n == 0:
        raise PoisoningInputError("the dataset is empty")
    xf = xa.reshape(n, -1).astype(np.float64)
    if xf.shape[1] == 0:
        raise PoisoningInputError("x has zero features per sample")
    bad = ~np.isfinite(xf)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise PoisoningInputError(
            f"x holds NaN or infinite values in {len(rows)} samples (first index {rows[0]})"
        )
    if not (np.issubdtype(ya.dtype, np.integer) or np.issubdtype(ya.dtype, np.floating)):
        raise PoisoningInputError(f"y must hold integer labels, got dtype {ya.dtype}")
    if np.issubdtype(ya.dtype, np.floating) and (
        not np.all(np.isfinite(ya)) or np.any(ya != np.round(ya))
    ):
        raise PoisoningInputError("y must hold integer labels, got non-integer values")
    yi = ya.astype(np.int64)
    if yi.min() < 0:
        raise PoisoningInputError(f"labels must be >= 0, got {yi.min()}")
    k = int(yi.max()) + 1 if n_classes is None else int(n_classes)
    if yi.max() >= k:
        raise PoisoningInputError(f"label {yi.max()} is outside [0, {k})")
    counts = np.bincount(yi, minlength=k)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise PoisoningInputError("need at least two classes to scan for poisoning")
    small = [int(c) for c in present if counts[c] < min_per_class]
    if small:
        raise PoisoningInputError(
            f"too few samples per class: class(es) {small} have fewer than {min_per_class} "
            f"samples (counts {[int(counts[c]) for c in small]})"
        )
    prod: NDArray[np.str_] | None = None
    if producer is not None:
        pa = np.asarray(producer)
        if pa.ndim != 1 or len(pa) != n:
            raise PoisoningInputError(
                f"producer must hold one ID per sample ({n}), got shape {pa.shape}"
            )
        prod = pa.astype(np.str_)
    scale = float(xf.std())
    xs = xf / scale if scale > 0 else xf.copy()
    return Prepared(x=xf, xs=xs, y=yi, n_classes=k, producer=prod)
