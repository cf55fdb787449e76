"""Unit tests of saip_fl without Ray: config guards, data, model, DP, validation, attacks."""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import pytest
import torch
from saip_fl import attacks, dp, validation
from saip_fl.config import RunConfig, load_run_config, validate_run_config
from saip_fl.data import (
    Dataset,
    apply_filter,
    client_partition,
    load_dataset,
    partition_dirichlet,
    partition_iid,
    split_dataset,
)
from saip_fl.errors import FLConfigError, PrivacyGuaranteeError
from saip_fl.model import (
    build_model,
    clip_update,
    delta,
    evaluate,
    get_weights,
    l2_norm,
    set_weights,
    train,
    train_dpsgd,
    weights_from_bytes,
    weights_to_bytes,
)
from saip_fl.noise import NoiseSource

SECAGG = {"enabled": True, "num_shares": 5, "reconstruction_threshold": 3, "groups": 2}


# ----------------------------------------------------------------------------- config guards
def test_fl_config_rejects_unknown_key_by_name() -> None:
    with pytest.raises(FLConfigError, match=r"unknown setting 'secagg\.num_share'"):
        validate_run_config({"secagg": {"num_share": 5}})


def test_fl_config_rejects_even_num_shares() -> None:
    with pytest.raises(FLConfigError, match="num_shares=4 is even"):
        validate_run_config({"secagg": {**SECAGG, "num_shares": 4}})


def test_fl_config_rejects_threshold_at_or_below_half() -> None:
    with pytest.raises(FLConfigError, match="above half the shares"):
        validate_run_config({"secagg": {**SECAGG, "reconstruction_threshold": 2}})


@pytest.mark.parametrize("rule", ["krum", "multikrum", "median", "trimmed_mean", "bulyan"])
def test_fl_config_rejects_per_client_rule_with_secagg(rule: str) -> None:
    with pytest.raises(FLConfigError, match="silently replaces a per-client robust rule by FedAvg"):
        validate_run_config({"aggregation": rule, "secagg": SECAGG})
    # the same rule without SecAgg+ is accepted: the refusal is about the combination
    assert validate_run_config({"aggregation": rule}).aggregation == rule


def test_fl_config_rejects_norm_bound_outside_clipping_range() -> None:
    with pytest.raises(FLConfigError, match=r"exceeds secagg\.clipping_range"):
        validate_run_config(
            {"secagg": {**SECAGG, "clipping_range": 1.0}, "validation": {"update_norm_bound": 3.0}}
        )


def test_fl_config_rejects_groups_smaller_than_shares() -> None:
    with pytest.raises(FLConfigError, match=r"fewer than secagg\.num_shares"):
        validate_run_config({"num_clients": 10, "secagg": {**SECAGG, "groups": 3}})


def test_fl_config_rejects_attackers_out_of_range_and_bad_dataset() -> None:
    with pytest.raises(FLConfigError, match=r"outside 0\.\.9"):
        validate_run_config({"attack": {"kind": "nan", "clients": [12]}})
    with pytest.raises(FLConfigError, match="setting 'dataset'"):
        validate_run_config({"dataset": "cifar"})


def test_fl_config_flower_round_trip_and_empty_run_config() -> None:
    cfg = validate_run_config(
        {
            "secagg": SECAGG,
            "attack": {"kind": "sign_flip", "clients": [1, 3]},
            "dp": {"mode": "dpsgd"},
        }
    )
    flat = cfg.to_flower()
    assert flat["secagg.num-shares"] == 5
    assert flat["attack.clients"] == "1,3"
    assert all(isinstance(v, bool | int | float | str) for v in flat.values())
    again = RunConfig.from_flower({**flat, "out-dir": "/x", "run-token": "t"})
    assert again == cfg
    with pytest.raises(FLConfigError, match="lacks 'num-clients'"):
        RunConfig.from_flower({})


def test_fl_config_file_errors(tmp_path) -> None:
    with pytest.raises(FLConfigError, match="not found"):
        load_run_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("num_rounds = [", encoding="utf-8")
    with pytest.raises(FLConfigError, match="cannot be parsed"):
        load_run_config(bad)
    ok = tmp_path / "ok.toml"
    ok.write_text(
        "num_rounds = 2\n[secagg]\nenabled = true\nnum_shares = 5\nreconstruction_threshold = 3\n",
        encoding="utf-8",
    )
    assert load_run_config(ok).secagg.num_shares == 5


