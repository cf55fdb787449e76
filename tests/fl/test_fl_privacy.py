"""Privacy and honesty of a run (issue #15, items 1–7), without Ray and without a full run.

Attacker first: the server chooses every run setting, so each test asks what it could learn or
force with that power — regenerate the DP noise from the seed, brute-force a 32-bit mask seed,
claim a huge example count, lower a client's safeguards, or report an untrained model as trained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower_prg
from saip.cli import main
from saip_fl import dp, secagg_prg, validation
from saip_fl.client import NodePolicy, SaipClient
from saip_fl.config import validate_run_config
from saip_fl.errors import FLConfigError, PrivacyGuaranteeError, UpdateRejectedError
from saip_fl.model import flatten, l2_norm
from saip_fl.noise import NoiseSource
from saip_fl.server import RoundRecord, RunLog, SaipStrategy, outcome, preflight

SECAGG = {"enabled": True, "num_shares": 5, "reconstruction_threshold": 3, "groups": 2}


def _score_kw(root: list[np.ndarray]) -> dict[str, Any]:
    """Arguments of ``validation.score_group`` around ``root`` with a loss that never rises."""
    d = root[0].size
    return {
        "shapes": [(d,)],
        "root_update": root,
        "global_weights": [np.zeros(d, np.float32)],
        "holdout_loss": lambda w: 0.0,
        "base_loss": 0.0,
        "norm_bound": 3.0,
        "clipping_range": 8.0,
        "min_cosine": 0.0,
        "loss_tolerance": 0.1,
    }


# ------------------------------------------------------------------ 1. noise from the OS
def test_fl_secure_noise_differs_between_sources_and_has_the_right_law() -> None:
    a = NoiseSource.secure().gaussian((20000,), 2.0)
    b = NoiseSource.secure().gaussian((20000,), 2.0)
    assert not np.allclose(a, b)
    assert abs(float(a.mean())) < 0.05
    assert float(a.std()) == pytest.approx(2.0, rel=0.03)
    u = NoiseSource.secure().uniform(20000)
    assert u.min() > 0
    assert u.max() < 1
    assert float(NoiseSource.secure().bernoulli(20000, 0.25).mean()) == pytest.approx(
        0.25, abs=0.02
    )
    # the test-only path is reproducible, which is exactly why the CLI refuses it
    s1 = NoiseSource.insecure_for_tests(7).gaussian((5,), 1.0)
    s2 = NoiseSource.insecure_for_tests(7).gaussian((5,), 1.0)
    assert np.array_equal(s1, s2)
    assert not NoiseSource.insecure_for_tests(7).is_secure
    with pytest.raises(TypeError):
        NoiseSource()


def _fit_twice(cfg_over: dict[str, object], config: dict[str, object]) -> tuple[np.ndarray, ...]:
    cfg = validate_run_config({"num_clients": 10, **cfg_over})
    client = SaipClient(cfg, 3)
    params = client.get_parameters({})
    first = flatten(client.fit(params, {"server-round": 1, **config})[0])
    second = flatten(client.fit(params, {"server-round": 1, **config})[0])
    return first, second


@pytest.mark.parametrize("mode", ["user", "dpsgd"])
def test_fl_two_runs_with_identical_config_give_different_noise(mode: str) -> None:
    """The server knows seed, round and partition: with seeded noise it strips the noise exactly
    (residual ≈ 1e-8 before the fix). Same config twice must now give different updates."""
    if mode == "user":
        over: dict[str, object] = {"dp": {"mode": "user", "noise_multiplier": 1.0}}
        config: dict[str, object] = {"dp-noise-std": 0.05}
    else:
        over = {"dp": {"mode": "dpsgd"}}
        config = {"dp-noise-multiplier": 1.0, "dp-sample-rate": 0.25}
    first, second = _fit_twice(over, config)
    assert float(np.linalg.norm(first - second)) > 1e-2
    # with the test-only fixed seed the two runs coincide (that is what the server would exploit)
    seeded = dict(over)
    seeded["dp"] = {**over["dp"], "insecure_noise_seed": 1}  # type: ignore[dict-item]
    a, b = _fit_twice(seeded, config)
    assert np.allclose(a, b, atol=1e-6)


def test_fl_cli_refuses_the_test_only_noise_seed(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "seeded.toml"
    cfg.write_text('[dp]\nmode = "dpsgd"\ninsecure_noise_seed = 3\n', encoding="utf-8")
    for cmd in ("check", "run"):
        rc = main(["--data-dir", str(tmp_path / "d"), "fl", cmd, "--config", str(cfg)])
        assert rc == 1
        assert "insecure_noise_seed" in capsys.readouterr().err
    assert not (tmp_path / "d" / "fl").exists()


# ------------------------------------------------------------------ 2. user-level DP honesty
def test_fl_user_level_dp_that_cannot_train_is_refused_at_start(tmp_path: Path, capsys) -> None:
    """σ=1, C=3, groups of 5 on a 4,810-parameter MLP: the group mean's noise norm is ≈ 40 against
    a signal bounded by 3 — every group was rejected and the run "succeeded" untrained."""
    over = {"num_clients": 10, "secagg": SECAGG, "dp": {"mode": "user", "noise_multiplier": 1.0}}
    with pytest.raises(PrivacyGuaranteeError, match="cannot train"):
        preflight(validate_run_config(over))
    cfg = tmp_path / "user.toml"
    cfg.write_text(
        "num_clients = 10\n[secagg]\nenabled = true\ngroups = 2\nnum_shares = 5\n"
        'reconstruction_threshold = 3\n[dp]\nmode = "user"\nnoise_multiplier = 1.0\n',
        encoding="utf-8",
    )
    assert main(["--data-dir", str(tmp_path / "d"), "fl", "check", "--config", str(cfg)]) == 1
    assert "cannot train" in capsys.readouterr().err


def test_fl_user_level_noise_shares_are_sized_for_the_reconstruction_threshold() -> None:
    def plan_for(threshold: int | None, clipping_range: float | None) -> dp.UserLevelPlan:
        return dp.user_level_plan(
            noise_multiplier=1.0,
            norm_bound=3.0,
            num_params=100,
            group_size=1000,
            threshold=threshold,
            clipping_range=clipping_range,
        )

    plan = plan_for(600, 8.0)
    # any t survivors together carry at least σC of noise
    assert plan.share_std * math.sqrt(600) == pytest.approx(3.0)
    assert plan.aggregate_noise_norm < 3.0
    assert plan_for(None, None).share_std == pytest.approx(3.0)  # the server sees each update
    with pytest.raises(PrivacyGuaranteeError, match="clipping_range"):
        plan_for(600, 3.1)
    # the group check expects the noise: a noisy honest mean is not rejected for its norm
    noisy = [np.full(100, (3.0 + 1.2 * plan.aggregate_noise_norm) / 10, np.float32)]
    kw = _score_kw(noisy)
    assert not validation.score_group(0, noisy, **kw).accepted
    score = validation.score_group(0, noisy, noise_norm=plan.aggregate_noise_norm, **kw)
    assert score.accepted


# ------------------------------------------------------------------ 3. honest outcome
def test_fl_run_without_an_accepted_round_fails_and_many_rollbacks_degrade() -> None:
    def rounds(flags: list[bool]) -> list[RoundRecord]:
        return [RoundRecord(i + 1, rolled_back=f) for i, f in enumerate(flags)]

    failed = outcome(rounds([True, True, True]), max_rollback_fraction=0.5)
    assert failed is not None
    assert failed[0] == "failed"
    assert "no round was accepted" in failed[1]
    degraded = outcome(rounds([True, True, False]), max_rollback_fraction=0.5)
    assert degraded is not None
    assert degraded[0] == "degraded"
    assert outcome(rounds([True, False, False]), max_rollback_fraction=0.5) is None
    assert outcome([], max_rollback_fraction=0.5) == ("failed", "no round ran")


def test_fl_config_rejects_quantization_range_that_wraps_the_modulus() -> None:
    """2**30 × 5 members wraps SecAgg+'s 2**32 modulus: the sum is garbage, yet it 'succeeded'."""
    with pytest.raises(FLConfigError, match="2\\*\\*32"):
        validate_run_config({"secagg": {**SECAGG, "quantization_range": 2**30}})
    validate_run_config({"secagg": {**SECAGG, "quantization_range": 2**29}})  # 5 × 2**29 < 2**32


