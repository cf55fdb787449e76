"""Targeted pair flips inside a label group: a directional mixture-proportion test.

A targeted flip ``B → A`` relabels samples of class ``B`` as ``A``. Inside a label group
(:mod:`saip_poisoning.labelgroups`) the probe cannot separate ``A`` from ``B`` well enough to
judge single samples, so the label-noise rule declares such flips undetectable. What the flip
does change is the *shape* of the labelled-``A`` population: it becomes a mixture
``F_A' = (1 − κ)·F_A + κ·F_B`` that contains a copy of ``B`` — including ``B``'s core, where
genuine ``A`` samples are rare. Natural overlap puts genuine ``A`` samples near the boundary,
not in ``B``'s core.

Method
------
1. **Pairwise probe.** For each ordered pair of classes of one group, a 2-fold cross-fitted
   probe (:func:`saip_poisoning.model.crossfit_probs`) on the samples labelled ``A`` or ``B``
   gives each one ``s = p(B | x)`` from a model that never saw it.
2. **Mixture proportion (Scott, Blanchard & Handy 2013, "Classification with asymmetric label
   noise: consistency and maximal denoising", COLT; Blanchard et al. 2016, JMLR).** The largest
   share of ``F_B`` inside ``F_A'`` is ``κ = inf_S F_A'(S) / F_B(S)``; over the regions
   ``S = {s > t}`` with ``t`` the 50–90th percentiles of ``s`` in ``B``, ``κ̂(B in A)`` is the
   smallest ratio. Natural overlap gives both directions a level; a flip raises one.
3. **Directional test.** The statistic is the asymmetry ``Δ = κ̂(B in A) − κ̂(A in B)`` (the
   symmetric part — the overlap both classes share — cancels). Its one-sided lower confidence
   bound (bootstrap of the samples, level ``0.05 / m`` for the ``m`` ordered pairs tried:
   Bonferroni) must exceed ``DELTA_CLEAN`` 0.087: halfway between the clean tuning sets' largest
   ``Δ`` (0.0 — their classes are separable, so they say nothing about the null under overlap)
   and the smallest ``Δ`` of their pair-flip cells (digits 0.173, MNIST-5k 0.181). It is an
   effect size: natural overlap can be asymmetric (a class that reaches into another's core),
   and no sampling-based null removes that; a flip must add a share beyond it. The probe is not
   refitted in the bootstrap (it resamples the counts).
4. **Flags.** For a pair that fires, a labelled-``A`` sample's probability of being a flipped
   ``B`` follows from Bayes with the estimated mixture: ``P(flip | x) = κ̂ · (n_A' / n_B) ·
   s / (1 − s)`` (the probe's odds are ``n_B f_B / (n_A' f_A')``); it is flagged when that is
   ≥ 0.5. The flags are removed, never relabelled (the class level is not calibrated:
   :mod:`saip_poisoning.labelgroups`).

Limits: a class whose genuine distribution contains another's (a broad class around a narrow
one) has a natural mixture proportion and fires like a flip; a flip small enough that ``Δ``'s
lower bound stays under ``DELTA_CLEAN`` is not seen; a *symmetric* swap (as many ``A → B`` as
``B → A``) cancels in ``Δ``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from saip_poisoning.data import Prepared
from saip_poisoning.inputspace import InputSpace
from saip_poisoning.labelgroups import LabelGroups
from saip_poisoning.model import crossfit_probs

__all__ = [
    "DELTA_CLEAN",
    "MAX_PAIR_WORK",
    "GroupPairFlips",
    "PairFlip",
    "group_pair_flips",
    "pair_flips",
]

#: the effect size the lower confidence bound of Δ must exceed: the arithmetic midpoint of the
#: largest Δ of every ordered class pair on the clean tuning sets (0.0: digits and MNIST 3-vs-8,
#: scan seeds 0–2, MNIST-5k seed 0 — their classes are separable) and the smallest Δ of the
#: flipped pair on the tuning sets' pair-flip cells (digits 0.173, MNIST-5k 0.181; scan seed 0)
DELTA_CLEAN = 0.087
#: B-percentiles of the pairwise score that define the regions ``{s > t}``
_QUANTILES = (0.5, 0.6, 0.7, 0.8, 0.9)
#: family-wise level of the directional test (Bonferroni over ordered pairs)
_ALPHA = 0.05
_BOOT = 400
#: smallest class a pair is tested with
_MIN_CLASS = 20
#: most samples the pair probes may train on in one scan (the sum over ordered-pair probes of
#: both classes' sizes): each pair cross-fits its own probe, so the work is (k − 1)·n for a
#: group of k classes and n samples — a 60k set with one 10-class group would cross-fit 45
#: probes on 12k samples each (measured 7.4 s each under load: ≈ 330 s, against the scan's
#: 60 s goal). 60 000 is ≈ 20–35 s here; MNIST-5k in one 10-class group is 45 000
MAX_PAIR_WORK = 60_000


@dataclass(frozen=True)
class PairFlip:
    """An ordered pair whose labelled-``target`` population holds a copy of ``source``.

    ``kappa``: estimated share of ``source`` inside labelled ``target``; ``reverse``: the other
    direction's; ``lower``: the Bonferroni lower confidence bound of ``kappa − reverse``;
    ``members``: flagged indices (labelled ``target``, P(flipped ``source``) ≥ 0.5).
    """

    target: int
    source: int
    kappa: float
    reverse: float
    lower: float
    members: NDArray[np.intp]


def _ratios(
    sa: NDArray[np.float64], sb: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Thresholds ``t`` at the B-percentiles ``_QUANTILES`` and ``P(s > t | A) / P(s > t | B)``."""
    ts = np.quantile(sb, _QUANTILES)
    pa = (sa[None, :] > ts[:, None]).mean(axis=1)
    pb = np.maximum((sb[None, :] > ts[:, None]).mean(axis=1), 1.0 / len(sb))
    return ts, pa / pb


