"""The input-space view of a dataset, computed once per scan: a PCA embedding and its k-nearest
neighbours, shared by every rule that reads input-space neighbours.

Input-space neighbours are the part of the scan an attacker cannot steer through the model: a
small trigger barely moves a sample, so a patched "3" relabelled "0" keeps "3"s as neighbours
(the deep-kNN defence of Peri et al. 2020, arXiv:1909.13374, applied to inputs). The embedding
is a randomized PCA (Halko, Martinsson, Tropp 2011) to at most ``n_dims`` dimensions, so the
neighbour search costs ``O(N²·n_dims)`` instead of ``O(N²·D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from saip_poisoning.data import Prepared

__all__ = ["InputSpace", "input_space"]


@dataclass(frozen=True)
class InputSpace:
    """Embedding and neighbours of every sample.

    Attributes
    ----------
    z
        ``N×d`` PCA embedding of the scaled inputs (``d ≤ n_dims``).
    neighbours
        ``N×k`` indices of each sample's nearest neighbours (itself excluded).
    disagreement
        Share of each sample's neighbours whose label differs from its own.
    majority
        The most common label among each sample's neighbours.
    majority_share
        Share of the neighbours carrying :attr:`majority`.
    """

    z: NDArray[np.float64]
    neighbours: NDArray[np.intp]
    disagreement: NDArray[np.float64]
    majority: NDArray[np.int64]
    majority_share: NDArray[np.float64]


def input_space(data: Prepared, *, k: int = 10, n_dims: int = 30, seed: int = 0) -> InputSpace:
    """Embed ``data.xs`` with PCA and find each sample's ``k`` nearest neighbours."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, d = data.xs.shape
    k = min(k, n - 1)
    if d > n_dims and n > n_dims:
        # the axes are fitted on at most 5,000 samples (a poison of ≥ 1 % still has ≥ 50 there)
        # and applied to all
        rng = np.random.default_rng(seed)
        fit_rows = rng.choice(n, 5000, replace=False) if n > 5000 else np.arange(n)
        pca = PCA(n_dims, svd_solver="randomized", random_state=seed)
        pca.fit(data.xs[fit_rows].astype(np.float32))
        z = np.vstack(
            [pca.transform(data.xs[i : i + 8192].astype(np.float32)) for i in range(0, n, 8192)]
        )
    else:
        z = data.xs.astype(np.float32)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(z)
    ind = nn.kneighbors(z, return_distance=False)
    # drop each sample itself (duplicates may put it anywhere in the first columns)
    rows = np.arange(n)[:, None]
    not_self = ind != rows
    first = np.argsort(~not_self, axis=1, kind="stable")[:, :k]
    neigh = np.take_along_axis(ind, first, axis=1)
    labels = data.y[neigh]
    disagreement = (labels != data.y[:, None]).mean(axis=1)
    counts = np.zeros((n, data.n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), labels.ravel()), 1)
    majority = counts.argmax(axis=1).astype(np.int64)
    share = counts.max(axis=1) / k
    return InputSpace(
        z=np.asarray(z, dtype=np.float64),
        neighbours=neigh,
        disagreement=disagreement,
        majority=majority,
        majority_share=share,
    )