# ------------------------------------------------------------------ 4. SecAgg+ mask PRG
def test_fl_secagg_masks_use_the_whole_key() -> None:
    """Two keys with the same 32-bit XOR fold: Flower's generator gives identical masks (so 2³²
    guesses recover a pairwise mask); ours gives independent ones."""
    rng = np.random.default_rng(0)
    k1 = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
    words = bytearray(k1)
    for i in range(4):  # XOR the same value into two words: the fold is unchanged
        words[i] ^= 0x5A
        words[4 + i] ^= 0x5A
    k2 = bytes(words)
    dims = [(3, 4), (5,), ()]
    assert all(
        np.array_equal(a, b)
        for a, b in zip(flower_prg(k1, 2**32, dims), flower_prg(k2, 2**32, dims), strict=True)
    )
    m1, m2 = secagg_prg.mask_prg(k1, 2**32, dims), secagg_prg.mask_prg(k2, 2**32, dims)
    assert [m.shape for m in m1] == [(3, 4), (5,), ()]
    assert not np.array_equal(m1[0], m2[0])
    assert all(
        np.array_equal(a, b) for a, b in zip(m1, secagg_prg.mask_prg(k1, 2**32, dims), strict=True)
    )
    assert all(((m >= 0) & (m < 2**32)).all() for m in m1)
    import saip_fl.apps  # noqa: F401 - installs the generator on import (server and client side)

    assert secagg_prg.installed()


