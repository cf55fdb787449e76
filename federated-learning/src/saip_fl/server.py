"""The server side of a run: strategy, update validation, grouped SecAgg+, guards, metrics.

Flow of one round (``DefaultWorkflow`` with our fit workflow plugged in):

* without SecAgg+: Flower's ``default_fit_workflow`` collects each client's update and
  :meth:`SaipStrategy.aggregate_fit` screens it (:func:`saip_fl.validation.screen_updates`),
  records offences, excludes repeat offenders, and aggregates the rest with the configured
  robust rule;
* with SecAgg+: :class:`GroupedSecAggWorkflow` splits the sampled clients into random groups,
  runs Flower's own :class:`~flwr.server.workflow.SecAggPlusWorkflow` once per group
  **concurrently** (each group on its own copy of the state records and its own
  ``LegacyContext``), scores every group aggregate against the server's root update and holdout
  loss (FLTrust, Cao et al. NDSS 2021), combines the trusted ones, and rolls the round back if the
  combined update still degrades the holdout; optionally (``[secagg]`` knobs) it excludes clients
  found by group testing across regroupings, rewinds the model past their updates, sends an
  adaptive norm bound tied to its root update, and erases a backdoor from the final model
  (:func:`saip_fl.erasure.project_input_layer` on the root data);
* :class:`GuardedFitWorkflow` wraps either and fails the run with
  :class:`~saip_fl.errors.ProtocolHaltedError` when a round produced no aggregate (e.g. SecAgg+
  halted) instead of finishing "successfully" with an untrained model.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import flwr.compat.common.recorddict_compat as compat
import numpy as np
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg, Strategy
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from saip_fl import attacks, dp, erasure, secagg_prg, validation
from saip_fl.client import dpsgd_schedule
from saip_fl.config import RunConfig
from saip_fl.data import Split, client_partition, load_dataset, split_dataset
from saip_fl.errors import (
    FLConfigError,
    FLError,
    ProtocolHaltedError,
    RunDegradedError,
    RunInterruptedError,
)
from saip_fl.model import (
    Weights,
    add,
    build_model,
    clip_update,
    delta,
    evaluate,
    get_weights,
    l2_norm,
    predict,
    set_weights,
    train,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- metrics
@dataclass
class RoundRecord:
    """What happened in one round (one entry of ``metrics.json``)."""

    round: int
    accuracy: float = math.nan
    loss: float = math.nan
    epsilon: float | None = None
    delta: float | None = None
    accepted: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    failures: int = 0
    groups: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    rolled_back: bool = False
    #: the global model was reset to the one at the start of this round (excluded contributors)
    rewound_to: int | None = None
    aggregate_received: bool = False
    #: the backdoor erasure (``secagg.erase_ridge``) was applied to this round's model
    erased: bool = False
    backdoor_asr: float | None = None
    seconds: float = 0.0
    #: CPU seconds of this process during the fit round (on the local engine: server and every
    #: client); less sensitive than ``seconds`` to other processes on the same cores (it still
    #: grows with contention)
    cpu_seconds: float = 0.0


@dataclass
class RunLog:
    """All rounds of a run; written to ``metrics.json`` after every round and at the end."""

    config: dict[str, Any]
    path: Path | None
    rounds: list[RoundRecord] = field(default_factory=list)
    status: str = "running"
    error: str | None = None
    dp_warning: str | None = None
    excluded_clients: dict[str, list[str]] = field(default_factory=dict)
    final_weights: Weights | None = None

    def current(self, rnd: int) -> RoundRecord:
        """The record of round ``rnd`` (created on first use)."""
        if not self.rounds or self.rounds[-1].round != rnd:
            self.rounds.append(RoundRecord(rnd))
        return self.rounds[-1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (NaN written as null)."""
        final = self.rounds[-1] if self.rounds else None
        doc = {
            "status": self.status,
            "error": self.error,
            "config": self.config,
            "rounds": [asdict(r) for r in self.rounds],
            "final": {
                "accuracy": final.accuracy if final else None,
                "loss": final.loss if final else None,
                "epsilon": final.epsilon if final else None,
                "delta": final.delta if final else None,
                "backdoor_asr": final.backdoor_asr if final else None,
            },
            "dp_warning": self.dp_warning,
            "excluded_clients": self.excluded_clients,
        }
        return cast(dict[str, Any], _nan_to_none(doc))

    def write(self) -> None:
        """Write ``metrics.json`` atomically (no-op without a path)."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------- strategy
class SaipStrategy(FedAvg):
    """FedAvg-shaped strategy with update screening, robust rules, exclusion, DP accounting.

    Parameters
    ----------
    cfg
        The validated run configuration.
    runlog
        Where per-round records go.
    """

    def __init__(self, cfg: RunConfig, runlog: RunLog) -> None:
        self.cfg = cfg
        self.runlog = runlog
        data = load_dataset(cfg.dataset)
        self.split: Split = split_dataset(
            data, test_fraction=cfg.test_fraction, root_size=cfg.root_size, seed=cfg.seed
        )
        half = len(self.split.root.y) // 2
        order = np.arange(len(self.split.root.y), dtype=np.int64)
        self.root_train = self.split.root.subset(order[:half])
        self.holdout = self.split.root.subset(order[half:])
        self.model = build_model(
            data.num_features,
            data.num_classes,
            hidden=cfg.hidden,
            seed=cfg.seed,
            activation=cfg.activation,
        )
        initial = get_weights(self.model)
        if cfg.secagg.erase_ridge > 0 and len(self.split.root.y) <= data.num_features:
            raise FLConfigError(
                f"secagg.erase_ridge needs more root samples than input features (root_size="
                f"{len(self.split.root.y)}, {data.num_features} features): the clean covariance "
                "would be singular and the erasure would wipe directions the task needs"
            )
        self.shapes = [tuple(w.shape) for w in initial]
        self._global: Weights = initial
        self.reputation = validation.ClientReputation(exclude_after=cfg.validation.exclude_after)
        per_round = max(2, round(cfg.fraction_fit * cfg.num_clients))
        # exclusion may shrink the number of groups, never below one group, nor take half
        #: one cap on clients excluded by streaks and group testing together
        self.exclusion_cap = max(0, min(per_round - cfg.secagg.num_shares, per_round // 2 - 1))
        self.group_streaks = validation.GroupStreaks(
            exclude_after=cfg.secagg.exclude_after, max_excluded=self.exclusion_cap
        )
        self.group_testing = validation.GroupTesting(
            z_threshold=2.0,
            t_threshold=cfg.secagg.suspicion_z,
            min_rounds=cfg.secagg.suspicion_min_rounds,
            min_effect=cfg.secagg.suspicion_min_effect,
            max_excluded=self.exclusion_cap,
        )
        self._roots: dict[int, tuple[Weights, float]] = {}
        # (round, global weights at its start, clients whose updates the model holds by then)
        self._history: list[tuple[int, Weights, frozenset[str]]] = []
        self._contributed: frozenset[str] = frozenset()
        self.expected_noise_norm = 0.0
        #: group size ``expected_noise_norm`` is computed for (a mean over fewer survivors is
        #: noisier by sqrt(size / survivors))
        self.noise_group_size = 1
        #: server momentum buffer (``dp.server_momentum``): post-processing of the released
        #: aggregates, so it costs no privacy
        self.velocity: Weights | None = None
        self.ledger, self._fit_extra = self._privacy_setup()
        super().__init__(
            fraction_fit=cfg.fraction_fit,
            fraction_evaluate=0.0,
            min_fit_clients=min(per_round, cfg.num_clients),
            min_evaluate_clients=0,
            min_available_clients=cfg.num_clients,
            initial_parameters=ndarrays_to_parameters(initial),
            on_fit_config_fn=self._fit_config,
            accept_failures=True,
        )

    # -- differential privacy
    def _privacy_setup(self) -> tuple[dp.PrivacyLedger | None, dict[str, Scalar]]:
        cfg = self.cfg
        if cfg.dp.mode == "none":
            return None, {}
        sizes = [
            len(
                client_partition(
                    self.split,
                    i,
                    cfg.num_clients,
                    kind=cfg.partition,
                    alpha=cfg.dirichlet_alpha,
                    seed=cfg.seed,
                ).y
            )
            for i in range(cfg.num_clients)
        ]
        if cfg.dp.mode in ("dpsgd", "distributed"):
            sigma, q, steps = dpsgd_schedule(cfg, min(sizes))
            ledger = dp.PrivacyLedger(sigma, q, steps, cfg.dp.delta, accountant=cfg.dp.accountant)
            extra: dict[str, Scalar] = {"dp-noise-multiplier": sigma, "dp-sample-rate": q}
            records = min(sizes)
            if cfg.dp.mode == "distributed":
                sa = cfg.secagg
                batch = q * float(np.mean(sizes))
                extra["dp-expected-batch"] = batch
                per_round = max(2, round(cfg.fraction_fit * cfg.num_clients))
                m = max(sa.reconstruction_threshold, per_round // sa.groups)
                self.noise_group_size = m
                # noise of a group mean of m members, each adding σC/√t, scaled by lr/B
                self.expected_noise_norm = (
                    cfg.learning_rate
                    / batch
                    * sigma
                    * cfg.dp.max_grad_norm
                    * math.sqrt(
                        sum(math.prod(s) for s in self.shapes) / (m * sa.reconstruction_threshold)
                    )
                )
        else:
            sigma = float(cfg.dp.noise_multiplier or 0.0)
            ledger = dp.PrivacyLedger(
                sigma, cfg.fraction_fit, 1, cfg.dp.delta, accountant=cfg.dp.accountant
            )
            per_round = max(2, round(cfg.fraction_fit * cfg.num_clients))
            sa = cfg.secagg
            smallest_group = per_round // sa.groups if sa.enabled else per_round
            plan = dp.user_level_plan(
                noise_multiplier=sigma,
                norm_bound=cfg.validation.update_norm_bound,
                num_params=sum(math.prod(s) for s in self.shapes),
                group_size=smallest_group,
                threshold=sa.reconstruction_threshold if sa.enabled else None,
                clipping_range=sa.clipping_range if sa.enabled else None,
            )
            self.expected_noise_norm = plan.aggregate_noise_norm
            self.noise_group_size = smallest_group
            extra = {"dp-noise-std": plan.share_std}
            records = cfg.num_clients
        total = dp.epsilon(
            noise_multiplier=ledger.noise_multiplier,
            sample_rate=ledger.sample_rate,
            steps=ledger.steps_per_round * cfg.num_rounds,
            delta=cfg.dp.delta,
            accountant=cfg.dp.accountant,
        )
        self.runlog.dp_warning = dp.check_guarantee(
            epsilon_total=total,
            delta=cfg.dp.delta,
            num_records=records,
            max_epsilon=cfg.dp.max_epsilon,
            allow_weak=cfg.dp.allow_weak,
        )
        log.info(
            "DP %s: noise multiplier %.3f, planned ε=%.2f at δ=%g",
            cfg.dp.mode,
            sigma,
            total,
            cfg.dp.delta,
        )
        return ledger, extra

    def _fit_config(self, rnd: int) -> dict[str, Scalar]:
        cfg: dict[str, Scalar] = {"server-round": rnd, **self._fit_extra}
        if self.cfg.secagg.enabled and self.cfg.secagg.root_norm_multiplier > 0:
            cfg["update-norm-bound"] = self.round_root(self._global, rnd)[1]
        return cfg

    def round_root(self, global_w: Weights, rnd: int) -> tuple[Weights, float]:
        """This round's root update and norm bound (computed once per round).

        The bound is :func:`~saip_fl.validation.adaptive_norm_bound` of the root update when
        ``secagg.root_norm_multiplier`` is set, else ``validation.update_norm_bound``.
        """
        if rnd not in self._roots:
            root = self.root_update(global_w, rnd)
            ceiling = self.cfg.validation.update_norm_bound
            mult = self.cfg.secagg.root_norm_multiplier
            bound = (
                validation.adaptive_norm_bound(l2_norm(root), multiplier=mult, ceiling=ceiling)
                if mult > 0
                else ceiling
            )
            self._roots = {rnd: (root, bound)}
        return self._roots[rnd]

    # -- sampling: repeat offenders are excluded
    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample clients as FedAvg does, minus excluded ones."""
        pairs = super().configure_fit(server_round, parameters, client_manager)
        banned = self.excluded_clients()
        return [(proxy, ins) for proxy, ins in pairs if proxy.cid not in banned]

    def excluded_clients(self) -> set[str]:
        """Clients excluded by update screening, rejected-group streaks or group testing."""
        return (
            self.reputation.excluded()
            | self.group_streaks.excluded()
            | self.group_testing.excluded()
        )

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """No federated evaluation: the server evaluates on its own test split."""
        return []

    # -- aggregation without SecAgg+
    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Screen each update, exclude repeat offenders, aggregate the rest robustly."""
        rec = self.runlog.current(server_round)
        rec.failures = len(failures)
        if not results:
            return None, {}
        rec.aggregate_received = True
        global_w = self.global_weights
        updates: dict[str, Weights] = {}
        counts: dict[str, int] = {}
        for proxy, res in results:
            label = proxy.cid
            pid = res.metrics.get("partition-id")
            if pid is not None:
                label = f"{proxy.cid}(partition {pid!s})"
            updates[label] = [np.asarray(a) for a in parameters_to_ndarrays(res.parameters)]
            counts[label] = int(res.num_examples)
        if self.cfg.validation.enabled:
            screening = validation.screen_updates(
                updates,
                shapes=self.shapes,
                norm_bound=self.cfg.validation.update_norm_bound,
                min_cosine=self.cfg.validation.min_cosine,
            )
        else:  # undefended baseline: only drop what cannot be added at all
            bad = {
                c: r
                for c, u in updates.items()
                if (r := validation.check_structure(u, self.shapes))
            }
            screening = validation.Screening(
                {c: u for c, u in updates.items() if c not in bad}, bad
            )
        for label, reason in screening.rejected.items():
            self.reputation.record(label.split("(")[0], reason)
        rec.rejected = dict(screening.rejected)
        rec.accepted = len(screening.accepted)
        rec.excluded = sorted(self.reputation.excluded())
        self.runlog.excluded_clients = self.reputation.report()
        if not screening.accepted:
            log.warning("round %d: every update was rejected; global model kept", server_round)
            rec.rolled_back = True
            return None, {}
        v = self.cfg.validation
        agg = validation.robust_aggregate(
            self.cfg.aggregation,
            list(screening.accepted.values()),
            [counts[c] for c in screening.accepted],
            max_examples=v.max_examples,
            num_malicious=v.num_malicious,
            trim_fraction=v.trim_fraction,
            multikrum_keep=v.multikrum_keep,
        )
        return ndarrays_to_parameters(add(global_w, agg)), {"accepted": rec.accepted}

    # -- global weights (kept in sync by the workflows)
    @property
    def global_weights(self) -> Weights:
        """The global model weights at the start of the current round."""
        return [w.copy() for w in self._global]

    def _loss_of(self, weights: Weights) -> float:
        set_weights(self.model, weights)
        return evaluate(self.model, self.holdout)[0]

    def root_update(self, global_w: Weights, rnd: int) -> Weights:
        """The server's own update on its clean root data (FLTrust's server model update)."""
        set_weights(self.model, global_w)
        train(
            self.model,
            self.root_train,
            epochs=self.cfg.local_epochs,
            batch_size=self.cfg.batch_size,
            lr=self.cfg.learning_rate,
            seed=self.cfg.seed + 31 * rnd,
        )
        upd, _ = clip_update(
            delta(get_weights(self.model), global_w), self.cfg.validation.update_norm_bound
        )
        set_weights(self.model, global_w)
        return upd

    def combine_groups(
        self,
        rnd: int,
        global_w: Weights,
        group_updates: dict[int, Weights],
        group_members: dict[int, list[str]],
        failed: dict[int, str],
        contributors: dict[int, int] | None = None,
    ) -> Weights | None:
        """Score and combine group aggregates; ``None`` means keep the global model (rollback).

        Every group's member IDs and contributor count go into the round record; members of
        rejected groups build up a streak (:class:`~saip_fl.validation.GroupStreaks`) and are
        excluded once it reaches ``secagg.exclude_after`` consecutive rounds. In the last round
        with ``secagg.erase_ridge`` set, the model the run ends with — accepted, rewound or
        rolled back — goes through :func:`~saip_fl.erasure.project_input_layer` on the root data.
        """
        contributors = contributors or {}
        rec = self.runlog.current(rnd)
        root, bound = self.round_root(global_w, rnd)
        base_loss = self._loss_of(global_w)
        sa = self.cfg.secagg
        scores: dict[int, validation.GroupScore] = {}
        for g, upd in group_updates.items():
            scores[g] = validation.score_group(
                g,
                upd,
                shapes=self.shapes,
                root_update=root,
                global_weights=global_w,
                holdout_loss=self._loss_of,
                base_loss=base_loss,
                norm_bound=bound,
                clipping_range=sa.clipping_range,
                min_cosine=sa.min_cosine,
                loss_tolerance=sa.loss_tolerance,
                noise_norm=self.group_noise_norm(contributors.get(g, 0)),
            )
        for g in sorted(set(group_members)):
            s = scores.get(g)
            entry: dict[str, Any] = {
                "group": g,
                "size": len(group_members[g]),
                "members": sorted(group_members[g]),
                "contributors": contributors.get(g, 0),
            }
            if s is None:
                entry.update(
                    accepted=False, reason=f"protocol failed: {failed.get(g, 'no aggregate')}"
                )
            else:
                entry.update(
                    accepted=s.accepted,
                    reason=s.reason,
                    cosine=s.cosine,
                    norm=s.norm,
                    holdout_loss=s.holdout_loss,
                    weight=s.weight,
                )
            rec.groups.append(entry)
            if not entry["accepted"]:
                rec.rejected[f"group {g}"] = entry["reason"]
        # one cap on exclusions, shared both ways: each tracker may only fill what the other left
        streaks, testing = self.group_streaks, self.group_testing
        if any(g["accepted"] for g in rec.groups):
            streaks.max_excluded = max(
                0, self.exclusion_cap - len(testing.excluded() - streaks.excluded())
            )
            for entry in rec.groups:
                streaks.record(entry["members"], rejected=not entry["accepted"])
        if sa.suspicion_z > 0:
            testing.max_excluded = max(
                0, self.exclusion_cap - len(streaks.excluded() - testing.excluded())
            )
            scored = [g for g in sorted(scores) if math.isfinite(scores[g].cosine)]
            self.group_testing.record(
                [group_members[g] for g in scored], [scores[g].cosine for g in scored]
            )
        rec.excluded = sorted(self.excluded_clients())
        self.runlog.excluded_clients = {
            **self.reputation.report(),
            **self.group_streaks.report(),
            **self.group_testing.report(),
        }
        rec.accepted = sum(1 for s in scores.values() if s.accepted)
        if sa.rewind_on_exclusion:  # kept only when it may be needed
            snapshot = (rnd, global_w, self._contributed)
            if self._history and self._history[-1][2] == self._contributed:
                # a rewind goes to the newest start without the excluded clients: of two starts
                # with the same contributors the older is never chosen (one copy per distinct
                # contributor set, at most num_clients + 1, not one per round)
                self._history[-1] = snapshot
            else:
                self._history.append(snapshot)
        target = self._rewind_target()
        if target is not None:
            return self._erase_if_last(rnd, global_w, self._rewind(rnd, rec, target))
        combined = validation.combine_trusted(group_updates, scores, root)
        if combined is None:
            log.warning("round %d: no group aggregate trusted; global model kept", rnd)
            rec.rolled_back = True
            return self._erase_if_last(rnd, global_w, None)
        step = self.server_step(combined, rnd=rnd)
        candidate = add(global_w, step)
        cand_loss = self._loss_of(candidate)
        set_weights(self.model, global_w)
        if cand_loss > base_loss + sa.loss_tolerance:
            log.warning(
                "round %d: combined update raises holdout loss %.3f → %.3f; rolled back",
                rnd,
                base_loss,
                cand_loss,
            )
            rec.rolled_back = True
            rec.rejected["combined"] = (
                f"holdout loss {cand_loss:.3f} > {base_loss:.3f} + {sa.loss_tolerance:g}"
            )
            return self._erase_if_last(rnd, global_w, None)
        if self.cfg.dp.server_momentum > 0:
            self.velocity = step  # only an accepted step moves the momentum
        self._contributed |= {
            c for g, s in scores.items() if s.accepted and s.weight > 0 for c in group_members[g]
        }
        return self._erase_if_last(rnd, global_w, candidate)

    def _erase_if_last(self, rnd: int, global_w: Weights, new: Weights | None) -> Weights | None:
        """In the last round with ``secagg.erase_ridge`` set: the erased model the run ends with.

        The erased model is checked on the holdout; a loss rise above
        ``secagg.erase_max_loss_increase`` fails the run (:class:`FLError`, nothing sealed).
        """
        ridge = self.cfg.secagg.erase_ridge
        if ridge <= 0 or rnd < self.cfg.num_rounds:
            return new
        base = new if new is not None else global_w
        erased = erasure.project_input_layer(base, self.split.root, ridge=ridge)
        before, after = self._loss_of(base), self._loss_of(erased)
        set_weights(self.model, global_w)
        limit = self.cfg.secagg.erase_max_loss_increase
        if not after <= before + limit:
            raise FLError(
                f"round {rnd}: the erasure (secagg.erase_ridge={ridge:g}) raised the holdout loss "
                f"{before:.3f} → {after:.3f}, more than secagg.erase_max_loss_increase={limit:g}: "
                "it erased the task; the model is not released (lower the ridge)"
            )
        self.runlog.current(rnd).erased = True
        return erased

    def group_noise_norm(self, contributors: int) -> float:
        """Expected DP noise norm of a group mean over ``contributors`` survivors (0: unknown,
        the planned group size)."""
        if contributors <= 0:
            return self.expected_noise_norm
        return self.expected_noise_norm * math.sqrt(self.noise_group_size / contributors)

    def _rewind_target(self) -> int | None:
        """Index in the history to rewind to when an excluded client's update is in the model."""
        if not self.cfg.secagg.rewind_on_exclusion:
            return None
        banned = self.group_streaks.excluded() | self.group_testing.excluded()
        if not banned & self._contributed:
            return None
        for i in range(len(self._history) - 1, -1, -1):
            if not banned & self._history[i][2]:
                return i
        return 0  # unreachable: the first entry holds no contributor

    def _rewind(self, rnd: int, rec: RoundRecord, index: int) -> Weights | None:
        """Reset the global model to the newest one that no excluded client contributed to.

        Excluding a client stops its *future* updates; its past updates (e.g. a backdoor it
        planted before group testing caught it) stay in the model and outlive it. Rewinding
        drops them at the cost of the rounds since; this round's aggregate is discarded too, as
        it was computed from the tainted model.
        """
        start, weights, contributed = self._history[index]
        del self._history[index + 1 :]
        self._contributed = contributed
        rec.rewound_to = start
        self.velocity = None  # the momentum carries the tainted steps too
        log.warning(
            "round %d: excluded clients had contributed to the model; rewound to round %d's start",
            rnd,
            start,
        )
        if start == rnd:
            self._history.pop()
            rec.rolled_back = True
            return None
        return [w.copy() for w in weights]

    def server_lr(self, rnd: int) -> float:
        """η of round ``rnd`` (1-based): ``dp.server_learning_rate``, times
        ``(1 + cos(π (rnd-1) / num_rounds)) / 2`` under the cosine schedule."""
        eta = self.cfg.dp.server_learning_rate
        if self.cfg.dp.server_lr_schedule == "cosine":
            frac = min(max(rnd - 1, 0), self.cfg.num_rounds) / self.cfg.num_rounds
            eta *= 0.5 * (1.0 + math.cos(math.pi * frac))
        return eta

    def server_step(self, combined: Weights, *, rnd: int = 1) -> Weights:
        """``η·combined + β·v`` with ``η = server_lr(rnd)`` and ``β = dp.server_momentum``.

        FedAvgM (Hsu et al., 2019, arXiv:1909.06335) with a server learning rate (FedOpt, Reddi
        et al., ICLR 2021) applied to the DP aggregate: a function of released, already-noised
        aggregates and public round numbers only, so post-processing leaves (ε, δ) unchanged
        (Dwork & Roth 2014, Prop. 2.1), while averaging the noise of successive rounds.
        """
        eta = self.server_lr(rnd)
        step = combined if eta == 1.0 else [(eta * c).astype(np.float32) for c in combined]
        beta = self.cfg.dp.server_momentum
        if beta == 0 or self.velocity is None:
            return step
        return add(step, self.velocity, beta)

    # -- centralised evaluation: also closes the round record
    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Test loss/accuracy on the server's test split; ε so far; write ``metrics.json``."""
        weights = [np.asarray(a, dtype=np.float32) for a in parameters_to_ndarrays(parameters)]
        set_weights(self.model, weights)
        loss, acc = evaluate(self.model, self.split.test)
        metrics: dict[str, Scalar] = {"accuracy": acc}
        if server_round == 0:
            log.info("initial model: accuracy %.3f loss %.3f", acc, loss)
            return loss, metrics
        rec = self.runlog.current(server_round)
        rec.loss, rec.accuracy = loss, acc
        if self.ledger is not None:
            rec.epsilon = self.ledger.step_round()
            rec.delta = self.cfg.dp.delta
            metrics["epsilon"] = rec.epsilon
        if self.cfg.attack.kind == "backdoor":
            rec.backdoor_asr = attacks.attack_success_rate(
                lambda x: predict(self.model, x),
                self.split.test,
                target_label=self.cfg.attack.target_label,
                trigger_size=self.cfg.attack.trigger_size,
            )
        self.runlog.final_weights = weights
        self.runlog.write()
        eps = f", ε={rec.epsilon:.2f}" if rec.epsilon is not None else ""
        log.info(
            "round %d: accuracy %.3f loss %.3f%s (%.2fs)", server_round, acc, loss, eps, rec.seconds
        )
        return loss, metrics


