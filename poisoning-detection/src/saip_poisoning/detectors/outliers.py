"""Outlier filtering: kNN label disagreement, robust per-class outliers, and a class-size prior.

- **kNN label disagreement** — a sample whose nearest neighbours mostly carry another label is
  either mislabelled or carries a trigger that moved it into the wrong class. In *input space*
  a small trigger barely moves a sample, so a patched "3" relabelled "0" keeps "3"s as
  neighbours; the check is the deep-kNN defence of Peri et al. 2020 ("Deep k-NN Defense against
  Clean-label Data Poisoning Attacks", arXiv:1909.13374) applied to inputs or representations.
- **Robust outliers** — isolation forest (Liu, Ting, Zhou 2008) per class on the representation
  and a robust (trimmed-covariance Mahalanobis) distance, each cut by a robust z-score; the
  distance catches a small far group that masks itself in the forest.
- **Class-size prior** — an all-to-one attack adds its poison to one target class, which grows
  by the poison mass; a class far above the median class size (robust z) is suspect.

Limits
------
kNN disagreement misses poison that forms its own tight, consistently-labelled cluster (a
blended key pattern shared by all poisoned samples makes them each other's neighbours), and
it flags genuinely ambiguous clean samples (a few per cent on MNIST), so the fusion uses it with
corroboration. The size prior is silent for attacks that do not change class sizes (all-to-all,
label flips) and can fire on naturally imbalanced data; it gates, it never flags samples alone.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import NearestNeighbors

from saip_poisoning.data import Prepared, as_prepared
from saip_poisoning.detectors.base import (
    DetectionReport,
    class_indices,
    get_view,
    pca_reduce,
    robust_z,
)
from saip_poisoning.detectors.spectral import trimmed_whiten
from saip_poisoning.model import ProbeView

__all__ = ["ClassSizePrior", "KnnLabelDisagreement", "RobustOutliers", "knn_disagreement"]


def knn_disagreement(
    z: NDArray[np.float64], y: NDArray[np.int64], *, k: int
) -> NDArray[np.float64]:
    """Fraction of each sample's ``k`` nearest neighbours (itself excluded) with another label."""
    k = min(k, len(y) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(z)
    _, ind = nn.kneighbors(z)
    neigh = ind[:, 1:]
    out: NDArray[np.float64] = (y[neigh] != y[:, None]).mean(axis=1)
    return out


class KnnLabelDisagreement:
    """Flag samples whose ``k`` nearest neighbours mostly disagree with their label.

    Parameters
    ----------
    k
        Neighbours consulted (default 10).
    space
        ``"input"`` (raw features: robust to triggers the model has learned) or
        ``"representation"`` (the probe's penultimate layer).
    threshold
        Flag when at least this fraction of neighbours carries another label (default 0.5: a
        majority).
    """

    name = "knn_disagreement"

    def __init__(
        self,
        *,
        k: int = 10,
        space: Literal["input", "representation"] = "input",
        threshold: float = 0.5,
    ) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if space not in ("input", "representation"):
            raise ValueError(f"space must be 'input' or 'representation', got {space!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.k = k
        self.space = space
        self.threshold = threshold
        if space == "representation":
            self.name = "knn_disagreement_representation"

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score each sample by the fraction of disagreeing neighbours."""
        if self.space == "input":
            data = as_prepared(x, y)
            z = data.x
        else:
            data, view = get_view(x, y, model)
            z = view.features
        s = knn_disagreement(z, data.y, k=self.k)
        flags = s >= self.threshold
        reasons = {
            int(i): f"{s[i]:.0%} of {self.k} nearest neighbours ({self.space}) carry another label"
            for i in np.flatnonzero(flags)
        }
        stats = {
            c: {"mean_disagreement": float(s[idx].mean())}
            for c, idx in enumerate(class_indices(data.y, data.n_classes))
            if len(idx)
        }
        return DetectionReport(self.name, s, flags, self.threshold, reasons, (), stats)


class RobustOutliers:
    """Per-class isolation forest and robust distance on the representation, cut at a robust z.

    Parameters
    ----------
    z_threshold
        Flag when the robust z of the anomaly score within the class exceeds this (default 3.5,
        the Iglewicz–Hoaglin outlier cut).
    n_components
        PCA dimensions of the representation fed to the forest.
    seed
        Seeds the forest.
    """

    name = "isolation_forest"

    def __init__(self, *, z_threshold: float = 3.5, n_components: int = 10, seed: int = 0) -> None:
        if z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {z_threshold}")
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.z_threshold = z_threshold
        self.n_components = n_components
        self.seed = seed

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score each sample by its class-relative isolation-forest anomaly."""
        data, view = get_view(x, y, model)
        s = np.zeros(len(data.y))
        for idx in class_indices(data.y, data.n_classes):
            if len(idx) == 0:
                continue
            f = view.features[idx]
            r = pca_reduce(f, self.n_components)
            forest = IsolationForest(n_estimators=100, random_state=self.seed).fit(r)
            iso = robust_z(-forest.score_samples(r))
            # robust distance: Mahalanobis under a trimmed covariance; catches small far groups
            # that mask each other in the forest
            dist = robust_z(np.linalg.norm(trimmed_whiten(r), axis=1))
            s[idx] = np.maximum(iso, dist)
        flags = s > self.z_threshold
        reasons = {
            int(i): f"isolation-forest anomaly z={s[i]:.1f} within class {int(data.y[i])}"
            for i in np.flatnonzero(flags)
        }
        return DetectionReport(self.name, s / self.z_threshold, flags, 1.0, reasons)


class ClassSizePrior:
    """Flag classes far larger than the median class (all-to-one target inflation).

    Parameters
    ----------
    z_threshold
        Robust z of the class size above which the class is suspect (default 3.5).
    min_ratio
        The class must also be at least this multiple of the median class size (default 1.2),
        so that tiny natural spreads in balanced data never trip it.
    """

    name = "class_size_prior"

    def __init__(self, *, z_threshold: float = 3.5, min_ratio: float = 1.2) -> None:
        if z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {z_threshold}")
        if min_ratio < 1.0:
            raise ValueError(f"min_ratio must be >= 1, got {min_ratio}")
        self.z_threshold = z_threshold
        self.min_ratio = min_ratio

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Per-class size test; the sample score is its class's size z (no sample flags)."""
        data = as_prepared(x, y)
        counts = np.bincount(data.y, minlength=data.n_classes).astype(np.float64)
        present = counts > 0
        z = np.zeros(data.n_classes)
        z[present] = robust_z(counts[present])
        med = float(np.median(counts[present]))
        suspect = tuple(
            int(c)
            for c in np.flatnonzero(present)
            if z[c] > self.z_threshold and counts[c] >= self.min_ratio * med
        )
        stats = {
            int(c): {
                "size": float(counts[c]),
                "size_z": float(z[c]),
                "ratio_to_median": counts[c] / med,
            }
            for c in np.flatnonzero(present)
        }
        scores = z[data.y] / self.z_threshold
        flags = np.zeros(len(data.y), dtype=bool)
        return DetectionReport(self.name, scores, flags, 1.0, {}, suspect, stats)
