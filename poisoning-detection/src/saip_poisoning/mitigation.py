"""Mitigation of what a scan found, and its verification (the gate is on the attack success rate).

:func:`mitigate` applies a :class:`~saip_poisoning.scan.ScanReport`:

1. **Repair or remove carriers** of every verified trigger
   (:func:`saip_poisoning.trigger.carriers`). A *stamped patch* with a known coordinate mask
   (the reconstructed exact patch: the trigger is its values on :attr:`Trigger.fixed`, nothing
   additive or blended) is repaired (``repair=True``, the default): its coordinates are
   overwritten with the per-coordinate median of the kept non-carriers, and the carrier —
   whose label is the attacker's — is relabelled to the majority of its 10 input-space
   neighbours among the kept non-carriers (held out: no carrier votes). It is kept only when
   at least 60 % of them agree, and never when the fill lands on the trigger's own value;
   otherwise removed. Only on a *calibrated* scan: where the scan could not judge labels
   (``calibrated: false``) the neighbour vote cannot be trusted either, so carriers are removed —
   the rule the label-noise flags of such a scan already follow (removed, never relabelled).
   Applied after crops (an evaluation set, uncalibrated) gave 52 % right new labels and a
   paired accuracy change of −3.1 points with repair, −1.9 with removal. This is the
   input-side counterpart of Neural Cleanse's patching
   (Wang et al. 2019, IEEE S&P, §VI: the reverse-engineered trigger's mask locates what to
   undo) and of "trigger removal" data repair (Doan et al. 2020, Februus, ACSAC: inpaint the
   trigger region, then classify) — here the region is inpainted from clean data and the
   label comes from clean neighbours, not from the (poisoned) model. Why: an all-to-one
   attack patches samples *in place*, so removing its carriers removes that share of the
   training data (on a steep learning curve, removal alone costs accuracy). Blended triggers
   are removed, not repaired: their key and weight are estimates (weight ≈ 0.10 for a true
   0.2), so un-blending leaves a residue. The choices were measured on the tuning sets only
   (digits, MNIST-5k a2o 10 %; benchmark split): median fill vs the neighbours' median
   (identical on MNIST-5k; on digits the neighbours' fill landed on the patch value for 16
   of 144 carriers), neighbour vote vs a probe trained on the kept non-carriers (share of
   new labels equal to the true one, digits / MNIST-5k: 0.99 / 0.94 vs 0.93 / 0.94 with the
   0.6 cut, 0.98 / 0.91 vs 0.91 / 0.92 without), and the 0.6 cut vs none (paired accuracy
   change, median over training seeds 0–8: digits +1.4 vs +1.1 points, MNIST-5k +0.5 vs
   +0.2; removal alone +1.1 and 0.0). If kept + repaired data fails the
   verification (step 5), the mitigation falls back to removal and ``reason`` says so.
2. **Triggers from other flags**: samples flagged for another reason (any detector) that are not
   label noise seed :func:`~saip_poisoning.trigger.triggers_from_flags` for classes with no
   trigger yet. A pattern they share (a blended key, Chen et al. 2017, arXiv:1712.05526) is
   reconstructed along Fisher's discriminant (cross-fitted effect test) and its carriers — flagged
   or not — are removed too; its attack success is gated like the scan's own triggers. Flagged
   samples are removed in any case.
3. **Label noise** is relabelled to the input-space neighbour majority (or removed).
4. **Counter-examples** (optional, ``unlearn`` > 0, and only for triggers whose attack success
   after removal alone is still above ``max_asr``): copies of kept samples with the
   reconstructed trigger stamped on and their correct label — Neural Cleanse's unlearning set
   (Wang et al. 2019, IEEE S&P, §VI-C). Needed where the trigger is a natural extreme of the data
   and a clean model already follows it; the caller must then train on
   ``kept + counter_x/counter_y`` (the verification assumes it does).
5. **Verify**: a probe retrained on exactly what the caller will train on (kept, relabelled,
   repaired, plus counter-examples if any: :meth:`MitigationResult.training_set`) must give
   every trigger an attack success rate ≤ ``max_asr`` on held-out samples, *and* a re-scan of
   the kept and repaired data (without counter-examples, so they cannot hide anything) must be
   at most ``max_risk``: a trigger the reconstruction missed — or a repair that left part of
   it — shows up there as a verified trigger of its own (risk ≥ 70) and the mitigation fails
   (with repair: falls back to removal, and fails if that fails too).

The CLI/pipeline turn a failed verification into exit 3 (:class:`saip.errors.GateError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.neighbors import NearestNeighbors

from saip_poisoning.data import Prepared, prepare
from saip_poisoning.scan import ScanReport, scan
from saip_poisoning.trigger import (
    Trigger,
    attack_success,
    carriers,
    counter_examples,
    to_remove,
    triggers_from_flags,
)

__all__ = ["MitigationResult", "mitigate"]


@dataclass(frozen=True)
class MitigationResult:
    """The outcome of :func:`mitigate`.

    Attributes
    ----------
    keep
        ``N`` booleans: samples kept as they are (trigger carriers, other flagged samples, and
        with ``relabel=False`` label-noise flags, are removed; repaired carriers are in
        :attr:`repaired`, not here).
    labels
        ``N`` labels after relabelling (equal to the input where nothing was relabelled);
        repaired carriers have their new label.
    relabelled
        Number of labels changed (repaired carriers included).
    asr_after, clean_accuracy_after
        Attack success of every verified trigger on a probe retrained on what the caller will
        train on, and that probe's held-out clean accuracy (empty / ``None`` without a trigger).
    residual
        The re-scan of the kept data (without counter-examples).
    passed
        Every ASR ≤ ``max_asr`` and the residual risk ≤ ``max_risk``.
    reason
        Why it passed or not (never empty).
    triggers
        The triggers mitigated: the report's verified ones and those reconstructed from flags.
    asr_removal_only
        With counter-examples: the ASR of a probe trained on the kept data alone (reported so
        that a reader sees how much the counter-examples do; not gated).
    counter_x, counter_y
        Counter-examples (caller's units, flattened ``N'×D``) to train on with the kept data.
    repaired
        ``N`` booleans: carriers repaired and kept (``None`` from older callers' results).
    repaired_x
        Their repaired inputs, in the caller's units, flattened, in index order.
    fate
        ``N`` strings: ``"kept"``, ``"relabelled"``, ``"repaired"`` or ``"removed: <why>"``.

    Train on :meth:`training_set` — kept + repaired + counter-examples, as verified.
    """

    keep: NDArray[np.bool_]
    labels: NDArray[np.int64]
    relabelled: int
    asr_after: Mapping[int, float]
    clean_accuracy_after: float | None
    residual: ScanReport
    passed: bool
    reason: str
    triggers: tuple[Trigger, ...] = ()
    asr_removal_only: Mapping[int, float] = field(default_factory=dict)
    counter_x: NDArray[np.float64] | None = None
    counter_y: NDArray[np.int64] | None = None
    repaired: NDArray[np.bool_] | None = None
    repaired_x: NDArray[np.float64] | None = None
    fate: NDArray[np.str_] | None = None

    @property
    def n_repaired(self) -> int:
        """Carriers repaired and kept (their labels are in :attr:`labels`)."""
        return 0 if self.repaired is None else int(self.repaired.sum())

    def training_set(self, x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """What the verification assumed the caller trains on, from the caller's ``x``: the kept
        samples, the repaired carriers (their repaired inputs), both with :attr:`labels`, then the
        counter-examples. Flattened ``N'×D`` in the caller's units.

        Raises
        ------
        ValueError
            ``x`` does not have the ``N`` samples this result was made for.
        """
        flat = np.asarray(x, dtype=np.float64)
        flat = flat.reshape(len(flat), -1)
        if len(flat) != len(self.keep):
            raise ValueError(
                f"x has {len(flat)} samples, the mitigation was made for {len(self.keep)}"
            )
        use = self.keep.copy()
        if self.repaired is not None and self.repaired_x is not None and self.repaired.any():
            flat = flat.copy()
            flat[self.repaired] = self.repaired_x
            use |= self.repaired
        xa, ya = flat[use], self.labels[use]
        if self.counter_x is not None and self.counter_y is not None:
            xa, ya = np.vstack([xa, self.counter_x]), np.concatenate([ya, self.counter_y])
        return xa, ya

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the residual's per-sample arrays)."""
        return {
            "kept": int(self.keep.sum()),
            "removed": int((~self.keep).sum()),
            "relabelled": self.relabelled,
            "repaired": self.n_repaired,
            "asr_after": {str(k): v for k, v in self.asr_after.items()},
            "asr_removal_only": {str(k): v for k, v in self.asr_removal_only.items()},
            "counter_examples": 0 if self.counter_y is None else len(self.counter_y),
            "triggers": [
                {"target": t.target, "kind": t.kind, "coordinates": t.n_coords}
                for t in self.triggers
            ],
            "clean_accuracy_after": self.clean_accuracy_after,
            "residual_risk": self.residual.risk_score,
            "passed": self.passed,
            "reason": self.reason,
        }


def _asr_map(res: Mapping[str, Any]) -> dict[int, float]:
    return {int(k): float(v) for k, v in dict(res["asr"]).items()}


#: a repaired carrier is kept only when its new label's share of the neighbour vote reaches
#: this; chosen on the tuning sets (the fill — per-coordinate median of the kept non-carriers —
#: and the neighbour vote were chosen there too, over a neighbours' fill and a probe's label:
#: module docstring)
_MIN_CONFIDENCE = 0.6
#: neighbours of the relabel vote
_K = 10
#: donors (kept non-carriers) the neighbours are searched among, at most
_MAX_DONORS = 5000


def _patch(
    t: Trigger,
) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]] | None:
    """A stamped patch's mask, values and tolerance when the trigger *is* its values on a known
    coordinate mask (no additive or blended part), so overwriting the mask removes all of it;
    else ``None``."""
    if t.fixed is None or t.values is None or t.tolerance is None or t.blend != 0.0:
        return None
    if not t.fixed.any() or ((t.delta != 0) & ~t.fixed).any():
        return None
    return t.fixed, t.values, t.tolerance