# ------------------------------------------------------------------------------- workflows
def _weights_of(context: Context) -> Weights:
    arr = context.state.array_records[MAIN_PARAMS_RECORD]
    return [
        np.asarray(a, dtype=np.float32)
        for a in parameters_to_ndarrays(compat.arrayrecord_to_parameters(arr, keep_input=True))
    ]


def _round_of(context: Context) -> int:
    return int(cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][Key.CURRENT_ROUND]))


class GuardedFitWorkflow:
    """Run ``inner`` and fail loudly if the round produced no aggregate.

    Flower's SecAgg+ workflow logs "Secure aggregation halted." and returns; the run then
    continues and exits 0 with an untrained model. Here a round without an aggregate (and without
    a deliberate rollback) raises :class:`ProtocolHaltedError`.
    """

    def __init__(self, inner: Callable[[Grid, Context], None], strategy: SaipStrategy) -> None:
        self.inner = inner
        self.strategy = strategy
        #: whether this workflow moved the warmed-up heap to the GC's permanent generation
        self.froze_heap = False
        #: only a permanent generation this run found empty may be frozen (and later thawed):
        #: ``gc.unfreeze`` cannot tell a host process's own frozen objects from the run's
        self.may_freeze = gc.get_freeze_count() == 0

    def __call__(self, grid: Grid, context: Context) -> None:
        """Run one fit round and check that the global model changed."""
        rnd = _round_of(context)
        before = _weights_of(context)
        rec = self.strategy.runlog.current(rnd)
        self.strategy._global = before
        if self.may_freeze and not self.froze_heap and rnd >= 2:
            self._freeze_heap()
        started, cpu_started = time.perf_counter(), time.process_time()
        self.inner(grid, context)
        rec.seconds = time.perf_counter() - started
        rec.cpu_seconds = time.process_time() - cpu_started
        after = _weights_of(context)
        unchanged = all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        if not rec.aggregate_received:
            raise ProtocolHaltedError(
                f"round {rnd}: no aggregate was produced ({rec.failures} client failures; "
                f"{'; '.join(str(g.get('reason')) for g in rec.groups) or 'no results'}) — "
                "SecAgg+ halted (too few clients left for the reconstruction threshold?) or every "
                "client failed; the global model did not change, so the run is failed"
            )
        if unchanged and not rec.rolled_back:
            raise ProtocolHaltedError(f"round {rnd}: the aggregate left the global model unchanged")
        self.strategy._global = after

    def _freeze_heap(self) -> None:
        """Collect once, then exempt the warmed-up heap from later full collections.

        Round 1 builds what lives for the whole run (torch, data, models, and on the local engine
        every client's data and context: ≈ 400k objects). Each later round allocates
        enough short-lived containers (SecAgg+ messages most) to trigger a full collection every
        few rounds, which traverses all of them: ≈ 200 ms each at 50 clients. ``gc.freeze``
        (Python ≥ 3.7) leaves those objects to reference counting; garbage created later is
        still collected. :func:`run_server` undoes it when the run ends.
        """
        gc.collect()
        # recorded first: a Ctrl-C between the two lines must still find the heap to thaw
        # (the permanent generation was empty when the run started, so thawing is safe)
        self.froze_heap = True
        gc.freeze()