def _kappa(sa: NDArray[np.float64], sb: NDArray[np.float64]) -> float:
    """The mixture proportion estimate: the smallest ratio of :func:`_ratios`."""
    return float(_ratios(sa, sb)[1].min())


def _region(sa: NDArray[np.float64], sb: NDArray[np.float64]) -> float:
    """The threshold ``t`` at which :func:`_kappa`'s minimum is attained."""
    ts, r = _ratios(sa, sb)
    return float(ts[int(np.argmin(r))])


def _exchangeable(
    z: NDArray[np.float64], ia: NDArray[np.intp], ib: NDArray[np.intp], seed: int
) -> tuple[float, float]:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017): cross-fitted AUC of labelled-A
    against labelled-B samples inside B's region, and its one-sided p-value against 0.5
    (Hanley & McNeil 1982 standard error under the null)."""
    idx = np.concatenate([ia, ib])
    lab = np.repeat([0, 1], [len(ia), len(ib)]).astype(np.int64)
    q = crossfit_probs(z[idx], lab, n_classes=2, seed=seed)[:, 1]
    ranks = np.argsort(np.argsort(q)) + 1.0
    n1, n0 = len(ib), len(ia)
    auc = float((ranks[lab == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    se = math.sqrt((n0 + n1 + 1) / (12.0 * n0 * n1))
    p = 0.5 * math.erfc((auc - 0.5) / se / math.sqrt(2.0))
    return auc, p


def pair_flips(
    y: NDArray[np.int64],
    z: NDArray[np.float64],
    groups: Sequence[Sequence[int]],
    *,
    exclude: NDArray[np.bool_] | None = None,
    seed: int = 0,
    min_class: int = _MIN_CLASS,
    z_check: NDArray[np.float64] | None = None,
) -> tuple[list[PairFlip], list[dict[str, Any]]]:
    """Directional test on every ordered pair of classes inside one of ``groups`` (module
    docstring); returns the pairs that fire with their flags, and every pair's measurements.
    ``exclude``: samples left out (carriers of flagged patterns: explained poison)."""
    keep = np.ones(len(y), dtype=bool) if exclude is None else ~exclude
    pairs = [(a, b) for g in groups for a in g for b in g if a < b]
    m = 2 * len(pairs)
    found: list[PairFlip] = []
    tried: list[dict[str, Any]] = []
    rng = np.random.default_rng(seed)
    for a, b in pairs:
        ia = np.flatnonzero(keep & (y == a))
        ib = np.flatnonzero(keep & (y == b))
        if min(len(ia), len(ib)) < min_class:
            continue
        idx = np.concatenate([ia, ib])
        yy = (y[idx] == b).astype(np.int64)
        s = crossfit_probs(z[idx], yy, n_classes=2, seed=seed)[:, 1]
        la, lb = yy == 0, yy == 1
        k_ba = _kappa(s[la], s[lb])  # B inside labelled A
        k_ab = _kappa(1.0 - s[lb], 1.0 - s[la])  # A inside labelled B
        pa, pb = np.flatnonzero(la), np.flatnonzero(lb)
        # m-out-of-n bootstrap (Bickel, Götze & van Zwet 1997, Statistica Sinica) with m the
        # smaller class's size for both classes: κ̂ is a minimum of ratios whose noise is set by
        # the class whose counts enter it, so with n_A ≫ n_B a full-size bootstrap is confident
        # about one direction and not the other and a clean imbalanced pair fired (adversarial
        # review: 2000 vs 20–100 samples, 1.0 SD apart, fired on 3 of 22 draws, 21–36 % of the
        # large class flagged); equal sizes give both directions the same noise
        m_boot = min(len(pa), len(pb))
        boot = np.empty(_BOOT)
        for r in range(_BOOT):
            ra = rng.choice(pa, size=m_boot)
            rb = rng.choice(pb, size=m_boot)
            sa, sb = s[ra], s[rb]
            boot[r] = _kappa(sa, sb) - _kappa(1.0 - sb, 1.0 - sa)
        q = _ALPHA / m
        for tgt, src, kap, rev, sign, lt, ls in (
            (a, b, k_ba, k_ab, 1.0, la, lb),
            (b, a, k_ab, k_ba, -1.0, lb, la),
        ):
            lower = float(np.quantile(sign * boot, q))
            fires = lower > DELTA_CLEAN
            ps = s if sign > 0 else 1.0 - s
            auc, p_ex = float("nan"), float("nan")
            if fires:
                # a flip puts exact copies of B's samples under label A: inside B's region the
                # labelled-A samples must be indistinguishable from B's; natural containment
                # (A's own content reaching into B's core) is told apart by a second probe
                t = _region(ps[lt], ps[ls])
                auc, p_ex = _exchangeable(
                    z if z_check is None else z_check,
                    idx[lt & (ps > t)],
                    idx[ls & (ps > t)],
                    seed=seed + 1,
                )
                fires = p_ex >= _ALPHA
            tried.append(
                {
                    "target": tgt,
                    "source": src,
                    "kappa": round(kap, 4),
                    "reverse": round(rev, 4),
                    "delta": round(kap - rev, 4),
                    "lower_bound": round(lower, 4),
                    "level": round(q, 5),
                    "region_auc": None if math.isnan(auc) else round(auc, 4),
                    "region_p_value": None if math.isnan(p_ex) else round(p_ex, 4),
                    "fires": fires,
                }
            )
            if not fires:
                continue
            # P(flipped source | x, labelled target) from the probe's odds and the mixture
            odds = ps[lt] / np.maximum(1.0 - ps[lt], 1e-6)
            post = kap * (lt.sum() / ls.sum()) * odds
            members = idx[np.flatnonzero(lt)[post >= 0.5]]
            found.append(PairFlip(tgt, src, kap, rev, lower, members.astype(np.intp)))
            tried[-1]["flagged"] = len(members)
    return found, tried


@dataclass(frozen=True)
class GroupPairFlips:
    """Flags of :func:`group_pair_flips`: ``flags`` (removed by :func:`saip_poisoning.mitigate`,
    never relabelled), one ``reasons`` entry per flag, and ``calibration`` (goes to
    ``calibration["label_groups"]["pair_flips"]``)."""

    flags: NDArray[np.bool_]
    reasons: dict[int, str]
    calibration: dict[str, Any]


def group_pair_flips(
    data: Prepared,
    views: Sequence[tuple[str, InputSpace, NDArray[np.float64]]],
    groups: LabelGroups,
    *,
    exclude: NDArray[np.bool_] | None = None,
    seed: int = 0,
) -> GroupPairFlips:
    """Run :func:`pair_flips` on the classes of each merged group of ``groups``, in the view the
    grouping was measured in (its PCA embedding, scaled as the scan's probe sees it)."""
    n = len(data.y)
    flags = np.zeros(n, dtype=bool)
    merged = [groups.members(g) for g in range(groups.n_groups) if len(groups.members(g)) > 1]
    keep = np.ones(n, dtype=bool) if exclude is None else ~exclude
    sizes = np.bincount(data.y[keep], minlength=data.n_classes)
    work = sum(
        int(sizes[a] + sizes[b])
        for g in merged
        for a in g
        for b in g
        if a < b and min(sizes[a], sizes[b]) >= _MIN_CLASS
    )
    if work > MAX_PAIR_WORK:
        # bounded cost (adversarial review): the test is not run and says so; the group's
        # flips stay in calibration.label_groups.undetectable
        cal = {
            "method": "mixture-proportion asymmetry per ordered class pair inside a group",
            "not_run": (
                f"the pair probes would train on {work} samples (> {MAX_PAIR_WORK}, the "
                "scan's time budget): flips inside the groups are not tested"
            ),
            "pairs": [],
            "flagged": 0,
        }
        return GroupPairFlips(flags, {}, cal)
    space = next(sp for name, sp, _ in views if name == groups.probe)
    z = space.z / (float(space.z.std()) or 1.0)
    # exchangeability is checked in every view the scan computed: a flip copies samples in
    # all of them, natural containment need not hold in all
    zc = np.hstack([sp.z / (float(sp.z.std()) or 1.0) for _, sp, _ in views])
    found, tried = pair_flips(data.y, z, merged, exclude=exclude, seed=seed, z_check=zc)
    reasons: dict[int, str] = {}
    for f in found:
        tgt, src = data.class_name(f.target), data.class_name(f.source)
        for i in f.members:
            flags[i] = True
            reasons[int(i)] = (
                f"label {tgt}: a targeted flip {src} → {tgt} inside the label group (directional "
                f"test: an estimated {f.kappa:.0%} of the samples labelled {tgt} are drawn like "
                f"{src}, against {f.reverse:.0%} the other way; lower confidence bound of the "
                f"asymmetry {f.lower:.2f} > {DELTA_CLEAN}) and this sample is more likely one of "
                f"them than not; mitigate removes it (the classes cannot be told apart reliably)"
            )
    for d in tried:
        d["target"] = data.class_name(int(d["target"]))
        d["source"] = data.class_name(int(d["source"]))
    cal = {
        "method": "mixture-proportion asymmetry per ordered class pair inside a group",
        "min_lower_bound": DELTA_CLEAN,
        "pairs": tried,
        "flagged": int(flags.sum()),
    }
    return GroupPairFlips(flags, reasons, cal)
