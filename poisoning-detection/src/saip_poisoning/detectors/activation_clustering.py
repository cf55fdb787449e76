"""Activation clustering on the penultimate layer (Chen et al. 2018, arXiv:1811.03728).

For every class, the penultimate activations of the probe are centred, reduced to ``n_dims``
with PCA and split in two with k-means. Chen et al. observe that a poisoned class splits into a
clean cluster and a poison cluster (the network uses different features — the trigger — for the
poison), while a clean class splits arbitrarily. Their per-class decision uses relative size and
silhouette; ART 1.20.1's default ``smaller`` analyzer instead flags the smaller cluster of
*every* class (30–45 % of all data on MNIST). Here a class is judged poisoned only if its split
is well separated (silhouette ≥ ``min_silhouette``; clean classes measure 0.17–0.43) and
lopsided (smaller cluster ≤ ``max_relative_size``); only then is its smaller cluster flagged.

Limits
------
When the poison is about as large as the clean part of its class (an all-to-one attack at 10 %
of a 10-class dataset doubles the target class) the split is balanced and poorly separated; the
relative-size rule cannot pick the poison half. The fusion (``saip_poisoning.scan``) covers that
case with the class-size prior and the loss trajectory. Activations come from a network trained
on the suspect data; a backdoor the probe has not learned leaves no cluster.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score

from saip_poisoning.data import Prepared
from saip_poisoning.detectors.base import DetectionReport, class_indices, get_view, pca_reduce
from saip_poisoning.model import ProbeView

__all__ = ["ActivationClustering"]


class ActivationClustering:
    """Per-class 2-means on PCA-reduced penultimate activations with a per-class test.

    Parameters
    ----------
    n_dims
        PCA dimensions (Chen et al. use 10).
    min_silhouette
        Silhouette a class split must reach to count as poisoned (0.45; clean classes measured
        0.17–0.26 on MNIST-5k and up to 0.43 on digits, all-to-all patched classes 0.48–0.58).
    max_relative_size
        The flagged cluster must hold at most this share of its class (0.35, Chen et al.'s
        relative-size heuristic).
    seed
        Seeds PCA and k-means.
    """

    name = "activation_clustering"

    def __init__(
        self,
        *,
        n_dims: int = 10,
        min_silhouette: float = 0.45,
        max_relative_size: float = 0.35,
        seed: int = 0,
    ) -> None:
        if n_dims < 1:
            raise ValueError(f"n_dims must be >= 1, got {n_dims}")
        if not 0.0 < min_silhouette < 1.0:
            raise ValueError(f"min_silhouette must be in (0, 1), got {min_silhouette}")
        if not 0.0 < max_relative_size < 0.5:
            raise ValueError(f"max_relative_size must be in (0, 0.5), got {max_relative_size}")
        self.n_dims = n_dims
        self.min_silhouette = min_silhouette
        self.max_relative_size = max_relative_size
        self.seed = seed

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Cluster every class and flag the small, well-separated cluster of poisoned classes."""
        data, view = get_view(x, y, model)
        n = len(data.y)
        scores = np.zeros(n)
        flags = np.zeros(n, dtype=bool)
        stats: dict[int, dict[str, float]] = {}
        suspect: list[int] = []
        for c, idx in enumerate(class_indices(data.y, data.n_classes)):
            if len(idx) < 4:
                continue
            f = view.features[idx]
            f = f - f.mean(axis=0)
            nd = min(self.n_dims, f.shape[1], len(idx) - 1)
            r = pca_reduce(f, nd)
            labels = KMeans(2, n_init=4, random_state=self.seed).fit_predict(r)
            if len(np.unique(labels)) < 2:
                stats[c] = {"silhouette": 0.0, "small_share": 0.0}
                continue
            sil = float(
                silhouette_score(r, labels, sample_size=min(len(idx), 2000), random_state=self.seed)
            )
            sizes = np.bincount(labels, minlength=2)
            small = int(np.argmin(sizes))
            share = float(sizes[small] / len(idx))
            stats[c] = {"silhouette": sil, "small_share": share}
            member = labels == small
            # distance-to-threshold score: 1.0 means "exactly at both cuts"
            s_c = min(sil / self.min_silhouette, self.max_relative_size / max(share, 1e-9))
            scores[idx[member]] = s_c
            if sil >= self.min_silhouette and share <= self.max_relative_size:
                suspect.append(c)
                flags[idx[member]] = True
        reasons = {
            int(i): (
                f"in the small, separated activation cluster of class {int(data.y[i])} "
                f"(silhouette {stats[int(data.y[i])]['silhouette']:.2f}, "
                f"{stats[int(data.y[i])]['small_share']:.0%} of the class)"
            )
            for i in np.flatnonzero(flags)
        }
        return DetectionReport(self.name, scores, flags, 1.0, reasons, tuple(suspect), stats)