class _GroupStrategy(Strategy):
    """Inner strategy of one SecAgg+ group: hands out its instructions, captures the mean."""

    def __init__(self, instructions: list[tuple[ClientProxy, FitIns]]) -> None:
        self.instructions = instructions
        self.result: Weights | None = None
        self.received = 0

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        return self.instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if results:
            # SecAgg+ writes the same unmasked group mean into every result
            self.result = [
                np.asarray(a, dtype=np.float32)
                for a in parameters_to_ndarrays(results[0][1].parameters)
            ]
            self.received = len(results)
        return None, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        return None


class _PlaintextGroupStrategy(_GroupStrategy):
    """Inner strategy of one *plaintext* group: the server averages the members' updates.

    Equal weights, as under SecAgg+ (where every client reports one example); an update that
    cannot be added (wrong structure, NaN) counts as a failure, as it would halt SecAgg+'s sum.
    """

    def __init__(self, instructions: list[tuple[ClientProxy, FitIns]], shapes: list[Any]) -> None:
        super().__init__(instructions)
        self.shapes = shapes

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        updates: list[Weights] = []
        for _, res in results:
            upd = [np.asarray(a, dtype=np.float32) for a in parameters_to_ndarrays(res.parameters)]
            if validation.check_structure(upd, self.shapes) is None:
                updates.append(upd)
        if updates:
            self.result = [
                np.asarray(np.mean(np.stack(layer), axis=0, dtype=np.float64), dtype=np.float32)
                for layer in zip(*updates, strict=True)
            ]
            self.received = len(updates)
        return None, {}


