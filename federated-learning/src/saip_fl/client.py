"""The client side of a run: local data, training, update clipping, DP noise, simulated attacks.

Flower-facing glue is :class:`SaipClient` (a ``NumPyClient``) built by :func:`client_fn`; the
work itself is done by the plain functions in :mod:`saip_fl.model`, :mod:`saip_fl.data`,
:mod:`saip_fl.dp` and :mod:`saip_fl.attacks`.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from flwr.app import Context
from flwr.client import Client, NumPyClient

from saip_fl import attacks, dp
from saip_fl.config import RunConfig
from saip_fl.data import Dataset, apply_filter, client_partition, load_dataset, split_dataset
from saip_fl.errors import FLConfigError, UpdateRejectedError
from saip_fl.model import (
    build_model,
    clip_update,
    clipped_gradient_sum,
    delta,
    get_weights,
    set_weights,
    train,
    train_dpsgd,
)
from saip_fl.noise import NoiseSource
from saip_fl.protocols import ClientDataFilter

log = logging.getLogger(__name__)

#: metrics key carrying the client's partition id (reported only without SecAgg+)
PARTITION_KEY = "partition-id"


@functools.lru_cache(maxsize=4)
def _split(dataset: str, test_fraction: float, root_size: int, seed: int) -> Any:
    return split_dataset(
        load_dataset(dataset), test_fraction=test_fraction, root_size=root_size, seed=seed
    )


def local_data(cfg: RunConfig, partition_id: int) -> Dataset:
    """The local dataset of client ``partition_id`` (deterministic in ``cfg.seed``)."""
    split = _split(cfg.dataset, cfg.test_fraction, cfg.root_size, cfg.seed)
    return client_partition(
        split,
        partition_id,
        cfg.num_clients,
        kind=cfg.partition,
        alpha=cfg.dirichlet_alpha,
        seed=cfg.seed,
    )


def load_filter(path: str) -> ClientDataFilter:
    """Import a client data filter given as ``module:attribute``.

    Raises
    ------
    FLConfigError
        The module or attribute cannot be imported or is not callable.
    """
    module, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise FLConfigError(f"client_filter '{path}' cannot be imported: {exc}") from None
    if not callable(fn):
        raise FLConfigError(f"client_filter '{path}' is not callable")
    return cast(ClientDataFilter, fn)


@dataclass(frozen=True)
class NodePolicy:
    """Client-side safeguards set by the node's operator (``--node-config``), not by the server.

    The server controls ``run_config`` and the fit config, so a safeguard read from them can be
    lowered by the party it protects against. These come from ``node_config`` keys:

    * ``saip-require-secagg`` (``true``): never answer a plaintext training request;
    * ``saip-min-noise-multiplier`` (float): refuse rounds whose DP noise multiplier is lower
      (or that use no DP at all);
    * ``saip-max-sample-rate`` (float): refuse DP-SGD rounds that sample more than this.
    """

    require_secagg: bool = False
    min_noise_multiplier: float = 0.0
    max_sample_rate: float = 1.0

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodePolicy:
        """Read the policy; a malformed value is a configuration error naming the key."""
        try:
            return cls(
                require_secagg=str(node_config.get("saip-require-secagg", "false")).lower()
                in ("true", "1", "yes"),
                min_noise_multiplier=float(node_config.get("saip-min-noise-multiplier", 0.0)),
                max_sample_rate=float(node_config.get("saip-max-sample-rate", 1.0)),
            )
        except ValueError as exc:
            raise FLConfigError(f"node_config: bad saip-* policy value: {exc}") from None

    def check_dp(self, noise_multiplier: float, sample_rate: float) -> None:
        """Refuse a round whose DP is weaker than this node allows (or malformed: a NaN
        compares false against every limit)."""
        if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0) or not (
            math.isfinite(sample_rate) and 0 < sample_rate <= 1
        ):
            raise UpdateRejectedError(
                f"node policy: malformed DP parameters from the server (noise multiplier "
                f"{noise_multiplier!r}, sample rate {sample_rate!r})"
            )
        if noise_multiplier < self.min_noise_multiplier:
            raise UpdateRejectedError(
                f"node policy: noise multiplier {noise_multiplier:g} below this node's "
                f"saip-min-noise-multiplier {self.min_noise_multiplier:g}"
            )
        if self.min_noise_multiplier > 0 and sample_rate > self.max_sample_rate:
            raise UpdateRejectedError(
                f"node policy: sample rate {sample_rate:g} above this node's "
                f"saip-max-sample-rate {self.max_sample_rate:g}"
            )


class SaipClient(NumPyClient):
    """One federated client: trains locally and returns a clipped update (``local - global``)."""

    def __init__(
        self, cfg: RunConfig, partition_id: int, *, policy: NodePolicy | None = None
    ) -> None:
        self.cfg = cfg
        self.partition_id = partition_id
        self.malicious = partition_id in cfg.attack.clients and cfg.attack.kind != "none"
        self.policy = policy or NodePolicy()

    def noise_source(self, rnd: int) -> NoiseSource:
        """OS-keyed noise; a fixed seed only when the (test-only) config field asks for it."""
        seed = self.cfg.dp.insecure_noise_seed
        if seed is None:
            return NoiseSource.secure()
        return NoiseSource.insecure_for_tests(seed * 7919 + 104729 * rnd + self.partition_id)

    def _data(self) -> Dataset:
        data = local_data(self.cfg, self.partition_id)
        if self.cfg.client_filter:
            keep = load_filter(self.cfg.client_filter)(data.x, data.y)
            before = len(data.y)
            data = apply_filter(data, keep)
            log.info(
                "client %s: data filter kept %d of %d samples",
                self.partition_id,
                len(data.y),
                before,
            )
        return data

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        """Initial weights (same seed everywhere)."""
        data = self._data()
        return get_weights(
            build_model(
                data.num_features,
                data.num_classes,
                hidden=self.cfg.hidden,
                seed=self.cfg.seed,
                activation=self.cfg.activation,
            )
        )

    def fit(
        self, parameters: list[np.ndarray], config: dict[str, Any]
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Train on the local data from ``parameters`` and return the (clipped, noised) update."""
        torch.set_num_threads(1)
        cfg = self.cfg
        rnd = int(config.get("server-round", 0))
        kind = cfg.attack.kind if self.malicious else "none"
        if kind == "dropout":
            raise attacks.SimulatedDropout(f"client {self.partition_id} dropped out in round {rnd}")
        data = self._data()
        if kind in ("label_flip", "flip_sign", "backdoor"):
            data = attacks.poison_data(
                data,
                kind,
                target_label=cfg.attack.target_label,
                poison_fraction=cfg.attack.poison_fraction,
                trigger_size=cfg.attack.trigger_size,
                seed=cfg.seed + 1000 * rnd + self.partition_id,
            )
        model = build_model(
            data.num_features, data.num_classes, hidden=cfg.hidden, activation=cfg.activation
        )
        set_weights(model, [np.asarray(p, dtype=np.float32) for p in parameters])
        seed = cfg.seed * 7919 + 104729 * rnd + self.partition_id
        noise = self.noise_source(rnd)
        if cfg.dp.mode == "distributed" and kind == "none":
            return self._fedsgd_share(model, data, config, noise)
        if cfg.dp.mode == "dpsgd":
            sigma = _server_float(config, "dp-noise-multiplier", math.nan)
            # the server's accountant assumed this Poisson rate: sample at exactly that rate
            rate = _server_float(config, "dp-sample-rate", math.nan)
            self.policy.check_dp(sigma, rate)
            result = train_dpsgd(
                model,
                data,
                epochs=cfg.local_epochs,
                sample_rate=rate,
                lr=cfg.learning_rate,
                noise_multiplier=sigma,
                max_grad_norm=cfg.dp.max_grad_norm,
                noise=noise,
            )
        else:
            if cfg.dp.mode == "user":
                self.policy.check_dp(float(cfg.dp.noise_multiplier or 0.0), cfg.fraction_fit)
            else:
                self.policy.check_dp(0.0, 1.0)
            result = train(
                model,
                data,
                epochs=cfg.local_epochs,
                batch_size=cfg.batch_size,
                lr=cfg.learning_rate,
                seed=seed,
            )
        update = delta(get_weights(model), [np.asarray(p, dtype=np.float32) for p in parameters])
        # the server may tighten the bound per round (adaptive bound); it can never loosen it
        ceiling = cfg.validation.update_norm_bound
        bound = _server_float(config, "update-norm-bound", ceiling)
        if not 0 < bound <= ceiling:
            raise UpdateRejectedError(
                f"server sent update-norm-bound {bound!r} outside (0, {ceiling:g}] "
                "(validation.update_norm_bound): refusing"
            )
        if kind != "none":
            # a malicious client runs its own code: no clipping, no range check
            update = attacks.tamper_update(update, kind, scale=cfg.attack.scale)
            if cfg.attack.norm_bounded:
                update, _ = clip_update(update, bound)
            norm = float("nan")
        else:
            update, norm = clip_update(update, bound)
            # the server may add noise, never less than the σ this node's policy checked implies
            noise_std = max(_server_float(config, "dp-noise-std", 0.0), self._user_noise_std())
            if noise_std > 0:
                update = [
                    (u + noise.gaussian(tuple(u.shape), noise_std)).astype(np.float32)
                    for u in update
                ]
            if cfg.secagg.enabled:
                peak = max(float(np.max(np.abs(u))) for u in update)
                if peak > cfg.secagg.clipping_range:
                    raise UpdateRejectedError(
                        f"update coordinate {peak:.3g} outside secagg.clipping_range "
                        f"{cfg.secagg.clipping_range}: refusing to let SecAgg+ clip it silently"
                    )
        if cfg.secagg.enabled:
            # equal weights: self-reported example counts are ignored under SecAgg+,
            # and no per-client metric leaves the client
            n = 10**6 if kind == "free_rider" else 1
            return update, n, {}
        n = 10**6 if kind == "free_rider" else min(result.num_examples, cfg.validation.max_examples)
        if kind != "none" and cfg.attack.claimed_examples:
            n = cfg.attack.claimed_examples
        metrics: dict[str, Any] = {
            PARTITION_KEY: self.partition_id,
            "train-loss": result.loss,
            "update-norm": norm,
        }
        return update, n, metrics

    def _user_noise_std(self) -> float:
        """User-level DP noise per coordinate from the run's σ (the one the node policy checked):
        σC/√t under SecAgg+ (``t`` = reconstruction threshold), σC without (as
        :func:`saip_fl.dp.user_level_plan`)."""
        cfg = self.cfg
        if cfg.dp.mode != "user":
            return 0.0
        std = float(cfg.dp.noise_multiplier or 0.0) * cfg.validation.update_norm_bound
        return std / math.sqrt(cfg.secagg.reconstruction_threshold) if cfg.secagg.enabled else std

    def _fedsgd_share(
        self, model: Any, data: Dataset, config: dict[str, Any], noise: NoiseSource
    ) -> tuple[list[np.ndarray], int, dict[str, Any]]:
        """Distributed DP-FedSGD: ``-lr/B × (Σ clipped per-example gradients + noise share)``.

        The share ``N(0, σ²C²/t)`` (``t`` = reconstruction threshold) is sized so that the SecAgg+
        sum over any ``t`` surviving members carries ``N(0, σ²C²)``; nothing non-linear is applied
        after the noise (a clip would break the sum argument), so the range check refuses instead.
        """
        cfg = self.cfg
        sigma = _server_float(config, "dp-noise-multiplier", math.nan)
        rate = _server_float(config, "dp-sample-rate", math.nan)
        self.policy.check_dp(sigma, rate)
        share = sigma * cfg.dp.max_grad_norm / math.sqrt(cfg.secagg.reconstruction_threshold)
        batch = _server_float(config, "dp-expected-batch", math.nan)
        if batch <= 0:
            raise UpdateRejectedError(f"server sent a non-positive dp-expected-batch {batch!r}")
        scale = -cfg.learning_rate / batch
        sums, _, _ = clipped_gradient_sum(
            model, data, sample_rate=rate, max_grad_norm=cfg.dp.max_grad_norm, noise=noise
        )
        update = [
            (scale * (s + noise.gaussian(tuple(s.shape), share))).astype(np.float32) for s in sums
        ]
        peak = max(float(np.max(np.abs(u))) for u in update)
        if peak > cfg.secagg.clipping_range:
            raise UpdateRejectedError(
                f"update coordinate {peak:.3g} outside secagg.clipping_range "
                f"{cfg.secagg.clipping_range}: refusing to let SecAgg+ clip it silently"
            )
        return update, 1, {}