# ----------------------------------------------------------------------------- data
def test_fl_data_digits_split_and_partitions_are_disjoint_and_deterministic() -> None:
    data = load_dataset("digits")
    assert data.x.shape == (1797, 64)
    assert data.x.min() >= 0
    assert data.x.max() <= 1
    split = split_dataset(data, test_fraction=0.2, root_size=100, seed=0)
    assert len(split.test.y) + len(split.root.y) + len(split.pool.y) == 1797
    parts = partition_iid(len(split.pool.y), 10, seed=1)
    flat = np.concatenate(parts)
    assert len(np.unique(flat)) == len(flat) == len(split.pool.y)
    a = client_partition(split, 3, 10, kind="iid", alpha=0.5, seed=0)
    b = client_partition(split, 3, 10, kind="iid", alpha=0.5, seed=0)
    assert np.array_equal(a.y, b.y)


def test_fl_data_dirichlet_is_skewed() -> None:
    y = np.repeat(np.arange(10), 100).astype(np.int64)
    parts = partition_dirichlet(y, 10, alpha=0.1, seed=0)
    assert sum(len(p) for p in parts) == 1000
    # with alpha=0.1 most clients are dominated by few classes
    top_share = [np.bincount(y[p], minlength=10).max() / len(p) for p in parts]
    assert np.median(top_share) > 0.5
    iid_share = [
        np.bincount(y[p], minlength=10).max() / len(p) for p in partition_iid(1000, 10, seed=0)
    ]
    assert np.median(iid_share) < 0.25


def test_fl_data_npz_and_filter(tmp_path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.random((50, 16)), y=rng.integers(0, 3, 50))
    data = load_dataset(f"npz:{path}")
    assert data.image_side == 4
    assert data.num_classes <= 3
    kept = apply_filter(data, data.y != 0)
    assert np.all(kept.y != 0)
    with pytest.raises(FLConfigError, match="bool mask"):
        apply_filter(data, np.ones(3, dtype=bool))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.full((3, 4), np.nan), y=np.zeros(3, dtype=int))
    with pytest.raises(FLConfigError, match="non-finite"):
        load_dataset(f"npz:{bad}")


def test_fl_data_mnist5k_loads() -> None:
    data = load_dataset("mnist5k")
    assert data.x.shape == (5000, 784)
    assert data.image_side == 28


# ----------------------------------------------------------------------------- model
def _digits_split():
    return split_dataset(load_dataset("digits"), test_fraction=0.2, root_size=100, seed=0)


def test_fl_model_trains_and_weights_round_trip() -> None:
    split = _digits_split()
    model = build_model(64, 10, hidden=32, seed=0)
    before = evaluate(model, split.test)
    train(model, split.pool, epochs=2, batch_size=32, lr=0.1, seed=0)
    loss, acc = evaluate(model, split.test)
    assert acc > 0.85
    assert loss < before[0]
    w = get_weights(model)
    other = build_model(64, 10, hidden=32, seed=1)
    set_weights(other, weights_from_bytes(weights_to_bytes(w)))
    assert evaluate(other, split.test)[1] == pytest.approx(acc)


def test_fl_model_clip_update_bounds_norm() -> None:
    upd = [np.full((3, 4), 2.0, np.float32), np.ones(5, np.float32)]
    clipped, norm = clip_update(upd, 1.5)
    assert norm == pytest.approx(math.sqrt(12 * 4 + 5))
    assert l2_norm(clipped) == pytest.approx(1.5, rel=1e-5)
    small, _ = clip_update(clipped, 10.0)
    assert l2_norm(small) == pytest.approx(1.5, rel=1e-5)


def test_fl_dpsgd_training_learns_with_opacus() -> None:
    split = _digits_split()
    model = build_model(64, 10, hidden=32, seed=0)
    start = get_weights(model)
    q = 64 / len(split.pool.y)
    res = train_dpsgd(
        model,
        split.pool,
        epochs=2,
        sample_rate=q,
        lr=0.5,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        noise=NoiseSource.secure(),
    )
    assert res.noise_multiplier == 1.0
    # Poisson sampling at exactly the rate the accountant uses, ceil(1/q) steps per epoch
    assert res.sample_rate == q
    assert res.steps == 2 * math.ceil(1 / q)
    assert l2_norm(delta(get_weights(model), start)) > 0
    assert evaluate(model, split.test)[1] > 0.5


