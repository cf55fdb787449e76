"""Model-update validation and robust combination (pure functions + one small tracker).

Without secure aggregation the server sees each client's update and applies, in order:

1. structural checks — right number of arrays, right shapes, finite values;
2. a norm bound (honest clients clip to it, so a larger update is malicious or broken);
3. direction — cosine similarity to the coordinate-wise median of the surviving updates;
4. a robust rule over what is left: Flower's Krum / multi-Krum (Blanchard et al., NeurIPS 2017),
   coordinate-wise median and trimmed mean (Yin et al., ICML 2018), Bulyan (El Mhamdi et al.,
   ICML 2018), or FedAvg with self-reported example counts capped.

Clients that fail checks repeatedly are excluded from later rounds (:class:`ClientReputation`).

With SecAgg+ the server only sees group aggregates; :func:`score_group` applies FLTrust-style
checks (Cao et al., NDSS 2021): each aggregate's cosine to the server's *root update* (trained on
server-held clean data) and the holdout loss after applying it; :func:`combine_trusted` weights
the surviving aggregates by ReLU(cosine), norms capped at their median. Across rounds,
:class:`GroupTesting` finds clients that keep dragging their (randomly redrawn) groups down, and
:func:`adaptive_norm_bound` ties the norm bound to the server's own honest root update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from saip_fl.model import Weights, add, flatten, l2_norm


def cosine(a: Weights, b: Weights) -> float:
    """Cosine similarity of two updates (0 when either is zero)."""
    fa, fb = flatten(a), flatten(b)
    na, nb = float(np.linalg.norm(fa)), float(np.linalg.norm(fb))
    return float(fa @ fb / (na * nb)) if na > 0 and nb > 0 else 0.0


def check_structure(update: Weights, shapes: Sequence[tuple[int, ...]]) -> str | None:
    """Reason the update is malformed (array count, shapes, non-finite values), else ``None``."""
    if len(update) != len(shapes):
        return f"wrong number of arrays ({len(update)} != {len(shapes)})"
    for i, (arr, shape) in enumerate(zip(update, shapes, strict=True)):
        if tuple(np.shape(arr)) != tuple(shape):
            return f"array {i} has shape {np.shape(arr)}, expected {tuple(shape)}"
        if not np.all(np.isfinite(arr)):
            return f"array {i} holds NaN/Inf"
    return None


def robust_centre(updates: Sequence[Weights]) -> Weights:
    """Coordinate-wise median of ``updates``."""
    return [
        np.median(np.stack([u[i] for u in updates]), axis=0).astype(np.float32)
        for i in range(len(updates[0]))
    ]


@dataclass(frozen=True)
class Screening:
    """Result of :func:`screen_updates`: accepted updates and rejection reasons, by client id."""

    accepted: dict[str, Weights]
    rejected: dict[str, str]


def screen_updates(
    updates: Mapping[str, Weights],
    *,
    shapes: Sequence[tuple[int, ...]],
    norm_bound: float,
    min_cosine: float,
) -> Screening:
    """Apply structure, norm and direction checks to each client's update."""
    rejected: dict[str, str] = {}
    survivors: dict[str, Weights] = {}
    for cid, upd in updates.items():
        reason = check_structure(upd, shapes)
        if reason is None:
            norm = l2_norm(upd)
            if norm > norm_bound * (1 + 1e-6):
                reason = f"norm {norm:.3g} > bound {norm_bound:g}"
            elif norm == 0.0:
                reason = "zero update (free-rider)"
        if reason is None:
            survivors[cid] = upd
        else:
            rejected[cid] = reason
    if len(survivors) >= 3:
        centre = robust_centre(list(survivors.values()))
        for cid in list(survivors):
            cos = cosine(survivors[cid], centre)
            if cos < min_cosine:
                rejected[cid] = f"cosine {cos:.2f} to robust centre < {min_cosine:g}"
                del survivors[cid]
    return Screening(survivors, rejected)


