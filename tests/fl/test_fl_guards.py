"""The halted-protocol guard and the grouped workflow's bookkeeping, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.common import ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from saip_fl.config import validate_run_config
from saip_fl.errors import ProtocolHaltedError
from saip_fl.model import add
from saip_fl.server import GuardedFitWorkflow, RunLog, SaipStrategy


def _context(strategy: SaipStrategy) -> LegacyContext:
    state = RecordDict()
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: 1})
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
        ndarrays_to_parameters(strategy.global_weights), keep_input=True
    )
    base = Context(run_id=1, node_id=0, node_config={}, state=state, run_config={})
    return LegacyContext(base, config=ServerConfig(num_rounds=1), strategy=strategy)


def _strategy(**over: object) -> SaipStrategy:
    cfg = validate_run_config({"num_clients": 10, **over})
    return SaipStrategy(cfg, RunLog(config={}, path=None))


def test_fl_guard_fails_a_round_without_aggregate() -> None:
    """What Flower does on a SecAgg+ halt — log and return — becomes a ProtocolHaltedError."""
    strategy = _strategy(
        secagg={"enabled": True, "num_shares": 5, "reconstruction_threshold": 3, "groups": 2}
    )
    ctx = _context(strategy)

    def halted(grid: object, context: Context) -> None:
        strategy.runlog.current(1).failures = 3

    with pytest.raises(ProtocolHaltedError, match="no aggregate was produced"):
        GuardedFitWorkflow(halted, strategy)(None, ctx)  # type: ignore[arg-type]


def test_fl_guard_fails_when_aggregate_leaves_model_unchanged() -> None:
    strategy = _strategy()
    ctx = _context(strategy)

    def no_change(grid: object, context: Context) -> None:
        strategy.runlog.current(1).aggregate_received = True

    with pytest.raises(ProtocolHaltedError, match="unchanged"):
        GuardedFitWorkflow(no_change, strategy)(None, ctx)  # type: ignore[arg-type]


def test_fl_guard_accepts_rollback_and_real_update() -> None:
    strategy = _strategy()
    ctx = _context(strategy)

    def rollback(grid: object, context: Context) -> None:
        rec = strategy.runlog.current(1)
        rec.aggregate_received = rec.rolled_back = True

    GuardedFitWorkflow(rollback, strategy)(None, ctx)  # type: ignore[arg-type]

    def update(grid: object, context: Context) -> None:
        strategy.runlog.current(1).aggregate_received = True
        new = add(strategy.global_weights, [np.ones_like(w) for w in strategy.global_weights], 0.01)
        context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
            ndarrays_to_parameters(new), keep_input=True
        )

    GuardedFitWorkflow(update, strategy)(None, ctx)  # type: ignore[arg-type]
    assert strategy.runlog.rounds[0].seconds >= 0


def test_fl_combine_groups_drops_attacker_group_and_rolls_back_when_all_bad() -> None:
    strategy = _strategy(
        secagg={"enabled": True, "num_shares": 5, "reconstruction_threshold": 3, "groups": 2}
    )
    glob = strategy.global_weights
    root = strategy.root_update(glob, 1)
    good = [0.5 * r for r in root]
    bad = [-3.0 * r for r in root]
    new = strategy.combine_groups(1, glob, {0: good, 1: bad}, {0: ["a"] * 5, 1: ["b"] * 5}, {})
    assert new is not None
    rec = strategy.runlog.rounds[0]
    assert rec.accepted == 1
    assert "group 1" in rec.rejected
    assert not rec.rolled_back
    new2 = strategy.combine_groups(
        2, glob, {1: bad}, {0: ["a"] * 5, 1: ["b"] * 5}, {0: "SecAgg+ halted"}
    )
    rec2 = strategy.runlog.rounds[1]
    assert new2 is None
    assert rec2.rolled_back
    assert "protocol failed" in rec2.rejected["group 0"]
