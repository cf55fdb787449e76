"""The scan: calibrated rules over one shared input-space view, a risk score, mitigation and
verification.

Everything is computed once per scan from :func:`saip_poisoning.data.prepare`'s output: a PCA
embedding and its k-nearest neighbours (:mod:`saip_poisoning.inputspace`), cross-fitted
("out-of-fold") probe probabilities (:func:`saip_poisoning.model.crossfit_probs`), and the
per-class trigger search (:mod:`saip_poisoning.trigger`).

Calibration (per dataset, nothing carried over from other data)
---------------------------------------------------------------
The scan first measures whether the data is learnable enough to judge labels: the cross-fitted
probe's held-out accuracy (median over classes) and how often it agrees with the input-space
neighbour majority. The agreement is a proportion measured on ``n`` samples, so its floor
applies to a one-sided lower confidence bound: it must clear ``min_agreement`` by 1.645
binomial standard errors at the floor (:func:`floor_margin`; one look, a one-sided 95 % test;
0.024 at n = 750, 0.003 at 60 000). Without it, data whose agreement sat at the floor was
judged on some scan seeds and not on others, and what the label-noise rule then flagged was
natural overlap (boston3, 506 samples: agreement 0.72–0.80 over scan seeds 0–5, seed 2 at
0.802 flagged 7.5 %, risk 89). Below ``min_accuracy`` / that raised agreement floor the report says
``calibrated: false`` with the measured numbers as the reason, the label-noise rule is not run
(on such data "disagrees with its neighbours" mostly means "hard", not "poisoned") and the risk
only reflects what does not need a good probe (a reconstructed, verified trigger). The same
happens when the label-noise rule's first pass reaches the guarded band but its flags lie
nearer the class boundary than the classes' own members (``_depth_test``: natural class
overlap, from the data alone not separable from label noise; measurements in
``calibration["label_noise_depth"]``, with the side test's figures (``_side_test``: reported,
not used to abstain — flips to each sample's most similar class look the same), or on their
label's edge of the class they lie in, relative to that class's members on the same side
(``_side_depth``, which nearest-class flips do not follow); the abstained
flags are then set aside, not flagged:
flips an attacker places at the boundary make the rule abstain, and the flips placed next to
them must still not be kept by a keep-mask.

**Image probe** (:mod:`saip_poisoning.imageprobe`). For N×H×W(×C) inputs whose pixel probe
misses a floor, the same neighbours + cross-fitted probe are computed on a label-free image
representation — texture statistics (HOG-style gradient histograms, Dalal & Triggs 2005;
marginal/derivative texture statistics, Portilla & Simoncelli 2000) and random-convolution
energies (Jarrett et al. 2009; Saxe et al. 2011) — and that view judges labels if it passes
stricter floors: each floor plus two binomial standard errors (a second probe is a second
chance at the same floors: Bonferroni over two looks, z = 1.96 ≈ 2 where one look uses 1.645)
and at least the range the label-noise rule was validated on (the
tuning sets' lowest agreement 0.88 and median class accuracy 0.71). ``calibration["probe"]``
names the view that judged labels (``None`` when no probe passed its floors; a view that passed
stays named when the depth test then makes the label-noise rules abstain),
``calibration["probes"]`` lists every probe tried with its numbers.
Trigger search stays in input space.

Rules
-----
1. **trigger carrier** — a sample whose projection on a reconstructed trigger is past the cut
   (any label). A trigger counts when its cross-fitted effect passes ``min_effect`` robust SD of
   the dataset's own reference *and*, with ``verify``, a probe trained on the data reaches
   ``min_asr`` attack success when the trigger is stamped on held-out samples of other classes.
2. **label noise** (calibrated data only) — the input-space neighbour majority (≥ 70 %) and the
   cross-fitted probe agree on another class, the probe gives the given label < 0.2, and the
   neighbours themselves are typical members of their classes (≥ 50 % of them agree with their
   own neighbours): an isolated wrong label in a clean region, not a sample in an overlap zone.
   The three cuts scale with the data's own estimated flip rate (see ``_noise_rule``).
   When the first pass flags enough for a label-noise risk ≥ 20 (guarded band or above), its
   flags are corrected and the rule runs once more with the corrected neighbour labels and a
   probe refitted on them (one round of iterative cleaning, Northcutt et al. 2021; see
   ``_label_noise``); below that, clean data keeps the one-pass rule.
3. **relabelled cluster** (calibrated data only, counted as label noise) — exclusionary
   reclassification (Chen et al. 2018, :mod:`saip_poisoning.detectors.reclassify`): a separate
   cluster of one label that another class claims once it is excluded, i.e. a targeted pair
   flip whose flipped samples are each other's neighbours. Run on the samples rule 2 did not
   flag, so scattered flips it already found do not drag genuine boundary samples into a cluster.

When a shared pattern's carriers are flagged (rule 1) and the label-noise flags (rules 2–3) are
no more than ``CLEAN_ALLOWANCE`` of the data and look like the level these rules flag on clean
data (no relabelled cluster, no class in the guarded band: ``_beyond_clean_level``), those
flags are set aside (``calibration["label_noise_set_aside"]``, ``ScanReport.set_aside``): not
flagged as poison; :func:`mitigate` still relabels them (label hygiene — on MNIST 3-vs-8 a2o 10 %
relabelling its 3 such samples kept the retrained model 1.3 points more accurate, mean of 5
training seeds) but does not remove them — unless it cleans through a keep-mask
(``relabel=False``; :func:`~saip_poisoning.client.client_filter` too), which cannot relabel and
drops them like any label-noise flag (an attacker's flips within the allowance must not reach
training with their wrong labels). Each has a reason in ``ScanReport.set_aside_reasons``.
Tuning sets: in every pattern scan (a2o 1–10 %, replacing a2o, blend, clean-label on digits,
MNIST-5k, MNIST 3-vs-8) none of them was poison.

Risk score (0–100)
------------------
``risk = max(trigger, noise, candidate, relabelled_stamp)`` where

- ``trigger`` = ``70 + 30·min(1, carriers/(0.05·N))`` when a verified trigger exists (a working
  backdoor is critical at any rate), else 0;
- ``noise`` = ``100·(1 − exp(−max(0, f − 0.02)/0.025))`` for the label-noise rule's flagged share
  ``f`` (calibrated data only; 2 % ≈ the share the rule flags on clean digits/MNIST-5k, the
  tuning sets: ambiguous digits);
- ``candidate`` = 15 when a shared pattern passed the effect test but not the ASR check (reported
  for review; below the guarded band because it is not a working backdoor on the probe). When
  such a pattern is *stamped* (exact shared values on ≥ 4 coordinates, effect ≥ 4 robust SD) its
  carriers are flagged for review and removed by :func:`mitigate` (clean-label poison), still
  at risk 15;
- ``relabelled_stamp`` = the ``noise`` formula for the share of samples flagged because they
  carry a stamp found behind decoys (:attr:`~saip_poisoning.trigger.Trigger.content_tested`)
  and are labelled its target, when no probe follows the stamp: the content test measured them
  to be another class's content, i.e. mislabelled (decoys that outnumber the poison weaken the
  backdoor, they do not make the relabelled samples clean). Counted on uncalibrated data too:
  the test is against the class's own rate. The decoys are not flagged, are kept by
  :func:`mitigate` (counter-examples) and are never label noise.

Bands: **0–19 low**, **20–39 guarded**, **40–69 high**, **70–100 critical**. A score is not a
probability; what it is measured against is in ``benchmarks/results/poisoning.json``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import poisson  # type: ignore[import-untyped]
from sklearn.neighbors import NearestNeighbors

from saip_poisoning.blendsearch import blend_candidates
from saip_poisoning.data import MIN_PER_CLASS, Prepared, prepare
from saip_poisoning.detectors import (
    ActivationClustering,
    DetectionReport,
    GradientSimilarity,
    LossTrajectory,
    SpectralSignature,
)
from saip_poisoning.detectors.reclassify import reclassify_clusters
from saip_poisoning.imageprobe import ImageProbe, image_features, is_image
from saip_poisoning.inputspace import InputSpace, input_space
from saip_poisoning.labelgroups import CLEAN_AGREEMENT, group_label_noise
from saip_poisoning.model import ProbeView, crossfit_probs, fit_probe
from saip_poisoning.pairflip import group_pair_flips
from saip_poisoning.trigger import (
    Trigger,
    attack_success,
    carriers,
    find_triggers,
    to_remove,
    triggers_from_flags,
)

__all__ = [
    "BANDS",
    "Mitigation",
    "ScanReport",
    "band",
    "risk_from_fraction",
    "scan",
]

logger = logging.getLogger(__name__)

#: the scan's default second probe for images (escalation when the pixel probe misses a floor)
DEFAULT_IMAGE_PROBE = ImageProbe()
#: the range the label-noise rule was validated on: the lowest probe/neighbour agreement and
#: median per-class held-out accuracy of the (pixel) probe over every benchmark cell of the
#: tuning sets (digits, MNIST-5k, MNIST 3-vs-8, scan seed 0; clean seeds 0–2): 0.884 (MNIST-5k
#: pair flip 10 %) and 0.715 (MNIST-5k flip 20 %). A second probe (the image probe, after the
#: pixel probe missed a floor) is trusted only inside that range
_VALIDATED_AGREEMENT = 0.88
_VALIDATED_ACCURACY = 0.71
#: standard errors a probe's measured agreement must clear its floor by (:func:`floor_margin`):
#: the first probe is one look, a one-sided 95 % test (z = 1.645); a second probe is a second
#: look at the same floors after the first missed, so each look gets half the error
#: (Bonferroni, z = 1.96, rounded to 2). Chosen on fresh synthetic draws (tuning data): three
#: clean Gaussian classes 2 SD apart, draws 100–107, flagged 7–11 % at agreement 0.819–0.820
#: (n = 750), all below 0.8 + 1.645 SE; z = 1.645 and 2 decide every tuning cell alike
_ONE_LOOK_Z = 1.645
_SECOND_LOOK_Z = 2.0
#: (lower bound, name) of the documented risk bands
BANDS: tuple[tuple[float, str], ...] = ((0, "low"), (20, "guarded"), (40, "high"), (70, "critical"))
#: share of clean samples the label-noise rule flags on the tuning sets, not counted as risk
CLEAN_ALLOWANCE = 0.02
_SCALE = 0.025
_CANDIDATE_RISK = 15.0
#: effect (robust SD) above which an unverified *stamped* pattern's carriers are flagged; set on
#: the tuning sets: clean digits' strongest stamp candidate 3.5 (3 coordinates), clean-label
#: poison 4.4 (digits, 2×2 patch) and 11.6 (MNIST-5k); at least 4 coordinates are also required
_STAMP_EFFECT = 4.0
#: effect above which an unverified *neighbour-seeded* pattern's carriers are flagged for review
#: (risk stays 15); set on the tuning sets: clean candidates reach 4.1 (MNIST 3-vs-8, seed 2;
#: 156 carriers), a2o 1 % on digits 8.2 (14 poisoned, all of them the carriers, ASR 27 %);
#: 5.8 is the geometric midpoint
_SHARED_EFFECT = 5.8
#: largest blend weight ``a`` of a trigger reconstructed from a blend candidate (Chen et al. 2017
#: blend keys with a = 0.05–0.2; a clean digits "1" sub-population reconstructs as a ≈ 0.74)
_MAX_BLEND = 0.5
#: smallest: a blend shrinks its carriers' natural variation by ``1 − a``; a sub-population
#: with no shrink (``triggers_from_flags`` estimates no key below a = 0.05 and leaves ``blend``
#: at 0) is an offset cluster — a class made of two clusters, a feature only part of one class
#: has — not a blended key
_MIN_BLEND = 0.05


def _graded_coords(data: Prepared, t: Trigger) -> int:
    """How many of a stamped trigger's coordinates take more than two distinct values."""
    if t.fixed is None:
        return t.n_coords
    cols = np.flatnonzero(t.fixed)
    return sum(1 for j in cols if len(np.unique(data.xs[:, j])) > 2)


