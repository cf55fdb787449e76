"""Demo step: federated training with grouped SecAgg+, DP-SGD and one attacker; model sealed.

Reads ``ctx.artifacts["dataset_npz"]`` (the ingested dataset; ``x``, ``y``) minus the samples the
poisoning scan flagged (``ctx.artifacts["scan_keep_mask"]``: a bool array or a ``.npy`` path),
falling back to scikit-learn digits; trains 10 clients for 3 rounds in 2 random SecAgg+ groups of
5 with DP-SGD (target ε = 8, δ = 1e-5) while client 0 sends sign-flipped ×10 updates; seals the
model with ``ctx.artifacts["key_uri"]`` (else the data directory's local key). Sets
``fl_model`` (sealed model path) and ``fl_metrics`` (``metrics.json`` path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from saip.pipeline import PipelineContext, StepResult


def _keep_mask(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    mask = (
        np.load(value, allow_pickle=False) if isinstance(value, str | Path) else np.asarray(value)
    )
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(
            f"scan_keep_mask must be a bool array of shape ({n},), got {mask.dtype} {mask.shape}"
        )
    return mask


def _dataset(ctx: PipelineContext, out_dir: Path) -> tuple[str, str]:
    npz = ctx.artifacts.get("dataset_npz")
    if npz is None:
        return "digits", "scikit-learn digits (no ingested dataset)"
    with np.load(npz, allow_pickle=False) as data:
        x, y = data["x"], data["y"]
    keep = _keep_mask(ctx.artifacts.get("scan_keep_mask"), len(y))
    note = f"ingested {Path(npz).name} ({len(y)} samples"
    if keep is not None:
        x, y = x[keep], y[keep]
        note += f", {int((~keep).sum())} flagged by the scan removed"
    if len(y) < 400:
        return "digits", note + "; too few for 10 clients, using digits)"
    path = out_dir / "train.npz"
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return f"npz:{path}", note + ")"


def run(ctx: PipelineContext) -> StepResult:
    """Train, print accuracy per round and ε, seal the model."""
    from saip_fl import runner
    from saip_fl.config import validate_run_config

    from saip.commands.fl import encryptor_for, rounds_table

    out_dir = ctx.data_dir / "fl" / "demo"
    dataset, note = _dataset(ctx, ctx.data_dir / "fl" / "data")
    cfg = validate_run_config(
        {
            "dataset": dataset,
            "num_clients": 10,
            "num_rounds": 3,
            "local_epochs": 3,
            "hidden": 16,
            "learning_rate": 0.05,
            "seed": ctx.seed,
            "secagg": {
                "enabled": True,
                "groups": 2,
                "num_shares": 5,
                "reconstruction_threshold": 3,
            },
            "dp": {"mode": "dpsgd", "target_epsilon": 8.0, "delta": 1e-5},
            "attack": {"kind": "sign_flip", "clients": [0], "scale": 10.0},
        },
        source="demo fl step",
    )
    encryptor = encryptor_for(
        ctx.artifacts.get("key_uri"), ctx.data_dir, context=ctx.config.encryption.context
    )
    result = runner.run(cfg, out_dir, encryptor=encryptor)
    metrics = result.metrics
    ctx.console.print(rounds_table(metrics))
    ctx.artifacts["fl_model"] = str(result.model_path)
    ctx.artifacts["fl_metrics"] = str(result.metrics_path)
    accs = ", ".join(f"{r['accuracy']:.2f}" for r in metrics["rounds"])
    final = metrics["final"]
    dropped = sum(1 for r in metrics["rounds"] for g in r["groups"] if not g["accepted"])
    return StepResult(
        name="federated training",
        summary=(
            f"10 clients × 3 rounds, 2 SecAgg+ groups/round, 1 attacker: "
            f"accuracy per round {accs}; ε={final['epsilon']:.2f} (δ={final['delta']:g}); "
            f"{dropped} group aggregate(s) dropped; "
            f"model sealed → {result.model_path.name}"
        ),
        details={
            "dataset": note,
            "accuracy": final["accuracy"],
            "epsilon": final["epsilon"],
            "delta": final["delta"],
            "groups_dropped": dropped,
            "model": str(result.model_path),
            "metrics": str(result.metrics_path),
        },
    )
