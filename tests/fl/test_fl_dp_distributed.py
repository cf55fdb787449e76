"""Distributed DP-FedSGD: what the privacy claim depends on (issue #15, "DP that keeps accuracy").

Attacker first: the server reports ε from its accountant, but the clients run the mechanism. If
the two disagree — another sample rate, more gradient steps per round, a smaller noise multiplier,
or noise shares that no longer add up to σC once members drop out — the reported ε is a lie.
These tests run the real client code (with the test-only noise seed, so the tolerances are fixed)
and compare what it does with what the accountant assumed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from saip_fl import client as client_mod
from saip_fl import dp
from saip_fl.client import SaipClient
from saip_fl.config import validate_run_config
from saip_fl.errors import FLConfigError, UpdateRejectedError
from saip_fl.model import flatten, l2_norm
from saip_fl.server import RunLog, SaipStrategy

SECAGG = {"enabled": True, "num_shares": 5, "reconstruction_threshold": 3, "groups": 2}


def _distributed(**dp_over: Any) -> Any:
    return validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 20,
            "hidden": 16,
            "secagg": SECAGG,
            "dp": {"mode": "distributed", "sample_rate": 0.3, "insecure_noise_seed": 11, **dp_over},
        }
    )


def test_fl_distributed_accountant_uses_the_rate_steps_and_sigma_the_clients_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = _distributed()
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    ledger = strategy.ledger
    assert ledger is not None
    calls: list[tuple[float, float, int, int]] = []
    real = client_mod.clipped_gradient_sum

    def spy(model: Any, data: Any, **kw: Any) -> Any:
        out = real(model, data, **kw)
        calls.append((kw["sample_rate"], kw["max_grad_norm"], out[1], len(data.y)))
        return out

    monkeypatch.setattr(client_mod, "clipped_gradient_sum", spy)
    shares: list[float] = []
    real_gauss = client_mod.NoiseSource.gaussian

    def gauss(self: Any, shape: tuple[int, ...], std: float) -> Any:
        shares.append(std)
        return real_gauss(self, shape, std)

    monkeypatch.setattr(client_mod.NoiseSource, "gaussian", gauss)
    client = SaipClient(cfg, 4)
    params = client.get_parameters({})
    fits = 40
    for rnd in range(1, fits + 1):
        client.fit(params, {**strategy._fit_config(rnd)})
    # one clipped-gradient step per fit = the accountant's steps per round
    assert len(calls) == fits * ledger.steps_per_round
    # the client samples at exactly the accountant's rate and clips at C ...
    assert {c[0] for c in calls} == {ledger.sample_rate}
    assert {c[1] for c in calls} == {cfg.dp.max_grad_norm}
    # ... and its Poisson batches have that rate (binomial, 4 standard deviations)
    drawn, offered = sum(c[2] for c in calls), sum(c[3] for c in calls)
    q = ledger.sample_rate
    assert abs(drawn / offered - q) < 4 * math.sqrt(q * (1 - q) / offered)
    # the noise share is σC/√t with the accountant's σ
    t = cfg.secagg.reconstruction_threshold
    share = ledger.noise_multiplier * cfg.dp.max_grad_norm / math.sqrt(t)
    assert len(shares) == fits * 4  # one share per parameter array (hidden MLP: 4 arrays)
    assert all(s == pytest.approx(share) for s in shares)
    # ε reported after the run = that mechanism composed num_rounds times, within the target
    for _ in range(cfg.num_rounds):
        ledger.step_round()
    expected = dp.epsilon(
        noise_multiplier=ledger.noise_multiplier,
        sample_rate=q,
        steps=cfg.num_rounds,
        delta=cfg.dp.delta,
    )
    assert ledger.epsilon == pytest.approx(expected)
    assert expected <= cfg.dp.target_epsilon * 1.001


def test_fl_distributed_group_sum_carries_sigma_c_down_to_the_threshold() -> None:
    """Sum the real clients' noise shares over t survivors (the fewest SecAgg+ can unmask) and
    over all m members: the group sum's noise is N(0, σ²C²) resp. N(0, σ²C²·m/t), never less."""
    cfg = _distributed()
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    extra = strategy._fit_extra
    sigma, batch = float(extra["dp-noise-multiplier"]), float(extra["dp-expected-batch"])
    sc = sigma * cfg.dp.max_grad_norm
    members = [SaipClient(cfg, i) for i in range(5)]
    params = members[0].get_parameters({})
    t = cfg.secagg.reconstruction_threshold
    survivors_t: list[np.ndarray] = []
    survivors_all: list[np.ndarray] = []
    for rnd in range(1, 16):
        # a round that samples no record: each update is its noise share, scaled by -lr/B
        conf = {**extra, "server-round": rnd, "dp-sample-rate": 1e-12}
        ups = [flatten(m.fit(params, conf)[0]) * (-batch / cfg.learning_rate) for m in members]
        survivors_t.append(np.sum(ups[:t], axis=0))  # m - t members dropped out
        survivors_all.append(np.sum(ups, axis=0))
    at_t, full = np.concatenate(survivors_t), np.concatenate(survivors_all)
    assert at_t.size > 15_000
    # fixed tolerances: std of a sample std ≈ 1/√(2n) ≈ 0.6 %; 3 % is > 5 standard deviations
    assert float(np.std(at_t)) == pytest.approx(sc, rel=0.03)
    assert abs(float(np.mean(at_t))) < 0.03 * sc
    assert float(np.std(full)) == pytest.approx(sc * math.sqrt(5 / t), rel=0.03)
    # the accountant assumed exactly σC on a group sum: the threshold case meets it, no more
    assert strategy.ledger is not None
    assert strategy.ledger.noise_multiplier == pytest.approx(sigma)