def risk_from_fraction(fraction: float) -> float:
    """Map the label-noise rule's flagged fraction to a 0–100 risk (see module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return round(100.0 * (1.0 - math.exp(-max(0.0, fraction - CLEAN_ALLOWANCE) / _SCALE)), 1)


def _trigger_risk(n_carriers: int, n: int) -> float:
    return round(70.0 + 30.0 * min(1.0, n_carriers / max(1.0, 0.05 * n)), 1)


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
    risk_score, band
        Dataset-level risk 0–100 and its band (module docstring).
    calibrated, calibration
        Whether the probe was strong enough to judge labels, and the measurements (with a
        ``reason`` when not calibrated).
    flags, scores, reasons
        Per-sample flags, suspicion scores (≥ 1 at a rule's cut) and, for every flagged index,
        a non-empty reason.
    carrier, noise
        Per-sample flags of the two rules.
    relabel
        The label to relabel each sample to: its input-space neighbour majority, or for a
        member of a relabelled cluster the class that claims the cluster; ``-1`` for a
        label-group flag (:mod:`saip_poisoning.labelgroups`: removed, never relabelled).
    triggers, asr_before
        Reconstructed triggers (verified or candidate) and their measured attack success.
    per_class, per_producer, mitigations, detectors
        Class and producer statistics, recommended actions, extra detector reports.
    set_aside
        Label-noise flags set aside because a flagged pattern explains the poison and they are
        no more than the clean allowance (module docstring): not in :attr:`flags`; ``mitigate``
        still relabels them (label hygiene), or removes them with ``relabel=False`` (a
        keep-mask cannot relabel; ``client_filter`` drops them too). Also the first pass's
        flags when the label-noise rules abstained (depth test): not judged poison, never
        relabelled (``relabel`` −1: ``mitigate`` removes them), not kept by a keep-mask.
    set_aside_reasons
        One non-empty reason per set-aside index (why it was set aside and what the rule saw).
    settings
        The judging options this scan ran with (``verify``, ``min_effect``, ``min_asr``,
        ``min_accuracy``, ``min_agreement``, ``image_probe``): ``mitigate`` re-scans the kept
        data with the same ones, so its residual risk is judged as the caller asked.
    """

    risk_score: float
    band: str
    calibrated: bool
    calibration: Mapping[str, Any]
    flags: NDArray[np.bool_]
    scores: NDArray[np.float64]
    reasons: Mapping[int, str]
    carrier: NDArray[np.bool_]
    noise: NDArray[np.bool_]
    relabel: NDArray[np.int64]
    triggers: Sequence[Trigger]
    verified: Sequence[bool]
    asr_before: Mapping[int, float]
    per_class: Mapping[int, Mapping[str, Any]]
    per_producer: Mapping[str, Mapping[str, Any]]
    mitigations: Sequence[Mitigation]
    record_id: NDArray[np.str_] | None = None
    class_names: tuple[str, ...] = ()
    detectors: Mapping[str, DetectionReport] = field(default_factory=dict, repr=False)
    set_aside: NDArray[np.bool_] | None = None
    set_aside_reasons: Mapping[int, str] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def flagged(self) -> list[int]:
        """0-based indices of flagged samples."""
        return [int(i) for i in np.flatnonzero(self.flags)]

    @property
    def poisoned_producers(self) -> list[str]:
        """Producers named as poisoned (stratified excess of flagged samples, corrected)."""
        return [p for p, v in self.per_producer.items() if v["named"]]

    def to_dict(self) -> dict[str, Any]:
        """The JSON report."""
        out: dict[str, Any] = {
            "risk_score": self.risk_score,
            "band": self.band,
            "calibrated": self.calibrated,
            "calibration": dict(self.calibration),
            "n_samples": len(self.flags),
            "flagged": self.flagged,
            "scores": [round(float(s), 4) for s in self.scores],
            "per_class": {str(c): dict(v) for c, v in self.per_class.items()},
            "per_producer": {p: dict(v) for p, v in self.per_producer.items()},
            "mitigations": [m.to_dict() for m in self.mitigations],
            "reasons": {str(i): r for i, r in self.reasons.items()},
            "label_noise_set_aside": []
            if self.set_aside is None
            else [int(i) for i in np.flatnonzero(self.set_aside)],
            "label_noise_set_aside_reasons": {str(i): r for i, r in self.set_aside_reasons.items()},
            "triggers": [
                {
                    "target": t.target,
                    "target_name": self._name(t.target),
                    "effect": t.effect,
                    "seeds": t.n_seeds,
                    "coordinates": t.n_coords,
                    "verified": v,
                    "asr_before": self.asr_before.get(t.target),
                }
                for t, v in zip(self.triggers, self.verified, strict=True)
            ],
            "detectors": {
                name: {"flagged": r.n_flagged, "suspect_classes": list(r.suspect_classes)}
                for name, r in self.detectors.items()
            },
        }
        if self.record_id is not None:
            out["flagged_record_ids"] = [str(self.record_id[i]) for i in self.flagged]
        return out

    def _name(self, code: int) -> str:
        return self.class_names[code] if code < len(self.class_names) else str(code)

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _producer_risk(data: Prepared, flags: NDArray[np.bool_]) -> dict[str, dict[str, Any]]:
    """Per-producer excess of flagged samples over a class-stratified expectation.

    Expected count for producer ``p``: ``Σ_c n_{p,c} · r_c`` where ``r_c`` is class ``c``'s flagged
    rate among the *other* producers, shrunk towards the overall rate with 20 pseudo-samples
    (a producer that supplies most of a class leaves few others to estimate it). Tail
    probability: Poisson with that mean (more dispersed than the Poisson-binomial, so
    conservative); Bonferroni-corrected over producers. Named when the corrected p < 1e-3, the
    count is at least twice the expectation and at least 3.
    """
    out: dict[str, dict[str, Any]] = {}
    if data.producer is None:
        return out
    names = sorted(set(data.producer.tolist()))
    overall = float(flags.mean())
    k_cls = data.n_classes
    for p in names:
        m = data.producer == p
        n = int(m.sum())
        k = int(flags[m].sum())
        n_pc = np.bincount(data.y[m], minlength=k_cls)
        n_oc = np.bincount(data.y[~m], minlength=k_cls)
        f_oc = np.bincount(data.y[~m], weights=flags[~m].astype(float), minlength=k_cls)
        rate = (f_oc + 20.0 * overall) / (n_oc + 20.0)
        expected = float((n_pc * rate).sum())
        p_value = float(poisson.sf(k - 1, max(expected, 1e-9))) if k else 1.0
        p_adj = min(1.0, p_value * len(names))
        frac = k / n
        named = bool(p_adj < 1e-3 and k >= 2.0 * expected and k >= 3)
        risk = max(risk_from_fraction(frac), _trigger_risk(k, n)) if named else 0.0
        out[p] = {
            "risk_score": round(risk, 1),
            "band": band(risk),
            "flagged": k,
            "expected": round(expected, 2),
            "n": n,
            "flagged_fraction": round(frac, 4),
            "p_value": p_value,
            "p_value_bonferroni": p_adj,
            "named": named,
        }
    return out


