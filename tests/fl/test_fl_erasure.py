"""Post-training backdoor erasure on the server's clean root data (``secagg.erase_ridge``).

Attacker first: norm-bounded backdoor clients hide inside SecAgg+ group means that pass every
check the server can run on them; the server projects the final model's first layer onto the
input subspace its clean root data spans (Fine-Pruning's "remove what clean data leaves dormant",
Liu et al. 2018, applied to input directions), which cuts the trigger off. Then the clean case:
an honest federation keeps its accuracy; then the edges (a rolled-back last round is still
erased; unsafe settings are refused at start-up, naming the setting).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from saip_fl import runner
from saip_fl.config import validate_run_config
from saip_fl.data import Dataset
from saip_fl.erasure import project_input_layer
from saip_fl.errors import FLConfigError, FLError
from saip_fl.server import RunLog, SaipStrategy

GROUPED: dict[str, Any] = {
    "enabled": True,
    "groups": 2,
    "num_shares": 5,
    "reconstruction_threshold": 3,
    "erase_ridge": 0.05,
}
#: 10 clients in 2 SecAgg+ groups of 5, 4 rounds: a few seconds on the local engine
SMALL: dict[str, Any] = {"num_clients": 10, "num_rounds": 4, "local_epochs": 2, "seed": 1}


def _run(overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = validate_run_config({**SMALL, "secagg": GROUPED, **overrides})
    with tempfile.TemporaryDirectory(prefix="saip-erase-") as tmp:
        res = runner.run(cfg, Path(tmp))
    return res.metrics


@pytest.mark.slow
def test_fl_erasure_suppresses_a_norm_bounded_backdoor_under_grouped_secagg() -> None:
    # 3 of 10 clients plant a 2x2 trigger -> label 0, boosted then clipped to the norm bound:
    # every group holds one at least once, and no group check can see it
    attack = {"kind": "backdoor", "clients": [0, 1, 2], "scale": 5.0, "norm_bounded": True}
    metrics = _run({"attack": attack})
    rounds = metrics["rounds"]
    assert metrics["status"] == "ok"
    # the backdoor is in the model the federation trained (before the erasure) ...
    assert rounds[-2]["backdoor_asr"] >= 0.3
    assert not rounds[-2]["erased"]
    # ... and not in the model the run ends with
    assert rounds[-1]["erased"]
    assert metrics["final"]["backdoor_asr"] < 0.10
    assert metrics["final"]["accuracy"] >= 0.85


@pytest.mark.slow
def test_fl_erasure_keeps_a_clean_federation_accurate() -> None:
    metrics = _run({})
    rounds = metrics["rounds"]
    assert metrics["status"] == "ok"
    assert rounds[-1]["erased"]
    assert metrics["final"]["accuracy"] >= 0.85
    # the erasure moves the clean accuracy by a few points at most
    assert metrics["final"]["accuracy"] >= rounds[-2]["accuracy"] - 0.03


def test_fl_projection_cuts_an_unused_input_direction_and_keeps_the_clean_function() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 8)).astype(np.float32)
    x[:, 6:] = 0.0  # the clean data never uses the last two inputs (a blank image corner)
    clean = Dataset(x, rng.integers(0, 3, 200).astype(np.int64), 3, None)
    w1 = rng.normal(size=(5, 8)).astype(np.float32)
    w1[:, 6:] = 20.0  # a trigger on the unused inputs drives every hidden unit
    weights = [
        w1,
        rng.normal(size=5).astype(np.float32),
        rng.normal(size=(3, 5)).astype(np.float32),
    ]
    out = project_input_layer(weights, clean, ridge=0.01)
    assert np.abs(out[0][:, 6:]).max() < 1e-6
    before = x @ w1.T + weights[1]
    after = x @ out[0].T + out[1]
    # on clean inputs the first layer barely moves (variance 1/12 per input >> ridge 0.01)
    assert np.abs(after - before).max() < 0.15 * np.abs(before).max()
    trigger = np.zeros((1, 8), np.float32)
    trigger[0, 6:] = 1.0
    assert np.abs(trigger @ out[0].T).max() < 1e-5  # the trigger no longer reaches the layer
    np.testing.assert_array_equal(out[2], weights[2])
    assert out[2] is not weights[2]  # copies, the input is not modified
    assert np.abs(weights[0][:, 6:]).min() == 20.0


@pytest.mark.parametrize("ridge", [0.0, -1.0, float("nan"), float("inf")])
def test_fl_projection_refuses_a_bad_ridge(ridge: float) -> None:
    clean = Dataset(np.zeros((10, 2), np.float32), np.zeros(10, np.int64), 2, None)
    weights = [np.ones((3, 2), np.float32), np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match="ridge"):
        project_input_layer(weights, clean, ridge=ridge)


def test_fl_projection_refuses_mismatched_shapes_and_too_little_clean_data() -> None:
    clean = Dataset(np.zeros((10, 2), np.float32), np.zeros(10, np.int64), 2, None)
    with pytest.raises(ValueError, match="do not match"):
        project_input_layer([np.ones((3, 4), np.float32), np.zeros(3, np.float32)], clean, ridge=1)
    few = Dataset(np.zeros((2, 2), np.float32), np.zeros(2, np.int64), 2, None)
    with pytest.raises(ValueError, match="singular"):
        project_input_layer([np.ones((3, 2), np.float32), np.zeros(3, np.float32)], few, ridge=1)


def test_fl_last_round_is_erased_even_when_its_aggregate_is_rolled_back() -> None:
    """A rejected last round must not ship the unerased model (the backdoor would survive)."""
    cfg = validate_run_config({"num_clients": 10, "num_rounds": 3, "secagg": GROUPED})
    strategy = SaipStrategy(cfg, RunLog(config={}, path=None))
    glob = strategy.global_weights
    members = {0: [f"a{i}" for i in range(5)], 1: [f"b{i}" for i in range(5)]}
    for rnd in (2, 3):
        root, _ = strategy.round_root(glob, rnd)
        rejected = {g: [100.0 * r for r in root] for g in members}  # above the norm bound
        new = strategy.combine_groups(rnd, glob, rejected, members, {})
        rec = strategy.runlog.rounds[-1]
        assert rec.rolled_back
        if rnd < cfg.num_rounds:
            assert new is None
            assert not rec.erased
        else:
            assert new is not None
            assert rec.erased
            assert not np.array_equal(new[0], glob[0])
            np.testing.assert_array_equal(new[2], glob[2])


@pytest.mark.parametrize("ridge", [-0.1, 0.6])
def test_fl_erasure_setting_is_validated_by_name(ridge: float) -> None:
    with pytest.raises(FLConfigError, match=r"secagg\.erase_ridge"):
        validate_run_config({"num_clients": 10, "secagg": {**GROUPED, "erase_ridge": ridge}})


def test_fl_erasure_refused_without_secagg_or_with_too_little_root_data() -> None:
    with pytest.raises(FLConfigError, match="erase_ridge"):
        validate_run_config({"num_clients": 10, "secagg": {"erase_ridge": 0.05}})
    # digits has 64 features: 60 root samples give a singular covariance
    cfg = validate_run_config({"num_clients": 10, "root_size": 60, "secagg": GROUPED})
    with pytest.raises(FLConfigError, match="root samples"):
        SaipStrategy(cfg, RunLog(config={}, path=None))


@pytest.mark.slow
def test_fl_erasure_that_wipes_the_model_fails_the_run_instead_of_sealing_it() -> None:
    """``erase_ridge = 0.5`` is accepted (the cap is tuned on digits; MNIST's pixel variances are
    smaller still) but cuts the clean accuracy of this run from ≈ 0.94 to ≈ 0.82 and doubles the
    holdout loss: the erased model is checked on the holdout and the run fails, naming the
    setting, instead of ending ``ok`` with a model the erasure wrecked."""
    cfg = validate_run_config({**SMALL, "secagg": {**GROUPED, "erase_ridge": 0.5}})
    with tempfile.TemporaryDirectory(prefix="saip-erase-") as tmp:
        with pytest.raises(FLError, match=r"secagg\.erase_ridge") as info:
            runner.run(cfg, Path(tmp))
        assert not (Path(tmp) / "model.npz").exists()
        metrics = json.loads((Path(tmp) / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "erase_max_loss_increase" in str(info.value)


def test_fl_erasure_check_setting_is_validated_by_name() -> None:
    with pytest.raises(FLConfigError, match=r"secagg\.erase_max_loss_increase"):
        validate_run_config(
            {"num_clients": 10, "secagg": {**GROUPED, "erase_max_loss_increase": -1}}
        )


def test_fl_projection_keeps_a_trigger_on_inputs_the_clean_data_uses() -> None:
    """The stated limit, measured: a blended trigger (a direction along which the clean inputs
    vary a lot) passes the projection almost unchanged, unlike a patch on blank inputs."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 0.4, size=(400, 16)).astype(np.float32)  # variance 0.16 ≫ λ
    x[:, -2:] = 0.0  # two inputs the clean data never uses
    clean = Dataset(x, np.zeros(400, dtype=np.int64), 2, 4)
    blended = np.full(16, 0.25, dtype=np.float32)
    blended[-2:] = 0.0
    patch = np.zeros(16, dtype=np.float32)
    patch[-2:] = 1.0
    w = [np.stack([blended, patch]), np.zeros(2, np.float32), np.eye(2, dtype=np.float32)]
    erased = project_input_layer(w, clean, ridge=0.05)
    assert np.linalg.norm(erased[0][0]) > 0.7 * np.linalg.norm(blended)  # survives
    assert np.linalg.norm(erased[0][1]) < 1e-3  # cut


@pytest.mark.parametrize("ridge", [1e-6, 1e-3, 0.01])
def test_fl_erasure_too_weak_to_erase_is_refused_not_reported_as_erased(ridge: float) -> None:
    """A ridge far below the clean variance of the trigger's pixels leaves the projection ≈ I
    there: seed-1 probe runs at λ = 1e-4 / 1e-3 / 1e-2 ended ``ok``, ``erased``, with ASR
    0.23 / 0.61 / 0.25 (0.03 at 0.05). A setting that cannot do what it claims is refused."""
    with pytest.raises(FLConfigError, match=r"secagg\.erase_ridge"):
        validate_run_config({"num_clients": 10, "secagg": {**GROUPED, "erase_ridge": ridge}})
