"""Mitigation of what a scan found, and its verification (the gate is on the attack success rate).

:func:`mitigate` applies a :class:`~saip_poisoning.scan.ScanReport`:

1. **Remove carriers** of every verified trigger (:func:`saip_poisoning.trigger.carriers`).
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
   plus counter-examples if any) must give every trigger an attack success rate ≤ ``max_asr``
   on held-out samples, *and* a re-scan of the kept data (without counter-examples, so they
   cannot hide anything) must be at most ``max_risk``: a trigger the reconstruction missed shows
   up there as a verified trigger of its own (risk ≥ 70) and the mitigation fails.

The CLI/pipeline turn a failed verification into exit 3 (:class:`saip.errors.GateError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.data import Prepared, prepare
from saip_poisoning.scan import ScanReport, scan
from saip_poisoning.trigger import (
    Trigger,
    attack_success,
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
        ``N`` booleans: samples kept (trigger carriers, other flagged samples, and with
        ``relabel=False`` label-noise flags, are removed).
    labels
        ``N`` labels after relabelling (equal to the input where nothing was relabelled).
    relabelled
        Number of labels changed.
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (without the residual's per-sample arrays)."""
        return {
            "kept": int(self.keep.sum()),
            "removed": int((~self.keep).sum()),
            "relabelled": self.relabelled,
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


def mitigate(
    x: ArrayLike | Prepared,
    y: ArrayLike | None = None,
    *,
    report: ScanReport,
    relabel: bool = True,
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
    unlearn
        Share of the kept samples to copy as counter-examples (0 = none; 0.2 in the benchmark).
        The caller must train on ``counter_x``/``counter_y`` too.
    max_asr, max_risk
        The gate: attack success after mitigation and residual risk.

    Raises
    ------
    ValueError
        ``report`` was made for a different dataset, or ``unlearn`` is outside ``[0, 1)``.
    """
    if not 0.0 <= unlearn < 1.0:
        raise ValueError(f"unlearn must be in [0, 1), got {unlearn}")
    if isinstance(x, Prepared):
        data = x
    elif y is None:
        raise TypeError("mitigate() needs labels y unless x is a Prepared dataset")
    else:
        data = prepare(x, y, min_per_class=2)
    if len(data.y) != len(report.flags):
        raise ValueError("report was made for a different dataset (length differs)")
    live = [t for t, ok in zip(report.triggers, report.verified, strict=True) if ok]
    keep = ~report.carrier.copy()
    # flagged for another reason than label noise (another detector): a shared pattern there is
    # reconstructed and all its carriers go; the flagged samples go in any case
    other = report.flags & ~report.carrier & ~report.noise
    if other.any():
        # a pattern shared by flagged samples (effect test passed) is removed with all its
        # carriers whether or not a probe follows it yet; the gate below checks it like the rest
        live += triggers_from_flags(data, other, known=live, seed=seed)
        keep &= ~other
    for t in live:
        keep &= ~to_remove(data, t)
    labels = data.y.copy()
    # label noise, and the clean-level flags the scan set aside (label hygiene, not counted as
    # poison — but possibly an attacker's flips within the allowance): relabelled, or removed
    # when the caller trains on a keep-mask and cannot relabel
    fix = report.noise if report.set_aside is None else report.noise | report.set_aside
    if relabel:
        # -1: a label-group flag (labelgroups): no class is known well enough, removed
        unsure = fix & (report.relabel < 0)
        labels[fix & ~unsure] = report.relabel[fix & ~unsure]
        keep &= ~unsure
    else:
        keep &= ~fix
    relabelled = int((labels != data.y).sum())
    asr_after: dict[int, float] = {}
    asr_plain: dict[int, float] = {}
    acc_after: float | None = None
    cx: NDArray[np.float64] | None = None
    cy: NDArray[np.int64] | None = None
    if live:
        res = attack_success(data, live, keep=keep, labels=labels, epochs=epochs, seed=seed)
        # counter-examples only for triggers that removal alone leaves working: stamping an
        # estimated pattern on clean samples costs accuracy where nothing needs unlearning
        # (crops blend: 0.51 → 0.31 with counter-examples, 0.52 without; MNIST 3-vs-8)
        need = [t for t in live if _asr_map(res).get(t.target, 0.0) > max_asr]
        if unlearn > 0 and need:
            asr_plain = _asr_map(res)
            res = attack_success(
                data,
                live,
                keep=keep,
                labels=labels,
                unlearn=unlearn,
                counter_triggers=need,
                epochs=epochs,
                seed=seed,
            )
            cx, cy, _ = counter_examples(
                data, need, keep=keep, labels=labels, share=unlearn, seed=seed
            )
        asr_after = _asr_map(res)
        acc_after = float(res["clean_accuracy"])  # type: ignore[arg-type]
    idx = np.flatnonzero(keep)
    sub = prepare(
        data.x[idx].reshape(len(idx), *data.shape),  # images stay images for the re-scan
        labels[idx],
        producer=None if data.producer is None else data.producer[idx],
        record_id=None if data.record_id is None else data.record_id[idx],
        n_classes=data.n_classes,
        min_per_class=2,
    )
    # judged as the caller's scan was (its image probe, floors, effect and ASR cuts)
    residual = scan(sub, seed=seed, epochs=epochs, **report.settings)
    bad_asr = {t: a for t, a in asr_after.items() if a > max_asr}
    problems = []
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
    if problems:
        reason = "; ".join(problems)
    elif live:
        reason = (
            "attack success after mitigation "
            + ", ".join(f"class {t} {a:.1%}" for t, a in asr_after.items())
            + f" ≤ {max_asr:.0%}"
            + (f" (with {len(cy)} counter-examples)" if cy is not None else "")
            + f"; residual risk {residual.risk_score:.0f} ≤ {max_risk:g}"
        )
    else:
        reason = f"no verified trigger; residual risk {residual.risk_score:.0f} ≤ {max_risk:g}"
    return MitigationResult(
        keep=keep,
        labels=labels,
        relabelled=relabelled,
        asr_after=asr_after,
        clean_accuracy_after=acc_after,
        residual=residual,
        passed=not problems,
        reason=reason,
        triggers=tuple(live),
        asr_removal_only=asr_plain,
        counter_x=cx,
        counter_y=cy,
    )
