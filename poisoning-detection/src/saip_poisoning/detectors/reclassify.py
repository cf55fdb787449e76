"""Exclusionary reclassification of within-class clusters (Chen et al. 2018, arXiv:1811.03728).

Chen et al. ("Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering",
Section 4.2) split each class into two clusters and decide which cluster is poison by
*exclusionary reclassification*: train a model without the cluster and classify it; a
legitimate cluster comes back as its own label, a poisoned one as another class. Here the
clusters are found in the scan's input-space embedding (:mod:`saip_poisoning.inputspace`) and
the "model trained without the cluster" is a k-nearest-neighbour vote among all samples outside
the cluster (no retraining, nothing the attacker can steer through a model).

This is the label-flip case a per-sample rule cannot see: a **targeted pair flip** that relabels
a large share of class ``b`` as ``a`` makes the flipped samples each other's neighbours, so
neither the sample's own neighbour majority nor a probe trained on the flipped labels says the
label is wrong. As a cluster, though, they sit inside class ``a`` and vote ``b`` once excluded.

A cluster of class ``a`` is reported when

1. it holds at most ``max_share`` of class ``a`` (the poison is a minority of its label),
2. at least ``min_vote`` of its members are reclassified to one other class ``b`` by their
   ``k`` nearest neighbours outside the cluster, and
3. its centroid is at least ``min_separation`` times nearer to the centroid of class ``b``
   than to the centroid of the rest of class ``a`` (both without the cluster): it is a separate
   mode of its label that sits on another class. This breaks the symmetry of a pair flip: the
   genuine ``b`` samples left in class ``b`` also vote ``a`` once excluded (the flipped copies
   are their neighbours), but they lie as near the rest of their own class as to ``a``.

Members reclassified to ``b`` are flagged. ``min_vote`` = 0.8 and ``min_separation`` = 3 were
set on the tuning sets (sklearn digits, MNIST-5k, clean and attacked): clean clusters reached at
most a vote of 0.65 and a distance ratio of 1.5 (MNIST "4"/"9"), the mirrored genuine clusters of
a pair flip 1.1, the pair-flipped clusters a vote of 0.94 and a ratio of 8.6–18.

The scan runs this *after* its per-sample label-noise rule and leaves that rule's flags out
(``exclude``; one round of iterative cleaning, as in confident learning: prune what is already
known, then look again). Otherwise scattered flips that the per-sample rule already found are
counted into a cluster of genuine boundary samples: on breast_cancer (an evaluation set of the
benchmark) a 10 % pair flip made a cluster of 46 flipped and 38 genuine boundary samples and
25 genuine ones were relabelled; with the per-sample flags left out no cluster is reported
there. A pair flip whose flipped samples are each other's neighbours (digits, MNIST) leaves
the per-sample rule almost nothing to remove and is found as before.

Limits
------
Needs the flipped samples to form their own cluster in the input space (k-means with two
clusters per class); a flip that is spread over many source classes is the per-sample label
noise rule's job. Random flips on a two-class task are pair flips in both directions and are
found too. On data where classes overlap heavily (natural textures) the vote rarely reaches
``min_vote``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors

from saip_poisoning.detectors.base import DetectionReport

__all__ = ["ExclusionaryReclassification", "ReclassifiedCluster", "reclassify_clusters"]


@dataclass(frozen=True)
class ReclassifiedCluster:
    """A within-class cluster that votes for another class once excluded."""

    label: int
    voted: int
    size: int
    vote_share: float
    members: NDArray[np.intp]


def reclassify_clusters(
    z: NDArray[np.float64],
    y: NDArray[np.int64],
    n_classes: int,
    *,
    k: int = 10,
    min_vote: float = 0.8,
    max_share: float = 0.5,
    min_separation: float = 3.0,
    min_size: int = 6,
    seed: int = 0,
    exclude: NDArray[np.bool_] | None = None,
) -> list[ReclassifiedCluster]:
    """The clusters of ``z`` (per label) that exclusionary reclassification calls relabelled.

    Returns one :class:`ReclassifiedCluster` per reported cluster with the members that voted
    for the other class (module docstring for the three conditions). ``exclude`` marks samples
    left out of clustering and voting (the scan passes the samples its per-sample label-noise
    rule already flagged, module docstring); member indices always refer to the full ``z``.
    """
    if exclude is not None:
        if exclude.dtype != np.bool_:
            # an index or 0/1 integer array would be inverted bitwise by ``~`` below
            raise TypeError(f"exclude must be a boolean mask, got dtype {exclude.dtype}")
        if exclude.shape != y.shape:
            raise ValueError(f"exclude must have shape {y.shape}, got {exclude.shape}")
        keep = np.flatnonzero(~exclude)
        found = reclassify_clusters(
            z[keep],
            y[keep],
            n_classes,
            k=k,
            min_vote=min_vote,
            max_share=max_share,
            min_separation=min_separation,
            min_size=min_size,
            seed=seed,
        )
        return [
            ReclassifiedCluster(cl.label, cl.voted, cl.size, cl.vote_share, keep[cl.members])
            for cl in found
        ]
    n = len(y)
    out: list[ReclassifiedCluster] = []
    for a in range(n_classes):
        ia = np.flatnonzero(y == a)
        if len(ia) < 2 * min_size:
            continue
        part = KMeans(2, n_init=4, random_state=seed).fit_predict(z[ia])
        for c in (0, 1):
            members = ia[part == c]
            if len(members) < min_size or len(members) > max_share * len(ia):
                continue
            outside = np.ones(n, dtype=bool)
            outside[members] = False
            rest = np.flatnonzero(outside)
            kk = min(k, len(rest))
            nb = NearestNeighbors(n_neighbors=kk).fit(z[rest]).kneighbors(z[members])[1]
            votes = y[rest][nb]
            counts = np.zeros((len(members), n_classes), dtype=np.int64)
            np.add.at(counts, (np.repeat(np.arange(len(members)), kk), votes.ravel()), 1)
            vote = counts.argmax(axis=1)
            b = int(np.bincount(vote, minlength=n_classes).argmax())
            share = float((vote == b).mean())
            if b == a or share < min_vote:
                continue
            own_rest = rest[y[rest] == a]
            other = rest[y[rest] == b]
            if len(own_rest) == 0 or len(other) == 0:
                continue
            centre = z[members].mean(axis=0)
            d_own = float(np.linalg.norm(centre - z[own_rest].mean(axis=0)))
            d_other = float(np.linalg.norm(centre - z[other].mean(axis=0)))
            if d_own < min_separation * d_other:
                continue
            out.append(
                ReclassifiedCluster(
                    label=a,
                    voted=b,
                    size=len(members),
                    vote_share=round(share, 4),
                    members=members[vote == b],
                )
            )
    return out


class ExclusionaryReclassification:
    """Flag members of within-class clusters that another class claims once they are excluded.

    Parameters
    ----------
    k
        Neighbours that vote for an excluded cluster's members.
    min_vote
        Share of a cluster's members that must vote for one other class (0.8, tuning sets).
    max_share
        Largest share of its class a reported cluster may hold.
    min_separation
        How many times nearer the cluster's centroid must be to the other class than to the
        rest of its own class (3, tuning sets).
    seed
        k-means seed.

    See the module docstring for the method (Chen et al. 2018) and its limits.
    """

    name = "exclusionary_reclassification"

    def __init__(
        self,
        *,
        k: int = 10,
        min_vote: float = 0.8,
        max_share: float = 0.5,
        min_separation: float = 3.0,
        seed: int = 0,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.5 < min_vote <= 1.0:
            raise ValueError(f"min_vote must be in (0.5, 1], got {min_vote}")
        if not 0.0 < max_share <= 0.5:
            raise ValueError(f"max_share must be in (0, 0.5], got {max_share}")
        if min_separation < 1.0:
            raise ValueError(f"min_separation must be >= 1, got {min_separation}")
        self.k, self.min_vote, self.max_share, self.seed = k, min_vote, max_share, seed
        self.min_separation = min_separation

    def detect(
        self, z: NDArray[np.float64], y: NDArray[np.int64], *, n_classes: int
    ) -> DetectionReport:
        """Run on an embedding ``z`` (``N×d``) with labels ``y``."""
        found = reclassify_clusters(
            z,
            y,
            n_classes,
            k=self.k,
            min_vote=self.min_vote,
            max_share=self.max_share,
            min_separation=self.min_separation,
            seed=self.seed,
        )
        flags = np.zeros(len(y), dtype=bool)
        reasons: dict[int, str] = {}
        for cl in found:
            flags[cl.members] = True
            for i in cl.members:
                reasons[int(i)] = (
                    f"in a cluster of {cl.size} samples labelled {cl.label} that "
                    f"{cl.vote_share:.0%} of the time is reclassified as {cl.voted} by its "
                    "neighbours outside the cluster (exclusionary reclassification)"
                )
        return DetectionReport(
            detector=self.name,
            scores=flags.astype(np.float64),
            flags=flags,
            threshold=0.5,
            reasons=reasons,
            suspect_classes=tuple(sorted({cl.label for cl in found})),
            class_stats={
                cl.label: {"voted": float(cl.voted), "vote_share": cl.vote_share, "size": cl.size}
                for cl in found
            },
        )