# ----------------------------------------------------------------------------- DP accounting
def test_fl_dp_noise_calibration_reaches_target_epsilon() -> None:
    q, steps = dp.dpsgd_steps(70, batch_size=16, epochs=2)
    sigma = dp.dpsgd_noise_multiplier(
        target_epsilon=8.0, delta=1e-5, sample_rate=q, steps=steps * 10
    )
    eps = dp.epsilon(noise_multiplier=sigma, sample_rate=q, steps=steps * 10, delta=1e-5)
    assert eps <= 8.0
    assert eps > 7.0
    ledger = dp.PrivacyLedger(sigma, q, steps, 1e-5)
    per_round = [ledger.step_round() for _ in range(10)]
    assert all(a < b for a, b in itertools.pairwise(per_round))
    assert per_round[-1] == pytest.approx(eps)


def test_fl_dp_weak_guarantee_refused_or_loudly_warned(caplog) -> None:
    weak = dp.epsilon(noise_multiplier=0.3, sample_rate=1.0, steps=20, delta=1e-5)
    with pytest.raises(PrivacyGuaranteeError, match="no meaningful guarantee"):
        dp.check_guarantee(
            epsilon_total=weak, delta=1e-5, num_records=100, max_epsilon=10, allow_weak=False
        )
    with caplog.at_level(logging.WARNING):
        msg = dp.check_guarantee(
            epsilon_total=weak, delta=1e-5, num_records=100, max_epsilon=10, allow_weak=True
        )
    assert msg
    assert "no meaningful guarantee" in caplog.text
    with pytest.raises(PrivacyGuaranteeError, match="not below 1/n"):
        dp.check_guarantee(
            epsilon_total=1.0, delta=0.1, num_records=100, max_epsilon=10, allow_weak=False
        )
    assert (
        dp.check_guarantee(
            epsilon_total=2.0, delta=1e-5, num_records=100, max_epsilon=10, allow_weak=False
        )
        is None
    )


def test_fl_dp_strategy_refuses_weak_user_level_noise() -> None:
    from saip_fl.server import RunLog, SaipStrategy

    cfg = validate_run_config({"num_rounds": 50, "dp": {"mode": "user", "noise_multiplier": 0.3}})
    with pytest.raises(PrivacyGuaranteeError):
        SaipStrategy(cfg, RunLog(config={}, path=None))


# ----------------------------------------------------------------------------- validation
def _honest(n: int, rng: np.random.Generator) -> list[list[np.ndarray]]:
    base = rng.normal(size=(4, 3)).astype(np.float32)
    return [[(base + 0.1 * rng.normal(size=(4, 3))).astype(np.float32)] for _ in range(n)]


def test_fl_screen_updates_rejects_nan_shape_norm_direction_and_free_rider() -> None:
    rng = np.random.default_rng(0)
    honest = _honest(6, rng)
    updates = {f"h{i}": u for i, u in enumerate(honest)}
    updates["nan"] = [np.full((4, 3), np.nan, np.float32)]
    updates["shape"] = [np.zeros((3, 3), np.float32)]
    updates["big"] = [honest[0][0] * 100]
    updates["flip"] = [-honest[0][0]]
    updates["zero"] = [np.zeros((4, 3), np.float32)]
    res = validation.screen_updates(updates, shapes=[(4, 3)], norm_bound=10.0, min_cosine=0.0)
    assert set(res.accepted) == {f"h{i}" for i in range(6)}
    assert "NaN" in res.rejected["nan"]
    assert "shape" in res.rejected["shape"]
    assert "norm" in res.rejected["big"]
    assert "cosine" in res.rejected["flip"]
    assert "free-rider" in res.rejected["zero"]


@pytest.mark.parametrize(
    "rule", ["fedavg", "krum", "multikrum", "median", "trimmed_mean", "bulyan"]
)
def test_fl_robust_rules_resist_one_outlier(rule: str) -> None:
    rng = np.random.default_rng(1)
    honest = _honest(8, rng)
    outlier = [honest[0][0] * -50]
    agg = validation.robust_aggregate(
        rule, [*honest, outlier], [10] * 9, max_examples=100, num_malicious=1, trim_fraction=0.2
    )
    mean = np.mean([h[0] for h in honest], axis=0)
    err = float(np.linalg.norm(agg[0] - mean))
    if rule == "fedavg":
        assert err > 5  # plain FedAvg is dragged away: the baseline
    else:
        assert err < 1.0


def test_fl_fedavg_caps_self_reported_counts() -> None:
    a = [np.ones(2, np.float32)]
    b = [np.zeros(2, np.float32)]
    agg = validation.robust_aggregate("fedavg", [a, b], [10, 10**6], max_examples=10)
    assert agg[0] == pytest.approx([0.5, 0.5])


