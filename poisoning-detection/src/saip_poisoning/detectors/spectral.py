"""Spectral signatures on centred representations (Tran, Li, Madry 2018, arXiv:1811.00636).

Per class, the penultimate representations are centred and projected on their top singular
vector; poison that is a consistent shift away from the clean class mean shows up as large
``|projection|`` (Tran et al., Algorithm 1). ART 1.20.1 projects the *uncentred* features, which
ranks by the class-mean direction instead. Tran et al. remove ``1.5·ε`` of every class given an
upper bound ``ε`` on the poison rate; here no rate is assumed. Instead:

- **Per-class test**: a class is poisoned when the share of variance its top direction explains
  is an outlier among classes (robust z > ``class_z``) — a poison subpopulation adds a strong
  direction (the spectral gap of Hayase et al. 2021, SPECTRE, arXiv:2104.11315).
- **Per-sample cut**: within a poisoned class, samples with a robust z of ``|projection|``
  above ``z_threshold`` are flagged.
- Robust variant (SPECTRE-style): the top direction is computed after whitening with a
  trimmed covariance estimate of the class (C-steps of FAST-MCD, ``robust=True``), so the
  poison cannot dominate the covariance estimate it is measured against. SPECTRE's full
  robust estimation and QUE scoring are not implemented.

Limits
------
Needs the poison to be a minority of its class (a half-poisoned class has a symmetric top
direction) and a class test across several classes (at least 4). A poison present in every
class at the same rate (all-to-all) weakens the cross-class comparison. On clean sklearn digits
the class test fires on class "4" (its top direction explains an outlying share of variance), so
the fusion uses spectral scores only as one vote among five, never its class test alone.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.data import Prepared
from saip_poisoning.detectors.base import (
    DetectionReport,
    class_indices,
    get_view,
    pca_reduce,
    robust_z,
    top_direction,
)
from saip_poisoning.model import ProbeView

__all__ = ["SpectralSignature", "spectral_scores"]


def spectral_scores(features: NDArray[np.float64]) -> tuple[NDArray[np.float64], float]:
    """Tran et al.'s score ``|<h - mean, v1>|`` and the variance share of ``v1``."""
    m = features - features.mean(axis=0)
    v, share = top_direction(m)
    out: NDArray[np.float64] = np.abs(m @ v)
    return out, share


def trimmed_whiten(
    r: NDArray[np.float64], *, keep: float = 0.75, steps: int = 2
) -> NDArray[np.float64]:
    """Whiten ``r`` with a trimmed (C-step) covariance estimate.

    Start from the coordinate-wise median and the full covariance, then ``steps`` times keep the
    ``keep`` share of points with the smallest Mahalanobis distance and re-estimate mean and
    covariance from them (the concentration step of FAST-MCD, Rousseeuw & Van Driessen 1999).
    Poison outside the core cannot inflate the covariance it is measured against.
    """
    loc = np.median(r, axis=0)
    cov = np.cov(r - loc, rowvar=False) + 1e-6 * np.eye(r.shape[1])
    for _ in range(steps):
        inv = np.linalg.pinv(cov)
        d = np.einsum("ij,jk,ik->i", r - loc, inv, r - loc)
        core = d <= np.quantile(d, keep)
        loc = r[core].mean(axis=0)
        cov = np.cov(r[core], rowvar=False) + 1e-6 * np.eye(r.shape[1])
    evals, evecs = np.linalg.eigh(cov)
    out: NDArray[np.float64] = (r - loc) @ (evecs / np.sqrt(np.maximum(evals, 1e-9)))
    return out


class SpectralSignature:
    """Spectral-signature scores with a per-class test and a robust (MCD-whitened) variant.

    Parameters
    ----------
    z_threshold
        Per-sample robust z of ``|projection|`` above which a sample of a poisoned class is
        flagged (3.0).
    class_z
        Robust z (across classes) of the top-direction variance share above which a class is
        poisoned (3.0).
    robust
        Whiten each class with a trimmed covariance estimate (after PCA to ``n_dims``) before
        taking the top direction.
    n_dims
        PCA dimensions used by the robust variant.
    seed
        Seeds PCA and MCD.
    """

    name = "spectral_signature"

    def __init__(
        self,
        *,
        z_threshold: float = 3.0,
        class_z: float = 3.0,
        robust: bool = False,
        n_dims: int = 10,
        seed: int = 0,
    ) -> None:
        if z_threshold <= 0 or class_z <= 0:
            raise ValueError("z_threshold and class_z must be > 0")
        if n_dims < 1:
            raise ValueError(f"n_dims must be >= 1, got {n_dims}")
        self.z_threshold = z_threshold
        self.class_z = class_z
        self.robust = robust
        self.n_dims = n_dims
        self.seed = seed

    def _class_features(self, f: NDArray[np.float64]) -> NDArray[np.float64]:
        if not self.robust:
            return f
        nd = min(self.n_dims, f.shape[1], len(f) - 2)
        r = pca_reduce(f, nd)
        return trimmed_whiten(r)

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score every sample; flag the top tail of poisoned classes."""
        data, view = get_view(x, y, model)
        n = len(data.y)
        z = np.zeros(n)
        shares = np.full(data.n_classes, np.nan)
        for c, idx in enumerate(class_indices(data.y, data.n_classes)):
            if len(idx) < 4:
                continue
            s, share = spectral_scores(view.features[idx])
            if self.robust:
                # the class test keeps the plain variance share (whitening equalises it);
                # the per-sample scores use the trimmed-whitened features
                s, _ = spectral_scores(self._class_features(view.features[idx]))
            z[idx] = robust_z(s)
            shares[c] = share
        present = ~np.isnan(shares)
        share_z = np.zeros(data.n_classes)
        share_z[present] = robust_z(shares[present])
        suspect = tuple(int(c) for c in np.flatnonzero(present) if share_z[c] > self.class_z)
        flags = np.isin(data.y, suspect) & (z > self.z_threshold)
        reasons = {
            int(i): (
                f"spectral-signature z={z[i]:.1f} in class {int(data.y[i])}, whose top direction "
                f"explains an outlying share of variance (z={share_z[int(data.y[i])]:.1f})"
            )
            for i in np.flatnonzero(flags)
        }
        stats = {
            int(c): {"top_share": float(shares[c]), "top_share_z": float(share_z[c])}
            for c in np.flatnonzero(present)
        }
        return DetectionReport(self.name, z / self.z_threshold, flags, 1.0, reasons, suspect, stats)
