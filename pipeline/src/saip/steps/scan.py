"""Demo step: the poisoning gate before training.

Reads ``ctx.artifacts["dataset_npz"]`` (x, y, producer, record_id from the ingestion step) or,
when absent, builds a digits dataset in which one producer ships an all-to-one backdoor (BadNets
patch, Gu et al. 2017). It scans the data, writes the JSON report, and when the risk is above
``ctx.config.scan.max_risk`` applies the mitigation (:func:`saip_poisoning.mitigate`: remove every
carrier of a reconstructed trigger and the label-noise flags, including those the scan set
aside), retrains a probe and measures the
attack success rate with the reconstructed trigger, re-scans, and continues only if the
verification passes (ASR ≤ 5 %, residual risk under the gate); otherwise :class:`GateError`.
A scan that is not calibrated (probe too weak to judge the data, or the label-noise rules
abstained) also stops the step, as a gate refusal (:class:`GateError`). Under the
gate nothing is retrained, but what the scan flagged (and the label-noise flags it set aside) is
still left out of training — as :func:`saip_poisoning.client_filter` does on federated clients:
a low dataset risk does not make a flagged sample trustworthy.

Artifacts written: ``scan_report`` (path of the first scan's JSON), ``scan_keep_mask`` (path of an
``.npy`` boolean mask over the input), ``scan_flagged`` (count), ``scan_poisoned_producers``,
``dataset_npz_filtered`` (path of the npz the training step should use), ``scan_residual_risk``.
``scan_verification`` (the mitigation's ASR/residual summary) when mitigation ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from saip_poisoning import mitigate, prepare, scan
from saip_poisoning.attacks import add_patch
from sklearn.datasets import load_digits

from saip.errors import GateError
from saip.pipeline import PipelineContext, StepResult

POISONED_PRODUCER = "producer-3"


def build_demo_dataset(path: Path, *, seed: int) -> None:
    """Write a digits npz from 5 producers where ``producer-3`` ships a patch backdoor."""
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    y = y.astype(np.int64)
    rng = np.random.default_rng(seed)
    producer = np.array([f"producer-{i}" for i in rng.integers(0, 5, size=len(y))])
    # producer-3 turns ~30 % of its own non-zero records into backdoored "0"s (≈6 % of all data)
    own = np.flatnonzero((producer == POISONED_PRODUCER) & (y != 0))
    pick = rng.choice(own, size=int(0.3 * (producer == POISONED_PRODUCER).sum()), replace=False)
    x[pick] = add_patch(x[pick])
    y[pick] = 0
    record_id = np.array([f"rec-{i:05d}" for i in range(len(y))])
    np.savez(path, x=x, y=y, producer=producer, record_id=record_id)


def _load(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def run(ctx: PipelineContext) -> StepResult:
    """Scan the ingested dataset, drop what is flagged if the gate trips, re-scan, continue."""
    out_dir = ctx.data_dir / "scan"
    out_dir.mkdir(parents=True, exist_ok=True)
    src = ctx.artifacts.get("dataset_npz")
    built = src is None
    if src is None:
        src = out_dir / "demo_dataset.npz"
        build_demo_dataset(Path(src), seed=ctx.seed)
    data = _load(Path(src))
    gate = ctx.config.scan.max_risk
    prepared = prepare(
        data["x"], data["y"], producer=data.get("producer"), record_id=data.get("record_id")
    )
    report = scan(prepared, seed=ctx.seed)
    report_path = out_dir / "scan_report.json"
    report_path.write_text(report.to_json() + "\n", encoding="utf-8")
    if not report.calibrated:
        # a gate that ran and refused (exit 3): boundary flips can make the label-noise rules
        # abstain, and that refusal must read as one, not as a crash
        raise GateError(
            "poisoning gate: scan not calibrated: " + str(report.calibration.get("reason"))
        )
    keep: np.ndarray  # both branches below set it
    residual = report.risk_score
    mitigated = False
    verification: dict[str, Any] | None = None
    if report.risk_score > gate:
        mitigated = True
        # remove trigger carriers and label-noise flags (the training step reads a keep-mask
        # over the ingested x, so flagged labels are dropped rather than relabelled and carriers
        # removed rather than repaired: it could not train on repaired inputs), retrain, verify
        result = mitigate(
            prepared, report=report, relabel=False, repair=False, max_risk=gate, seed=ctx.seed
        )
        keep = result.keep
        residual = result.residual.risk_score
        verification = result.to_dict()
        (out_dir / "rescan_report.json").write_text(
            result.residual.to_json() + "\n", encoding="utf-8"
        )
        if not result.passed:
            raise GateError(
                f"poisoning gate: risk {report.risk_score:.0f} > {gate:g}; after removing "
                f"{int((~keep).sum())} samples the verification failed: {result.reason}"
            )
    else:
        # under the gate: no retraining, but flagged and set-aside samples still stay out
        keep = ~report.flags
        if report.set_aside is not None:
            keep &= ~report.set_aside
    if keep.all():
        filtered = Path(src)
    else:
        # per-sample arrays are filtered; dataset-level scalars (e.g. width, height) are kept
        n = len(data["y"])
        kept = {k: v[keep] if v.ndim and len(v) == n else v for k, v in data.items()}
        filtered = out_dir / "dataset_filtered.npz"
        np.savez(filtered, **kept)
    mask_path = out_dir / "keep_mask.npy"
    np.save(mask_path, keep)
    producers = report.poisoned_producers
    ctx.artifacts.update(
        {
            "scan_report": report_path,
            "scan_keep_mask": mask_path,
            "scan_flagged": int(report.flags.sum()),
            "scan_poisoned_producers": ",".join(producers),
            "dataset_npz_filtered": filtered,
            "scan_residual_risk": residual,
        }
    )
    if verification is not None:
        ctx.artifacts["scan_verification"] = verification
    summary = (
        f"risk {report.risk_score:.0f}/100 ({report.band}) on {len(keep)} samples, "
        f"{int(report.flags.sum())} flagged"
        + (f", poisoned producer(s): {', '.join(producers)}" if producers else "")
        + (
            f"; removed {int((~keep).sum())}, verified: {verification['reason']}; continuing"
            if mitigated and verification
            else f"; under gate {gate:g}"
            + (f", {int((~keep).sum())} flagged left out of training" if not keep.all() else "")
        )
    )
    return StepResult(
        name="poisoning scan",
        summary=summary,
        details={
            "input": str(src),
            "built_demo_dataset": built,
            "risk_score": report.risk_score,
            "band": report.band,
            "flagged": int(report.flags.sum()),
            "poisoned_producers": producers,
            "mitigations": [m.to_dict() for m in report.mitigations],
            "residual_risk": residual,
            "gate": gate,
            "calibrated": report.calibrated,
            "verification": verification,
        },
    )