# ------------------------------------------------------------------ 5. example counts
def test_fl_inflated_example_counts_are_capped_at_the_median_and_ignored_by_krum() -> None:
    honest = [[np.ones(4, np.float32)] for _ in range(5)]
    attacker = [np.full(4, -20.0, np.float32)]
    counts = [66] * 5 + [1000]
    agg = validation.robust_aggregate("fedavg", [*honest, attacker], counts, max_examples=1000)
    # capped at the median (66): the attacker weighs as one client, not 1000/1330 of the mean
    assert agg[0][0] == pytest.approx((5 - 20) / 6, rel=1e-5)
    krum_equal = validation.robust_aggregate(
        "multikrum", [*honest, attacker], [1] * 6, max_examples=1000, num_malicious=0
    )
    krum_claim = validation.robust_aggregate(
        "multikrum", [*honest, attacker], counts, max_examples=1000, num_malicious=0
    )
    assert np.allclose(krum_equal[0], krum_claim[0])


# ------------------------------------------------------------------ 6. safeguards and records
def test_fl_clients_landing_in_rejected_groups_are_excluded() -> None:
    streaks = validation.GroupStreaks(exclude_after=3)
    for rnd in range(3):
        honest = [f"h{rnd}", f"h{rnd + 1}"]
        streaks.record(["bad", *honest], rejected=True)
        streaks.record([f"x{rnd}"], rejected=False)
        streaks.record(honest, rejected=False)  # the honest ones also land in good groups
    assert streaks.excluded() == {"bad"}
    assert "3 rounds in a row" in streaks.report()["bad"][0]


