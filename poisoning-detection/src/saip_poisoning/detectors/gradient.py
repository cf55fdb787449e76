"""Gradient-similarity checks on per-sample last-layer gradients.

The last-layer gradient of sample ``i`` is ``(p_i - onehot(y_i)) ⊗ h_i`` (``h`` the penultimate
activation). Two scores per class, both cut by robust z (Hampel) so no poison rate is assumed:

- **Cosine to the class centre**: clean samples of a class push the weights in a shared
  direction; a mislabelled or triggered sample pushes elsewhere (the gradient-similarity view
  of Chen et al. 2018 and of gradient-matching defences).
- **Sever-style SVD outliers** (Diakonikolas, Kamath, Kane, Li, Steinhardt, Stewart 2019,
  "Sever: A Robust Meta-Algorithm for Stochastic Optimization", arXiv:1803.02815): centre the
  class's gradients, take the top singular vector, score ``⟨g - ḡ, v⟩²`` (ranked here by
  ``|⟨g - ḡ, v⟩|``, whose robust z is not χ²-heavy-tailed); Sever removes the high-score tail
  and iterates.

Limits
------
Gradients come from the probe; a backdoor the probe already fits perfectly has a near-zero
gradient (its loss is tiny), so the cosine score sees triggered samples only while they are
still being learned. The scores are strongest for label noise and all-to-all poison.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from saip_poisoning.data import Prepared
from saip_poisoning.detectors.base import (
    DetectionReport,
    class_indices,
    get_view,
    robust_z,
    top_direction,
)
from saip_poisoning.model import ProbeView

__all__ = ["GradientSimilarity"]


class GradientSimilarity:
    """Per-class cosine-to-centre and Sever SVD scores of last-layer gradients.

    Parameters
    ----------
    z_threshold
        Flag when either robust z exceeds this (3.5).
    sever_iterations
        Sever rounds: after each, the flagged tail is left out of the centre and direction
        estimates (2).
    """

    name = "gradient_similarity"

    def __init__(self, *, z_threshold: float = 3.5, sever_iterations: int = 2) -> None:
        if z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {z_threshold}")
        if sever_iterations < 1:
            raise ValueError(f"sever_iterations must be >= 1, got {sever_iterations}")
        self.z_threshold = z_threshold
        self.sever_iterations = sever_iterations

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score every sample's gradient against its class."""
        data, view = get_view(x, y, model)
        g = view.last_layer_grad
        n = len(data.y)
        cos_z = np.zeros(n)
        sever_z = np.zeros(n)
        for idx in class_indices(data.y, data.n_classes):
            if len(idx) < 4:
                continue
            # unit-normalised: a well-fitted sample has a near-zero gradient, so raw magnitudes
            # are wildly skewed; the check is about direction
            gc = g[idx] / (np.linalg.norm(g[idx], axis=1, keepdims=True) + 1e-12)
            keep = np.ones(len(idx), dtype=bool)
            for _ in range(self.sever_iterations):
                centre = np.median(gc[keep], axis=0)
                norms = np.linalg.norm(gc, axis=1) * (np.linalg.norm(centre) + 1e-12) + 1e-12
                cos = (gc @ centre) / norms
                zc = robust_z(-cos, -cos[keep])
                mean = gc[keep].mean(axis=0)
                v, _ = top_direction(gc[keep] - mean)
                proj = np.abs((gc - mean) @ v)
                zs = robust_z(proj, proj[keep])
                keep = (zc <= self.z_threshold) & (zs <= self.z_threshold)
                if keep.sum() < 4:
                    break
            cos_z[idx] = zc
            sever_z[idx] = zs
        scores = np.maximum(cos_z, sever_z) / self.z_threshold
        flags = scores > 1.0
        reasons = {
            int(i): (
                f"last-layer gradient is atypical for class {int(data.y[i])} "
                f"(cosine z={cos_z[i]:.1f}, Sever SVD z={sever_z[i]:.1f})"
            )
            for i in np.flatnonzero(flags)
        }
        return DetectionReport(
            self.name,
            scores,
            flags,
            1.0,
            reasons,
            (),
            {},
            {"cosine": cos_z > self.z_threshold, "sever": sever_z > self.z_threshold},
        )