def test_fl_reputation_excludes_repeat_offenders() -> None:
    rep = validation.ClientReputation(exclude_after=2)
    rep.record("c1", "norm")
    assert rep.excluded() == set()
    rep.record("c1", "cosine")
    rep.record("c2", "nan")
    assert rep.excluded() == {"c1"}
    assert rep.report() == {"c1": ["norm", "cosine"]}


def test_fl_group_scoring_drops_bad_group_and_combines_trusted() -> None:
    rng = np.random.default_rng(2)
    root = [rng.normal(size=(4, 3)).astype(np.float32)]
    good = [root[0] + 0.1 * rng.normal(size=(4, 3)).astype(np.float32)]
    bad = [-root[0]]
    glob = [np.zeros((4, 3), np.float32)]

    def loss(w: list[np.ndarray]) -> float:  # quadratic loss with minimum at +root
        return float(np.sum((w[0] - root[0]) ** 2))

    base = loss(glob)
    kw = {
        "shapes": [(4, 3)],
        "root_update": root,
        "global_weights": glob,
        "holdout_loss": loss,
        "base_loss": base,
        "norm_bound": 100.0,
        "clipping_range": 8.0,
        "min_cosine": 0.0,
        "loss_tolerance": 0.0,
    }
    s_good = validation.score_group(0, good, **kw)
    s_bad = validation.score_group(1, bad, **kw)
    s_range = validation.score_group(2, [root[0] * 0 + 9.0], **kw)
    assert s_good.accepted
    assert not s_bad.accepted
    assert "cosine" in s_bad.reason
    assert not s_range.accepted
    assert "clipping range" in s_range.reason
    combined = validation.combine_trusted({0: good, 1: bad}, {0: s_good, 1: s_bad}, root)
    assert combined is not None
    assert validation.cosine(combined, root) > 0.9
    assert validation.combine_trusted({1: bad}, {1: s_bad}, root) is None


# ----------------------------------------------------------------------------- attacks
def test_fl_attacks_poison_and_tamper() -> None:
    data = Dataset(np.zeros((20, 64), np.float32), np.arange(20, dtype=np.int64) % 10, 10, 8)
    flipped = attacks.poison_data(
        data, "label_flip", target_label=0, poison_fraction=0.5, trigger_size=2, seed=0
    )
    assert np.array_equal(flipped.y, 9 - data.y)
    bd = attacks.poison_data(
        data, "backdoor", target_label=0, poison_fraction=0.5, trigger_size=2, seed=0
    )
    stamped = bd.x.reshape(20, 8, 8)[:, -2:, -2:].reshape(20, -1).min(axis=1) == 1.0
    assert stamped.sum() == 10
    assert np.all(bd.y[stamped] == 0)
    upd = [np.ones(3, np.float32)]
    assert attacks.tamper_update(upd, "sign_flip", scale=10)[0][0] == -10
    assert attacks.tamper_update(upd, "scale", scale=5)[0][0] == 5
    assert np.isnan(attacks.tamper_update(upd, "nan", scale=1)[0]).all()
    assert not attacks.tamper_update(upd, "free_rider", scale=1)[0].any()


def test_fl_backdoor_asr_measures_trigger_effect() -> None:
    test = Dataset(np.zeros((30, 64), np.float32), (np.arange(30) % 10).astype(np.int64), 10, 8)

    def always_target(x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), dtype=np.int64)

    def trigger_blind(x: np.ndarray) -> np.ndarray:
        return np.ones(len(x), dtype=np.int64)

    assert attacks.attack_success_rate(always_target, test, target_label=0, trigger_size=2) == 1.0
    assert attacks.attack_success_rate(trigger_blind, test, target_label=0, trigger_size=2) == 0.0


def test_fl_honest_client_refuses_update_outside_clipping_range_and_dropout_raises() -> None:
    from saip_fl.client import SaipClient
    from saip_fl.errors import UpdateRejectedError

    torch.manual_seed(0)
    cfg = validate_run_config(
        {"num_clients": 10, "secagg": SECAGG, "attack": {"kind": "dropout", "clients": [1]}}
    )
    honest = SaipClient(cfg, 0)
    params = honest.get_parameters({})
    upd, n, metrics = honest.fit(params, {"server-round": 1})
    assert n == 1
    assert metrics == {}
    assert l2_norm(upd) <= cfg.validation.update_norm_bound + 1e-4
    with pytest.raises(UpdateRejectedError, match="clipping_range"):
        honest.fit(params, {"server-round": 1, "dp-noise-std": 50.0})
    with pytest.raises(attacks.SimulatedDropout):
        SaipClient(cfg, 1).fit(params, {"server-round": 1})