def test_fl_group_records_members_and_contributors() -> None:
    cfg = validate_run_config({"num_clients": 10, "secagg": SECAGG})
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    glob = strategy.global_weights
    good = [0.5 * r for r in strategy.root_update(glob, 1)]
    members = {0: [f"n{i}" for i in range(5)], 1: [f"m{i}" for i in range(5)]}
    strategy.combine_groups(1, glob, {0: good}, members, {1: "halted"}, {0: 5, 1: 2})
    groups = strategy.runlog.rounds[0].groups
    assert groups[0]["members"] == members[0]
    assert groups[0]["contributors"] == 5
    assert groups[1]["contributors"] == 2
    assert not groups[1]["accepted"]
    assert cfg.secagg.timeout == 120.0  # a silent client cannot stall a SecAgg+ stage forever


def test_fl_node_policy_cannot_be_lowered_by_the_server() -> None:
    policy = NodePolicy.from_node_config(
        {"saip-require-secagg": "true", "saip-min-noise-multiplier": 0.8}
    )
    with pytest.raises(UpdateRejectedError, match="saip-min-noise-multiplier"):
        policy.check_dp(0.5, 0.1)
    with pytest.raises(FLConfigError, match="saip-"):
        NodePolicy.from_node_config({"saip-min-noise-multiplier": "lots"})
    cfg = validate_run_config({"num_clients": 10})  # the server sends no DP at all
    client = SaipClient(cfg, 0, policy=policy)
    with pytest.raises(UpdateRejectedError, match="node policy"):
        client.fit(client.get_parameters({}), {"server-round": 1})


@pytest.fixture
def flower_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower 1.42 builds messages only inside a task: give the test one."""
    from flwr.supercore.task_identity import TaskIdentity

    for attr, value in (("_run_id", 1), ("_task_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def _client_mod_call(
    record: str, run_config: dict[str, str], node_config: dict[str, str]
) -> tuple[Any, list[Any]]:
    """Send a "train" request carrying config record ``record`` through saip's client mod."""
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from saip_fl.apps import _secagg_when_configured

    msg = Message(RecordDict({record: ConfigRecord({"server-round": 1})}), 1, "train")
    ctx = Context(1, 1, node_config, RecordDict(), run_config)  # type: ignore[arg-type]
    answered: list[Any] = []

    def call_next(m: Any, _ctx: Any) -> Any:
        answered.append(m)
        return m

    _secagg_when_configured(msg, ctx, call_next)
    return msg, answered


@pytest.mark.usefixtures("flower_task")
def test_fl_secagg_client_refuses_a_plain_training_request() -> None:
    # a server that wants individual updates sends "train" without the SecAgg+ config record
    with pytest.raises(FLConfigError, match="plain training request"):
        _client_mod_call("config", {"secagg.enabled": "True"}, {})
    # the node's own policy refuses even when the server's run_config says nothing of SecAgg+
    with pytest.raises(FLConfigError, match="saip-require-secagg"):
        _client_mod_call("config", {}, {"saip-require-secagg": "true"})
    msg, answered = _client_mod_call("config", {}, {})  # plain FL without SecAgg+: answered
    assert answered == [msg]


@pytest.mark.usefixtures("flower_task")
def test_fl_client_refuses_secagg_without_the_full_key_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # if Flower's 32-bit mask generator were back in place, a SecAgg+ request must be refused
    from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

    monkeypatch.setattr(secagg_prg, "installed", lambda: False)
    with pytest.raises(FLConfigError, match="32-bit"):
        _client_mod_call(RECORD_KEY_CONFIGS, {}, {})


def test_fl_node_policy_caps_the_sample_rate() -> None:
    policy = NodePolicy.from_node_config(
        {"saip-min-noise-multiplier": 0.8, "saip-max-sample-rate": 0.05}
    )
    with pytest.raises(UpdateRejectedError, match="saip-max-sample-rate"):
        policy.check_dp(1.0, 0.2)
    policy.check_dp(1.0, 0.05)  # at the node's limits: accepted