def scan(
    x: ArrayLike | Prepared,
    y: ArrayLike | None = None,
    *,
    producer: ArrayLike | None = None,
    record_id: ArrayLike | None = None,
    model: ProbeView | None = None,
    epochs: int = 6,
    seed: int = 0,
    min_per_class: int = MIN_PER_CLASS,
    verify: bool = True,
    extended: bool = False,
    min_effect: float = 3.0,
    min_asr: float = 0.5,
    min_accuracy: float = 0.6,
    min_agreement: float = 0.8,
    image_probe: ImageProbe | None = DEFAULT_IMAGE_PROBE,
) -> ScanReport:
    """Scan ``(x, y)`` for poisoning; see the module docstring for rules, calibration and risk.

    Parameters
    ----------
    x, y
        ``N×D``/``N×H×W``/``N×H×W×C`` numbers and ``N`` labels (integers or class names), or a
        :class:`~saip_poisoning.data.Prepared` dataset as ``x`` (then ``y`` is ignored).
    producer, record_id
        Optional per-sample producer IDs (per-producer risk) and record IDs (echoed for flags).
    model
        A caller's :class:`~saip_poisoning.model.ProbeView` for the extra representation
        detectors (``extended``).
    verify
        Confirm reconstructed triggers by training a probe and measuring attack success.
    extended
        Also run the representation detectors (activation clustering, spectral signatures,
        loss trajectory, gradients) and include their reports; they do not change the flags.
    min_effect, min_asr, min_accuracy, min_agreement
        The trigger effect cut (robust SD; set on digits/MNIST-5k), the ASR a trigger must reach
        to count as a working backdoor, and the calibration floors (the measured agreement
        must clear ``min_agreement`` plus 1.645 binomial standard errors, :func:`floor_margin`).
    image_probe
        The second probe for images (:class:`~saip_poisoning.imageprobe.ImageProbe`): with
        the default ``mode="auto"``, N×H×W(×C) inputs whose pixel probe misses a calibration
        floor are judged on label-free texture and random-convolution features instead
        (``calibration["probe"]`` names the probe that judged labels, ``None`` when none
        passed; ``calibration["probes"]`` gives each
        probe's measurements). ``None`` keeps the pixel probe only.

    Raises
    ------
    PoisoningInputError
        Malformed input (see :func:`saip_poisoning.data.prepare`).
    TypeError
        ``image_probe`` is not an :class:`~saip_poisoning.imageprobe.ImageProbe` or ``None``.
    ValueError
        ``image_probe`` has ``mode="always"`` but the input is not images it accepts.
    """
    if isinstance(x, Prepared):
        data = x
    else:
        if y is None:
            raise TypeError("scan() needs labels y unless x is a Prepared dataset")
        data = prepare(x, y, producer=producer, record_id=record_id, min_per_class=min_per_class)
    if image_probe is not None and not isinstance(image_probe, ImageProbe):
        raise TypeError(
            f"image_probe must be an ImageProbe or None, got {type(image_probe).__name__}"
        )
    if image_probe is not None and image_probe.mode == "always" and not is_image(data, image_probe):
        raise ValueError(
            "image_probe mode 'always' needs N×H×W or N×H×W×C inputs with sides >= "
            f"{image_probe.min_side}, got per-sample shape {data.shape}"
        )
    space = input_space(data, seed=seed)
    # ``lspace``/``oof``: the view labels are judged in (calibration, label-noise rules): the
    # pixel PCA, or the image features when the pixel probe cannot learn the images
    views: list[tuple[str, InputSpace, NDArray[np.float64]]] = []
    lspace, oof, calibration = _judging_view(
        data,
        space,
        image_probe,
        seed=seed,
        min_accuracy=min_accuracy,
        min_agreement=min_agreement,
        views=views,
    )
    calibrated = bool(calibration["calibrated"])
    triggers = find_triggers(data, space, min_effect=min_effect, seed=seed)
    # blended keys on textures/tabular data: a whitened sub-population of one class, turned
    # into a trigger (discriminant, blend weight, key) that the verification below must confirm
    blends = blend_candidates(data, skip=frozenset(t.target for t in triggers), seed=seed)
    if blends:
        seeds = np.zeros(len(data.y), dtype=bool)
        for b in blends:
            seeds[b.members] = True
        found = triggers_from_flags(data, seeds, known=triggers, seed=seed)
        # a "key" that must overwrite more than half of the input is the class's own content
        # (a natural sub-population), not a hidden pattern; a split-off group whose variation
        # is not shrunk at all is an offset cluster, not a blend: neither counts as a trigger
        triggers += [
            dc_replace(t, kind="blend") for t in found if _MIN_BLEND <= t.blend <= _MAX_BLEND
        ]
        weight = {t.target: t.blend for t in found}
        calibration["blend_candidates"] = [
            {
                "class": data.class_name(b.label),
                "separation": b.separation,
                "relative": b.relative,
                "members": len(b.members),
                "blend_weight": weight.get(b.label),
            }
            for b in blends
        ]
    asr_before: dict[int, float] = {}
    if triggers and verify:
        res = attack_success(data, triggers, epochs=epochs, seed=seed)
        asr_before = dict(res["asr"])  # type: ignore[arg-type]
        calibration["probe_clean_accuracy_with_triggers"] = res["clean_accuracy"]
    verified = [(not verify) or asr_before.get(t.target, 0.0) >= min_asr for t in triggers]

    n = len(data.y)
    carrier = np.zeros(n, dtype=bool)
    carrier_of = np.full(n, -1)
    for t, ok in zip(triggers, verified, strict=True):
        if ok:
            new = to_remove(data, t) & ~carrier
            carrier_of[new] = t.target
            carrier |= new
    n_verified_carriers = int(carrier.sum())
    # an unverified but strong stamped pattern (exact shared values): flagged for review, no
    # extra risk (clean-label poison keeps its label; a probe need not follow it)
    stamped = np.zeros(n, dtype=bool)
    relabelled_stamp = np.zeros(n, dtype=bool)
    for t, ok in zip(triggers, verified, strict=True):
        # shared exact values are evidence only on coordinates that take more than two values:
        # on binary inputs (black-and-white images, 0/1 tabular flags) every sample shares
        # exact values with many others, and a class's typical strokes look "stamped"
        strong_stamp = (
            t.kind == "stamp" and t.effect >= _STAMP_EFFECT and _graded_coords(data, t) >= 4
        )
        if not ok and (strong_stamp or (t.kind == "neighbours" and t.effect >= _SHARED_EFFECT)):
            new = carriers(data, t) & ~carrier & ~stamped
        elif not ok and t.content_tested:
            # a stamp behind decoys whose carriers labelled ``t`` are another class's content
            # (the content test) but that no probe follows (decoys weaken it): those carriers are
            # mislabelled samples — label noise (added below, after the label-noise rules), not
            # trigger carriers; the decoys keep their label and stay
            relabelled_stamp |= carriers(data, t) & (data.y == t.target) & ~carrier
            continue
        else:
            continue
        carrier_of[new] = t.target
        stamped |= new
    carrier |= stamped
    # carriers of a content-tested stamp that keep another label (decoys): never label noise —
    # their neighbours include the relabelled poison that shares their stamp, so the rules would
    # "correct" them to the target and mitigate would add them to the backdoor
    decoy = np.zeros(n, dtype=bool)
    for t in triggers:
        if t.content_tested:
            decoy |= carriers(data, t) & (data.y != t.target)
    decoy &= ~carrier
    where = "input-space" if lspace is space else "image-feature"
    relabel = lspace.majority.copy()
    noise = np.zeros(n, dtype=bool)
    # the first pass's flags when the depth test made the label-noise rules abstain: not
    # counted as poison, but set aside below so a keep-mask still drops them
    abstained = np.zeros(n, dtype=bool)
    second_reason: dict[int, str] = {}
    if calibrated:
        lz = lspace.z / (float(lspace.z.std()) or 1.0)
        noise, relabel, second_reason, passes, depth = _label_noise(
            data, lspace, lz, oof, seed=seed, where=where
        )
        calibration["label_noise_passes"] = passes
        if depth is not None:
            calibration["label_noise_depth"] = depth
            if not depth["identifiable"]:
                abstained, noise = noise, np.zeros(n, dtype=bool)
                calibrated = False
                calibration["calibrated"] = False
                calibration["reason"] = (
                    f"the label-noise rule's {depth['n']} flags {depth['overlap_evidence']}"
                    ": natural class overlap, which "
                    "from the data alone cannot be told from label noise, so the label-noise "
                    "rules abstain: no label-noise flags; their flags are set aside (a keep-mask "
                    "drops them; trigger search still ran)"
                )
    cluster_reason: dict[int, str] = {}
    if calibrated:
        # after the per-sample rule, without its flags (one round of iterative cleaning)
        for cl in reclassify_clusters(
            lspace.z, data.y, data.n_classes, seed=seed, exclude=noise.copy()
        ):
            noise[cl.members] = True
            relabel[cl.members] = cl.voted
            for i in cl.members:
                cluster_reason[int(i)] = (
                    f"label {data.class_name(cl.label)} on a separate cluster of {cl.size} "
                    f"samples that {cl.vote_share:.0%} of the time is reclassified as "
                    f"{data.class_name(cl.voted)} by neighbours outside the cluster"
                )
    # too weak to judge every class: judge label groups the probe can separate (labelgroups),
    # measured without the carriers of flagged patterns (explained poison)
    groups = None
    if not calibrated:
        groups = group_label_noise(
            data,
            views,
            rule=_label_noise,
            validated_accuracy=_VALIDATED_ACCURACY,
            validated_agreement=CLEAN_AGREEMENT,
            exclude=carrier,
            seed=seed,
        )
        calibration["label_groups"] = groups.calibration
        if groups.groups is not None:
            calibration["reason"] += (
                "; the label-noise rule ran at label-group level instead (groups "
                f"{groups.calibration['groups']}: calibration.label_groups)"
            )
    pair_reason: dict[int, str] = {}
    if groups is not None and groups.groups is not None:
        # flips *inside* a merged group: a directional (mixture-proportion) test per class pair
        pf = group_pair_flips(data, views, groups.groups, exclude=carrier | groups.flags, seed=seed)
        calibration["label_groups"]["pair_flips"] = pf.calibration
        if "not_run" in pf.calibration:
            calibration["label_groups"]["undetectable"] += (
                f" (the pair-flip test did not run: {pf.calibration['not_run']})"
            )
        pair_reason = pf.reasons
        noise |= pf.flags
        relabel[pf.flags] = -1
    if groups is not None:
        relabel[groups.flags] = groups.relabel[groups.flags]
        if groups.groups is not None:
            noise |= groups.flags
        else:
            # the group level's depth test abstained: its flags are set aside like the class
            # level's, never counted as poison (adversarial review: were risk 72 "critical"
            # under a "label noise not judged" verdict)
            abstained |= groups.flags
    noise &= ~carrier & ~decoy
    # a shared pattern whose carriers are flagged explains the poison; label-noise flags at no
    # more than the clean allowance are the rule's own clean-data level, not a second attack:
    # set aside (not flagged as poison; mitigate still relabels them, a keep-mask drops them)
    set_aside = np.zeros(n, dtype=bool)
    if (
        carrier.any()
        and float(noise.mean()) <= CLEAN_ALLOWANCE
        and not _beyond_clean_level(data, noise, frozenset(cluster_reason))
    ):
        set_aside = noise.copy()
        noise[:] = False
    # abstained flags: an attacker's boundary flips can make the rule abstain, and the flips
    # placed next to them must not then be kept by a keep-mask (client_filter dropped them
    # before the depth test; adversarial review)
    abstained &= ~carrier & ~noise & ~decoy  # a flag counted as poison is never also "set aside"
    # mislabelled carriers of an unverified content-tested stamp: label noise in any case (the
    # content test is against the class's own rate, so it needs no calibration), removed by
    # mitigate (relabelling would keep the stamp on them)
    relabelled_stamp &= ~carrier
    noise |= relabelled_stamp
    abstained &= ~relabelled_stamp
    set_aside &= ~relabelled_stamp
    relabel[relabelled_stamp] = -1
    # the rule abstained because these flags look like natural class overlap: no class is
    # known well enough to relabel them to (on clean overlapping data the neighbour majority
    # would change correct labels), so mitigate removes them, as it does label-group flags
    relabel[abstained] = -1
    set_aside |= abstained
    calibration["label_noise_set_aside"] = int(set_aside.sum())
    flags = carrier | noise

    p_given = oof[np.arange(n), data.y]
    scores = np.maximum(lspace.disagreement * (1.0 - p_given) / 0.56, 0.0)
    for t, ok in zip(triggers, verified, strict=True):
        if ok:
            scores = np.maximum(scores, t.projection(data.xs) / t.cut)
    scores = np.where(flags, np.maximum(scores, 1.0), np.minimum(scores, 0.999))

    def _noise_reason(i: int) -> str:
        if i in pair_reason:
            return pair_reason[i]
        if groups is not None and i in groups.reasons:
            return groups.reasons[i]
        if i in cluster_reason:
            return cluster_reason[i]
        if i in second_reason:
            return second_reason[i]
        return (
            f"label {data.class_name(int(data.y[i]))} disagrees with "
            f"{lspace.majority_share[i]:.0%} of its {where} neighbours (majority "
            f"{data.class_name(int(lspace.majority[i]))}) and with a probe that never saw it "
            f"(p(label) = {p_given[i]:.2f})"
        )

    reasons: dict[int, str] = {}
    tr_by = {t.target: t for t in triggers}
    for ii in np.flatnonzero(flags):
        i = int(ii)
        if stamped[i]:
            t = tr_by[int(carrier_of[i])]
            asr_t = asr_before.get(t.target, float("nan"))
            if t.kind == "stamp":
                reasons[i] = (
                    f"shares the exact values of a pattern stamped on {t.n_coords} input "
                    f"coordinates with {t.n_seeds} samples of class {data.class_name(t.target)} "
                    f"(effect {t.effect:.1f} robust SD); a probe does not follow it (attack "
                    f"success {asr_t:.0%}): clean-label poison or a watermark, review"
                )
            else:
                reasons[i] = (
                    f"carries a pattern on {t.n_coords} input coordinates shared by {t.n_seeds} "
                    f"samples labelled {data.class_name(t.target)} whose neighbours are another "
                    f"class (effect {t.effect:.1f} robust SD); a probe does not follow it yet "
                    f"(attack success {asr_t:.0%}): a weak or early backdoor, review"
                )
        elif carrier[i]:
            t = tr_by[int(carrier_of[i])]
            how = (
                f"a blended key (weight {t.blend:.2f}) split off class "
                f"{data.class_name(t.target)} along a whitened direction, "
                if t.kind == "blend"
                else ""
            )
            reasons[i] = (
                f"carries the trigger reconstructed for class {data.class_name(t.target)} "
                f"({how}{t.n_coords} input coordinates, effect {t.effect:.1f} robust SD, attack "
                f"success {asr_before.get(t.target, float('nan')):.0%} on a probe)"
            )
            if int(data.y[i]) != t.target:
                reasons[i] += (
                    f"; labelled {data.class_name(int(data.y[i]))}, not the target: a carrier "
                    "that keeps its label (a decoy that hides the trigger, or a natural "
                    "carrier), removed with the rest"
                )
        elif relabelled_stamp[i]:
            t = next(tt for tt in triggers if tt.content_tested and tt.target == int(data.y[i]))
            reasons[i] = (
                f"labelled {data.class_name(t.target)}, carries a pattern stamped on "
                f"{t.n_coords} input coordinates (also on samples of other classes that keep "
                "their label), and with the pattern masked its neighbours are another class: "
                "relabelled poison; a probe does not follow the pattern (attack success "
                f"{asr_before.get(t.target, float('nan')):.0%}): a weak backdoor, review"
            )
        else:
            reasons[i] = _noise_reason(i)

    def _fate(i: int) -> str:
        # -1: a label-group flag, removed (labelgroups); otherwise relabelled by mitigate
        if relabel[i] < 0:
            return "mitigate removes it"
        return "mitigate relabels it (or drops it from a keep-mask)"

    set_aside_reasons = {
        int(i): (
            (
                f"set aside, not counted as poison: the label-noise rules abstained (their "
                f"{int(abstained.sum())} flags lie nearer the class boundary than the classes' "
                "own members: natural class overlap, or flips placed at the boundary); "
                f"{_fate(int(i))}: {_noise_reason(int(i))}"
            )
            if abstained[i]
            else (
                f"set aside, not counted as poison: {int(set_aside.sum())} label-noise flags "
                f"({set_aside.mean():.1%} of the data, at most the clean allowance "
                f"{CLEAN_ALLOWANCE:.0%}) next to a flagged pattern; {_fate(int(i))}: "
                f"{_noise_reason(int(i))}"
            )
        )
        for i in np.flatnonzero(set_aside)
    }

    noise_frac = float(noise.mean())
    risk_parts = {
        "trigger": _trigger_risk(n_verified_carriers, n) if any(verified) and triggers else 0.0,
        "label_noise": risk_from_fraction(noise_frac) if calibrated else 0.0,
        "candidate_pattern": _CANDIDATE_RISK if any(not v for v in verified) else 0.0,
        # carriers of a content-tested stamp labelled its target: measured mislabelled samples
        # (another class's content) sharing one pattern — counted like label noise even where
        # the probe does not follow the stamp (decoys weaken it; adversarial review)
        "relabelled_stamp": risk_from_fraction(float(relabelled_stamp.mean())),
        "label_noise_groups": (
            risk_from_fraction(noise_frac)
            if groups is not None and groups.groups is not None
            else 0.0
        ),
    }
    risk = max(risk_parts.values())
    calibration["risk_components"] = risk_parts

    per_class: dict[int, dict[str, Any]] = {}
    live = carrier & ~stamped
    for c in range(data.n_classes):
        m = data.y == c
        if not m.any():
            continue
        fired: list[str] = []
        if c in tr_by:
            fired.append("trigger" if verified[triggers.index(tr_by[c])] else "candidate_pattern")
        cls_noise = float(noise[m].mean())
        if calibrated and risk_from_fraction(cls_noise) >= 20:
            fired.append("label_noise")
        per_class[c] = {
            "name": data.class_name(c),
            "n": int(m.sum()),
            "flagged": int(flags[m].sum()),
            "flagged_fraction": round(float(flags[m].mean()), 4),
            "carriers": int(carrier[m].sum()),
            "label_noise": int(noise[m].sum()),
            "risk_score": max(
                risk_from_fraction(cls_noise) if calibrated else 0.0,
                _trigger_risk(int(live[m].sum()), int(m.sum())) if live[m].any() else 0.0,
            ),
            "class_tests": fired,
            "oof_accuracy": round(float((oof[m].argmax(1) == c).mean()), 4),
        }
    per_producer = _producer_risk(data, flags)
    mitigations = _mitigations(
        risk=risk,
        calibration=calibration,
        flags=flags,
        noise=noise,
        triggers=triggers,
        verified=verified,
        carrier_of=carrier_of,
        asr_before=asr_before,
        per_producer=per_producer,
    )
    detectors: dict[str, DetectionReport] = {}
    if extended or model is not None:
        view = model or fit_probe(
            data.xs, data.y, n_classes=data.n_classes, epochs=epochs, seed=seed
        )
        for det in (
            LossTrajectory(),
            ActivationClustering(seed=seed),
            SpectralSignature(seed=seed),
            GradientSimilarity(),
        ):
            detectors[det.name] = det.detect(data, None, model=view)
    logger.info(
        "poisoning scan: risk %.1f (%s), %d of %d flagged", risk, band(risk), flags.sum(), n
    )
    return ScanReport(
        risk_score=round(risk, 1),
        band=band(risk),
        calibrated=calibrated,
        calibration=calibration,
        flags=flags,
        scores=np.asarray(scores, dtype=np.float64),
        reasons=reasons,
        carrier=carrier,
        noise=noise,
        relabel=relabel,
        triggers=tuple(triggers),
        verified=tuple(verified),
        asr_before=asr_before,
        per_class=per_class,
        per_producer=per_producer,
        mitigations=tuple(mitigations),
        record_id=data.record_id,
        class_names=data.classes,
        detectors=detectors,
        set_aside=set_aside,
        set_aside_reasons=set_aside_reasons,
        settings={
            "verify": verify,
            "min_effect": min_effect,
            "min_asr": min_asr,
            "min_accuracy": min_accuracy,
            "min_agreement": min_agreement,
            "image_probe": image_probe,
        },
    )