def _repairable(t: Trigger) -> bool:
    return _patch(t) is not None


@dataclass(frozen=True)
class _Repair:
    rows: NDArray[np.intp]  # repaired and kept
    xs: NDArray[np.float64]  # their repaired scaled inputs
    labels: NDArray[np.int64]  # their new labels
    dropped: dict[int, str]  # carriers that could not be repaired: why


def _repair(
    data: Prepared,
    triggers: list[Trigger],
    rows: NDArray[np.intp],
    donors: NDArray[np.intp],
    labels: NDArray[np.int64],
    *,
    seed: int,
) -> _Repair:
    """Overwrite each carrier's trigger coordinates with a clean fill, then relabel it from the
    kept non-carriers (the carrier's own label is the attacker's and is never used)."""
    rng = np.random.default_rng(seed + 303)
    if len(donors) > _MAX_DONORS:
        donors = np.sort(rng.choice(donors, _MAX_DONORS, replace=False))
    xs = data.xs[rows].copy()
    mask = np.zeros((len(rows), data.xs.shape[1]), dtype=bool)
    dropped: dict[int, str] = {}
    patches = [(t, pt) for t in triggers if (pt := _patch(t)) is not None]
    for t, (f, _, _) in patches:
        mask[carriers(data, t)[rows]] |= f[None, :]
    fill = np.median(data.xs[donors], axis=0)
    xs = np.where(mask, fill[None, :], xs)
    # never keep the trigger's value on its own mask: a fill that lands on it (a saturated
    # region) would leave the carrier carrying the trigger
    for t, (f, values, tol) in patches:
        hit = (np.abs(xs[:, f] - values[f]) <= tol[f]) & mask[:, f]
        for i in np.flatnonzero(hit.any(axis=1)):
            dropped[int(rows[i])] = (
                f"removed: carrier of the trigger into class {t.target}; its repair would keep "
                "the trigger's value on the trigger's coordinates"
            )
    k = min(_K, len(donors))
    ind = NearestNeighbors(n_neighbors=k).fit(data.xs[donors]).kneighbors(xs, return_distance=False)
    votes = np.stack([(labels[donors][ind] == c).sum(1) for c in range(data.n_classes)], 1)
    new = votes.argmax(1).astype(np.int64)
    conf = votes.max(1) / k
    for i in np.flatnonzero(conf < _MIN_CONFIDENCE):
        dropped.setdefault(
            int(rows[i]),
            f"removed: repaired carrier whose new label is unsure ({conf[i]:.2f} < "
            f"{_MIN_CONFIDENCE:g})",
        )
    ok = np.array([int(r) not in dropped for r in rows], dtype=bool)
    return _Repair(rows=rows[ok], xs=xs[ok], labels=new[ok], dropped=dropped)