class GroupedSecAggWorkflow:
    """SecAgg+ inside random groups, run concurrently, combined robustly (see module docstring).

    Parameters
    ----------
    strategy
        The outer strategy: samples clients, scores and combines the group aggregates.
    rng
        Randomness of the grouping (injectable for tests).

    Notes
    -----
    Privacy: each released aggregate is the mean of one group (≥ ``num_shares`` clients), so the
    server learns k group means instead of one global mean. Robustness: an attacker can only move
    its own group's mean; FLTrust scoring drops groups whose mean points away from the root update
    or raises the holdout loss. Grouping alone fails once half the groups hold an attacker.
    """

    def __init__(self, strategy: SaipStrategy, *, rng: np.random.Generator | None = None) -> None:
        sa = strategy.cfg.secagg
        self.strategy = strategy
        self.groups = sa.groups
        # the grouping must not be predictable by clients (an attacker could pick its group)
        self.rng = rng or np.random.default_rng()
        secagg_prg.install()
        self.secagg = SecAggPlusWorkflow(
            num_shares=sa.num_shares,
            reconstruction_threshold=sa.reconstruction_threshold,
            max_weight=1.0,
            clipping_range=sa.clipping_range,
            quantization_range=sa.quantization_range,
            timeout=sa.timeout,
        )

    def __call__(self, grid: Grid, context: Context) -> None:
        """One fit round: group, aggregate each group with SecAgg+, combine."""
        if not isinstance(context, LegacyContext):
            raise TypeError(f"expected a LegacyContext, got {type(context).__name__}")
        rnd = _round_of(context)
        rec = self.strategy.runlog.current(rnd)
        arr = context.state.array_records[MAIN_PARAMS_RECORD]
        global_w = _weights_of(context)
        params = compat.arrayrecord_to_parameters(arr, keep_input=True)
        instructions = context.strategy.configure_fit(rnd, params, context.client_manager)
        k = min(self.groups, max(1, len(instructions) // self.strategy.cfg.secagg.num_shares))
        if len(instructions) < 2 or k < 1:
            rec.groups.append(
                {
                    "group": -1,
                    "size": len(instructions),
                    "accepted": False,
                    "reason": "too few clients sampled",
                }
            )
            return
        order = self.rng.permutation(len(instructions))
        members = {
            g: [instructions[int(i)] for i in part]
            for g, part in enumerate(np.array_split(order, k))
        }
        grid.get_node_ids()  # initialise the grid's node list before threads share it
        captures = {g: self._capture(m) for g, m in members.items()}
        errors: dict[int, str] = {}
        lock = threading.Lock()

        def run_group(g: int) -> None:
            state = RecordDict()
            state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
                dict(context.state.config_records[MAIN_CONFIGS_RECORD])
            )
            state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                params, keep_input=True
            )
            base = Context(
                run_id=context.run_id,
                node_id=context.node_id,
                node_config=context.node_config,
                state=state,
                run_config=context.run_config,
            )
            sub = LegacyContext(
                base,
                config=context.config,
                strategy=captures[g],
                client_manager=context.client_manager,
            )
            try:
                self._aggregate_group(grid, sub)
            except RunInterruptedError:
                raise
            except Exception as exc:
                with lock:
                    errors[g] = f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "group %d failed: %s",
                        g,
                        errors[g],
                        exc_info=log.isEnabledFor(logging.DEBUG),
                    )

        with ThreadPoolExecutor(max_workers=k, thread_name_prefix="secagg-group") as pool:
            list(pool.map(run_group, list(members)))
        results = {g: c.result for g, c in captures.items() if c.result is not None}
        failed = {
            g: errors.get(g, "SecAgg+ halted (too few surviving clients)")
            for g in members
            if g not in results
        }
        group_members = {g: [p.cid for p, _ in m] for g, m in members.items()}
        rec.failures = sum(len(m) - captures[g].received for g, m in members.items())
        if not results:
            return  # GuardedFitWorkflow turns this into ProtocolHaltedError
        rec.aggregate_received = True
        contributors = {g: c.received for g, c in captures.items()}
        new = self.strategy.combine_groups(
            rnd, global_w, results, group_members, failed, contributors
        )
        if new is not None:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                ndarrays_to_parameters(new), keep_input=True
            )

    def _capture(self, instructions: list[tuple[ClientProxy, FitIns]]) -> _GroupStrategy:
        return _GroupStrategy(instructions)

    def _aggregate_group(self, grid: Grid, sub: LegacyContext) -> None:
        self.secagg(grid, sub)


