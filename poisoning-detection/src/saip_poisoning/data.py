"""Validation and scaling of the dataset handed to a scan.

Every public entry point calls :func:`prepare` once, so malformed input fails with one typed
error (:class:`~saip_poisoning.errors.PoisoningInputError`) before any work is done; detectors
accept the resulting :class:`Prepared` in place of ``(x, y)`` and never re-validate or copy it.

Accepted: ``x`` as ``N×D``, ``N×H×W`` or ``N×H×W×C`` numbers; ``y`` as non-negative integers or
strings (class names, mapped to codes in sorted order; :attr:`Prepared.classes` keeps the names).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.errors import PoisoningInputError

__all__ = ["MIN_PER_CLASS", "Prepared", "as_prepared", "prepare"]

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
        ``N`` int64 label codes.
    n_classes
        ``max(y) + 1`` (or the caller's value).
    producer
        ``N`` producer IDs as strings, or ``None``.
    classes
        Name of each label code (``str(code)`` for integer labels).
    shape
        Per-sample shape as given (``(D,)``, ``(H, W)`` or ``(H, W, C)``).
    record_id
        ``N`` record IDs (e.g. from ``saip ingest export``), or ``None``.
    """

    x: NDArray[np.float64]
    xs: NDArray[np.float64]
    y: NDArray[np.int64]
    n_classes: int
    producer: NDArray[np.str_] | None
    classes: tuple[str, ...] = ()
    shape: tuple[int, ...] = ()
    record_id: NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return len(self.y)

    def class_name(self, code: int) -> str:
        """The caller's name of label ``code``."""
        return self.classes[code] if code < len(self.classes) else str(code)


def _labels(
    ya: NDArray[np.generic], n_classes: int | None
) -> tuple[NDArray[np.int64], int, tuple[str, ...]]:
    if ya.dtype.kind in ("U", "S", "O"):
        try:
            names = ya.astype(np.str_)
        except (TypeError, ValueError):
            raise PoisoningInputError("y must hold integer labels or class-name strings") from None
        if np.any(np.char.str_len(names) == 0):
            raise PoisoningInputError("y holds an empty class name")
        classes, codes = np.unique(names, return_inverse=True)
        return codes.astype(np.int64), len(classes), tuple(str(c) for c in classes)
    if ya.dtype == np.bool_ or not (
        np.issubdtype(ya.dtype, np.integer) or np.issubdtype(ya.dtype, np.floating)
    ):
        raise PoisoningInputError(f"y must hold integer labels, got dtype {ya.dtype}")
    if np.issubdtype(ya.dtype, np.floating) and (
        not np.all(np.isfinite(ya.astype(np.float64)))
        or np.any(ya != np.round(ya.astype(np.float64)))
    ):
        raise PoisoningInputError("y must hold integer labels, got non-integer values")
    yi = ya.astype(np.int64)
    if yi.min() < 0:
        raise PoisoningInputError(f"labels must be >= 0, got {yi.min()}")
    k = int(yi.max()) + 1 if n_classes is None else int(n_classes)
    if yi.max() >= k:
        raise PoisoningInputError(f"label {yi.max()} is outside [0, {k})")
    return yi, k, tuple(str(c) for c in range(k))


def prepare(
    x: ArrayLike,
    y: ArrayLike,
    *,
    producer: ArrayLike | None = None,
    record_id: ArrayLike | None = None,
    n_classes: int | None = None,
    min_per_class: int = MIN_PER_CLASS,
) -> Prepared:
    """Validate ``(x, y[, producer, record_id])`` and return a :class:`Prepared` dataset.

    Raises
    ------
    PoisoningInputError
        ``x`` is not N×D, N×H×W or N×H×W×C numeric, holds NaN/inf, ``y`` is not N non-negative
        integers or class names, lengths differ, fewer than two classes are present, or a present
        class has fewer than ``min_per_class`` samples.
    """
    if min_per_class < 2:
        raise ValueError(f"min_per_class must be >= 2, got {min_per_class}")
    xa = np.asarray(x)
    ya = np.asarray(y)
    if xa.dtype == object or not np.issubdtype(xa.dtype, np.number) or xa.dtype == np.bool_:
        raise PoisoningInputError(f"x must be numeric, got dtype {xa.dtype}")
    if xa.ndim not in (2, 3, 4):
        raise PoisoningInputError(
            f"x must be N×D, N×H×W or N×H×W×C, got shape {xa.shape} ({xa.ndim} dimensions)"
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
    yi, k, classes = _labels(ya, n_classes)
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
    prod = _ids(producer, n, "producer")
    rid = _ids(record_id, n, "record_id")
    scale = float(xf.std())
    xs = xf / scale if scale > 0 else xf.copy()
    return Prepared(
        x=xf,
        xs=xs,
        y=yi,
        n_classes=k,
        producer=prod,
        classes=classes,
        shape=tuple(int(s) for s in xa.shape[1:]),
        record_id=rid,
    )


def _ids(values: ArrayLike | None, n: int, name: str) -> NDArray[np.str_] | None:
    if values is None:
        return None
    pa = np.asarray(values)
    if pa.ndim != 1 or len(pa) != n:
        raise PoisoningInputError(f"{name} must hold one ID per sample ({n}), got shape {pa.shape}")
    return pa.astype(np.str_)


def as_prepared(x: ArrayLike | Prepared, y: ArrayLike | None = None) -> Prepared:
    """``x`` itself if it is already :class:`Prepared`, else :func:`prepare` ``(x, y)``."""
    if isinstance(x, Prepared):
        return x
    if y is None:
        raise PoisoningInputError("labels y are required")
    return prepare(x, y)
