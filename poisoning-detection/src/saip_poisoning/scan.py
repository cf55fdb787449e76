"""Fusion of the detectors into flags, a dataset risk score, per-class/per-producer risk and
recommended mitigations.

Rules (each uses only the detectors' own thresholds; no poison rate is ever assumed):

1. **label noise** — the loss trajectory's high tail *and* a kNN majority (input or
   representation space) disagree with the given label;
2. **backdoor class** — in a class judged poisoned by the class-size prior: its low-loss tail
   (fitted faster than the other classes' samples) and its input-space kNN disagreements;
3. **activation cluster** — the small, separated activation cluster of a class that passes the
   activation-clustering test;
4. **corroborated outlier** — outside those classes, a sample flagged by at least three of: input
   kNN, representation kNN, gradient similarity, spectral signature, robust spectral signature.

Risk score (0–100) from the fused flagged fraction ``f``:
``100·(1 - exp(-max(0, f - 0.03) / 0.025))``, raised to at least 50 when a class-level test
(class-size prior, activation clustering) fires on a class of which the rules flag ≥ 10 %.
Bands: **0–19 low** (clean MNIST/digits measure 0–10), **20–39 guarded** (review),
**40–69 high** (drop flagged samples and re-scan before training), **70–100 critical** (stop;
investigate sources).
The 3 % allowance is the measured share of clean samples that rules 1–4 flag on clean MNIST-5k
and digits (ambiguous digits); see ``benchmarks/results/poisoning.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import binom  # type: ignore[import-untyped]

from saip_poisoning.data import MIN_PER_CLASS, Prepared, prepare
from saip_poisoning.detectors import (
    ActivationClustering,
    ClassSizePrior,
    DetectionReport,
    GradientSimilarity,
    KnnLabelDisagreement,
    LossTrajectory,
    SpectralSignature,
)
from saip_poisoning.model import ProbeView, fit_probe

__all__ = [
    "BANDS",
    "Mitigation",
    "ScanReport",
    "band",
    "filter_iteratively",
    "risk_from_fraction",
    "scan",
]

logger = logging.getLogger(__name__)

#: (lower bound, name) of the documented risk bands
BANDS: tuple[tuple[float, str], ...] = ((0, "low"), (20, "guarded"), (40, "high"), (70, "critical"))
#: share of clean samples the fused rules flag on clean data (measured), not counted as risk
CLEAN_ALLOWANCE = 0.03
_SCALE = 0.025
_CLASS_FLOOR = 50.0
_CLASS_FLAG_SHARE = 0.10


def risk_from_fraction(fraction: float, *, class_evidence: bool = False) -> float:
    """Map a flagged fraction (and whether a class-level test fired) to a 0–100 risk."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    risk = 100.0 * (1.0 - math.exp(-max(0.0, fraction - CLEAN_ALLOWANCE) / _SCALE))
    if class_evidence:
        risk = max(risk, _CLASS_FLOOR)
    return round(risk, 1)


def band(risk: float) -> str:
    """Name of the band ``risk`` falls in (``low``/``guarded``/``high``/``critical``)."""
    name = BANDS[0][1]
    for lower, label in BANDS:
        if risk >= lower:
            name = label
    return name


@dataclass(frozen=True)
class Mitigation:
    """A recommended action, why, and the numbers that triggered it."""

    action: str
    reason: str
    evidence: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"action": self.action, "reason": self.reason, "evidence": dict(self.evidence)}


