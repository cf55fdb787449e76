"""Demo step: the poisoning gate before training.

Reads ``ctx.artifacts["dataset_npz"]`` (x, y, producer, record_id from the ingestion step) or,
when absent, builds a digits dataset in which one producer ships an all-to-one backdoor (BadNets
patch, Gu et al. 2017). It scans the data, writes the JSON report, and when the risk is above
``ctx.config.scan.max_risk`` applies the mitigation: drop the flagged samples, re-scan the rest,
and continue only if the residual risk is under the gate (otherwise :class:`PipelineError`).

Artifacts written: ``scan_report`` (path of the first scan's JSON), ``scan_keep_mask`` (path of an
``.npy`` boolean mask over the input), ``scan_flagged`` (count), ``scan_poisoned_producers``,
``dataset_npz_filtered`` (path of the npz the training step should use), ``scan_residual_risk``.
The keep-mask covers every round of filtering (drop flagged, re-scan, up to 3 rounds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from saip_poisoning import filter_iteratively, scan
from saip_poisoning.attacks import add_patch
from sklearn.datasets import load_digits

from saip.errors import PipelineError
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
    report = scan(data["x"], data["y"], producer=data.get("producer"), seed=ctx.seed)
    report_path = out_dir / "scan_report.json"
    report_path.write_text(report.to_json() + "\n", encoding="utf-8")
    keep: np.ndarray = ~report.flags
    residual = report.risk_score
    mitigated = False
    if report.risk_score > gate:
        mitigated = True
        # drop flagged and re-scan (up to 3 rounds, Sever-style) until under the gate
        keep, rounds = filter_iteratively(
            data["x"], data["y"], producer=data.get("producer"), stop_below=gate, seed=ctx.seed
        )
        # per-sample arrays are filtered; dataset-level scalars (e.g. width, height) are kept
        n = len(data["y"])
        kept = {k: v[keep] if v.ndim and len(v) == n else v for k, v in data.items()}
        second = rounds[-1]
        residual = second.risk_score
        (out_dir / "rescan_report.json").write_text(second.to_json() + "\n", encoding="utf-8")
        if residual > gate:
            raise PipelineError(
                f"poisoning gate: risk {report.risk_score:.0f} > {gate:g}; after dropping "
                f"{int((~keep).sum())} flagged samples the residual risk {residual:.0f} is still "
                "above the gate"
            )
        filtered = out_dir / "dataset_filtered.npz"
        np.savez(filtered, **kept)
    else:
        filtered = Path(src)
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
    summary = (
        f"risk {report.risk_score:.0f}/100 ({report.band}) on {len(keep)} samples, "
        f"{int(report.flags.sum())} flagged"
        + (f", poisoned producer(s): {', '.join(producers)}" if producers else "")
        + (
            f"; dropped flagged → residual risk {residual:.0f} ≤ gate {gate:g}, continuing"
            if mitigated
            else f"; under gate {gate:g}"
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
        },
    )
