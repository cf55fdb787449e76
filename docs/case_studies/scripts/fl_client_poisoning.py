"""Case study: federated-learning client poisoning under plain aggregation and grouped SecAgg+.

Runs the project's own client (``saip_fl.client.SaipClient.fit``: local training, the attacks of
``saip_fl.attacks``) and server (``saip_fl.server.SaipStrategy``: update screening and robust
aggregation without SecAgg; ``combine_groups``: FLTrust-style group scoring, combination and
rollback under grouped SecAgg+, and the post-training erasure of ``saip_fl.erasure`` on the final
model) in one process, round by round, without Flower's transport.
What is NOT run here: the network, Ray, and the SecAgg+ masking protocol itself — the harness
computes each group's mean, which is what a SecAgg+ round releases to the server (with honest
weights of 1). The full Flower runs of the same defences are ``benchmarks/fl.py``; their measured
numbers are quoted from ``benchmarks/results/fl.json`` at the end.

Attacks (clients 0 and 1 of 12, i.e. 17%):
* sign-flip: train on flipped labels, send the update sign-flipped and scaled ×10;
* norm-bounded backdoor: 2×2 trigger → label 0 on half the local data, update scaled ×1 (it stays
  inside the honest norm bound, so norm checks alone cannot see it);
* inflated counts: the sign-flip update, claiming 1,000,000 examples.
Deterministic: fixed seeds, one torch thread, no timing printed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
ROUNDS, CLIENTS, ATTACKERS = 5, 12, [0, 1]
BASE: dict[str, Any] = {
    "dataset": "digits",
    "num_clients": CLIENTS,
    "num_rounds": ROUNDS,
    "local_epochs": 1,
    "batch_size": 16,
    "learning_rate": 0.1,
    "seed": 0,
}
ATTACKS: dict[str, dict[str, Any]] = {
    "sign-flip ×10": {"kind": "flip_sign", "clients": ATTACKERS, "scale": 10.0},
    "norm-bounded backdoor": {
        "kind": "backdoor",
        "clients": ATTACKERS,
        "scale": 1.0,
        "target_label": 0,
        "poison_fraction": 0.5,
    },
    "inflated counts (sign-flip, claims 10^6 examples)": {
        "kind": "flip_sign",
        "clients": ATTACKERS,
        "scale": 10.0,
    },
}
DEFENCES: dict[str, dict[str, Any]] = {
    "FedAvg, no screening": {"validation": {"enabled": False}},
    "saip plain: screening + multi-Krum": {
        "aggregation": "multikrum",
        "validation": {"num_malicious": 2},
    },
    "saip grouped SecAgg+ (4 groups of 3)": {
        "secagg": {"enabled": True, "groups": 4, "num_shares": 3, "reconstruction_threshold": 2}
    },
    # post-training erasure of the final model on the server's clean root data (erasure.py)
    "saip grouped SecAgg+ + erasure": {
        "secagg": {
            "enabled": True,
            "groups": 4,
            "num_shares": 3,
            "reconstruction_threshold": 2,
            "erase_ridge": 0.05,
        }
    },
}


@dataclass
class _Proxy:
    """Stands in for Flower's ClientProxy: the strategy reads only ``cid`` (harness double)."""

    cid: str


def _fit_res(update: list[np.ndarray], n: int, metrics: dict[str, Any]) -> Any:
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters

    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(update), n, metrics)