def robust_aggregate(
    rule: str,
    updates: Sequence[Weights],
    counts: Sequence[int],
    *,
    max_examples: int,
    num_malicious: int = 0,
    trim_fraction: float = 0.2,
    multikrum_keep: int = 0,
) -> Weights:
    """Aggregate ``updates`` with one of Flower's rules.

    Rules: ``fedavg``, ``krum`` (one update), ``multikrum`` (average of the ``multikrum_keep`` best,
    default ``n - num_malicious``), ``median``, ``trimmed_mean``, ``bulyan``.

    Example counts are self-reported, so an attacker claims many to dominate a weighted mean. For
    ``fedavg`` and ``trimmed_mean`` each count is capped at ``max_examples`` *and* at the median
    reported count (an attacker minority cannot move the median); distance-based and
    order-statistic rules (Krum, multi-Krum, Bulyan, median) use equal weights — Flower's
    multi-Krum would otherwise average its survivors by the claimed counts.
    """
    from flwr.server.strategy.aggregate import (
        aggregate,
        aggregate_bulyan,
        aggregate_krum,
        aggregate_median,
        aggregate_trimmed_avg,
    )

    if not updates:
        raise ValueError("no updates to aggregate")
    if rule in ("fedavg", "trimmed_mean"):
        median = float(np.median([max(int(c), 1) for c in counts]))
        capped = [min(int(c), max_examples, int(median)) for c in counts]
    else:
        capped = [1] * len(counts)
    pairs = [([np.asarray(a) for a in u], max(c, 1)) for u, c in zip(updates, capped, strict=True)]
    n = len(pairs)
    f = min(num_malicious, max(0, (n - 3) // 2))
    if rule == "fedavg":
        out = aggregate(pairs)
    elif rule == "median":
        out = aggregate_median(pairs)
    elif rule == "trimmed_mean":
        out = aggregate_trimmed_avg(pairs, trim_fraction)
    elif rule == "krum":
        out = aggregate_krum(pairs, f, 0)
    elif rule == "multikrum":
        out = aggregate_krum(pairs, f, multikrum_keep or max(1, n - f))
    elif rule == "bulyan":
        if n < 4 * f + 3:
            out = aggregate_krum(pairs, f, max(1, n - f))
        else:
            out = aggregate_bulyan(pairs, f, aggregate_krum, to_keep=0)
    else:
        raise ValueError(f"unknown aggregation rule '{rule}'")
    return [np.asarray(a, dtype=np.float32) for a in out]


@dataclass
class ClientReputation:
    """Counts failed checks per client and excludes repeat offenders.

    Parameters
    ----------
    exclude_after
        A client is excluded from later rounds once it has failed this many checks.
    """

    exclude_after: int
    offences: dict[str, list[str]] = field(default_factory=dict)

    def record(self, cid: str, reason: str) -> None:
        """Note one failed check of client ``cid``."""
        self.offences.setdefault(cid, []).append(reason)

    def excluded(self) -> set[str]:
        """Clients no longer allowed to take part."""
        return {c for c, r in self.offences.items() if len(r) >= self.exclude_after}

    def report(self) -> dict[str, list[str]]:
        """Offences of every excluded client."""
        return {c: list(self.offences[c]) for c in sorted(self.excluded())}


@dataclass
class GroupStreaks:
    """Excludes clients that keep landing in rejected groups across random regroupings.

    Groups are redrawn at random every round, so an honest client shares a group with a given
    attacker with probability ``(m-1)/(n-1)`` per round; the chance that it does so in
    ``exclude_after`` consecutive rounds falls geometrically (e.g. (4/9)⁴ ≈ 4% for 10 clients in
    groups of 5 with 4 rounds), while an attacker whose group is rejected every round is excluded
    after ``exclude_after`` rounds. A round in an accepted group resets the streak.
    """

    exclude_after: int
    max_excluded: int | None = None
    streaks: dict[str, int] = field(default_factory=dict)
    banned: dict[str, list[str]] = field(default_factory=dict)

    def record(self, members: Sequence[str], *, rejected: bool) -> None:
        """Note one group outcome for each of its ``members``.

        Record only rounds in which some group was accepted: when every group fails the round
        says nothing about who caused it. At most ``max_excluded`` clients are ever excluded, so
        exclusion cannot starve the run of the clients its groups need.
        """
        for cid in members:
            self.streaks[cid] = self.streaks.get(cid, 0) + 1 if rejected else 0
            full = self.max_excluded is not None and len(self.banned) >= self.max_excluded
            if self.streaks[cid] >= self.exclude_after and cid not in self.banned and not full:
                self.banned[cid] = [
                    f"in a rejected group {self.streaks[cid]} rounds in a row "
                    "(random regrouping every round)"
                ]

    def excluded(self) -> set[str]:
        """Clients no longer allowed to take part."""
        return set(self.banned)

    def report(self) -> dict[str, list[str]]:
        """Reason for every excluded client."""
        return {c: list(r) for c, r in sorted(self.banned.items())}


# --------------------------------------------------------------------------- group aggregates
@dataclass(frozen=True)
class GroupScore:
    """FLTrust-style verdict on one group aggregate."""

    group: int
    accepted: bool
    reason: str
    cosine: float
    norm: float
    holdout_loss: float
    weight: float


def noisy_norm_limit(norm_bound: float, noise_norm: float, dim: int) -> float:
    """Largest norm of an honest mean ``s + n``: ``|s| <= norm_bound`` plus isotropic Gaussian
    noise ``n`` of expected norm ``noise_norm`` in ``dim`` dimensions.

    ``|s + n|² = |s|² + 2 s·n + |n|²`` with ``|n|²/N² ~ χ²_d / d`` (standard deviation
    ``sqrt(2/d)``) and ``s·n ~ N(0, |s|² N² / d)``; both are allowed six standard deviations
    (Laurent & Massart, Ann. Stat. 2000, for the χ² tail). Without noise: the bound + 1 %.
    """
    b = norm_bound * 1.01
    if noise_norm <= 0:
        return b
    z, d = 6.0, max(1, dim)
    return math.sqrt(
        b * b + noise_norm**2 * (1 + z * math.sqrt(2 / d)) + 2 * z * b * noise_norm / math.sqrt(d)
    )


def score_group(
    group: int,
    update: Weights,
    *,
    shapes: Sequence[tuple[int, ...]],
    root_update: Weights,
    global_weights: Weights,
    holdout_loss: Callable[[Weights], float],
    base_loss: float,
    norm_bound: float,
    clipping_range: float,
    min_cosine: float,
    loss_tolerance: float,
    noise_norm: float = 0.0,
) -> GroupScore:
    """Score one group's mean update against the root update and the holdout loss.

    The mean of honest updates bounded by ``norm_bound`` is itself bounded by it (triangle
    inequality), so a larger group mean means a member sent an out-of-bound update. With
    DP the mean also carries Gaussian noise of expected norm ``noise_norm``; the bound then allows
    :func:`noisy_norm_limit` (the signal and the noise add in quadrature, and the noise norm
    concentrates tightly around its mean in high dimension, so no room is left for a crafted
    vector the size of the noise), and the cosine threshold is lowered by ``3/sqrt(d)`` — three
    standard deviations of the cosine between pure noise and any fixed direction in ``d``
    dimensions — so that an honest aggregate whose signal the noise partly hides is not dropped
    for it; and the accepted noisy aggregates get equal weights (averaging k aggregates divides
    the noise by √k).
    """
    reason = check_structure(update, shapes)
    if reason is not None:
        return GroupScore(group, False, reason, 0.0, math.nan, math.nan, 0.0)
    norm = l2_norm(update)
    peak = max(float(np.max(np.abs(a))) if a.size else 0.0 for a in update)
    cos = cosine(update, root_update)
    loss = holdout_loss(add(global_weights, update))
    if peak > clipping_range:
        reason = f"coordinate {peak:.3g} outside clipping range {clipping_range:g}"
    elif norm > noisy_norm_limit(norm_bound, noise_norm, sum(a.size for a in update)):
        reason = f"norm {norm:.3g} > bound {norm_bound:g} (+ expected noise {noise_norm:.3g})"
    elif norm == 0.0:
        reason = "zero aggregate"
    elif cos <= min_cosine - (
        3.0 / math.sqrt(max(1, sum(a.size for a in update))) if noise_norm > 0 else 0.0
    ):
        reason = f"cosine to root update {cos:.2f} <= {min_cosine:g}"
    elif loss > base_loss + loss_tolerance:
        reason = f"holdout loss {loss:.3f} > {base_loss:.3f} + {loss_tolerance:g}"
    if reason is not None:
        return GroupScore(group, False, reason, cos, norm, loss, 0.0)
    # under DP noise the cosine of an honest aggregate is mostly noise (≈ N(0, 1/d) around a small
    # signal): weighting by it would pick one group's noise instead of averaging k of them
    weight = 1.0 if noise_norm > 0 else max(cos, 0.0)
    return GroupScore(group, True, "accepted", cos, norm, loss, weight)


def combine_trusted(
    updates: Mapping[int, Weights], scores: Mapping[int, GroupScore], root_update: Weights
) -> Weights | None:
    """FLTrust-style combination: ReLU(cosine)-weighted mean of the accepted group aggregates.

    FLTrust rescales every update to the root update's norm. Our root data is smaller than a
    group's data (fewer local steps, so a shorter root update), which would halve the learning
    rate; instead each aggregate's norm is capped at the *median* norm of the accepted
    aggregates, so one inflated aggregate cannot dominate (all are already under the norm bound).
    """
    accepted = [g for g in updates if scores[g].accepted and scores[g].weight > 0]
    total = sum(scores[g].weight for g in accepted)
    if total <= 0:
        return None
    ref = float(np.median([scores[g].norm for g in accepted]))
    out = [np.zeros_like(a, dtype=np.float32) for a in root_update]
    for g in accepted:
        s, upd = scores[g], updates[g]
        cap = min(1.0, ref / s.norm) if s.norm > 0 else 0.0
        for o, a in zip(out, upd, strict=True):
            o += (s.weight / total) * cap * a
    return out


def adaptive_norm_bound(root_norm: float, *, multiplier: float, ceiling: float) -> float:
    """This round's norm bound: ``multiplier ×`` the root update's norm, at most ``ceiling``.

    Sun et al., "Can You Really Backdoor Federated Learning?" (2019) show that a norm bound close
    to the honest updates' norms limits what a bounded attacker can inject per round. Under
    SecAgg+ the server cannot see honest norms; its root update (trained on clean server data
    from the same global model) is an honest update it can see, and it shrinks as training
    converges — so does the bound, while a fixed bound lets an attacker send many times an
    honest update's norm late in training.
    """
    if not (math.isfinite(root_norm) and root_norm >= 0):
        raise ValueError(f"root update norm must be finite and >= 0, got {root_norm!r}")
    bound = min(ceiling, multiplier * root_norm)
    return bound if bound > 0 else ceiling


@dataclass
class GroupTesting:
    """Finds clients that keep dragging their groups' scores down across random regroupings.

    Group testing (Dorfman, Ann. Math. Stat. 1943) over SecAgg+ groups: each round every client
    sits in one random group and the server scores only the group means (FLTrust cosine to the
    root update, Cao et al. NDSS 2021). A group's score residual (its cosine minus the round's
    median) is modelled as the mean of its members' hidden effects; ridge least squares over all
    recorded rounds estimates each client's effect. A client whose effect lies more than
    ``z_threshold`` robust standard deviations (1.4826 × MAD) *below* the median client and at
    least ``min_effect`` below zero (in score units: a relative test alone always finds someone
    in a federation with no attacker), after at least ``min_rounds`` observations, is excluded
    from later rounds. The server is not told how
    many attackers there are: the test is relative to the population, and at most
    ``max_excluded`` clients are ever excluded.
    """

    z_threshold: float
    min_rounds: int
    min_effect: float = 0.0
    t_threshold: float = 3.0
    max_excluded: int | None = None
    ridge: float = 0.5
    rows: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    banned: dict[str, list[str]] = field(default_factory=dict)
    _se: dict[str, float] = field(default_factory=dict, repr=False)

    def record(self, groups: Sequence[Sequence[str]], scores: Sequence[float]) -> None:
        """Note one round: the members of each scored group and its score (higher = better)."""
        if len(groups) != len(scores):
            raise ValueError("one score per group")
        usable = [(tuple(m), float(s)) for m, s in zip(groups, scores, strict=True) if m]
        if len(usable) < 2 or not all(math.isfinite(s) for _, s in usable):
            return  # one group (or a NaN score) says nothing relative to the others
        med = float(np.median([s for _, s in usable]))
        self.rows.extend((m, s - med) for m, s in usable)
        self._update()

    def effects(self) -> dict[str, tuple[float, int]]:
        """Estimated effect and number of observations of every client seen so far."""
        clients = sorted({c for m, _ in self.rows for c in m})
        if not clients:
            return {}
        col = {c: i for i, c in enumerate(clients)}
        a = np.zeros((len(self.rows), len(clients)))
        b = np.zeros(len(self.rows))
        for r, (members, resid) in enumerate(self.rows):
            for c in members:
                a[r, col[c]] = 1.0 / len(members)
            b[r] = resid
        inv = np.linalg.inv(a.T @ a + self.ridge * np.eye(len(clients)) / len(clients))
        x = inv @ a.T @ b
        dof = len(b) - float(np.trace(a @ inv @ a.T))
        sigma2 = float(np.sum((a @ x - b) ** 2)) / max(dof, 1.0)
        self._se = {c: math.sqrt(max(sigma2 * float(inv[i, i]), 1e-24)) for c, i in col.items()}
        seen = (a > 0).sum(axis=0)
        return {c: (float(x[col[c]]), int(seen[col[c]])) for c in clients}

    def _update(self) -> None:
        est = self.effects()
        ready = {c: e for c, (e, n) in est.items() if n >= self.min_rounds}
        if len(ready) < 3:
            return
        vals = np.array(list(ready.values()))
        med = float(np.median(vals))
        mad = 1.4826 * float(np.median(np.abs(vals - med)))
        if mad <= 0:
            return
        for c in sorted(ready, key=lambda k: ready[k]):
            z = (ready[c] - med) / mad
            full = self.max_excluded is not None and len(self.banned) >= self.max_excluded
            t = ready[c] / self._se[c]
            if z >= -self.z_threshold or ready[c] >= -self.min_effect or full:
                break
            if t >= -self.t_threshold:
                continue
            if c not in self.banned:
                self.banned[c] = [
                    f"its groups score {-z:.1f} robust SDs below the median client "
                    f"over {est[c][1]} random regroupings"
                ]

    def excluded(self) -> set[str]:
        """Clients no longer allowed to take part."""
        return set(self.banned)

    def report(self) -> dict[str, list[str]]:
        """Reason for every excluded client."""
        return {c: list(r) for c, r in sorted(self.banned.items())}
