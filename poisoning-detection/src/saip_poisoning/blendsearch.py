"""Blended-trigger search: a sub-population of one class along a whitened spectral direction.

A blended backdoor (Chen et al. 2017, arXiv:1712.05526) stamps ``(1 − a)·x + a·k`` with one key
``k`` on samples of other classes and relabels them to the target. Where the key is dense and
the data are natural textures or correlated tabular features, the blended samples are each
other's input-space neighbours (so neighbour disagreement does not seed them) and share no
exact values (so the stamp search does not either). What they do share is one offset ``a·k``
that lies along directions the clean classes barely vary in: after *whitening* with the
covariance of the other classes, the target class splits in two along one of its top
principal directions. This is the spectral signature of Tran et al. 2018 (arXiv:1811.00636)
computed on a covariance the poison cannot contaminate — the point of SPECTRE (Hayase et al.
2021, arXiv:2104.11315), here with a leave-class-out covariance instead of SPECTRE's robust
estimation and QUE scoring.

Per class ``c``:

1. Whiten the class's centred samples with the pooled within-class covariance of every *other*
   class (leave-class-out, Ledoit–Wolf shrinkage, at most ``max_reference`` samples;
   eigenvalues floored at 10⁻³ of the largest). Inputs with more than
   ``max_dims`` coordinates are first reduced by PCA (fitted on ≤ 5,000 samples).
2. On each of the top ``n_dirs`` principal directions of the whitened class, split the 1-D
   projection in two at the cut that minimises the within-group sum of squares (the exact 1-D
   2-means), keeping splits whose smaller side holds ≥ ``min_frac`` of the class. The
   *separation* ``d`` is the gap between the two groups' means in pooled within-group SD
   (≈ 2.7 for one Gaussian).
3. The class's best ``d`` is compared with the *other classes'* (``relative`` = ``d`` / median
   of the others'): a natural bimodal class raises its own ``d`` a little, a blended key raises
   it far more. A class with ``relative ≥ min_relative`` yields a candidate: the smaller side.

Set on the tuning sets (digits, MNIST-5k, MNIST 3-vs-8; blend 10 % and clean): clean classes
reach ``relative`` ≤ 1.76 (digits "1", a genuinely bimodal class), blended targets 2.70
(MNIST 3-vs-8) to 6.7 (MNIST-5k); the cut 2.18 is the geometric midpoint.

A candidate is only a candidate. :func:`saip_poisoning.scan.scan` reconstructs a trigger from it
(:func:`saip_poisoning.trigger.triggers_from_flags`: Fisher discriminant, blend weight, key) and
counts it only when a probe follows that trigger (attack success ≥ ``min_asr``), as for every
other trigger.

Limits: the poison must be ≥ ``min_frac`` of its class and a minority of it (the smaller side
is taken); a blend that leaves the class unimodal along every top whitened direction is
missed; with two classes ``relative`` compares against a single other class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from saip_poisoning.data import Prepared

__all__ = ["BlendCandidate", "blend_candidates", "split_1d"]

#: ``relative`` cut (see the module docstring): geometric midpoint of the tuning sets' largest
#: clean value (1.76) and smallest blended value (2.70)
MIN_RELATIVE = 2.18


@dataclass(frozen=True)
class BlendCandidate:
    """A sub-population of class :attr:`label` split off along a whitened direction."""

    label: int
    members: NDArray[np.intp]
    separation: float
    relative: float
    class_size: int


def split_1d(p: NDArray[np.float64], *, min_frac: float) -> tuple[float, float, float]:
    """Exact 2-means of a 1-D sample: ``(separation, cut, smaller-side fraction)``.

    ``separation`` is the distance between the two groups' means in units of their pooled
    within-group SD; only cuts leaving ≥ ``min_frac`` (and ≥ 3 samples) on each side are
    considered. Returns ``(0, nan, 0)`` when no such cut exists.
    """
    s = np.sort(np.asarray(p, dtype=np.float64))
    n = len(s)
    lo = max(3, int(np.ceil(min_frac * n)))
    if n - lo < lo:
        return 0.0, float("nan"), 0.0
    c1, c2 = np.cumsum(s), np.cumsum(s * s)
    i = np.arange(lo, n - lo + 1)  # left group = s[:i]
    sl, sl2 = c1[i - 1], c2[i - 1]
    sr, sr2 = c1[-1] - sl, c2[-1] - sl2
    within = (sl2 - sl * sl / i) + (sr2 - sr * sr / (n - i))
    j = int(np.argmin(within))
    k = int(i[j])
    sd = float(np.sqrt(max(within[j], 0.0) / n)) or 1e-12
    sep = (sr[j] / (n - k) - sl[j] / k) / sd
    return float(sep), float(s[k - 1]), min(k, n - k) / n


def _reduce(x: NDArray[np.float64], max_dims: int, seed: int) -> NDArray[np.float64]:
    # no more axes than samples: a small shard (a federated client's) of wide inputs
    dims = min(max_dims, len(x))
    if x.shape[1] <= dims:
        return x
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit_idx = rng.choice(len(x), min(len(x), 5000), replace=False)
    pca = PCA(dims, svd_solver="randomized", random_state=seed).fit(x[fit_idx])
    out: NDArray[np.float64] = pca.transform(x)
    return out


def blend_candidates(
    data: Prepared,
    *,
    skip: frozenset[int] = frozenset(),
    n_dirs: int = 3,
    min_frac: float = 0.08,
    min_relative: float = MIN_RELATIVE,
    max_dims: int = 100,
    max_per_class: int = 3000,
    max_reference: int = 5000,
    seed: int = 0,
) -> list[BlendCandidate]:
    """Classes whose whitened top directions split off an outlying sub-population.

    ``skip``: classes not to return a candidate for (they already have a trigger); they still
    count in the other classes' reference. See the module docstring for the statistic and cuts.
    """
    if n_dirs < 1 or not 0.0 < min_frac < 0.5 or min_relative <= 1.0:
        raise ValueError("need n_dirs >= 1, 0 < min_frac < 0.5 and min_relative > 1")
    from sklearn.covariance import ledoit_wolf

    k = data.n_classes
    idx = [np.flatnonzero(data.y == c) for c in range(k)]
    present = [c for c in range(k) if len(idx[c]) >= 10]
    if len(present) < 2:
        return []
    z = _reduce(data.xs, max_dims, seed)
    dim = z.shape[1]
    cen = {c: z[idx[c]] - z[idx[c]].mean(axis=0) for c in present}
    rng = np.random.default_rng(seed + 31)
    sep: dict[int, tuple[float, NDArray[np.bool_] | None]] = {}
    for c in present:
        ref = np.vstack([cen[o] for o in present if o != c])
        if len(ref) > max_reference:
            ref = ref[rng.choice(len(ref), max_reference, replace=False)]
        cov, _ = ledoit_wolf(ref, assume_centered=True)
        ev, vec = np.linalg.eigh(cov)
        ev = np.maximum(ev, 0.0)
        w = vec / np.sqrt(ev + 1e-3 * max(float(ev.max()), 1e-12))
        zc = cen[c] @ w
        sub = zc
        if len(zc) > max_per_class:
            sub = zc[rng.choice(len(zc), max_per_class, replace=False)]
        # top principal directions of the whitened class (eigenvectors of its scatter)
        vt = np.linalg.eigh(sub.T @ sub)[1][:, ::-1].T
        best: tuple[float, NDArray[np.bool_] | None] = (0.0, None)
        for j in range(min(n_dirs, dim)):
            proj = zc @ vt[j]
            d, cut, frac = split_1d(proj, min_frac=min_frac)
            if frac >= min_frac and d > best[0]:
                hi = proj > cut
                best = (d, hi if hi.sum() <= (~hi).sum() else ~hi)
        sep[c] = best
    out: list[BlendCandidate] = []
    for c in present:
        d, side = sep[c]
        others = [sep[o][0] for o in present if o != c and sep[o][0] > 0]
        if c in skip or side is None or not others:
            continue
        rel = d / float(np.median(others))
        if rel >= min_relative:
            out.append(
                BlendCandidate(
                    label=c,
                    members=idx[c][side],
                    separation=round(d, 2),
                    relative=round(rel, 2),
                    class_size=len(idx[c]),
                )
            )
    return out