def run_one(overrides: dict[str, Any], *, inflate: bool) -> dict[str, Any]:
    import torch
    from saip_fl.attacks import attack_success_rate
    from saip_fl.client import SaipClient
    from saip_fl.config import validate_run_config
    from saip_fl.model import evaluate, predict, set_weights
    from saip_fl.server import RunLog, SaipStrategy

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = validate_run_config({**BASE, **overrides})
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    clients = [SaipClient(cfg, pid) for pid in range(CLIENTS)]
    rng = np.random.default_rng(cfg.seed)
    dropped_groups = rollbacks = rejected_updates = 0
    for rnd in range(1, ROUNDS + 1):
        global_w = strategy.global_weights
        banned = strategy.reputation.excluded()
        fits = {}
        for c in clients:
            if str(c.partition_id) in banned:
                continue
            upd, n, metrics = c.fit(global_w, {"server-round": rnd})
            if inflate and c.malicious:
                n = 1_000_000
            fits[str(c.partition_id)] = (upd, n, metrics)
        if cfg.secagg.enabled:
            order = rng.permutation(sorted(fits, key=int))
            k = min(cfg.secagg.groups, len(order) // cfg.secagg.num_shares)
            members = {g: [str(x) for x in part] for g, part in enumerate(np.array_split(order, k))}
            means = {}
            for g, ids in members.items():
                weights = np.array([fits[i][1] for i in ids], dtype=np.float64)
                means[g] = [
                    (
                        sum(w * fits[i][0][j] for w, i in zip(weights, ids, strict=True))
                        / weights.sum()
                    ).astype(np.float32)
                    for j in range(len(global_w))
                ]
            new = strategy.combine_groups(rnd, global_w, means, members, {})
            rec = strategy.runlog.current(rnd)
            dropped_groups += sum(1 for gr in rec.groups if not gr["accepted"])
            rollbacks += int(new is None)
        else:
            results = [(_Proxy(cid), _fit_res(*fits[cid])) for cid in sorted(fits, key=int)]
            params, _ = strategy.aggregate_fit(rnd, results, [])
            from flwr.common import parameters_to_ndarrays

            new = None if params is None else parameters_to_ndarrays(params)
            rec = strategy.runlog.current(rnd)
            rejected_updates += len(rec.rejected)
            rollbacks += int(new is None)
        if new is not None:
            strategy._global = [np.asarray(a, dtype=np.float32) for a in new]
    set_weights(strategy.model, strategy.global_weights)
    _, acc = evaluate(strategy.model, strategy.split.test)
    asr = attack_success_rate(
        lambda x: predict(strategy.model, x),
        strategy.split.test,
        target_label=cfg.attack.target_label,
        trigger_size=cfg.attack.trigger_size,
    )
    return {
        "accuracy": acc,
        "asr": asr,
        "rejected_updates": rejected_updates,
        "dropped_groups": dropped_groups,
        "rollbacks": rollbacks,
        "excluded": sorted(strategy.reputation.excluded()),
    }


def _benchmark_lines() -> list[str]:
    path = ROOT / "benchmarks" / "results" / "fl.json"
    if not path.is_file():
        return ["benchmarks/results/fl.json not found"]
    res = json.loads(path.read_text())
    acc, bd = res.get("accuracy", {}), res.get("backdoor_asr", {})
    lines = ["Full Flower runs (benchmarks/results/fl.json; 20 clients, 4 attackers, 12 rounds):"]
    for k, v in acc.items():
        lines.append(f"  accuracy {k}: {v:.3f}")
    for k, v in bd.items():
        lines.append(f"  backdoor success {k}: {v:.3f}")
    return lines


def run() -> str:
    lines = [
        f"{CLIENTS} clients (digits, IID), {ROUNDS} rounds; attackers: clients "
        f"{', '.join(map(str, ATTACKERS))}. accuracy / backdoor success on the test split."
    ]
    clean = run_one({}, inflate=False)
    lines.append(
        f"no attack, FedAvg: accuracy {clean['accuracy']:.3f}, "
        f"backdoor success {clean['asr']:.3f} (trigger base rate)"
    )
    for attack, spec in ATTACKS.items():
        lines.append("")
        lines.append(f"== {attack}")
        for defence, overrides in DEFENCES.items():
            r = run_one({**overrides, "attack": spec}, inflate="inflated" in attack)
            detail = (
                f"groups dropped {r['dropped_groups']}, rounds rolled back {r['rollbacks']}"
                if "grouped" in defence
                else f"updates rejected {r['rejected_updates']}, excluded {r['excluded'] or '-'}"
            )
            lines.append(
                f"{defence}: accuracy {r['accuracy']:.3f}, backdoor success "
                f"{r['asr']:.3f}; {detail}"
            )
    lines.append("")
    lines.extend(_benchmark_lines())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(run())