def test_fl_server_momentum_is_post_processing_and_needs_secagg() -> None:
    plain = SaipStrategy(_distributed(), RunLog(config={}, path=None))
    moved = SaipStrategy(_distributed(server_momentum=0.5), RunLog(config={}, path=None))
    assert plain.ledger is not None
    assert moved.ledger is not None
    assert (moved.ledger.noise_multiplier, moved.ledger.sample_rate) == (
        plain.ledger.noise_multiplier,
        plain.ledger.sample_rate,
    )
    assert moved._fit_extra == plain._fit_extra  # the clients run the same mechanism
    step = [np.ones(3, np.float32)]
    assert np.allclose(moved.server_step(step)[0], 1.0)  # no velocity yet
    moved.velocity = [np.full(3, 2.0, np.float32)]
    assert np.allclose(moved.server_step(step)[0], 2.0)  # 1 + 0.5 × 2
    with pytest.raises(FLConfigError, match="server_momentum"):
        validate_run_config({"dp": {"server_momentum": 0.5}})


def test_fl_server_learning_rate_is_post_processing_and_follows_its_schedule() -> None:
    plain = SaipStrategy(_distributed(), RunLog(config={}, path=None))
    tuned = SaipStrategy(
        _distributed(server_learning_rate=3.0, server_lr_schedule="cosine", server_momentum=0.5),
        RunLog(config={}, path=None),
    )
    assert plain.ledger is not None
    assert tuned.ledger is not None
    # the clients run exactly the same mechanism, accounted the same way
    assert tuned._fit_extra == plain._fit_extra
    assert (tuned.ledger.noise_multiplier, tuned.ledger.sample_rate) == (
        plain.ledger.noise_multiplier,
        plain.ledger.sample_rate,
    )
    assert tuned.expected_noise_norm == plain.expected_noise_norm  # group checks unchanged
    # cosine: η at round 1, η/2 halfway, → 0 at the end; constant: η every round
    rounds = tuned.cfg.num_rounds
    assert tuned.server_lr(1) == pytest.approx(3.0)
    assert tuned.server_lr(rounds // 2 + 1) == pytest.approx(1.5)
    assert 0 < tuned.server_lr(rounds) < tuned.server_lr(rounds - 1)
    assert [plain.server_lr(r) for r in (1, rounds)] == [1.0, 1.0]
    step = [np.ones(3, np.float32)]
    assert np.allclose(plain.server_step(step, rnd=rounds)[0], 1.0)
    assert np.allclose(tuned.server_step(step, rnd=1)[0], 3.0)  # no velocity yet
    tuned.velocity = [np.full(3, 2.0, np.float32)]
    assert np.allclose(tuned.server_step(step, rnd=rounds // 2 + 1)[0], 1.5 + 0.5 * 2.0)


def test_fl_group_noise_allowance_follows_the_survivors() -> None:
    """A group mean over fewer survivors (dropouts down to the threshold) carries more noise:
    the honest group is still accepted, while the planned size keeps the tight allowance."""
    cfg = validate_run_config(
        {
            "num_clients": 20,
            "num_rounds": 30,
            "hidden": 64,
            "learning_rate": 2.0,
            "secagg": {**SECAGG, "groups": 4, "loss_tolerance": 100.0},  # norm check only
            "dp": {"mode": "distributed", "sample_rate": 0.5},
        }
    )  # the DP-FedSGD benchmark's setting: noise of the size of the signal
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    planned = strategy.expected_noise_norm
    assert planned > 1.0
    size = strategy.noise_group_size
    t = strategy.cfg.secagg.reconstruction_threshold
    assert strategy.group_noise_norm(0) == planned
    assert strategy.group_noise_norm(size) == pytest.approx(planned)
    assert strategy.group_noise_norm(t) == pytest.approx(planned * np.sqrt(size / t))
    glob = strategy.global_weights
    root, bound = strategy.round_root(glob, 1)
    rng = np.random.default_rng(4)
    d = sum(w.size for w in glob)
    noisy = [
        r * np.float32(bound / l2_norm(root))
        + rng.normal(0, strategy.group_noise_norm(t) / np.sqrt(d), r.shape).astype(np.float32)
        for r in root
    ]
    members = {0: [f"n{i}" for i in range(size)]}
    strategy.combine_groups(1, glob, {0: noisy}, members, {}, {0: t})
    assert strategy.runlog.rounds[-1].groups[0]["accepted"], strategy.runlog.rounds[-1].groups[0][
        "reason"
    ]


@pytest.mark.parametrize(
    "sent",
    [
        {"dp-expected-batch": float("nan")},
        {"dp-expected-batch": 0.0},
        {"dp-expected-batch": -4.0},
        {"dp-noise-multiplier": None},
    ],
)
def test_fl_distributed_client_refuses_malformed_server_numbers(sent: dict[str, Any]) -> None:
    """A NaN batch made an all-NaN update that passed the clipping-range check (NaN > x is
    false); a missing σ was a bare KeyError."""
    cfg = _distributed()
    client = SaipClient(cfg, 0)
    config: dict[str, Any] = {
        "server-round": 1,
        "dp-noise-multiplier": 1.0,
        "dp-sample-rate": 0.3,
        "dp-expected-batch": 10.0,
    }
    config.update(sent)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(UpdateRejectedError, match="dp-"):
        client.fit(client.get_parameters({}), config)


@pytest.mark.parametrize("eta", [0.25, 3.0])
def test_fl_server_learning_rate_never_scales_what_the_group_checks_see(eta: float) -> None:
    """η is applied to the combined, already-checked aggregate only: a group mean above the norm
    bound is rejected whatever η (η < 1 must not shrink it under the bound), one inside it is
    scored on its own norm (η > 1 must not push it over), and the step is η × the combination."""
    base = validate_run_config({"num_clients": 10, "num_rounds": 3, "secagg": SECAGG})
    scaled = validate_run_config(
        {"num_clients": 10, "num_rounds": 3, "secagg": SECAGG, "dp": {"server_learning_rate": eta}}
    )
    members = {0: [f"a{i}" for i in range(5)], 1: [f"b{i}" for i in range(5)]}
    outcomes = []
    for cfg in (base, scaled):
        strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
        glob = strategy.global_weights
        root, bound = strategy.round_root(glob, 1)
        unit = bound / l2_norm(root)
        groups = {0: [0.05 * unit * r for r in root], 1: [1.05 * unit * r for r in root]}
        new = strategy.combine_groups(1, glob, groups, members, {})
        rec = strategy.runlog.rounds[-1]
        outcomes.append(([(g["accepted"], round(g["norm"], 6)) for g in rec.groups], new, glob))
    (plain_groups, new1, glob), (scaled_groups, new_eta, _) = outcomes
    assert plain_groups == scaled_groups
    assert [a for a, _ in plain_groups] == [True, False]
    assert new1 is not None
    assert new_eta is not None
    for w1, we, g in zip(new1, new_eta, glob, strict=True):
        np.testing.assert_allclose(we - g, eta * (w1 - g), rtol=1e-3, atol=1e-6)