class PlaintextGroupedWorkflow(GroupedSecAggWorkflow):
    """Grouped SecAgg+'s aggregation with the group means computed in the clear.

    ``aggregation = "grouped_plaintext"``: the same random groups, run concurrently, the same
    FLTrust scoring, combination, rollback and exclusions as :class:`GroupedSecAggWorkflow`;
    each group runs Flower's plain fit round and the server averages its members' updates
    (equal weights). It exists to measure what SecAgg+ itself costs: **the server sees every
    individual update**, so it is a benchmark baseline, never a privacy control.
    """

    def _capture(self, instructions: list[tuple[ClientProxy, FitIns]]) -> _GroupStrategy:
        return _PlaintextGroupStrategy(instructions, list(self.strategy.shapes))

    def _aggregate_group(self, grid: Grid, sub: LegacyContext) -> None:
        from flwr.server.workflow.default_workflows import default_fit_workflow

        default_fit_workflow(grid, sub)


def _plain_fit(strategy: SaipStrategy) -> Callable[[Grid, Context], None]:
    from flwr.server.workflow.default_workflows import default_fit_workflow

    def fit(grid: Grid, context: Context) -> None:
        default_fit_workflow(grid, context)

    return fit


def preflight(cfg: RunConfig) -> None:
    """Start-up checks that need the data and the model (what the server does before round 1).

    Raises
    ------
    FLConfigError
        E.g. user-level DP that cannot train, or a weak (ε, δ) guarantee
        (:class:`~saip_fl.errors.PrivacyGuaranteeError`).
    """
    SaipStrategy(cfg, RunLog(config={}, path=None))


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run the server's own torch work (root update, holdout and test losses) on one thread.

    The server's model is a small MLP evaluated on tens to hundreds of rows: intra-op
    parallelism cannot pay there, and on shared cores OpenMP's spin-waiting made the FLTrust
    root update cost ≈ 64 ms of CPU instead of ≈ 2 ms (same numbers). Clients already train
    on one thread; the caller's setting is restored afterwards.
    """
    before = torch.get_num_threads()
    try:  # the cut inside: a Ctrl-C landing right after it still restores
        torch.set_num_threads(1)
        yield
    finally:
        torch.set_num_threads(before)


def run_server(grid: Grid, context: Context, cfg: RunConfig, runlog: RunLog) -> Weights:
    """Run the whole federated training; return the final global weights (see
    :func:`_run_server`); the server's own torch work runs on one thread."""
    with _one_torch_thread():
        return _run_server(grid, context, cfg, runlog)