def _beyond_clean_level(data: Prepared, noise: NDArray[np.bool_], cluster: frozenset[int]) -> bool:
    """Whether label-noise flags are more than the rule's clean-data level, whatever their total.

    The set-aside (module docstring) is for the thin, spread flags the rule raises on clean
    data. An attacker can keep targeted flips under the 2 % total and plant a cheap pattern to
    have them set aside; targeted flips are concentrated. Not the clean level: a relabelled
    cluster among the flags (rule 3 never fires on the clean tuning sets), or a class whose
    label-noise share is in the guarded band (the per-class ``label_noise`` class test; on the
    tuning sets' pattern scans the set-aside flags reached a per-class risk of at most 16,
    MNIST-5k; 18 targeted flips into one digits class reach 97).
    """
    if any(noise[i] for i in cluster):
        return True
    for c in range(data.n_classes):
        m = data.y == c
        if m.any() and risk_from_fraction(float(noise[m].mean())) >= BANDS[1][0]:
            return True
    return False


def _judging_view(
    data: Prepared,
    space: InputSpace,
    image_probe: ImageProbe | None,
    *,
    seed: int,
    min_accuracy: float,
    min_agreement: float,
    views: list[tuple[str, InputSpace, NDArray[np.float64]]] | None = None,
) -> tuple[InputSpace, NDArray[np.float64], dict[str, Any]]:
    """The neighbours, cross-fitted probabilities and calibration labels are judged with.

    First the pixel probe (PCA of the scaled inputs), whose agreement must clear
    ``min_agreement`` by ``_ONE_LOOK_Z`` binomial standard errors (:func:`floor_margin`;
    reported as ``agreement_margin``, the raised floor as ``min_agreement``; the accuracy
    floor is used as given). For images, when it misses a floor (or
    with ``mode="always"``, then only measured and reported while the pixel probe passes), the
    same PCA + k-NN + cross-fitted MLP run on the label-free image features
    (:mod:`saip_poisoning.imageprobe`). After a failed first probe the image
    probe must pass stricter floors: (a) a second probe is a second chance at the same floors
    (data at a floor passes one probe about half the time, one of two about three times in
    four), so it must clear each floor by two binomial standard errors of its own measurement
    (``selection_margin``); (b) it must stay inside the range the label-noise rule was
    validated on (``_VALIDATED_AGREEMENT``, ``_VALIDATED_ACCURACY``, from the tuning sets).
    The image view judges labels when it passes; otherwise the report gives both probes'
    measurements and stays uncalibrated. ``calibration["probes"]`` lists every probe tried;
    ``views`` (if given) receives each probe's ``(name, space, oof)`` for the label groups.
    """
    z = space.z / (float(space.z.std()) or 1.0)
    oof = crossfit_probs(z, data.y, n_classes=data.n_classes, seed=seed)
    first = floor_margin(min_agreement, len(data.y), z=_ONE_LOOK_Z)
    cal = _calibrate(
        data,
        space,
        oof,
        min_accuracy,
        min(1.0, min_agreement + first),
        agree_note=f": {min_agreement:.1%} + {_ONE_LOOK_Z} binomial standard errors",
    )
    cal["agreement_margin"] = first
    tried = [{"probe": "pixels", **_summary(cal), "agreement_margin": first}]
    if views is not None:
        views.append(("pixels", space, oof))
    use = (space, oof, cal, "pixels")
    if (
        image_probe is not None
        and is_image(data, image_probe)
        and (image_probe.mode == "always" or not cal["calibrated"])
    ):
        margin = {"accuracy": 0.0, "agreement": 0.0}
        acc_floor = max(min_accuracy, _VALIDATED_ACCURACY)
        agree_floor = max(min_agreement, _VALIDATED_AGREEMENT)
        if not cal["calibrated"]:
            counts = np.bincount(data.y)
            n_class = float(np.median(counts[counts > 0]))
            margin = {
                "accuracy": floor_margin(min_accuracy, n_class, z=_SECOND_LOOK_Z),
                "agreement": floor_margin(min_agreement, len(data.y), z=_SECOND_LOOK_Z),
            }
            acc_floor = max(min_accuracy + margin["accuracy"], _VALIDATED_ACCURACY)
            agree_floor = max(min_agreement + margin["agreement"], _VALIDATED_AGREEMENT)
        feats = image_features(data, image_probe, seed=seed)
        fdata = dc_replace(data, x=feats, xs=feats, shape=(feats.shape[1],))
        fspace = input_space(fdata, seed=seed)
        fz = fspace.z / (float(fspace.z.std()) or 1.0)
        foof = crossfit_probs(fz, data.y, n_classes=data.n_classes, seed=seed)
        fcal = _calibrate(
            data,
            fspace,
            foof,
            min(1.0, acc_floor),
            min(1.0, agree_floor),
            where="image-feature",
        )
        fcal["selection_margin"] = margin
        tried.append({"probe": "image_features", **_summary(fcal), "selection_margin": margin})
        if views is not None:
            views.append(("image_features", fspace, foof))
        # the image view judges only where the pixels cannot: on data the pixel probe passes it
        # is weaker (pooling discards position; digits flip 10 %: recall 0.75 vs 0.92), so with
        # ``mode="always"`` it is measured and reported, never a replacement
        if fcal["calibrated"] and not cal["calibrated"]:
            use = (fspace, foof, fcal, "image_features")
        elif not cal["calibrated"]:
            cal["reason"] = (
                "pixel probe: "
                + "; ".join(cal["problems"])
                + "; image-feature probe (floors raised by the selection margin): "
                + "; ".join(fcal["problems"])
                + _TOO_HARD
            )
    lspace, loof, out, name = use
    out.pop("problems", None)
    # the view that judged labels; None when no probe passed (the label-noise rule did not run)
    out["probe"] = name if out["calibrated"] else None
    out["probes"] = tried
    return lspace, loof, out


