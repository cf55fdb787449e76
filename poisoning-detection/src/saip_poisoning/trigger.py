"""Trigger reconstruction from input-space neighbours, carrier removal, and verification.

A backdoor needs a *shared* pattern: every poisoned sample carries the same trigger (a BadNets
patch, Gu et al. 2017, arXiv:1708.06733; a blended key, Chen et al. 2017, arXiv:1712.05526). A
triggered sample relabelled to the target class keeps its source class's input-space neighbours,
so its difference to them, ``D_i = x_i − mean(neighbours of its majority class)``, is the
trigger plus natural variation. Natural ambiguity (a "7" that looks like a "1") gives differences
with no common direction. The search, per class ``t``:

1. **Seeds**: samples labelled ``t`` whose neighbour majority is another class; and,
   separately, samples of ``t`` sharing an exact value on coordinates where that value is
   unusually common in ``t`` (:func:`stamp_seeds`: a stamped patch, found without neighbours —
   natural textures, clean-label poison). The seed set with the larger effect is used.
2. **Shared-pattern test, cross-fitted**: split the seeds in two; the mean difference of one half
   gives a direction ``u``; the other half's neighbour residuals projected on ``u`` are compared
   with those of the reference samples (samples whose neighbours agree with their label, outside
   ``t``) in robust standard deviations (the *effect*). Both halves must pass. This is a
   per-dataset null reference: the cut is in units of the dataset's own spread along ``u``.
3. **Reconstruction**: ``delta`` = the seeds' mean difference on the coordinates where it is
   significant (|mean| > 4 standard errors): a sparse patch or a dense blended key. Where the
   seeds' values on those coordinates are (nearly) constant the trigger is a stamped patch and
   is re-applied by overwriting them with the seeds' median values.
4. **Carriers**: every sample, of any label, whose projection on ``delta`` is past the midpoint
   between the reference and the seeds and within 3 robust SD of the seeds' own projection
   carries the trigger and is removed.
5. **Verification** (:func:`attack_success`): train a probe, stamp ``delta`` onto held-out
   samples of other classes, and measure the attack success rate (ASR) — before mitigation it
   confirms that the pattern is a working backdoor (Neural-Cleanse-style evidence, Wang et al.
   2019, without optimisation); after mitigation the gate is on this ASR, not on a flagged count.

Limits: a clean-label attack (poison keeps its true label, Turner et al. 2019) leaves no
neighbour-disagreement seeds; only an exactly stamped pattern is seeded then. A trigger on
fewer than ``min_seeds`` seeds is not searched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from saip_poisoning.data import Prepared
from saip_poisoning.detectors.base import robust_z
from saip_poisoning.inputspace import InputSpace
from saip_poisoning.model import predict_proba, train_mlp

__all__ = ["Trigger", "attack_success", "carriers", "find_triggers"]


@dataclass(frozen=True)
class Trigger:
    """A reconstructed trigger.

    Attributes
    ----------
    target
        The class the trigger's carriers are labelled with.
    delta
        ``D`` additive pattern in scaled input units (zero outside the trigger's coordinates).
    effect
        Cross-fitted separation of the seeds from the reference, robust SD (min of both halves).
    n_seeds
        Seeds the trigger was reconstructed from.
    n_coords
        Coordinates the trigger touches.
    cut
        Projection on ``delta`` above which a sample carries the trigger.
    """

    target: int
    delta: NDArray[np.float64]
    effect: float
    n_seeds: int
    n_coords: int
    cut: float
    #: coordinates the trigger overwrites with a fixed value (a stamped patch), else empty
    fixed: NDArray[np.bool_] | None = None
    #: the overwritten values on :attr:`fixed` coordinates
    values: NDArray[np.float64] | None = None
    #: per-coordinate tolerance of the value match on :attr:`fixed` coordinates
    tolerance: NDArray[np.float64] | None = None
    #: how the seeds were found: ``"neighbours"`` or ``"stamp"`` (shared exact values)
    kind: str = "neighbours"

    def projection(self, xs: NDArray[np.float64]) -> NDArray[np.float64]:
        """Projection of scaled inputs on the unit trigger direction."""
        u = self.delta / (float(np.linalg.norm(self.delta)) + 1e-12)
        out: NDArray[np.float64] = xs @ u
        return out

    def stamp(
        self, xs: NDArray[np.float64], lo: NDArray[np.float64], hi: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """``xs`` with the trigger added, clipped to the data's per-coordinate range."""
        out: NDArray[np.float64] = np.clip(xs + self.delta, lo, hi)
        if self.fixed is not None and self.values is not None and self.fixed.any():
            out[:, self.fixed] = self.values[self.fixed]
        return out


def _residuals(data: Prepared, space: InputSpace, idx: NDArray[np.intp]) -> NDArray[np.float64]:
    """``x_i − mean(x of i's neighbours carrying i's neighbour-majority label)``."""
    nb = space.neighbours[idx]
    same = data.y[nb] == space.majority[idx, None]
    w = same / np.maximum(same.sum(axis=1, keepdims=True), 1)
    ref = np.einsum("ik,ikd->id", w, data.xs[nb])
    out: NDArray[np.float64] = data.xs[idx] - ref
    return out


def _effect(u: NDArray[np.float64], test: NDArray[np.float64], ref: NDArray[np.float64]) -> float:
    norm = float(np.linalg.norm(u))
    if norm <= 1e-12:
        return 0.0
    pu = u / norm
    z = robust_z(test @ pu, ref @ pu)
    return float(np.median(z))


def _mode(col: NDArray[np.float64], usual: float) -> tuple[float, int]:
    """The most common value of ``col`` other than ``usual`` (the coordinate's usual value:
    a patch on a minority of the class must not hide behind the background's mode)."""
    vals, cnt = np.unique(col, return_counts=True)
    cnt = np.where(vals == usual, 0, cnt)
    k = int(cnt.argmax())
    return float(vals[k]), int(cnt[k])


def stamp_seeds(
    data: Prepared,
    t: int,
    *,
    min_seeds: int,
    min_excess: float = 0.05,
    max_rows: int = 2000,
    rng: np.random.Generator,
) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Samples of class ``t`` sharing an exact value on coordinates where that value is unusually
    common in ``t`` (and is not the coordinate's usual value): a stamped patch. Returns the
    samples and the stamp's coordinate mask.

    This seed source does not need neighbours to disagree, so it also covers data whose
    input-space neighbours are uninformative (natural textures) and clean-label poison.
    """
    idx_t = np.flatnonzero(data.y == t)
    idx_o = np.flatnonzero(data.y != t)
    if len(idx_o) > max_rows:
        idx_o = rng.choice(idx_o, max_rows, replace=False)
    sub_t = idx_t if len(idx_t) <= max_rows else rng.choice(idx_t, max_rows, replace=False)
    xt, xo = data.xs[sub_t], data.xs[idx_o]
    coords: list[int] = []
    values: list[float] = []
    for j in range(data.xs.shape[1]):
        vals, counts = np.unique(xo[:, j], return_counts=True)
        usual = float(vals[int(counts.argmax())])
        v, cnt = _mode(xt[:, j], usual)
        if cnt < min_seeds or cnt / len(sub_t) < min_excess:
            continue
        share_o = float((xo[:, j] == v).mean())
        if share_o >= 0.5 or cnt / len(sub_t) - share_o < min_excess:
            continue
        coords.append(j)
        values.append(v)
    none = (np.zeros(0, dtype=np.intp), np.zeros(data.xs.shape[1], dtype=bool))
    if len(coords) < 2:
        return none
    # one stamp at a time: for every candidate coordinate, the coordinates that (nearly) all the
    # samples sharing its value also share; a stamp is the largest such block (natural ink
    # saturates a few coordinates together, a patch all of its coordinates)
    xc = (data.xs[idx_t][:, coords] == np.asarray(values)).astype(np.float64)
    co = (xc.T @ xc) / np.maximum(xc.sum(axis=0), 1.0)[:, None]  # P(coord b | coord a)
    block = co >= 0.9
    anchor = int(block.sum(axis=1).argmax())
    together = block[anchor]
    if together.sum() < 2:
        return none
    match = xc[:, together].mean(axis=1) >= 0.8
    out: NDArray[np.intp] = idx_t[match]
    mask = np.zeros(data.xs.shape[1], dtype=bool)
    mask[np.asarray(coords)[together]] = True
    return out, mask


def find_triggers(
    data: Prepared,
    space: InputSpace,
    *,
    min_seeds: int = 6,
    min_effect: float = 6.0,
    max_reference: int = 2000,
    seed: int = 0,
) -> list[Trigger]:
    """Search every class for a shared trigger among its neighbour-disagreeing samples."""
    rng = np.random.default_rng(seed)
    seeds_all = (space.majority != data.y) & (space.majority_share >= 0.5)
    agree = np.flatnonzero(~seeds_all & (space.disagreement <= 0.3))
    out: list[Trigger] = []
    for t in range(data.n_classes):
        ref_idx = agree[data.y[agree] != t]
        if len(ref_idx) < 20:
            continue
        if len(ref_idx) > max_reference:
            ref_idx = rng.choice(ref_idx, max_reference, replace=False)
        d_r = _residuals(data, space, ref_idx)
        best: tuple[float, NDArray[np.intp], NDArray[np.float64], str] | None = None
        stamp_idx, stamp_mask = stamp_seeds(data, t, min_seeds=min_seeds, rng=rng)
        for kind, s_idx in (
            ("neighbours", np.flatnonzero(seeds_all & (data.y == t))),
            ("stamp", stamp_idx),
        ):
            if len(s_idx) < min_seeds:
                continue
            if kind == "neighbours":
                d_s, d_ref = _residuals(data, space, s_idx), d_r
            else:
                # carriers of a stamp may be each other's neighbours: compare them with the
                # rest of their own class instead (class content cancels, the stamp remains)
                rest = np.setdiff1d(np.flatnonzero(data.y == t), s_idx)
                if len(rest) < min_seeds:
                    continue
                if len(rest) > max_reference:
                    rest = rng.choice(rest, max_reference, replace=False)
                centre = data.xs[rest].mean(axis=0)
                d_s, d_ref = data.xs[s_idx] - centre, data.xs[rest] - centre
            perm = rng.permutation(len(s_idx))
            a, b = perm[: len(perm) // 2], perm[len(perm) // 2 :]
            eff = min(
                _effect(d_s[a].mean(0), d_s[b], d_ref), _effect(d_s[b].mean(0), d_s[a], d_ref)
            )
            if best is None or eff > best[0]:
                best = (eff, s_idx, d_s, kind)
        if best is None or best[0] < min_effect:
            continue
        effect, s_idx, d_s, kind = best
        mean = d_s.mean(0)
        se = d_s.std(0, ddof=1) / np.sqrt(len(s_idx)) + 1e-9
        coords = np.abs(mean) > 4.0 * se
        if not coords.any():
            continue
        delta = np.where(coords, mean, 0.0)
        # a stamped patch: the seeds' values on the trigger coordinates are (nearly) constant
        seed_x = data.xs[s_idx]
        spread = np.median(np.abs(seed_x - np.median(seed_x, axis=0)), axis=0)
        ref_spread = data.xs[ref_idx].std(axis=0) + 1e-9
        fixed = coords & (spread <= 0.1 * ref_spread)
        values = np.median(seed_x, axis=0)
        if kind == "stamp":
            # seeds found by their shared values: the trigger is those values where they are
            # not the reference's usual value, nothing else
            fixed = stamp_mask.copy()
            coords = fixed
            if coords.sum() < 2:
                continue
            delta = np.where(coords, mean, 0.0)
        u = delta / float(np.linalg.norm(delta))
        p_ref = data.xs[ref_idx] @ u
        p_seed = data.xs[s_idx] @ u
        med_r, med_s = float(np.median(p_ref)), float(np.median(p_seed))
        mad_s = 1.4826 * float(np.median(np.abs(p_seed - med_s)))
        # past the midpoint, and within 3 robust SD of the seeds' own (tight) projection: a
        # stamped trigger overwrites the same coordinates in every carrier
        cut = max(med_r + 0.5 * (med_s - med_r), med_s - max(3.0 * mad_s, 0.05 * (med_s - med_r)))
        out.append(
            Trigger(
                target=t,
                delta=delta,
                effect=round(effect, 2),
                n_seeds=len(s_idx),
                n_coords=int(coords.sum()),
                cut=cut,
                fixed=fixed if fixed.sum() >= 0.5 * coords.sum() else None,
                values=values,
                tolerance=np.maximum(0.05 * ref_spread, 1e-9),
                kind=kind,
            )
        )
    return out


def carriers(data: Prepared, trigger: Trigger) -> NDArray[np.bool_]:
    """Samples (any label) carrying the trigger: for a trigger found by its stamped values, those
    matching them on at least 90 % of its coordinates; otherwise those whose projection is past
    the cut."""
    t = trigger
    if (
        t.kind == "stamp"
        and t.fixed is not None
        and t.values is not None
        and t.tolerance is not None
    ):
        f = t.fixed
        close = np.abs(data.xs[:, f] - t.values[f]) <= t.tolerance[f]
        out: NDArray[np.bool_] = close.mean(axis=1) >= 0.9
        return out
    out = trigger.projection(data.xs) > trigger.cut
    return out


def attack_success(
    data: Prepared,
    triggers: list[Trigger],
    *,
    keep: NDArray[np.bool_] | None = None,
    labels: NDArray[np.int64] | None = None,
    epochs: int = 6,
    holdout: float = 0.2,
    max_train: int = 12000,
    seed: int = 0,
) -> dict[str, float | dict[int, float]]:
    """Train a probe on the kept samples and measure each trigger's ASR on held-out samples.

    The held-out part (``holdout`` of the kept samples, stratified) never trains the probe; the
    ASR of trigger ``t`` is the share of held-out samples of other classes, not themselves
    carriers, that the probe assigns to ``t`` once ``delta`` is stamped on them. Also returns the
    held-out clean accuracy. At most ``max_train`` random kept samples train the probe.
    """
    n = len(data.y)
    keep = np.ones(n, dtype=bool) if keep is None else keep
    y = data.y if labels is None else labels
    rng = np.random.default_rng(seed + 101)
    is_carrier = np.zeros(n, dtype=bool)
    for t in triggers:
        is_carrier |= carriers(data, t)
    test = np.zeros(n, dtype=bool)
    for c in range(data.n_classes):
        idx = np.flatnonzero(keep & (y == c))
        if len(idx):
            test[rng.choice(idx, max(1, round(holdout * len(idx))), replace=False)] = True
    train = keep & ~test
    if train.sum() > max_train:
        # the ASR needs a probe that learns what the data teaches, not all of the data
        tr_idx = rng.choice(np.flatnonzero(train), max_train, replace=False)
        train = np.zeros(n, dtype=bool)
        train[tr_idx] = True
    if test.sum() > max_train // 4:
        te_idx = rng.choice(np.flatnonzero(test), max_train // 4, replace=False)
        test = np.zeros(n, dtype=bool)
        test[te_idx] = True
    net = train_mlp(data.xs[train], y[train], n_classes=data.n_classes, epochs=epochs, seed=seed)
    lo, hi = data.xs.min(0), data.xs.max(0)
    clean_idx = np.flatnonzero(test & ~is_carrier)
    pred = predict_proba(net, data.xs[clean_idx]).argmax(1)
    accuracy = float((pred == y[clean_idx]).mean()) if len(clean_idx) else 0.0
    asr: dict[int, float] = {}
    for t in triggers:
        src = clean_idx[y[clean_idx] != t.target]
        if len(src) == 0:
            asr[t.target] = 0.0
            continue
        p = predict_proba(net, t.stamp(data.xs[src], lo, hi)).argmax(1)
        asr[t.target] = round(float((p == t.target).mean()), 4)
    return {"clean_accuracy": round(accuracy, 4), "asr": asr}