# ------------------------------------------------------------------ 7. accounting
def test_fl_prv_accountant_is_available_and_not_looser_than_rdp() -> None:
    kw = {"noise_multiplier": 1.0, "sample_rate": 0.25, "steps": 40, "delta": 1e-5}
    rdp = dp.epsilon(**kw)  # type: ignore[arg-type]
    prv = dp.epsilon(accountant="prv", **kw)  # type: ignore[arg-type]
    assert 0 < prv <= rdp * 1.01
    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 2,
            "dp": {"mode": "dpsgd", "accountant": "prv", "noise_multiplier": 1.2},
        }
    )
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    assert strategy.ledger is not None
    assert strategy.ledger.accountant == "prv"
    # the fit config carries the Poisson rate the accountant uses; the client samples at it
    assert strategy._fit_extra["dp-sample-rate"] == strategy.ledger.sample_rate


# ------------------------------------------------------------------ distributed DP-FedSGD
def test_fl_distributed_dp_needs_secagg_and_share_is_sized_for_the_threshold() -> None:
    with pytest.raises(FLConfigError, match=r"secagg\.enabled"):
        validate_run_config({"dp": {"mode": "distributed"}})
    cfg = validate_run_config(
        {"num_clients": 10, "secagg": SECAGG, "dp": {"mode": "distributed", "sample_rate": 0.5}}
    )
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    extra = strategy._fit_extra
    assert strategy.ledger is not None
    assert strategy.ledger.steps_per_round == 1  # one clipped-gradient step per round
    assert extra["dp-sample-rate"] == 0.5
    sigma, batch = float(extra["dp-noise-multiplier"]), float(extra["dp-expected-batch"])
    # a round that samples no record sends pure noise: its law is the share N(0, σ²C²/t)
    client = SaipClient(cfg, 2)
    params = client.get_parameters({})
    empty = {**extra, "server-round": 1, "dp-sample-rate": 1e-12}
    update, n, metrics = client.fit(params, empty)
    assert n == 1
    assert metrics == {}
    expected = cfg.learning_rate / batch * sigma * cfg.dp.max_grad_norm / math.sqrt(3)
    assert float(np.std(flatten(update))) == pytest.approx(expected, rel=0.08)
    # a real round: the mean gradient step plus the share, inside the SecAgg+ range
    real, _, _ = client.fit(params, {**extra, "server-round": 1})
    assert np.all(np.abs(flatten(real)) <= cfg.secagg.clipping_range)
    assert strategy.expected_noise_norm > 0


def test_fl_clipped_gradient_sum_bounds_each_example() -> None:
    from saip_fl.client import local_data
    from saip_fl.model import build_model, clipped_gradient_sum, l2_norm

    cfg = validate_run_config({"num_clients": 10})
    data = local_data(cfg, 0)
    model = build_model(data.num_features, data.num_classes, hidden=16, seed=0)
    sums, batch, loss = clipped_gradient_sum(
        model, data, sample_rate=1.0, max_grad_norm=0.01, noise=NoiseSource.secure()
    )
    assert batch == len(data.y)
    assert math.isfinite(loss)
    assert l2_norm(sums) <= batch * 0.01 + 1e-6  # each example contributes at most C
    assert all(p.grad is None for p in model.parameters())  # nothing left on the model
    # with a bound no gradient reaches, the sum is the plain gradient of the summed loss
    free, _, _ = clipped_gradient_sum(
        model, data, sample_rate=1.0, max_grad_norm=1e9, noise=NoiseSource.secure()
    )
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    torch.nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    for got, p in zip(free, model.parameters(), strict=True):
        assert np.allclose(got, p.grad.numpy(), atol=1e-3)