def floor_margin(floor: float, n: float, *, z: float) -> float:
    """``z`` binomial standard errors of a proportion measured on ``n`` samples at ``floor``.

    The margin a measured proportion (probe/neighbour agreement, held-out accuracy) must clear
    a floor by, so the floor applies to a one-sided lower confidence bound rather than to the
    estimate: data whose true rate sits at the floor passes with probability ``≈ 1 − Φ(z)``
    (5 % at z = 1.645) instead of one half. The standard error is taken at the floor (the
    score/Wald test of ``H0: rate = floor``, e.g. Agresti & Coull 1998), so the margin does
    not depend on the measurement itself and shrinks as ``1/√n`` (at 0.8: 0.029 for n = 750,
    0.0027 for n = 60 000).
    """
    if not 0.0 <= floor <= 1.0 or n <= 0 or z < 0:
        raise ValueError(f"floor_margin needs 0 ≤ floor ≤ 1, n > 0, z ≥ 0 (got {floor}, {n}, {z})")
    return round(z * math.sqrt(floor * (1.0 - floor) / n), 4)


def _summary(cal: Mapping[str, Any]) -> dict[str, Any]:
    keys = (
        "oof_accuracy",
        "oof_accuracy_median_class",
        "probe_neighbour_agreement",
        "knn_accuracy",
        "min_accuracy",
        "min_agreement",
        "calibrated",
    )
    return {k: cal[k] for k in keys}


_TOO_HARD = (
    ": the data is too hard for the probe to tell wrong labels from hard samples, so the "
    "label-noise rule was not run (trigger search still ran)"
)


def _calibrate(
    data: Prepared,
    space: InputSpace,
    oof: NDArray[np.float64],
    min_accuracy: float,
    min_agreement: float,
    *,
    where: str = "input-space",
    agree_note: str = "",
) -> dict[str, Any]:
    """The calibration measurements of one probe and its neighbours; ``problems`` (popped by
    :func:`_judging_view`) lists the floors missed (``agree_note`` says how the agreement
    floor was raised)."""
    pred = oof.argmax(1)
    per_class = [
        float((pred[data.y == c] == c).mean()) for c in range(data.n_classes) if (data.y == c).any()
    ]
    acc = float(np.median(per_class))
    agree = float((pred == space.majority).mean())
    out: dict[str, Any] = {
        "oof_accuracy": round(float((pred == data.y).mean()), 4),
        "oof_accuracy_median_class": round(acc, 4),
        "probe_neighbour_agreement": round(agree, 4),
        "knn_accuracy": round(float((space.majority == data.y).mean()), 4),
        "min_accuracy": round(min_accuracy, 4),
        "min_agreement": round(min_agreement, 4),
    }
    problems = []
    if acc < min_accuracy:
        problems.append(
            f"held-out probe accuracy (median over classes) {acc:.3f} < {min_accuracy:.3f}"
        )
    if agree < min_agreement:
        problems.append(
            f"probe and {where} neighbours agree on only {agree:.1%} of samples "
            f"(< {min_agreement:.1%}{agree_note})"
        )
    out["calibrated"] = not problems
    out["problems"] = problems
    if problems:
        out["reason"] = "; ".join(problems) + _TOO_HARD
    return out


