"""Loss-trajectory anomaly detection over the first training epochs.

Two tails, because two kinds of poison behave oppositely (measured on MNIST-5k, see
``benchmarks/results/poisoning.json`` and the package README):

- **High tail — wrong labels.** A flipped label (or an all-to-all poison before its trigger is
  learned) disagrees with what the network learns from the rest of the class, so its loss stays
  high through the early epochs (the "small-loss trick" of Han et al. 2018, Co-teaching,
  arXiv:1804.06872). Flag: probability of the given label below ``high_p`` at epoch
  ``high_epoch``.
- **Low tail — backdoors.** A trigger is a simpler feature than the digit itself, so triggered
  samples are fitted *faster* than clean samples of their class (Li et al. 2021, Anti-Backdoor
  Learning, arXiv:2110.11571). Measured here: for all-to-one patch and blended attacks the
  poisoned samples' early loss sits below almost every clean sample (AUROC of *low* loss ≈ 0.98),
  while for label flips the *high* tail holds them (AUROC ≈ 0.99). A class is tested first: it is
  low-loss-poisoned when an outlying share of its samples sits far below the class's *own*
  median loss (a within-class reference: an easy or larger clean class is fitted fast as a
  whole and is not flagged wholesale); only then are its low-loss samples flagged.

Limits
------
Easy clean classes (e.g. "1" or "0") are fitted fast too; the class test compares shares across
classes, so it needs several classes and a poison that is a sizeable share of its target class
(≳10 %). The low tail misses backdoors the probe has not learned yet (too few poison samples or
too few epochs); the high tail misses poison the probe has already memorised. On sklearn
digits one clean class ("4") is fitted so much faster than the others that the low-loss class
test fires on clean data; :func:`saip_poisoning.scan.scan` therefore reads the low tail
(``parts["low_tail"]``) only inside classes the class-size prior flags.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from saip_poisoning.data import Prepared
from saip_poisoning.detectors.base import DetectionReport, class_indices, get_view, robust_z
from saip_poisoning.model import ProbeView

__all__ = ["LossTrajectory"]


class LossTrajectory:
    """Flag samples in the high loss tail, and the low tail inside low-loss-poisoned classes.

    Parameters
    ----------
    high_p
        Flag a sample whose given-label probability is below this at ``high_epoch`` (0.1).
    high_epoch
        1-based epoch at which the high tail is read (4: late enough for the clean majority to be
        fitted, early enough that flipped labels are not yet memorised). Clamped to the
        trajectory length.
    low_z
        A sample is "low-loss" when its log-loss (mean of epochs 2–4) is this many robust
        standard deviations below its *own class's* median (2.5).
    class_z
        Kept for configuration compatibility (must be > 0); the class test is relative to the
        median class (below).
    min_share
        A class is low-loss-poisoned when at least this share of its samples is low-loss
        (0.08; a normal class has ≈ 0.6 % beyond 2.5 robust SD) and the share is at least three
        times the median class's share.
    """

    name = "loss_trajectory"

    def __init__(
        self,
        *,
        high_p: float = 0.1,
        high_epoch: int = 4,
        low_z: float = 2.5,
        class_z: float = 3.5,
        min_share: float = 0.08,
    ) -> None:
        if not 0.0 < high_p < 1.0:
            raise ValueError(f"high_p must be in (0, 1), got {high_p}")
        if high_epoch < 1:
            raise ValueError(f"high_epoch must be >= 1, got {high_epoch}")
        if low_z <= 0 or class_z <= 0:
            raise ValueError("low_z and class_z must be > 0")
        if not 0.0 < min_share < 1.0:
            raise ValueError(f"min_share must be in (0, 1), got {min_share}")
        self.high_p = high_p
        self.high_epoch = high_epoch
        self.low_z = low_z
        self.class_z = class_z
        self.min_share = min_share

    def detect(
        self, x: ArrayLike | Prepared, y: ArrayLike | None = None, *, model: ProbeView | None = None
    ) -> DetectionReport:
        """Score both tails of the loss trajectory."""
        data, view = get_view(x, y, model)
        traj = view.loss_trajectory
        e = min(self.high_epoch, len(traj)) - 1
        loss_e = traj[e]
        high_thr = float(-np.log(self.high_p))
        high = loss_e > high_thr
        early = traj[1:4].mean(0) if len(traj) > 1 else traj[0]
        logl = np.log(early + 1e-9)
        low_z = np.zeros(len(data.y))
        share = np.zeros(data.n_classes)
        idx_by_class = class_indices(data.y, data.n_classes)
        for c, idx in enumerate(idx_by_class):
            if len(idx) == 0:
                continue
            # within-class reference: an easy (fast-fitted) clean class shifts as a whole and
            # keeps its own shape; a backdoor adds a separate fast-fitted group to its class
            low_z[idx] = -robust_z(logl[idx])
            share[c] = float(np.mean(low_z[idx] > self.low_z))
        present = np.array([len(i) > 0 for i in idx_by_class])
        share_z = np.zeros(data.n_classes)
        share_z[present] = robust_z(share[present])
        med_share = float(np.median(share[present]))
        suspect = tuple(
            int(c)
            for c in np.flatnonzero(present)
            if share[c] >= self.min_share and share[c] >= 3.0 * med_share
        )
        low = np.isin(data.y, suspect) & (low_z > self.low_z)
        flags = high | low
        scores = np.maximum(
            loss_e / high_thr, np.where(np.isin(data.y, suspect), low_z / self.low_z, 0.0)
        )
        reasons: dict[int, str] = {}
        for i in np.flatnonzero(high):
            reasons[int(i)] = (
                f"given label has probability {np.exp(-loss_e[i]):.3f} < {self.high_p} "
                f"after epoch {e + 1} (high-loss tail: likely mislabelled)"
            )
        for i in np.flatnonzero(low):
            reasons[int(i)] = (
                f"fitted far faster than clean data (log-loss z={-low_z[i]:.1f}) in class "
                f"{int(data.y[i])}, whose low-loss share is anomalous (backdoor-like)"
            )
        stats = {
            int(c): {"low_loss_share": float(share[c]), "low_loss_share_z": float(share_z[c])}
            for c in np.flatnonzero(present)
        }
        return DetectionReport(
            self.name,
            scores,
            flags,
            1.0,
            reasons,
            suspect,
            stats,
            {"high_loss": high, "low_loss": low, "low_tail": low_z > self.low_z},
        )