def test_fl_local_grid_reports_client_errors_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.clientapp import ClientApp
    from saip_fl.engine import NODE_BASE, LocalGrid

    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        if ctx.node_config["partition-id"] == 1:
            raise RuntimeError("client 1 broke")
        return Message(
            RecordDict({"c": ConfigRecord({"pid": ctx.node_config["partition-id"]})}), reply_to=msg
        )

    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    grid = LocalGrid(app, run_config={}, num_nodes=2, workers=2)
    msgs = [Message(RecordDict(), NODE_BASE + i, "train") for i in range(2)]
    replies = {m.metadata.src_node_id: m for m in grid.send_and_receive(msgs, timeout=30)}
    assert replies[NODE_BASE].content["c"]["pid"] == 0
    assert replies[NODE_BASE + 1].has_error()
    assert "client 1 broke" in replies[NODE_BASE + 1].error.reason
    grid.close()
    from flwr.supercore.run import RunNotRunningException

    with pytest.raises(RunNotRunningException):  # ends Flower's node-list poller thread
        grid.get_node_ids()


def test_fl_cli_exit_codes_for_degraded_and_failed_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A degraded run is a gate refusing the model (exit 3); a failed run is an error (exit 1)."""
    from saip_fl import runner
    from saip_fl.errors import FLError, RunDegradedError

    cfg = tmp_path / "run.toml"
    cfg.write_text("num_clients = 4\nnum_rounds = 2\n", encoding="utf-8")
    argv = ["--data-dir", str(tmp_path / "d"), "fl", "run", "--config", str(cfg)]
    for exc, code in ((RunDegradedError("3 of 4 rounds rolled back"), 3), (FLError("no round"), 1)):

        def fake_run(*args: object, _exc: Exception = exc, **kwargs: object) -> None:
            raise _exc

        monkeypatch.setattr(runner, "run", fake_run)
        assert main(argv) == code
        assert str(exc) in capsys.readouterr().err


def test_fl_noisy_group_aggregates_are_averaged_not_cosine_weighted() -> None:
    """Cosine weights on noise-dominated aggregates pick one group's noise (and a round whose
    accepted groups all have cosine ≤ 0 was rolled back: 13 of 30 DP rounds on the validation
    data). With DP noise expected, accepted groups are averaged with equal weights; the noise of
    the combination then has the std of one group divided by √k."""
    d, k, noise = 4000, 4, 0.02
    rng = np.random.default_rng(0)
    signal = np.full(d, 0.002, np.float32)
    groups = {g: [signal + rng.normal(0, noise, d).astype(np.float32)] for g in range(k)}
    kw = _score_kw([signal])
    noisy = {
        g: validation.score_group(g, u, noise_norm=noise * math.sqrt(d), **kw)
        for g, u in groups.items()
    }
    assert all(s.accepted and s.weight == 1.0 for s in noisy.values())
    combined = validation.combine_trusted(groups, noisy, [signal])
    assert combined is not None
    resid = combined[0] - signal
    assert float(np.std(resid)) == pytest.approx(noise / math.sqrt(k), rel=0.1)
    # without DP the cosine weighting (robustness against a poisoned group) is unchanged
    clean = validation.score_group(0, [signal * 2], **kw)
    assert clean.weight == pytest.approx(1.0)
    assert (
        validation.score_group(
            0, [signal + rng.normal(0, noise, d).astype(np.float32)], **kw
        ).weight
        < 0.5
    )


# ------------------------------------------------------------------ review: the server's numbers
def test_fl_server_cannot_lower_user_level_noise_below_the_node_policy() -> None:
    """The node checks σ from run_config against its policy, so the noise it adds must follow
    from that σ, not from a fit-config std the server may set to 0 (or omit)."""
    policy = NodePolicy.from_node_config({"saip-min-noise-multiplier": 1.0})
    cfg = validate_run_config(
        {"num_clients": 10, "dp": {"mode": "user", "noise_multiplier": 1.0, "allow_weak": True}}
    )
    client = SaipClient(cfg, 3, policy=policy)
    params = client.get_parameters({})
    plain = SaipClient(validate_run_config({"num_clients": 10}), 3)
    clean = l2_norm(plain.fit(params, {"server-round": 1})[0])
    for sent in ({}, {"dp-noise-std": 0.0}, {"dp-noise-std": 1e-9}):
        upd, _, _ = client.fit(params, {"server-round": 1, **sent})
        # σ·C = 3 per coordinate over thousands of coordinates: far above any clipped update
        assert l2_norm(upd) > 50 * max(clean, cfg.validation.update_norm_bound)
    for bad in (float("nan"), float("inf"), -1.0, "lots"):
        with pytest.raises(UpdateRejectedError, match="dp-noise-std"):
            client.fit(params, {"server-round": 1, "dp-noise-std": bad})


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5, 0.0, 1e9, "wide"])
def test_fl_client_refuses_a_malformed_or_looser_update_norm_bound(bad: object) -> None:
    client = SaipClient(validate_run_config({"num_clients": 10}), 1)
    with pytest.raises(UpdateRejectedError, match="update-norm-bound"):
        client.fit(client.get_parameters({}), {"server-round": 1, "update-norm-bound": bad})


@pytest.mark.parametrize(
    ("sigma", "rate"), [(float("nan"), 0.1), (1.0, float("nan")), (float("inf"), 0.1), (1.0, 0.0)]
)
def test_fl_node_policy_refuses_non_finite_dp_parameters(sigma: float, rate: float) -> None:
    policy = NodePolicy.from_node_config({"saip-min-noise-multiplier": 0.8})
    with pytest.raises(UpdateRejectedError, match="node policy"):
        policy.check_dp(sigma, rate)


def test_fl_noise_allowance_does_not_let_a_group_carry_a_crafted_vector() -> None:
    """Under DP noise accepted groups get equal weights, so the norm allowance for the noise must
    not leave room for a crafted vector: Gaussian noise of expected norm N in d dimensions has a
    norm within a few % of N, so an honest mean stays near sqrt(B² + N²), while the old linear
    allowance (B + 1.25 N) let a member add a fixed off-root vector of norm ≈ 1.3 B."""
    d, bound, noise_norm = 4810, 3.0, 2.09  # the DP-FedSGD benchmark's numbers (groups of 5)
    rng = np.random.default_rng(3)
    root = np.zeros(d, np.float32)
    root[: d // 2] = 1.0
    root *= np.float32(bound / np.linalg.norm(root))
    kw = _score_kw([root])

    def noise(scale: float = 1.0) -> np.ndarray:
        return rng.normal(0, scale * noise_norm / math.sqrt(d), d).astype(np.float32)

    crafted = np.zeros(d, np.float32)
    crafted[d // 2 :] = 1.0  # orthogonal to the root update: e.g. a backdoor direction
    crafted *= np.float32(4.0 / np.linalg.norm(crafted))
    attacked = [0.6 * root + noise(math.sqrt(4 / 5)) + crafted]  # attacker sent no noise share
    verdict = validation.score_group(0, attacked, noise_norm=noise_norm, **kw)
    assert not verdict.accepted
    assert "norm" in verdict.reason
    # honest noisy means at the signal bound are accepted, over many draws
    for _ in range(200):
        honest = [root * np.float32(1.0) + noise()]
        assert validation.score_group(0, honest, noise_norm=noise_norm, **kw).accepted


@pytest.mark.usefixtures("flower_task")
def test_fl_node_policy_refuses_the_grouped_plaintext_baseline() -> None:
    """``aggregation = "grouped_plaintext"`` (the server averages each group in the clear) is a
    plain training request like any other: a node requiring SecAgg+ never answers it, whatever
    the server's run_config says."""
    run_config = {"aggregation": "grouped_plaintext", "secagg.enabled": "False"}
    with pytest.raises(FLConfigError, match="saip-require-secagg"):
        _client_mod_call("config", run_config, {"saip-require-secagg": "true"})