def _votes(
    neighbours: NDArray[np.intp], labels: NDArray[np.int64], n_classes: int
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Neighbour majority, its share, and each sample's disagreement under ``labels``."""
    nl = labels[neighbours]
    n, k = nl.shape
    counts = np.zeros((n, n_classes), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), k), nl.ravel()), 1)
    disagreement = (nl != labels[:, None]).mean(axis=1)
    return counts.argmax(axis=1).astype(np.int64), counts.max(axis=1) / k, disagreement


def _noise_rule(
    data: Prepared,
    space: InputSpace,
    oof: NDArray[np.float64],
    *,
    labels: NDArray[np.int64] | None = None,
) -> NDArray[np.bool_]:
    """Rule 2 (label noise), its cuts scaled by the data's own noise level.

    ``r`` = share of samples whose neighbour majority and cross-fitted probe agree on another
    class (an estimate of the flipped share). Under a flip rate ``r`` a clean neighbourhood
    keeps only ``≈ 1 − r`` of its labels and a probe fitted on noisy labels gives a flipped
    sample ``p(label) ≈ r``, so the cuts move with it: neighbour share ≥ ``0.7·(1 − r)/0.97``
    (≤ 0.7), ``p(label) < 0.2 + r`` and typical neighbours ≥ ``0.5·(1 − r)``. On clean data
    (``r ≈ 0.01–0.03``) this is the fixed rule (0.7 / 0.2 / 0.5). Set on the tuning sets: at 20 %
    random flips the fixed cuts missed 27 % (digits) and 33 % (MNIST-5k) of the flips.

    ``labels`` (default: the given labels) are the labels the *neighbours* vote with; the
    sample itself is always judged on its given label (:func:`_label_noise`'s second pass
    passes the first pass's corrected labels).
    """
    n = len(data.y)
    if labels is None:
        majority, share, disagreement = space.majority, space.majority_share, space.disagreement
    else:
        majority, share, disagreement = _votes(space.neighbours, labels, data.n_classes)
    pred = oof.argmax(1)
    p_given = oof[np.arange(n), data.y]
    typical = (disagreement < 0.5)[space.neighbours].mean(axis=1)
    wrong = (majority != data.y) & (pred == majority)
    r = float((wrong & (pred != data.y)).mean())
    out: NDArray[np.bool_] = (
        wrong
        & (share >= min(0.7, 0.7 * (1.0 - r) / 0.97))
        & (p_given < max(0.2, 0.2 + r))
        & (typical >= min(0.5, 0.5 * (1.0 - r)))
    )
    return out


#: the label-noise risk at which the first pass's flags are taken as evidence of noise and the
#: rule is run once more on the corrected labels: the lower bound of the guarded band
_SECOND_PASS_RISK = 20.0
#: one-sided level of the depth test (:func:`_depth_test`): a convention, not fitted
_DEPTH_ALPHA = 0.05
#: ... and the effect it must also show: the lowest mean depth percentile of the tuning sets'
#: flip cells in the guarded band (0.472, MNIST-5k flip 5 %, n = 199 flags) minus two standard
#: errors of that measurement (2 × 0.0205, the convention of the image probe's selection
#: margin). Without it a large dataset would make the flip cells' own small shortfall from 0.5
#: (ambiguous genuine samples among the flags) significant
_DEPTH_MIN = 0.43
#: one-sided level of the side test (:func:`_side_test`): the depth test's convention
_SIDE_ALPHA = 0.05
#: ... and the effect it must also show: the largest excess agreement share of the tuning sets'
#: flip cells in the guarded band (0.028, MNIST-5k flip 5 %, n = 199 flags, scan seed 0; digits
#: flip 5/10/20 % −0.024–0.020, MNIST-5k 10/20 % −0.016/0.007) plus two standard errors of that
#: measurement (2 × 0.022, the depth test's convention)
_SIDE_MIN = 0.073
#: label permutations of the side test's null (its p-value resolution is 1/501)
_SIDE_PERMUTATIONS = 500
#: the effect the side-conditional depth (:func:`_side_depth`) must show besides significance
#: (level ``_DEPTH_ALPHA``): the lowest mean of the tuning flips in the guarded band (0.481,
#: ``test_poi_overlap``'s 10 % random flips on Gaussians 3 SD apart, scan seed 1, n = 53 flags;
#: digits/MNIST-5k flip cells 0.69–0.81, digits flips to the nearest class 0.50–0.51 over scan
#: seeds 0–2) minus two standard errors of that measurement (2 × 0.040, the depth test's
#: convention)
_SIDE_DEPTH_MIN = 0.40
#: fewest members of the predicted class on a flag's label's side for it to enter the test
_SIDE_DEPTH_MIN_REF = 5


def _side_test(
    data: Prepared, space: InputSpace, oof: NDArray[np.float64], flags: NDArray[np.bool_]
) -> dict[str, Any]:
    """Whether the flags' given labels depend on where the flagged samples lie (natural
    overlap) or not (label flips), with three or more classes.

    Under the class-conditional noise model (Natarajan et al. 2013) a flipped label is drawn
    from the flip distribution of the sample's true class *independently of where the sample
    lies in it*. A sample of class ``a`` that natural overlap carries into class ``b``'s region
    lies on ``a``'s side of it. So, among the flags predicted as ``b``, the given label ``a``
    and the *side* — the class other than ``b`` whose centroid (in the judging view, over its
    members labelled, predicted and neighbour-voted as that class) is closest — are independent
    under flips and agree under overlap. The
    statistic is the number of flags whose label is their side; its null is the permutation of
    the given labels among the flags of each predicted class (conditional independence given
    ``b``, whatever the flip matrix is: a pair flip's constant label agrees with the side
    exactly as often as the null says). The rule abstains when the agreement exceeds the null
    both significantly (one-sided permutation p < ``_SIDE_ALPHA``) and by more than the tuning
    sets' flip cells did (excess share > ``_SIDE_MIN``). With two classes the side is always
    the one other class: the test carries no information and never fires.

    Measured: tuning flip cells' excess −0.024–0.028 (scan seed 0, p ≥ 0.07); fresh draws of
    three clean Gaussian classes on a line 2.5 SD apart (draws 12, 13, 16; not tuning data)
    0.12–0.19, p 0.004–0.046 over scan seeds 0–2; the review's 2 SD draws 0 and 3
    (evaluation only) 0.01–0.10.

    **Reported, never decides** (``side_overlap`` is a diagnostic in
    ``calibration["label_noise_depth"]``). Its premise fails against a standard targeted flip:
    an attacker who flips each chosen sample to its most similar other class (nearest class
    centroid, the probe's runner-up) puts every label on its sample's side. On the tuning set
    digits (scan seed 0, samples drawn at random) that attack gave excess 0.52, p = 0.002, and
    as a rule the scan abstained (recall without → with it deciding): 5 % flips 0.98 → 0.00
    (risk 74 → 0), 10 % flips 0.95 → 0.04; MNIST-5k 5 / 10 % 0.83 / 0.85 → 0.00 / 0.00
    (risk 0); 10 % flips of which only 20 % go to the nearest class (excess 0.09–0.10) digits
    0.955 → 0.04, MNIST-5k 0.87 → 0.00.
    Any cut on the excess can be met by mixing such flips with random ones, so the test cannot
    tell overlap from this attack; the fresh 2.5 SD false alarms it removed are back
    (strict xfail, README Limits).
    """
    y, k = data.y, data.n_classes
    pred = oof.argmax(1)
    idx = np.flatnonzero(flags & (y != pred))
    if k < 3 or len(idx) == 0:
        return {"side_n": len(idx), "side_overlap": False}
    ref = (y == pred) & (space.majority == y)
    cent = np.full((k, space.z.shape[1]), np.inf)
    for c in range(k):
        if (ref & (y == c)).any():
            cent[c] = space.z[ref & (y == c)].mean(axis=0)
    dist = ((space.z[idx, None, :] - cent[None]) ** 2).sum(axis=-1)
    b = pred[idx]
    dist[np.arange(len(idx)), b] = np.inf
    side = dist.argmin(axis=1)
    a = y[idx]
    observed = int((a == side).sum())
    rng = np.random.default_rng(0)
    groups = [np.flatnonzero(b == c) for c in np.unique(b)]
    null = np.empty(_SIDE_PERMUTATIONS)
    for t in range(_SIDE_PERMUTATIONS):
        perm = a.copy()
        for g in groups:
            perm[g] = a[g][rng.permutation(len(g))]
        null[t] = (perm == side).sum()
    p_value = float((1 + (null >= observed).sum()) / (1 + _SIDE_PERMUTATIONS))
    excess = float((observed - null.mean()) / len(idx))
    return {
        "side_n": len(idx),
        "side_agreement": observed,
        "side_expected": round(float(null.mean()), 2),
        "side_excess": round(excess, 4),
        "side_p_value": round(p_value, 4),
        "side_alpha": _SIDE_ALPHA,
        "side_min_excess": _SIDE_MIN,
        # diagnostic only: the label-noise rules do not abstain on it (see above)
        "side_overlap": bool(p_value < _SIDE_ALPHA and excess > _SIDE_MIN),
    }