def _server_float(config: Mapping[str, Any], key: str, default: float) -> float:
    """A number from the server's fit config: finite and >= 0, else a typed refusal (a missing
    key without a default, ``math.nan``, is refused too)."""
    raw = config.get(key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(raw, bool) or not (math.isfinite(value) and value >= 0):
        raise UpdateRejectedError(f"server sent a malformed {key} {raw!r}: refusing")
    return value


def client_fn(context: Context) -> Client:
    """Build the client of this node from Flower's ``run_config`` and ``node_config``.

    ``node_config["partition-id"]`` selects the local shard (simulation sets it; in deployment
    start the SuperNode with ``--node-config "partition-id=N num-partitions=M"``).
    """
    cfg = RunConfig.from_flower(dict(context.run_config))
    if "partition-id" not in context.node_config:
        raise FLConfigError(
            "node_config lacks 'partition-id' (start the SuperNode with --node-config)"
        )
    pid = int(context.node_config["partition-id"])
    policy = NodePolicy.from_node_config(context.node_config)
    if policy.require_secagg and not cfg.secagg.enabled:
        raise FLConfigError("node policy saip-require-secagg: the run has secagg.enabled=false")
    return SaipClient(cfg, pid, policy=policy).to_client()


def dpsgd_schedule(cfg: RunConfig, n_examples: int) -> tuple[float, float, int]:
    """``(noise_multiplier, sample_rate, steps_per_round)`` of DP-SGD for ``n_examples`` samples."""
    q, steps = dp.dpsgd_steps(n_examples, batch_size=cfg.batch_size, epochs=cfg.local_epochs)
    if cfg.dp.sample_rate is not None:
        q, steps = cfg.dp.sample_rate, cfg.local_epochs * math.ceil(1 / cfg.dp.sample_rate)
    if cfg.dp.mode == "distributed":
        steps = 1  # one clipped-gradient step per round
    sigma = cfg.dp.noise_multiplier or dp.dpsgd_noise_multiplier(
        target_epsilon=cfg.dp.target_epsilon,
        delta=cfg.dp.delta,
        sample_rate=q,
        steps=steps * cfg.num_rounds,
        accountant=cfg.dp.accountant,
    )
    return sigma, q, steps
