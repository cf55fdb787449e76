"""The detector interface and the statistics every detector shares.

Each detector is a small class configured with keyword-only arguments (validated eagerly) whose
``detect(x, y, *, model=None)`` returns a :class:`DetectionReport`. Scores are oriented so that
*higher is more suspicious* and are expressed in units of the detector's own threshold where
possible; flags are chosen by that threshold alone, never by knowing the poison rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.data import Prepared, as_prepared
from saip_poisoning.model import ProbeView, fit_probe

__all__ = ["DetectionReport", "Detector", "get_view", "pca_reduce", "robust_z", "top_direction"]


@dataclass(frozen=True)
class DetectionReport:
    """The result of one detector on one dataset.

    Attributes
    ----------
    detector
        Short name (``"activation_clustering"``, ``"spectral"``, ...).
    scores
        ``N`` suspicion scores, higher is more suspicious.
    flags
        ``N`` booleans: the samples this detector flags at its own threshold.
    threshold
        The score above which a sample is flagged (where a single cut applies).
    reasons
        For every flagged sample index, why it was flagged.
    suspect_classes
        Classes the detector's per-class test judged poisoned (empty when it has none).
    class_stats
        Per-class statistics the per-class test used, for the report.
    parts
        Flags of the detector's named sub-rules, when it has several.
    """

    detector: str
    scores: NDArray[np.float64]
    flags: NDArray[np.bool_]
    threshold: float
    reasons: Mapping[int, str] = field(default_factory=dict)
    suspect_classes: tuple[int, ...] = ()
    class_stats: Mapping[int, Mapping[str, float]] = field(default_factory=dict)
    #: named sub-rules of the detector (e.g. ``"high_loss"``/``"low_loss"``) and their flags
    parts: Mapping[str, NDArray[np.bool_]] = field(default_factory=dict)

    @property
    def n_flagged(self) -> int:
        """Number of flagged samples."""
        return int(self.flags.sum())


class Detector(Protocol):
    """What every detector provides."""

    name: str

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score every sample of ``(x, y)``; ``model`` is a trained probe (trained if None)."""
        ...


def robust_z(a: NDArray[np.float64], ref: NDArray[np.float64] | None = None) -> NDArray[np.float64]:
    """Robust z-score: ``(a - median(ref)) / (1.4826 · MAD(ref))`` (Hampel 1974).

    ``ref`` defaults to ``a``. A zero MAD falls back to the mean absolute deviation and then to 1.
    """
    r = a if ref is None else ref
    med = float(np.median(r))
    mad = 1.4826 * float(np.median(np.abs(r - med)))
    if mad <= 1e-12:
        mad = float(np.mean(np.abs(r - med))) * 1.2533 or 1.0
    return (a - med) / mad


def top_direction(
    a: NDArray[np.float64], *, iters: int = 50, seed: int = 0
) -> tuple[NDArray[np.float64], float]:
    """Top right-singular vector of ``a`` and its share of ``‖a‖²_F`` (power iteration).

    Equivalent to ``np.linalg.svd(a)[2][0]`` up to sign for the dominant direction, but only
    matrix–vector products: full SVDs of per-class gradient matrices dominated scan time.
    """
    rng = np.random.default_rng(seed)
    v: NDArray[np.float64] = np.asarray(rng.normal(size=a.shape[1]), dtype=np.float64)
    v = np.asarray(v / (float(np.linalg.norm(v)) + 1e-12), dtype=np.float64)
    for _ in range(iters):
        w: NDArray[np.float64] = a.T @ (a @ v)
        norm = float(np.linalg.norm(w))
        if norm <= 1e-12:
            break
        w = np.asarray(w / norm, dtype=np.float64)
        if float(np.abs(w @ v)) > 1 - 1e-10:
            v = w
            break
        v = w
    total = float((a * a).sum())
    top = float(np.linalg.norm(a @ v) ** 2)
    return v, (top / total if total > 1e-12 else 0.0)


def pca_reduce(f: NDArray[np.float64], n_dims: int) -> NDArray[np.float64]:
    """Centre ``f`` and project it on its top ``n_dims`` principal axes (eigh of the D×D
    covariance: cheap for the narrow penultimate layers used here)."""
    m = f - f.mean(axis=0)
    k = max(1, min(n_dims, m.shape[1], len(m) - 1))
    _, evecs = np.linalg.eigh(m.T @ m)
    out: NDArray[np.float64] = m @ evecs[:, ::-1][:, :k]
    return out


def get_view(
    x: ArrayLike | Prepared, y: ArrayLike | None, model: ProbeView | None, *, seed: int = 0
) -> tuple[Prepared, ProbeView]:
    """Validate the data and return it with ``model`` (or a freshly trained probe)."""
    data = as_prepared(x, y)
    if model is None:
        model = fit_probe(data.xs, data.y, n_classes=data.n_classes, seed=seed)
    if model.features.shape[0] != len(data.y):
        raise ValueError(
            f"model view has {model.features.shape[0]} rows but the data has {len(data.y)} samples"
        )
    return data, model


def class_indices(y: NDArray[np.int64], n_classes: int) -> list[NDArray[np.intp]]:
    """Indices of each class (empty arrays for absent classes)."""
    return [np.flatnonzero(y == c) for c in range(n_classes)]