#: the depth test's ``noun`` in plural (:func:`_depth_test`)
_PLURAL = {"class": "classes", "group": "groups"}


def _mid_rank(ref: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
    """Mid-rank percentile of each value of ``v`` among ``ref`` (ties count half)."""
    r = np.sort(ref)
    lo = np.searchsorted(r, v, side="left")
    hi = np.searchsorted(r, v, side="right")
    return np.asarray((lo + hi) / (2.0 * len(r)), dtype=np.float64)


def _below_half(mean: float, n: int) -> tuple[float, float]:
    """``(z, one-sided p)`` of a mean of ``n`` percentiles below 0.5, their mean under the null
    (uniform percentiles: variance 1/12 each)."""
    zstat = (mean - 0.5) * math.sqrt(12.0 * n)
    return zstat, float(0.5 * math.erfc(-zstat / math.sqrt(2.0)))


def _depth_percentiles(
    y: NDArray[np.int64],
    n_classes: int,
    space: InputSpace,
    oof: NDArray[np.float64],
    flags: NDArray[np.bool_],
) -> NDArray[np.float64]:
    """Each flagged sample's depth percentile in its predicted class (:func:`_depth_test`);
    NaN for samples not judged (not flagged, label = prediction, or no reference members).

    Depth in the predicted class ``b`` is the cross-fitted probe's log-odds margin of ``b`` over
    the runner-up and the distance (judging view) to the nearest sample predicted as another
    class; each is turned into a mid-rank percentile among the reference (samples labelled
    ``b`` that probe and neighbours also put in ``b``) and the two are averaged.
    """
    pred = oof.argmax(1)
    logp = np.log(np.clip(oof, 1e-12, 1.0))
    top = np.sort(logp, axis=1)
    depths = [top[:, -1] - top[:, -2], np.zeros(len(y))]
    for b in range(n_classes):
        mb = pred == b
        if mb.any() and not mb.all():
            nn = NearestNeighbors(n_neighbors=1).fit(space.z[~mb])
            depths[1][mb] = nn.kneighbors(space.z[mb])[0][:, 0]
    out = np.full(len(y), np.nan)
    for b in range(n_classes):
        fb = flags & (pred == b) & (y != b)
        ref = (y == b) & (pred == b) & (space.majority == b)
        if not fb.any() or not ref.any():
            continue
        u = np.zeros(int(fb.sum()))
        for dep in depths:
            u += _mid_rank(dep[ref], dep[fb]) / len(depths)
        out[fb] = u
    return out


def _side_depth(
    data: Prepared, space: InputSpace, oof: NDArray[np.float64], flags: NDArray[np.bool_]
) -> dict[str, Any]:
    """Depth of the flags along the axis between their two classes, among the members of the
    predicted class that face the flag's label (:func:`_depth_test`'s second statistic).

    A flag has label ``a`` and is predicted ``b``. Natural overlap carries ``a``'s tail into
    ``b``'s region: relative to ``b``'s own members its density falls off monotonically away
    from ``a`` (for equal-variance Gaussians the log ratio is linear along the axis joining the
    means), so it sits on ``a``'s edge of ``b``. Under the class-conditional flip model
    (Natarajan et al. 2013) a flipped ``b`` sample is spread like ``b``. Flips to each sample's
    *nearest* other class (a standard targeted flip) are spread like the part of ``b`` that
    faces ``a`` — the reason the side test (:func:`_side_test`) and a plain axis depth cannot
    tell them from overlap. So the reference is conditioned on the side: ``b``'s clear members
    (labelled, predicted and neighbour-voted ``b``) whose nearest other class centroid
    (judging view, clear members) is ``a``. Each flag is projected on the axis from ``a``'s to
    ``b``'s centroid and gets its mid-rank percentile among those members (flags whose side
    has fewer than ``_SIDE_DEPTH_MIN_REF`` members are left out). Under the flip model (random
    or nearest-class targets) the mean is ≈ 0.5 or above (the rule keeps the clear cases);
    under overlap it is lower. With two classes the side is the other class and this is the
    plain axis depth.

    Measured (scan seeds 0–2, ``benchmarks/poisoning_overlap_injection.py``): tuning flips
    0.48–0.81 (the digits/MNIST-5k flip cells 0.69–0.81, digits flips to the nearest class
    0.50–0.51, the overlap tests' synthetic flip families 0.48–0.68); fresh draws of three clean
    Gaussian classes on a line (2 SD draws 6–21, 2.5 SD draws 6–11; not tuning of the rule,
    the family it is for) 0.23–0.42.
    """
    y, k = data.y, data.n_classes
    pred = oof.argmax(1)
    clear = (y == pred) & (space.majority == y)
    cent = np.full((k, space.z.shape[1]), np.nan)
    for c in range(k):
        if (clear & (y == c)).any():
            cent[c] = space.z[clear & (y == c)].mean(axis=0)
    idx = np.flatnonzero(flags & (y != pred))
    if k < 2 or len(idx) == 0:
        return {"side_depth_n": 0}
    # each clear member's side: the nearest class centroid other than its own
    dist = np.full((len(y), k), np.inf)
    for c in range(k):
        if not np.isnan(cent[c]).any():
            dist[:, c] = ((space.z - cent[c]) ** 2).sum(axis=1)
    dist[np.arange(len(y)), pred] = np.inf
    side = dist.argmin(axis=1)
    pct: list[NDArray[np.float64]] = []
    for a, b in {(int(y[i]), int(pred[i])) for i in idx}:
        if np.isnan(cent[[a, b]]).any():
            continue
        facing = clear & (y == b) & (side == a)
        if facing.sum() < _SIDE_DEPTH_MIN_REF:
            continue
        axis = cent[b] - cent[a]
        v = space.z[idx[(y[idx] == a) & (pred[idx] == b)]] @ axis
        pct.append(_mid_rank(space.z[facing] @ axis, v))
    n = sum(len(u) for u in pct)
    if not n:
        return {"side_depth_n": 0}
    mean = float(np.concatenate(pct).mean())
    zstat, p_value = _below_half(mean, n)
    return {
        "side_depth_n": n,
        "side_depth_mean": round(mean, 4),
        "side_depth_z": round(zstat, 3),
        "side_depth_p_value": round(p_value, 6),
        "side_depth_min_mean": _SIDE_DEPTH_MIN,
        "side_depth_shallow": bool(p_value < _DEPTH_ALPHA and mean < _SIDE_DEPTH_MIN),
    }


def _depth_test(
    data: Prepared,
    space: InputSpace,
    oof: NDArray[np.float64],
    flags: NDArray[np.bool_],
    *,
    noun: Literal["class", "group"] = "class",
) -> dict[str, Any]:
    """Whether the label-noise rule's flags look like label flips or like natural class overlap.

    Per-sample label noise is identifiable only where classes have pure regions (anchor points:
    Liu & Tao 2016, Xia et al. 2019; confident learning, Northcutt et al. 2021, assumes them).
    Under the class-conditional noise model those methods assume (a label is flipped
    independently of where its sample lies, Natarajan et al. 2013), a flipped sample is a draw
    from its true class, so it lies as deep inside that class as the class's correctly labelled
    members do. Where classes overlap everywhere, the samples the rule flags are the tails of
    their class reaching into the other's: nearer the boundary than that class's own members.

    Depth of a sample in its predicted class ``b`` (the cross-fitted probe's, which a flip of
    the sample's own label cannot move) is measured two ways: the probe's log-odds margin of
    ``b`` over the runner-up, and the distance (judging view) to the nearest sample predicted
    as another class. Each flagged sample (label ≠ ``b``; the rule requires probe and neighbour
    majority to say ``b``) gets its mid-rank percentile among the reference — samples labelled
    ``b`` that probe and neighbours also put in ``b`` — averaged over the two depths. Under the
    flip model the mean percentile is ≈ 0.5 (≥ 0.5 with the rule's own selection of clear
    cases); the rule abstains when the flags sit nearer the boundary both significantly — a
    one-sided z-test (mean of ``n`` percentiles, SD ``1/√12`` each: conservative for an average
    of two) at level ``_DEPTH_ALPHA`` = 0.05, a convention — and by more than the tuning sets'
    flip cells ever did (mean < ``_DEPTH_MIN`` = 0.43). It also abstains when the flags lie on
    their label's edge of the class they sit in, among that class's members facing the label
    (:func:`_side_depth`: significant at the same level and mean < ``_SIDE_DEPTH_MIN`` = 0.40):
    overlap that passes the first test, three clean classes on a line, fails this one, while
    flips to each sample's nearest class — which the side test (:func:`_side_test`) cannot tell
    from overlap — do not.

    Measured (benchmark split, scan seed 0): tuning sets' flip cells in the guarded band, mean
    percentile (z): digits flip 5/10/20 % 0.488/0.508/0.476 (−0.4/+0.3/−1.3), MNIST-5k
    0.472/0.528/0.492 (−1.4/+1.8/−0.8); pair flips stay below the guarded band at the first
    pass (the relabelled-cluster rule finds them). Evaluation set breast_cancer flip 5/10/20 %,
    pair flip: 0.463/0.544/0.587/0.576. Clean overlapping Gaussians (the defect; not tuning
    data, nothing was set on them): two classes 1.5–2.5 SD apart 0.23–0.42, three classes
    0.19–0.41, each with p ≤ 0.04. Flips an attacker puts next to the boundary look the same
    (digits, the 10 % smallest-margin samples flipped to the runner-up class: 0.20): the rule
    abstains there too, so the scan is uncalibrated and the gate refuses, but they are not
    flagged.

    ``noun`` names what ``data``'s labels are in ``overlap_evidence`` (``"group"`` at label-group
    level, :mod:`saip_poisoning.labelgroups`).
    """
    pct = _depth_percentiles(data.y, data.n_classes, space, oof, flags)
    pct = pct[~np.isnan(pct)]
    n = len(pct)
    if not n:
        return {"n": 0, "identifiable": True}
    mean = float(pct.mean())
    zstat, p_value = _below_half(mean, n)
    shallow = p_value < _DEPTH_ALPHA and mean < _DEPTH_MIN
    # the side test is reported, never decides: flips to each sample's most similar class
    # (a standard targeted flip) follow the side exactly like overlap does (:func:`_side_test`)
    side = _side_test(data, space, oof, flags)
    # ... but the depth *within* the side does decide: nearest-class flips are spread like the
    # part of their class facing the label, overlap sits at its edge (:func:`_side_depth`)
    side_depth = _side_depth(data, space, oof, flags)
    why = (
        f"lie nearer the {noun} boundary than the {_PLURAL[noun]}' own members (mean depth "
        f"percentile {mean:.2f} < {_DEPTH_MIN}, one-sided p = {p_value:.2g} < {_DEPTH_ALPHA})"
        if shallow
        else ""
    )
    if not shallow and side_depth.get("side_depth_shallow"):
        shallow = True
        why = (
            f"lie on their label's edge of the {noun} they sit in, nearer that label than the "
            f"{noun}'s own members on the same side (mean side depth percentile "
            f"{side_depth['side_depth_mean']:.2f} < {_SIDE_DEPTH_MIN}, one-sided p = "
            f"{side_depth['side_depth_p_value']:.2g} < {_DEPTH_ALPHA})"
        )
    return {
        "n": n,
        "mean_depth_percentile": round(mean, 4),
        "z": round(zstat, 3),
        "p_value": round(p_value, 6),
        "alpha": _DEPTH_ALPHA,
        "min_mean": _DEPTH_MIN,
        **side,
        **side_depth,
        "overlap_evidence": why,
        "identifiable": not shallow,
    }


def _label_noise(
    data: Prepared,
    space: InputSpace,
    z: NDArray[np.float64],
    oof: NDArray[np.float64],
    *,
    seed: int,
    where: str = "input-space",
    noun: Literal["class", "group"] = "class",
) -> tuple[NDArray[np.bool_], NDArray[np.int64], dict[int, str], int, dict[str, Any] | None]:
    """Rule 2 with one round of iterative cleaning; returns flags, relabel targets, reasons of
    the second pass's flags, the number of passes run (reported as
    ``calibration["label_noise_passes"]``) and the depth test's measurements (``None`` below
    the guarded band, where it is not run).

    When the first pass flags enough for the guarded band, :func:`_depth_test` first asks
    whether the flags look like flips (as deep in their neighbours' class as its own members)
    or like natural class overlap (nearer the boundary); on overlap the rule abstains: it
    returns its first pass's flags with ``identifiable`` false, and the caller reports the scan
    as not calibrated for labels and sets those flags aside (not counted as poison; a keep-mask
    drops them).

    At a high flip rate the noise hides itself: a flipped sample's neighbours carry flipped
    labels too, and a probe fitted on the noisy labels is unsure (at 20 % flips on breast_cancer,
    an evaluation set, its held-out accuracy against the true labels fell to 0.67 and flipped
    samples kept ``p(label)`` 0.4–0.5). Confident learning (Northcutt, Jiang, Chuang 2021, JAIR 70,
    arXiv:1911.00068) prunes the confident label errors and trains again on what is left. Here:
    when the first pass flags enough to put the data in the guarded band or above (label-noise
    risk ≥ 20, i.e. clearly more than the clean allowance), its flags are relabelled to their
    neighbour majority, the cross-fitted probe is refitted on those corrected labels, and the
    rule runs once more with neighbours voting with the corrected labels and the refitted probe
    (each sample still judged on its *given* label, the cuts scaled by the rate re-estimated in
    that view). Below the guarded band nothing changes, so clean data (tuning sets: ≤ 1 %
    flagged) keeps exactly the one-pass rule; the refit costs one more cross-fit only on data
    that is already reported as noisy.

    Measured on the tuning sets (F1 one pass → two passes, 80 % split, scan seed 0): digits
    flip 10/20 % 0.94/0.89 → 0.96/0.96, MNIST-5k 0.88/0.85 → 0.89/0.90, MNIST 3-vs-8
    0.88/0.82 → 0.94/0.93; the price is precision at 5 % flips on MNIST-5k (0.85 → 0.78, F1
    0.85 → 0.82: the sharper refitted probe also rejects some ambiguous genuine digits).
    """
    first = _noise_rule(data, space, oof)
    relabel = space.majority.copy()
    if risk_from_fraction(float(first.mean())) < _SECOND_PASS_RISK:
        return first, relabel, {}, 1, None
    depth = _depth_test(data, space, oof, first, noun=noun)
    if not depth["identifiable"]:
        # natural overlap, not flips: the rule abstains (the caller reports uncalibrated and
        # sets these first-pass flags aside, not counted as poison)
        return first, relabel, {}, 1, depth
    corrected = data.y.copy()
    corrected[first] = space.majority[first]
    oof2 = crossfit_probs(z, corrected, n_classes=data.n_classes, seed=seed)
    second = _noise_rule(data, space, oof2, labels=corrected) & ~first
    majority, share, _ = _votes(space.neighbours, corrected, data.n_classes)
    relabel[second] = majority[second]
    n_first = int(first.sum())
    reasons = {
        int(i): (
            f"label {data.class_name(int(data.y[i]))} disagrees with {share[i]:.0%} of its "
            f"{where} neighbours (majority {data.class_name(int(majority[i]))}) once the "
            f"{n_first} clearer label errors among them and elsewhere are corrected, and with "
            f"a probe retrained on the corrected labels that never saw it "
            f"(p(label) = {oof2[i, data.y[i]]:.2f})"
        )
        for i in np.flatnonzero(second)
    }
    return first | second, relabel, reasons, 2, depth


def _mitigations(
    *,
    risk: float,
    calibration: Mapping[str, Any],
    flags: NDArray[np.bool_],
    noise: NDArray[np.bool_],
    triggers: Sequence[Trigger],
    verified: Sequence[bool],
    carrier_of: NDArray[np.int64],
    asr_before: Mapping[int, float],
    per_producer: Mapping[str, Mapping[str, Any]],
) -> list[Mitigation]:
    out: list[Mitigation] = []
    if not calibration["calibrated"]:
        out.append(
            Mitigation(
                "review_manually",
                "scan not calibrated: " + str(calibration["reason"]),
                {k: v for k, v in calibration.items() if k != "reason"},
            )
        )
    if risk < 20 and not calibration["calibrated"]:
        return out  # a low risk from a scan that could not judge is no reason to proceed
    if risk < 20:
        out.append(
            Mitigation(
                "proceed",
                "risk is in the low band: no verified trigger and no label-noise excess",
                {"risk_score": risk, "flagged": int(flags.sum())},
            )
        )
        return out
    for t, ok in zip(triggers, verified, strict=True):
        if ok:
            out.append(
                Mitigation(
                    "remove_trigger_carriers",
                    f"a shared trigger into class {t.target} was reconstructed and works on a "
                    "probe: remove every sample carrying it, retrain, and verify the attack "
                    "success rate with the reconstructed trigger",
                    {
                        "class": t.target,
                        "carriers": int((carrier_of == t.target).sum()),
                        "effect": t.effect,
                        "coordinates": t.n_coords,
                        "asr_before": asr_before.get(t.target),
                    },
                )
            )
        else:
            out.append(
                Mitigation(
                    "review_candidate_pattern",
                    f"samples labelled {t.target} share an input pattern, but a probe trained on "
                    "the data does not follow it (not a working backdoor on the probe): review",
                    {"class": t.target, "effect": t.effect, "asr_before": asr_before.get(t.target)},
                )
            )
    groups = calibration.get("label_groups") or {}
    if noise.any() and risk_from_fraction(float(noise.mean())) >= 20 and groups.get("calibrated"):
        out.append(
            Mitigation(
                "remove_label_group_noise",
                f"{int(noise.sum())} labels contradict their neighbours and a cross-fitted probe "
                "at label-group level (the probe cannot separate every class): remove them — no "
                "class is known well enough to relabel to; flips inside a group only where the "
                "directional pair test fires (calibration.label_groups.pair_flips)",
                {"label_noise_flagged": int(noise.sum()), "groups": groups.get("groups")},
            )
        )
    elif noise.any() and risk_from_fraction(float(noise.mean())) >= 20:
        out.append(
            Mitigation(
                "relabel_by_neighbours",
                f"{int(noise.sum())} labels contradict both their input-space neighbours and a "
                "cross-fitted probe: relabel them to the neighbour majority (or review)",
                {"label_noise_flagged": int(noise.sum())},
            )
        )
    for p, v in per_producer.items():
        if v["named"]:
            out.append(
                Mitigation(
                    "quarantine_producer",
                    f"producer {p!r} supplies significantly more flagged samples than its class "
                    "mix predicts: quarantine its stream, audit its records, rotate its key",
                    {
                        "producer": p,
                        "flagged": v["flagged"],
                        "expected": v["expected"],
                        "n": v["n"],
                        "p_value_bonferroni": v["p_value_bonferroni"],
                    },
                )
            )
    return out
