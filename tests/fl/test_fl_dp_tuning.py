"""Settings that help DP train (issue #15): tanh activations and a server learning rate
(its post-processing test sits with the other distributed-DP tests).

Hostile first: a setting that does not exist, or that the run would silently ignore, is refused
naming the setting; the server-side knobs change nothing the clients run (post-processing), so
they cannot weaken the privacy guarantee.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from saip_fl.config import validate_run_config
from saip_fl.data import load_dataset, split_dataset
from saip_fl.errors import FLConfigError
from saip_fl.model import build_model, evaluate, get_weights, train_dpsgd
from saip_fl.noise import NoiseSource
from torch import nn


@pytest.mark.parametrize(
    ("data", "setting"),
    [
        ({"activation": "sigmoid"}, "activation"),
        ({"activation": ""}, "activation"),
        ({"dp": {"server_learning_rate": 0}}, "dp.server_learning_rate"),
        ({"dp": {"server_learning_rate": -1.0}}, "dp.server_learning_rate"),
        ({"dp": {"server_learning_rate": math.inf}}, "dp.server_learning_rate"),
        ({"dp": {"server_learning_rate": 1000.0}}, "dp.server_learning_rate"),
        ({"dp": {"server_lr_schedule": "linear"}}, "dp.server_lr_schedule"),
    ],
)
def test_fl_dp_tuning_settings_refuse_bad_values_naming_the_setting(
    data: dict[str, Any], setting: str
) -> None:
    with pytest.raises(FLConfigError, match=f"setting '{setting}'"):
        validate_run_config(data)


@pytest.mark.parametrize(
    "dp_over",
    [{"server_learning_rate": 2.0}, {"server_lr_schedule": "cosine"}, {"server_momentum": 0.5}],
)
def test_fl_server_learning_rate_without_secagg_is_refused_not_ignored(
    dp_over: dict[str, Any],
) -> None:
    name = next(iter(dp_over))
    with pytest.raises(FLConfigError, match=f"dp.{name} .*needs secagg.enabled"):
        validate_run_config({"dp": {"mode": "dpsgd", **dp_over}})


def test_fl_activation_travels_through_flower_run_config_and_builds_tanh() -> None:
    cfg = validate_run_config({"activation": "tanh", "hidden": 8})
    flat = cfg.to_flower()
    assert flat["activation"] == "tanh"
    assert type(cfg).from_flower(flat).activation == "tanh"
    model = build_model(64, 10, hidden=8, activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    with pytest.raises(ValueError, match="activation"):
        build_model(64, 10, activation="gelu")
    # the same seed gives the same weights whatever the activation (it has no parameters)
    relu = get_weights(build_model(64, 10, hidden=8, seed=3))
    tanh = get_weights(build_model(64, 10, hidden=8, seed=3, activation="tanh"))
    assert all(np.array_equal(a, b) for a, b in zip(relu, tanh, strict=True))


def test_fl_dpsgd_trains_a_tanh_model_and_keeps_its_architecture() -> None:
    split = split_dataset(load_dataset("digits"), test_fraction=0.2, root_size=100, seed=0)
    model = build_model(64, 10, hidden=16, activation="tanh")
    start = evaluate(model, split.test)[1]
    train_dpsgd(
        model,
        split.pool,
        epochs=2,
        sample_rate=64 / len(split.pool.y),
        lr=0.5,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        noise=NoiseSource.secure(),
    )
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert evaluate(model, split.test)[1] > max(0.5, start)


def test_fl_dpsgd_full_batch_rate_is_the_one_accounted_and_its_noise_is_os_keyed() -> None:
    """The DP-SGD recipe (q = 1, one step per round): the accountant and the client use the same
    q and step count, q = 1 really takes every record, ε stays on target without subsampling
    amplification, and two identical runs draw different noise."""
    from saip_fl import dp
    from saip_fl.client import dpsgd_schedule

    cfg = validate_run_config(
        {"num_clients": 10, "num_rounds": 200, "dp": {"mode": "dpsgd", "sample_rate": 1.0}}
    )
    sigma, q, steps = dpsgd_schedule(cfg, 66)
    assert (q, steps) == (1.0, cfg.local_epochs)
    eps = dp.epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps * 200, delta=cfg.dp.delta)
    assert 7.0 < eps <= cfg.dp.target_epsilon + 1e-6
    assert NoiseSource.secure().bernoulli(100_000, 1.0).all()
    split = split_dataset(load_dataset("digits"), test_fraction=0.2, root_size=100, seed=0)
    data = split.pool.subset(np.arange(66))
    runs = []
    for _ in range(2):
        model = build_model(64, 10, hidden=8, seed=1, activation="tanh")
        res = train_dpsgd(
            model,
            data,
            epochs=steps,
            sample_rate=q,
            lr=0.5,
            noise_multiplier=sigma,
            max_grad_norm=1.0,
            noise=NoiseSource.secure(),
        )
        assert (res.steps, res.sample_rate) == (steps, 1.0)
        runs.append(get_weights(model))
    assert not np.array_equal(runs[0][0], runs[1][0])
