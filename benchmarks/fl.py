"""Federated-learning benchmark: robustness, backdoor, DP, SecAgg+ overhead and engines on digits.

All runs in ONE process, same seeds, on the Ray-free local engine unless stated:

* accuracy: 20 clients, 4 malicious (clients 0-3: train on flipped labels, then send the update
  sign-flipped ×10, *claiming 1,000 examples* each). ``clean_fedavg`` (no attack),
  ``attack_fedavg`` (no screening), ``attack_robust`` (update screening + Flower's multi-Krum,
  the server told ``num_malicious = 1``: it is not told the true count), ``attack_secagg_grouped``
  (SecAgg+ in 4 random groups of 5 per round, FLTrust-style group scoring, rollback);
* backdoor_asr: 4 backdoor clients (2×2 trigger → label 0, boosted ×5, claiming 1,000 examples);
  undefended FedAvg vs screening + multi-Krum (``num_malicious = 1``), and
  ``secagg_grouped_norm_bounded``: the boosted update *clipped to the norm bound* under grouped
  SecAgg+ (no norm check can see it), defended by group testing across random regroupings and
  post-training erasure on the server's root data (``GROUP_TESTING``: clean-subspace projection
  of the final model's first layer); ``..._scoring_only`` is the same attack with FLTrust group
  scoring alone, ``..._erasure_only`` scoring plus the erasure without group testing, and
  ``clean_secagg_grouped_group_testing_accuracy`` the defence's cost without attack;
* dp: DP-SGD (Opacus per-sample clipping, OS-keyed noise) at target ε=8, δ=1e-5, no attack
  (hidden 32 tanh, lr 1, one full-batch local step per round, 200 rounds), median accuracy of 3
  runs, with the non-private run of the same setup alongside;
  ``dp.distributed``: record-level DP-FedSGD inside SecAgg+ groups of 5 (noise shares sized for
  the reconstruction threshold), ε=8, δ=1e-5, median accuracy of 3 runs (each with fresh noise);
  hyperparameters tuned on a validation split (``benchmarks/fl_dp_tune.py``), accuracy on test;
* secagg_round_overhead (the headline): what SecAgg+ *itself* costs. Median steady-round seconds
  (rounds 2..6 of 3 alternating repeats of each configuration, pooled) of grouped SecAgg+
  (groups of 5, run concurrently, FLTrust group scoring) divided by the SAME grouped
  aggregation with the group means computed in the clear (``aggregation="grouped_plaintext"``:
  same groups, scoring, combination; only SecAgg+ differs), at 10 and 50 clients; ``.cpu`` is
  the same ratio in process CPU seconds; the ≤ 2× goal at 50 clients needs both ratios;
* secagg_round_overhead_vs_plain_fedavg: grouped SecAgg+ (with its FLTrust group scoring)
  divided by plain FedAvg with per-client screening — what a user pays for switching SecAgg+ on,
  robust grouped aggregation included (the comparison this benchmark reported before
  29 Nov 2026); ``.cpu`` likewise; Flower's flat SecAgg+ at 50 clients is measured alongside as
  the anchor;
* run_seconds: the same 10-client 6-round plain run end to end on Flower's Ray simulation and on
  the local engine.

Run: ``.venv/bin/python benchmarks/fl.py [--sections accuracy,backdoor,dp,overhead,engine]
[--quick]`` → ``benchmarks/results/fl.json``. ``--sections`` re-measures only those sections and
merges them into the existing file (each section records when it was measured); ``--quick`` runs
3 rounds and prints without writing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from saip_fl import runner
from saip_fl.config import validate_run_config

ROUNDS = 12
BASE: dict[str, Any] = {
    "dataset": "digits",
    "num_clients": 20,
    "num_rounds": ROUNDS,
    "local_epochs": 2,
    "batch_size": 16,
    "learning_rate": 0.1,
    "seed": 0,
}
ATTACKERS = [0, 1, 2, 3]
FLIP = {"kind": "flip_sign", "clients": ATTACKERS, "scale": 10.0, "claimed_examples": 1000}
BACKDOOR = {
    "kind": "backdoor",
    "clients": ATTACKERS,
    "scale": 5.0,
    "target_label": 0,
    "poison_fraction": 0.5,
    "claimed_examples": 1000,
}
# the server is not told the true number of attackers (4): it guesses 1
ROBUST = {"aggregation": "multikrum", "validation": {"num_malicious": 1}}
# DP-SGD: a small tanh model (Papernot et al. 2021) taking one full-batch step per round (q = 1)
# over 200 rounds instead of ≈ 180 noisier minibatch steps in 12 rounds; chosen on the VALIDATION
# split with benchmarks/fl_dp_tune.py --mode dpsgd (medians: ReLU, hidden 16, q ≈ 0.3: 0.60;
# tanh: 0.69-0.72; tanh, hidden 32, q = 1, 3 steps x 12 rounds: 0.77; 1 step x 36 / 60 / 100 /
# 200 rounds, lr 1: 0.81 / 0.83 / 0.85 / 0.88). The non-private run of the same setup takes the
# same full-batch steps (batch_size above every client's size).
DP_SETUP: dict[str, Any] = {
    "hidden": 32,
    "activation": "tanh",
    "learning_rate": 1.0,
    "local_epochs": 1,
    "num_rounds": 200,
    "batch_size": 1000,
}
DPSGD: dict[str, Any] = {
    **DP_SETUP,
    "dp": {"mode": "dpsgd", "target_epsilon": 8.0, "delta": 1e-5, "sample_rate": 1.0},
}
DPSGD_SETUP = (
    "DP-SGD in each client (Opacus per-sample clipping C=1, OS-keyed noise, Poisson q=1: one "
    "full-batch step per round), hidden 32 tanh, lr 1, 200 rounds; median of 3; tuned on a "
    "validation split, scored on test"
)
SECAGG = {"enabled": True, "groups": 4, "num_shares": 5, "reconstruction_threshold": 3}
# backdoor defences on group means (group testing across regroupings, no rewind, + post-training
# erasure: clean-subspace projection with ridge 0.05); thresholds and the ridge chosen on
# development runs with seeds 1-7, never on the scored seed-0 run
GROUP_TESTING = {
    "suspicion_z": 2.0,
    "suspicion_min_rounds": 2,
    "rewind_on_exclusion": False,
    "erase_ridge": 0.05,
}
# distributed DP-FedSGD: one clipped-gradient step per round. Hyperparameters were chosen on a
# VALIDATION split (benchmarks/fl_dp_tune.py: digits minus this benchmark's test rows, scored on
# its own held-out 20 %); the accuracy reported here is on the TEST split, never tuned on.
DIST_ROUNDS = 30
DIST_REPEATS = 3
DIST: dict[str, Any] = {
    "hidden": 64,
    "activation": "tanh",
    "learning_rate": 2.0,
    "num_rounds": DIST_ROUNDS,
    "secagg": SECAGG,
    "dp": {
        "mode": "distributed",
        "target_epsilon": 8.0,
        "delta": 1e-5,
        "sample_rate": 0.5,
        "server_momentum": 0.5,
        "server_learning_rate": 3.0,
        "server_lr_schedule": "cosine",
    },
}
DIST_SETUP = (
    "DP-FedSGD in SecAgg+ groups of 5 (threshold 3), q=0.5, hidden 64 tanh, lr 2, server "
    "learning rate 3 with cosine decay and momentum 0.5 (post-processing), equal weights for "
    "accepted noisy groups; tuned on a validation split, scored on test"
)
SECTIONS = ("accuracy", "backdoor", "dp", "overhead", "engine")
#: each overhead configuration runs this many times, alternating with the others
OVERHEAD_REPEATS = 3


def _run(name: str, overrides: dict[str, Any], root: Path, engine: str = "local") -> dict[str, Any]:
    cfg = validate_run_config({**BASE, **overrides})
    started = time.perf_counter()
    res = runner.run(cfg, root / name, engine="ray" if engine == "ray" else "local")
    rounds = res.metrics["rounds"]
    out = {
        "accuracy": res.metrics["final"]["accuracy"],
        "epsilon": res.metrics["final"]["epsilon"],
        "backdoor_asr": res.metrics["final"]["backdoor_asr"],
        "round_seconds": [r["seconds"] for r in rounds],
        "round_cpu_seconds": [r.get("cpu_seconds") for r in rounds],
        "accuracy_per_round": [r["accuracy"] for r in rounds],
        "rolled_back": sum(1 for r in rounds if r["rolled_back"]),
        "wall_seconds": time.perf_counter() - started,
        "engine": engine,
    }
    print(
        f"{name}: acc={out['accuracy']:.3f} eps={out['epsilon']} asr={out['backdoor_asr']} "
        f"({out['wall_seconds']:.0f}s)",
        file=sys.stderr,
        flush=True,
    )
    return out


def _steady(run: dict[str, Any], key: str = "round_seconds") -> float:
    return statistics.median(run[key][1:])


def _pooled(runs: dict[str, dict[str, Any]], name: str, key: str = "round_seconds") -> float:
    """Median steady round of ``name`` over all its repeats (``name``, ``name_2``, ...)."""
    reps = [name, *(f"{name}_{i}" for i in range(2, OVERHEAD_REPEATS + 1))]
    return statistics.median(v for r in reps if r in runs for v in runs[r][key][1:])


def _measure(section: str, root: Path, quick: bool) -> dict[str, dict[str, Any]]:
    q = {"num_rounds": 3} if quick else {}
    runs: dict[str, dict[str, Any]] = {}
    if section == "accuracy":
        runs["clean_fedavg"] = _run("clean", q, root)
        runs["attack_fedavg"] = _run(
            "attack_fedavg", {"attack": FLIP, "validation": {"enabled": False}, **q}, root
        )
        runs["attack_robust"] = _run("attack_robust", {"attack": FLIP, **ROBUST, **q}, root)
        runs["attack_secagg_grouped"] = _run(
            "attack_secagg", {"attack": FLIP, "secagg": SECAGG, **q}, root
        )
    elif section == "backdoor":
        runs["backdoor_undefended"] = _run(
            "bd_undef", {"attack": BACKDOOR, "validation": {"enabled": False}, **q}, root
        )
        runs["backdoor_defended"] = _run("bd_def", {"attack": BACKDOOR, **ROBUST, **q}, root)
        nb = {**BACKDOOR, "norm_bounded": True}
        defended = {**SECAGG, **GROUP_TESTING}
        runs["backdoor_secagg_grouped_norm_bounded"] = _run(
            "bd_grouped_nb", {"attack": nb, "secagg": defended, **q}, root
        )
        runs["backdoor_secagg_grouped_norm_bounded_scoring_only"] = _run(
            "bd_grouped_nb_scoring", {"attack": nb, "secagg": SECAGG, **q}, root
        )
        runs["backdoor_secagg_grouped_norm_bounded_erasure_only"] = _run(
            "bd_grouped_nb_erasure",
            {"attack": nb, "secagg": {**SECAGG, "erase_ridge": GROUP_TESTING["erase_ridge"]}, **q},
            root,
        )
        runs["clean_secagg_grouped_group_testing"] = _run(
            "clean_grouped_gt", {"secagg": defended, **q}, root
        )
    elif section == "dp":
        # fresh OS noise every run: each DP key is the median of 3 runs
        for i in range(DIST_REPEATS):
            runs[f"dp{'' if i == 0 else f'_{i + 1}'}"] = _run(f"dp{i}", {**DPSGD, **q}, root)
        runs["dp_nonprivate_same_setup"] = _run("dp_ref", {**DP_SETUP, **q}, root)
        # fresh OS noise every run: accuracy varies by ±2 points, so the key is the median of 3
        for i in range(DIST_REPEATS):
            runs[f"dp_distributed{'' if i == 0 else f'_{i + 1}'}"] = _run(
                f"dp_dist{i}", {**DIST, **q}, root
            )
    elif section == "overhead":
        short = {"num_rounds": 3 if quick else 6, "local_epochs": 1}
        # the three sides alternate, OVERHEAD_REPEATS times: the load of the shared cores drifts
        # by 2x within minutes, so each ratio pools the steady rounds of every repeat
        for rep in range(1 if quick else OVERHEAD_REPEATS):
            tag = "" if rep == 0 else f"_{rep + 1}"
            for n, k in ((10, 2), (50, 10)):
                runs[f"plain_n{n}{tag}"] = _run(f"plain{n}{tag}", {**short, "num_clients": n}, root)
                # the same grouping and group scoring as the SecAgg+ run, group means in the clear
                runs[f"grouped_plaintext_n{n}{tag}"] = _run(
                    f"grouped_plain{n}{tag}",
                    {
                        **short,
                        "num_clients": n,
                        "aggregation": "grouped_plaintext",
                        "secagg": {**SECAGG, "groups": k, "enabled": False},
                    },
                    root,
                )
                runs[f"secagg_n{n}{tag}"] = _run(
                    f"secagg{n}{tag}",
                    {**short, "num_clients": n, "secagg": {**SECAGG, "groups": k}},
                    root,
                )
        runs["flat_secagg_n50"] = _run(
            "flat50", {**short, "num_clients": 50, "secagg": {**SECAGG, "groups": 1}}, root
        )
    elif section == "engine":
        same = {"num_clients": 10, "num_rounds": 3 if quick else 6, "local_epochs": 1}
        runs["engine_ray"] = _run("eng_ray", same, root, engine="ray")
        runs["engine_local"] = _run("eng_local", same, root)
    return runs


def _summarise(section: str, runs: dict[str, dict[str, Any]], result: dict[str, Any]) -> None:
    if section == "accuracy":
        result["accuracy"] = {
            k: runs[k]["accuracy"]
            for k in ("clean_fedavg", "attack_fedavg", "attack_robust", "attack_secagg_grouped")
        }
    elif section == "backdoor":
        result["backdoor_asr"] = {
            "undefended": runs["backdoor_undefended"]["backdoor_asr"],
            "defended": runs["backdoor_defended"]["backdoor_asr"],
            "secagg_grouped_norm_bounded": runs["backdoor_secagg_grouped_norm_bounded"][
                "backdoor_asr"
            ],
            "secagg_grouped_norm_bounded_accuracy": runs["backdoor_secagg_grouped_norm_bounded"][
                "accuracy"
            ],
            "secagg_grouped_norm_bounded_scoring_only": runs[
                "backdoor_secagg_grouped_norm_bounded_scoring_only"
            ]["backdoor_asr"],
            "secagg_grouped_norm_bounded_erasure_only": runs[
                "backdoor_secagg_grouped_norm_bounded_erasure_only"
            ]["backdoor_asr"],
            "secagg_grouped_norm_bounded_erasure_only_accuracy": runs[
                "backdoor_secagg_grouped_norm_bounded_erasure_only"
            ]["accuracy"],
            "clean_secagg_grouped_group_testing_accuracy": runs[
                "clean_secagg_grouped_group_testing"
            ]["accuracy"],
        }
    elif section == "dp":
        dist_acc = [runs[k]["accuracy"] for k in sorted(runs) if k.startswith("dp_distributed")]
        sgd_acc = [runs[k]["accuracy"] for k in ("dp", "dp_2", "dp_3") if k in runs]
        result["dp"] = {
            "epsilon": runs["dp"]["epsilon"],
            "accuracy": statistics.median(sgd_acc),
            "accuracy_runs": sgd_acc,
            "setup": DPSGD_SETUP,
            "delta": 1e-5,
            "nonprivate_accuracy_same_setup": runs["dp_nonprivate_same_setup"]["accuracy"],
            "distributed": {
                "epsilon": runs["dp_distributed"]["epsilon"],
                "accuracy": statistics.median(dist_acc),
                "accuracy_runs": dist_acc,
                "delta": 1e-5,
                "rounds": len(runs["dp_distributed"]["round_seconds"]),
                "setup": DIST_SETUP,
            },
        }
    elif section == "overhead":
        sizes = ("n10", "n50")

        def ratio(num: str, den: str, key: str = "round_seconds") -> dict[str, float]:
            return {
                n: _pooled(runs, f"{num}_{n}", key) / _pooled(runs, f"{den}_{n}", key)
                for n in sizes
            }

        result["secagg_round_overhead"] = {
            **ratio("secagg", "grouped_plaintext"),
            "cpu": ratio("secagg", "grouped_plaintext", "round_cpu_seconds"),
            "compares": "grouped SecAgg+ / the same grouped FLTrust aggregation with group means "
            "in the clear (aggregation=grouped_plaintext); median steady round, wall (n10, n50) "
            "and process CPU seconds (cpu)",
            # 1/5/15-minute load average when the section ended (2 shared cores)
            "load_average": [round(x, 1) for x in os.getloadavg()],
        }
        result["secagg_round_overhead_vs_plain_fedavg"] = {
            **ratio("secagg", "plain"),
            "cpu": ratio("secagg", "plain", "round_cpu_seconds"),
            "compares": "grouped SecAgg+ with FLTrust group scoring / plain FedAvg with "
            "per-client screening (no grouping, no root update, no holdout losses)",
        }
        result["grouped_scoring_overhead"] = {
            **ratio("grouped_plaintext", "plain"),
            "cpu": ratio("grouped_plaintext", "plain", "round_cpu_seconds"),
            "compares": "grouped FLTrust aggregation in the clear / plain FedAvg (the cost of "
            "grouping and group scoring alone, no SecAgg+)",
        }
        names = [f"{a}_{n}" for n in sizes for a in ("plain", "grouped_plaintext", "secagg")]
        result.setdefault("anchors", {})
        result["anchors"].pop("secagg_cpu_overhead", None)  # now secagg_round_overhead*.cpu
        result["anchors"].update(
            {
                "grouped_vs_flat_secagg_n50": _pooled(runs, "secagg_n50")
                / _steady(runs["flat_secagg_n50"]),
                "flower_flat_secagg_n50_overhead": _steady(runs["flat_secagg_n50"])
                / _pooled(runs, "plain_n50"),
                # process CPU seconds per steady round: less sensitive than wall time to other
                # processes sharing the cores (pooled over the repeats)
                "steady_round_cpu_seconds": {
                    k: _pooled(runs, k, "round_cpu_seconds") for k in names
                },
                "steady_round_seconds": {
                    **{k: _pooled(runs, k) for k in names},
                    "flat_secagg_n50": _steady(runs["flat_secagg_n50"]),
                },
                "overhead_repeats": OVERHEAD_REPEATS,
            }
        )
    elif section == "engine":
        ray_s, local_s = runs["engine_ray"]["wall_seconds"], runs["engine_local"]["wall_seconds"]
        result["run_seconds"] = {"ray": ray_s, "local": local_s, "speedup": ray_s / local_s}


def _goals(result: dict[str, Any]) -> dict[str, bool]:
    goals: dict[str, bool] = {}
    acc = result.get("accuracy")
    if acc:
        goals["attack_robust_within_3_points"] = acc["clean_fedavg"] - acc["attack_robust"] <= 0.03
        goals["attack_secagg_grouped_within_5_points"] = (
            acc["clean_fedavg"] - acc["attack_secagg_grouped"] <= 0.05
        )
        goals["attack_fedavg_loses_20_points"] = acc["clean_fedavg"] - acc["attack_fedavg"] >= 0.20
    bd = result.get("backdoor_asr")
    if bd:
        goals["backdoor_defended_below_10pct"] = bd["defended"] < 0.10
        if bd.get("secagg_grouped_norm_bounded") is not None:
            goals["backdoor_secagg_grouped_norm_bounded_below_10pct"] = (
                bd["secagg_grouped_norm_bounded"] < 0.10
            )
    d = result.get("dp")
    if d:
        goals["dp_epsilon_at_most_8"] = d["epsilon"] <= 8.0
        # DP-SGD's goal: within 10 points of the same model trained without DP (issue 15);
        # the distance to clean FedAvg (another model and recipe) is reported alongside
        goals["dp_within_10_points"] = d["nonprivate_accuracy_same_setup"] - d["accuracy"] <= 0.10
        if acc:
            goals["dp_within_10_points_of_clean_fedavg"] = (
                acc["clean_fedavg"] - d["accuracy"] <= 0.10
            )
        dist = d.get("distributed")
        if dist:
            goals["dp_distributed_epsilon_at_most_8"] = dist["epsilon"] <= 8.0
            if acc:
                goals["dp_distributed_within_5_points"] = (
                    acc["clean_fedavg"] - dist["accuracy"] <= 0.05
                )
    ov = result.get("secagg_round_overhead")
    if ov:
        # wall and CPU: other processes' load stretches wall time unevenly between the sides
        cpu = ov.get("cpu", {}).get("n50", ov["n50"])
        goals["secagg_overhead_n50_at_most_2x"] = ov["n50"] <= 2.0 and cpu <= 2.0
    rs = result.get("run_seconds")
    if rs:
        goals["local_engine_at_least_4x_faster_than_ray"] = rs["speedup"] >= 4.0
    return goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="3 rounds, print only")
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("flwr").setLevel(logging.ERROR)
    logging.getLogger("saip_fl").setLevel(logging.ERROR)
    out = Path(__file__).parent / "results" / "fl.json"
    result: dict[str, Any] = (
        json.loads(out.read_text(encoding="utf-8")) if out.exists() and not args.quick else {}
    )
    result.setdefault("runs", {})
    result.setdefault("measured_at", {})
    with tempfile.TemporaryDirectory(prefix="saip-flb-") as tmp:
        for section in sections:
            runs = _measure(section, Path(tmp), args.quick)
            result["runs"].update(runs)
            _summarise(section, runs, result)
            result["measured_at"][section] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["goals"] = _goals(result)
    result["setup"] = {
        "dataset": "digits (sklearn, 1,797 images)",
        "clients": 20,
        "malicious": ATTACKERS,
        "rounds": ROUNDS,
        "engine": "local (Ray-free, in-process grid) unless a run says engine=ray",
        "attack": "label-flip training then update sign-flipped x10, claiming 1000 examples",
        "backdoor": "2x2 trigger -> label 0 on 50% of local data, update boosted x5, claiming "
        "1000 examples; norm_bounded: then clipped to the norm bound",
        "secagg": "4 random groups of 5 per round, num_shares=5, threshold=3, concurrent",
        "group_testing": "backdoor under grouped SecAgg+: exclude clients whose groups score "
        "2 robust SDs and 2 standard errors below the rest, after 2 rounds (no rewind); then "
        "project the final model's first layer onto the root data's input subspace (ridge "
        "0.05) (settings from seeds 1-7, scored on seed 0)",
        "robust": "norm bound 3.0 + cosine to coordinate median + Flower multi-Krum told f=1 "
        "(true f=4)",
        "machine": f"{platform.machine()} {platform.python_version()}, 2 cores shared",
        "overhead": "median steady-round seconds (rounds 2-6 of 3 alternating repeats, pooled): "
        "secagg_round_overhead = grouped "
        "SecAgg+ / the same grouped aggregation in the clear; *_vs_plain_fedavg = grouped SecAgg+ "
        "/ plain FedAvg",
        "run_seconds": "10 clients, 6 rounds, 1 local epoch, plain FedAvg, end to end",
    }
    result["setup"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 1)
    summary = {k: result[k] for k in (*_keys(result), "goals")}
    if args.quick:
        summary["anchors"] = result.get("anchors", {})
    if not args.quick:
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))


def _keys(result: dict[str, Any]) -> list[str]:
    return [
        k
        for k in (
            "accuracy",
            "backdoor_asr",
            "dp",
            "secagg_round_overhead",
            "secagg_round_overhead_vs_plain_fedavg",
            "grouped_scoring_overhead",
            "run_seconds",
        )
        if k in result
    ]


if __name__ == "__main__":
    main()