@dataclass(frozen=True)
class ScanReport:
    """Everything one scan found.

    Attributes
    ----------
    risk_score
        Dataset-level poisoning risk, 0–100 (see module docstring for bands).
    band
        ``low``, ``guarded``, ``high`` or ``critical``.
    flags
        ``N`` booleans: samples flagged by the fused rules.
    scores
        ``N`` fused suspicion scores (higher is more suspicious; ≥1 roughly means "at a rule's
        threshold").
    reasons
        Flagged index → the rule and detector evidence.
    per_class, per_producer
        Class → stats and risk; producer → ``risk_score``, ``flagged``, ``n`` and whether it is
        named as poisoned.
    mitigations
        Recommended actions with evidence.
    detectors
        The individual detector reports.
    """

    risk_score: float
    band: str
    flags: NDArray[np.bool_]
    scores: NDArray[np.float64]
    reasons: Mapping[int, str]
    per_class: Mapping[int, Mapping[str, Any]]
    per_producer: Mapping[str, Mapping[str, Any]]
    mitigations: Sequence[Mitigation]
    detectors: Mapping[str, DetectionReport] = field(repr=False)

    @property
    def flagged(self) -> list[int]:
        """0-based indices of flagged samples."""
        return [int(i) for i in np.flatnonzero(self.flags)]

    @property
    def poisoned_producers(self) -> list[str]:
        """Producers named as poisoned (flagged share significantly above the rest)."""
        return [p for p, v in self.per_producer.items() if v["named"]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: ``risk_score``, ``band``, ``flagged``, ``scores``, ``per_class``,
        ``per_producer``, ``mitigations``, ``reasons``, ``detectors`` (flag counts)."""
        return {
            "risk_score": self.risk_score,
            "band": self.band,
            "n_samples": len(self.flags),
            "flagged": self.flagged,
            "scores": [round(float(s), 4) for s in self.scores],
            "per_class": {str(c): dict(v) for c, v in self.per_class.items()},
            "per_producer": {p: dict(v) for p, v in self.per_producer.items()},
            "mitigations": [m.to_dict() for m in self.mitigations],
            "reasons": {str(i): r for i, r in self.reasons.items()},
            "detectors": {
                name: {"flagged": r.n_flagged, "suspect_classes": list(r.suspect_classes)}
                for name, r in self.detectors.items()
            },
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _producer_risk(
    data: Prepared, flags: NDArray[np.bool_], overall: float
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    if data.producer is None:
        return out
    for p in sorted(set(data.producer.tolist())):
        m = data.producer == p
        n = int(m.sum())
        k = int(flags[m].sum())
        frac = k / n
        rest = flags[~m]
        base = float(rest.mean()) if len(rest) else overall
        # one-sided binomial test: is this producer's flagged count above the others' rate?
        p_value = float(binom.sf(k - 1, n, min(max(base, CLEAN_ALLOWANCE), 1.0))) if k else 1.0
        risk = risk_from_fraction(frac)
        named = bool(p_value < 1e-3 and risk >= 40.0)
        out[p] = {
            "risk_score": risk,
            "band": band(risk),
            "flagged": k,
            "n": n,
            "flagged_fraction": round(frac, 4),
            "p_value": p_value,
            "named": named,
        }
    return out


def scan(
    x: ArrayLike,
    y: ArrayLike,
    *,
    producer: ArrayLike | None = None,
    model: ProbeView | None = None,
    epochs: int = 6,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    progress: Callable[[str], None] | None = None,
) -> ScanReport:
    """Run every detector on ``(x, y)``, fuse their flags and derive risk and mitigations.

    Parameters
    ----------
    x, y
        ``N×D`` or ``N×H×W`` floats and ``N`` integer labels.
    producer
        Optional ``N`` producer IDs; enables per-producer risk and naming a poisoned producer.
    model
        A :class:`~saip_poisoning.model.ProbeView` of the caller's trained network; by default a
        probe MLP is trained on the data (``epochs``, ``seed``).
    min_per_class
        Classes with fewer samples are rejected (clustering and robust statistics need them).
    progress
        Called with the name of each stage as it starts (probe training, detector i/N); the CLI
        prints it.

    Raises
    ------
    PoisoningInputError
        Malformed input (see :func:`saip_poisoning.data.prepare`).
    """
    data = prepare(x, y, producer=producer, min_per_class=min_per_class)
    say = progress or (lambda _stage: None)
    if model is None:
        say(f"training the probe network ({epochs} epochs)")
        model = fit_probe(data.xs, data.y, n_classes=data.n_classes, epochs=epochs, seed=seed)
    yv = data.y
    reps: dict[str, DetectionReport] = {}
    detectors: list[Any] = [
        ClassSizePrior(),
        LossTrajectory(),
        KnnLabelDisagreement(space="input"),
        KnnLabelDisagreement(space="representation"),
        ActivationClustering(seed=seed),
        SpectralSignature(seed=seed),
        GradientSimilarity(),
        SpectralSignature(robust=True, seed=seed),
    ]
    for i, det in enumerate(detectors, start=1):
        name = "spectral_signature_robust" if i == len(detectors) else det.name
        say(f"detector {i}/{len(detectors)}: {name}")
        reps[name] = det.detect(data.x, yv, model=model)
    size, loss = reps["class_size_prior"], reps["loss_trajectory"]
    kin, krep = reps["knn_disagreement"], reps["knn_disagreement_representation"]
    ac = reps["activation_clustering"]
    backdoor_classes = sorted(size.suspect_classes)
    in_backdoor = np.isin(yv, backdoor_classes)

    noise = loss.parts["high_loss"] & (kin.flags | krep.flags)
    backdoor = in_backdoor & (loss.parts["low_tail"] | kin.flags)
    cluster = ac.flags
    voters = ("knn_disagreement", "knn_disagreement_representation", "gradient_similarity")
    votes = sum(reps[v].flags.astype(int) for v in voters)
    votes = (
        votes
        + (reps["spectral_signature"].scores > 1)
        + (reps["spectral_signature_robust"].scores > 1)
    )
    corroborated = (votes >= 3) & ~in_backdoor
    flags = noise | backdoor | cluster | corroborated

    kin_s = kin.scores / kin.threshold
    krep_s = krep.scores / krep.threshold
    high_s = np.sqrt(np.clip(loss.scores, 0, None) * np.maximum(kin_s, krep_s))
    vote_stack = np.vstack(
        [
            kin_s,
            krep_s,
            reps["gradient_similarity"].scores,
            reps["spectral_signature"].scores,
            reps["spectral_signature_robust"].scores,
        ]
    )
    third = np.sort(vote_stack, axis=0)[-3]
    scores = np.maximum.reduce(
        [
            high_s,
            np.where(in_backdoor, np.maximum(loss.scores, kin_s), 0.0),
            np.where(np.isin(yv, ac.suspect_classes), ac.scores, 0.0),
            third,
        ]
    )
    scores = np.where(flags, np.maximum(scores, 1.0), np.minimum(scores, 0.999))

    reasons: dict[int, str] = {}
    for ii in np.flatnonzero(flags):
        i = int(ii)
        parts = []
        if noise[i]:
            parts.append(
                "label noise: "
                + loss.reasons.get(i, "high loss")
                + "; "
                + kin.reasons.get(i, krep.reasons.get(i, ""))
            )
        if backdoor[i]:
            parts.append(
                f"backdoor class {int(yv[i])}: " + (loss.reasons.get(i) or kin.reasons.get(i, ""))
            )
        if cluster[i]:
            parts.append(ac.reasons[i])
        if corroborated[i]:
            parts.append(f"flagged by {int(votes[i])} independent detectors")
        reasons[i] = " | ".join(parts)

    overall = float(flags.mean())
    class_tests = {
        "class_size_prior": set(size.suspect_classes),
        "activation_clustering": set(ac.suspect_classes),
    }
    # a class test counts as evidence only where the fused rules also flag a real share of the
    # class (after mitigation an oversized-but-cleaned class must not pin the risk at 50)
    class_evidence = any(
        float(flags[yv == c].mean()) >= _CLASS_FLAG_SHARE for cs in class_tests.values() for c in cs
    )
    risk = risk_from_fraction(overall, class_evidence=class_evidence)
    per_class: dict[int, dict[str, Any]] = {}
    for c in range(data.n_classes):
        m = yv == c
        if not m.any():
            continue
        fired = [name for name, cs in class_tests.items() if c in cs]
        frac = float(flags[m].mean())
        per_class[c] = {
            "n": int(m.sum()),
            "flagged": int(flags[m].sum()),
            "flagged_fraction": round(frac, 4),
            "risk_score": risk_from_fraction(
                frac, class_evidence=bool(fired) and frac >= _CLASS_FLAG_SHARE
            ),
            "class_tests": fired,
            "size_ratio_to_median": round(float(size.class_stats[c]["ratio_to_median"]), 3),
            "low_loss_share": round(float(loss.class_stats[c]["low_loss_share"]), 3),
        }
    per_producer = _producer_risk(data, flags, overall)
    mitigations = _mitigations(
        risk=risk,
        flags=flags,
        noise=noise,
        backdoor=backdoor,
        cluster=cluster,
        corroborated=corroborated,
        per_class=per_class,
        per_producer=per_producer,
        n_classes=data.n_classes,
    )
    logger.info(
        "poisoning scan: risk %.1f (%s), %d of %d flagged",
        risk,
        band(risk),
        flags.sum(),
        len(flags),
    )
    return ScanReport(
        risk_score=risk,
        band=band(risk),
        flags=flags,
        scores=np.asarray(scores, dtype=np.float64),
        reasons=reasons,
        per_class=per_class,
        per_producer=per_producer,
        mitigations=tuple(mitigations),
        detectors=reps,
    )


def _mitigations(
    *,
    risk: float,
    flags: NDArray[np.bool_],
    noise: NDArray[np.bool_],
    backdoor: NDArray[np.bool_],
    cluster: NDArray[np.bool_],
    corroborated: NDArray[np.bool_],
    per_class: Mapping[int, Mapping[str, Any]],
    per_producer: Mapping[str, Mapping[str, Any]],
    n_classes: int,
) -> list[Mitigation]:
    out: list[Mitigation] = []
    n_flag = int(flags.sum())
    if risk < 20:
        out.append(
            Mitigation(
                "proceed",
                "risk is in the low band: no poisoning signal beyond the clean allowance",
                {
                    "risk_score": risk,
                    "flagged": n_flag,
                    "flagged_fraction": round(float(flags.mean()), 4),
                },
            )
        )
        return out
    trigger_classes = {c: v for c, v in per_class.items() if v["class_tests"]}
    if n_flag:
        out.append(
            Mitigation(
                "drop_flagged_and_retrain",
                f"{n_flag} samples flagged; remove them, retrain, and re-scan before training",
                {
                    "flagged": n_flag,
                    "label_noise_rule": int(noise.sum()),
                    "backdoor_class_rule": int(backdoor.sum()),
                    "activation_cluster_rule": int(cluster.sum()),
                    "corroborated_rule": int(corroborated.sum()),
                },
            )
        )
    for c, v in trigger_classes.items():
        out.append(
            Mitigation(
                "audit_target_class",
                f"class {c} looks like a backdoor target ({', '.join(v['class_tests'])}): "
                "inspect flagged samples for a shared trigger, test the retrained model for it",
                {
                    "class": c,
                    "size_ratio_to_median": v["size_ratio_to_median"],
                    "low_loss_share": v["low_loss_share"],
                    "flagged": v["flagged"],
                },
            )
        )
    noisy_classes = sorted({int(c) for c, v in per_class.items() if v["flagged"]})
    if noise.sum() >= max(5, 0.01 * len(flags)) and len(noisy_classes) >= n_classes / 2:
        out.append(
            Mitigation(
                "relabel_or_review",
                "label disagreement is scattered over most classes (label noise or flipping): "
                "send flagged samples for relabelling or review rather than only dropping them",
                {"label_noise_flagged": int(noise.sum()), "classes_affected": len(noisy_classes)},
            )
        )
    for p, v in per_producer.items():
        if v["named"]:
            out.append(
                Mitigation(
                    "quarantine_producer",
                    f"producer {p!r} supplies a significantly larger share of flagged samples: "
                    "quarantine its stream, audit its recent records, rotate its credentials/key",
                    {
                        "producer": p,
                        "flagged": v["flagged"],
                        "n": v["n"],
                        "flagged_fraction": v["flagged_fraction"],
                        "p_value": v["p_value"],
                    },
                )
            )
    return out


def filter_iteratively(
    x: ArrayLike,
    y: ArrayLike,
    *,
    producer: ArrayLike | None = None,
    max_rounds: int = 3,
    stop_below: float = 20.0,
    seed: int = 0,
) -> tuple[NDArray[np.bool_], list[ScanReport]]:
    """Drop flagged samples and re-scan the rest until the risk is below ``stop_below``.

    The ``drop_flagged_and_retrain`` mitigation applied the way Sever (Diakonikolas et al.
    2019) applies its filter: a poison that dominated the first probe is partly hidden by the
    rest of the poison, and becomes visible once the most obvious part is gone. Returns the
    keep-mask over the input and the report of every round (the last one is the residual).
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    xa, ya = np.asarray(x), np.asarray(y)
    pa = None if producer is None else np.asarray(producer)
    keep = np.ones(len(ya), dtype=bool)
    reports: list[ScanReport] = []
    for _ in range(max_rounds):
        idx = np.flatnonzero(keep)
        rep = scan(xa[idx], ya[idx], producer=None if pa is None else pa[idx], seed=seed)
        reports.append(rep)
        if rep.risk_score < stop_below or not rep.flags.any():
            break
        keep[idx[rep.flags]] = False
    else:
        idx = np.flatnonzero(keep)
        reports.append(scan(xa[idx], ya[idx], producer=None if pa is None else pa[idx], seed=seed))
    return keep, reports