def _run_server(grid: Grid, context: Context, cfg: RunConfig, runlog: RunLog) -> Weights:
    """Run the whole federated training; return the final global weights.

    Raises
    ------
    ProtocolHaltedError
        A round produced no aggregate (``metrics.json`` records ``status = "failed"``).
    """
    strategy = SaipStrategy(cfg, runlog)
    inner: Callable[[Grid, Context], None]
    if cfg.secagg.enabled:
        inner = GroupedSecAggWorkflow(strategy)
    elif cfg.aggregation == "grouped_plaintext":
        inner = PlaintextGroupedWorkflow(strategy)
    else:
        inner = _plain_fit(strategy)
    legacy = LegacyContext(
        context, config=ServerConfig(num_rounds=cfg.num_rounds), strategy=strategy
    )
    guard = GuardedFitWorkflow(inner, strategy)
    workflow = DefaultWorkflow(fit_workflow=guard)
    try:
        workflow(grid, legacy)
    except (KeyboardInterrupt, RunInterruptedError):
        runlog.status, runlog.error = "interrupted", "the run was interrupted"
        runlog.write()
        raise
    except FLError as exc:
        runlog.status, runlog.error = "failed", str(exc)
        runlog.write()
        raise
    except Exception as exc:
        runlog.status, runlog.error = "failed", f"{type(exc).__name__}: {exc}"
        runlog.write()
        raise
    finally:
        if guard.froze_heap:
            gc.unfreeze()
    final = _weights_of(legacy)
    runlog.final_weights = final
    verdict = outcome(runlog.rounds, max_rollback_fraction=cfg.validation.max_rollback_fraction)
    if verdict is not None:
        status, reason = verdict
        runlog.status, runlog.error = status, reason
        runlog.write()
        raise RunDegradedError(reason) if status == "degraded" else FLError(reason)
    runlog.status = "ok"
    runlog.write()
    return final


def outcome(rounds: list[RoundRecord], *, max_rollback_fraction: float) -> tuple[str, str] | None:
    """``("failed", why)`` when no round was accepted, ``("degraded", why)`` when more than
    ``max_rollback_fraction`` of the rounds were rolled back, else ``None`` (the run is ok)."""
    if not rounds:
        return "failed", "no round ran"
    rolled = [r.round for r in rounds if r.rolled_back]
    if len(rolled) == len(rounds):
        return "failed", (
            f"no round was accepted (all {len(rounds)} rolled back): the model is untrained"
        )
    if len(rolled) > max_rollback_fraction * len(rounds):
        return "degraded", (
            f"{len(rolled)} of {len(rounds)} rounds rolled back (rounds {rolled}), more than "
            f"validation.max_rollback_fraction={max_rollback_fraction:g}"
        )
    return None