@dataclass(frozen=True)
class _Outcome:
    keep: NDArray[np.bool_]
    labels: NDArray[np.int64]
    fate: NDArray[np.str_]
    repair: _Repair | None
    asr_after: dict[int, float]
    asr_plain: dict[int, float]
    acc_after: float | None
    residual: ScanReport
    problems: list[str]
    counter: tuple[NDArray[np.float64], NDArray[np.int64]] | None


def mitigate(
    x: ArrayLike | Prepared,
    y: ArrayLike | None = None,
    *,
    report: ScanReport,
    relabel: bool = True,
    repair: bool = True,
    unlearn: float = 0.0,
    max_asr: float = 0.05,
    max_risk: float = 40.0,
    epochs: int = 6,
    seed: int = 0,
) -> MitigationResult:
    """Apply the report's mitigations, then verify them (module docstring).

    Parameters
    ----------
    report
        The scan of exactly this dataset.
    relabel
        Relabel label-noise flags, and the ones the scan set aside, to the neighbour majority
        (else remove them).
    repair
        Repair the carriers of a verified *stamped* trigger instead of removing them (module
        docstring, step 1): their trigger coordinates are refilled and their label re-predicted
        — only when the scan is calibrated (else they are removed and ``reason`` says so).
        The caller must then train on :meth:`MitigationResult.training_set` (the repaired inputs
        are in ``repaired_x``); a caller that can only apply a keep-mask passes ``False``.
    unlearn
        Share of the kept samples to copy as counter-examples (0 = none; 0.2 in the benchmark).
        The caller must train on ``counter_x``/``counter_y`` too.
    max_asr, max_risk
        The gate: attack success after mitigation and residual risk.

    Raises
    ------
    ValueError
        ``report`` was made for a different dataset, or ``unlearn``/``max_asr`` is out of range.
    TypeError
        ``repair`` or ``relabel`` is not a bool, or ``y`` is missing.
    """
    if not 0.0 <= unlearn < 1.0:
        raise ValueError(f"unlearn must be in [0, 1), got {unlearn}")
    if not 0.0 <= max_asr <= 1.0:
        raise ValueError(f"max_asr must be in [0, 1], got {max_asr}")
    for name, flag in (("repair", repair), ("relabel", relabel)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if isinstance(x, Prepared):
        data = x
    elif y is None:
        raise TypeError("mitigate() needs labels y unless x is a Prepared dataset")
    else:
        data = prepare(x, y, min_per_class=2)
    if len(data.y) != len(report.flags):
        raise ValueError("report was made for a different dataset (length differs)")
    live = [t for t, ok in zip(report.triggers, report.verified, strict=True) if ok]
    # flagged for another reason than label noise (another detector): a shared pattern there is
    # reconstructed and all its carriers go; the flagged samples go in any case
    other = report.flags & ~report.carrier & ~report.noise
    if other.any():
        # a pattern shared by flagged samples (effect test passed) is removed with all its
        # carriers whether or not a probe follows it yet; the gate below checks it like the rest
        live += triggers_from_flags(data, other, known=live, seed=seed)

    def run(fixable: list[Trigger]) -> _Outcome:
        return _apply(
            data,
            report,
            live,
            other,
            fixable,
            relabel=relabel,
            unlearn=unlearn,
            max_asr=max_asr,
            max_risk=max_risk,
            epochs=epochs,
            seed=seed,
        )

    fixable = [t for t in live if _repairable(t)] if repair else []
    note = ""
    if fixable and not report.calibrated:
        # a repaired carrier keeps only if its new label can be trusted: where the scan could not
        # judge labels (its probe and input-space neighbours too weak), neither can the vote that
        # would relabel it — the same reason the label-noise flags of such a scan are removed,
        # never relabelled
        fixable = []
        note = (
            "trigger carriers removed, not repaired: the scan is uncalibrated (its probe and "
            "input-space neighbours cannot judge labels), so a repaired carrier's new label "
            "could not be trusted; "
        )
    out = run(fixable)
    if out.repair is not None and out.problems:
        n_rep = len(out.repair.rows)
        first = "; ".join(out.problems)
        out = run([])
        note += (
            f"repairing {n_rep} trigger carriers failed the verification ({first}); "
            "fell back to removing them: "
        )
    return _result(data, live, out, note, max_asr=max_asr, max_risk=max_risk)


def _apply(
    data: Prepared,
    report: ScanReport,
    live: list[Trigger],
    other: NDArray[np.bool_],
    fixable: list[Trigger],
    *,
    relabel: bool,
    unlearn: float,
    max_asr: float,
    max_risk: float,
    epochs: int,
    seed: int,
) -> _Outcome:
    n = len(data.y)
    fate = np.full(n, "kept", dtype=object)
    keep = ~report.carrier.copy()
    fate[report.carrier] = "removed: carrier of a shared pattern the scan flagged"
    keep &= ~other
    fate[other] = "removed: flagged by a detector"
    carried = np.zeros(n, dtype=bool)
    unfixable = np.zeros(n, dtype=bool)
    for t in live:
        # the carriers a mitigation removes (or repairs): all of them, except a decoyed stamp's
        # carriers of other classes (to_remove: kept as the trigger's counter-examples)
        c = to_remove(data, t)
        fate[c & ~carried] = f"removed: carrier of the trigger into class {t.target}"
        carried |= c
        if not any(t is f for f in fixable):
            unfixable |= c
    keep &= ~carried
    labels = data.y.copy()
    # label noise, and the clean-level flags the scan set aside (label hygiene, not counted as
    # poison — but possibly an attacker's flips within the allowance): relabelled, or removed
    # when the caller trains on a keep-mask and cannot relabel
    fix = report.noise if report.set_aside is None else report.noise | report.set_aside
    if relabel:
        # -1: a label-group flag (labelgroups): no class is known well enough, removed
        unsure = fix & (report.relabel < 0)
        labels[fix & ~unsure] = report.relabel[fix & ~unsure]
        fate[fix & ~unsure & keep & (labels != data.y)] = "relabelled"
        keep &= ~unsure
        fate[unsure & keep] = "removed: label noise, no class known well enough to relabel"
    else:
        fate[fix & keep] = "removed: label noise"
        keep &= ~fix
    # repair: carriers of repairable triggers only (a sample that also carries a blend, or that
    # another detector or the scan's own carrier rule flagged otherwise, stays removed)
    rep: _Repair | None = None
    xdata = data
    rows = np.flatnonzero(carried & ~unfixable & ~other)
    donors = np.flatnonzero(keep & ~carried)
    # the fill and the new labels come from kept non-carriers only: without a few, nothing is
    # repaired (the carriers stay removed)
    if fixable and len(rows) and len(donors) >= _K:
        rep = _repair(data, fixable, rows, donors, labels, seed=seed)
        for i, why in rep.dropped.items():
            fate[i] = why
        labels[rep.rows] = rep.labels
        fate[rep.rows] = "repaired"
        xs = data.xs.copy()
        xs[rep.rows] = rep.xs
        scale = float(data.x.std()) or 1.0
        x_new = data.x.copy()
        x_new[rep.rows] = rep.xs * scale
        xdata = replace(data, x=x_new, xs=xs)
    use = keep.copy()
    if rep is not None:
        use[rep.rows] = True
    asr_after: dict[int, float] = {}
    asr_plain: dict[int, float] = {}
    acc_after: float | None = None
    counter: tuple[NDArray[np.float64], NDArray[np.int64]] | None = None
    if live:
        res = attack_success(xdata, live, keep=use, labels=labels, epochs=epochs, seed=seed)
        # counter-examples only for triggers that removal alone leaves working: stamping an
        # estimated pattern on clean samples costs accuracy where nothing needs unlearning
        # (crops blend: 0.51 → 0.31 with counter-examples, 0.52 without; MNIST 3-vs-8)
        need = [t for t in live if _asr_map(res).get(t.target, 0.0) > max_asr]
        if unlearn > 0 and need:
            asr_plain = _asr_map(res)
            res = attack_success(
                xdata,
                live,
                keep=use,
                labels=labels,
                unlearn=unlearn,
                counter_triggers=need,
                epochs=epochs,
                seed=seed,
            )
            # made from unchanged kept samples, in the caller's units (the input's scale)
            cx, cy, _ = counter_examples(
                data, need, keep=keep, labels=labels, share=unlearn, seed=seed
            )
            counter = (cx, cy)
        asr_after = _asr_map(res)
        acc_after = float(res["clean_accuracy"])  # type: ignore[arg-type]
    idx = np.flatnonzero(use)
    sub = prepare(
        # images stay images for the re-scan; repaired carriers are re-scanned with the rest,
        # so a repair that leaves the trigger shows up here
        xdata.x[idx].reshape(len(idx), *data.shape),
        labels[idx],
        producer=None if data.producer is None else data.producer[idx],
        record_id=None if data.record_id is None else data.record_id[idx],
        n_classes=data.n_classes,
        min_per_class=2,
    )
    # judged as the caller's scan was (its image probe, floors, effect and ASR cuts)
    residual = scan(sub, seed=seed, epochs=epochs, **report.settings)
    problems = []
    bad_asr = {t: a for t, a in asr_after.items() if a > max_asr}
    if bad_asr:
        problems.append(
            "attack success after mitigation still above "
            f"{max_asr:.0%}: " + ", ".join(f"class {t} {a:.1%}" for t, a in bad_asr.items())
        )
    if residual.risk_score > max_risk:
        missed = [
            t.target for t, ok in zip(residual.triggers, residual.verified, strict=True) if ok
        ]
        problems.append(
            f"residual risk {residual.risk_score:.0f} > {max_risk:g}"
            + (f" (a working trigger into class(es) {missed} remains)" if missed else "")
        )
    return _Outcome(
        keep=keep,
        labels=labels,
        fate=fate.astype(str),
        repair=rep,
        asr_after=asr_after,
        asr_plain=asr_plain,
        acc_after=acc_after,
        residual=residual,
        problems=problems,
        counter=counter,
    )


def _result(
    data: Prepared,
    live: list[Trigger],
    out: _Outcome,
    note: str,
    *,
    max_asr: float,
    max_risk: float,
) -> MitigationResult:
    rep = out.repair
    cy = None if out.counter is None else out.counter[1]
    if out.problems:
        reason = note + "; ".join(out.problems)
    elif live:
        reason = (
            note
            + "attack success after mitigation "
            + ", ".join(f"class {t} {a:.1%}" for t, a in out.asr_after.items())
            + f" ≤ {max_asr:.0%}"
            + (
                f" ({len(rep.rows)} carriers repaired and relabelled, {len(rep.dropped)} removed)"
                if rep is not None
                else ""
            )
            + (f" (with {len(cy)} counter-examples)" if cy is not None else "")
            + f"; residual risk {out.residual.risk_score:.0f} ≤ {max_risk:g}"
        )
    else:
        reason = f"no verified trigger; residual risk {out.residual.risk_score:.0f} ≤ {max_risk:g}"
    repaired = np.zeros(len(data.y), dtype=bool)
    repaired_x: NDArray[np.float64] | None = None
    if rep is not None:
        repaired[rep.rows] = True
        repaired_x = rep.xs * (float(data.x.std()) or 1.0)
    return MitigationResult(
        keep=out.keep,
        labels=out.labels,
        relabelled=int((out.labels != data.y).sum()),
        asr_after=out.asr_after,
        clean_accuracy_after=out.acc_after,
        residual=out.residual,
        passed=not out.problems,
        reason=reason,
        triggers=tuple(live),
        asr_removal_only=out.asr_plain,
        counter_x=None if out.counter is None else out.counter[0],
        counter_y=cy,
        repaired=repaired,
        repaired_x=repaired_x,
        fate=out.fate,
    )
