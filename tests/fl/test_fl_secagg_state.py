"""SecAgg+ client state across rounds and the mod's fast ConfigRecord constructor.

The local engine keeps one Context per node for the whole run and SecAgg+'s client mod keeps its
protocol state in it: these tests check that this state is replaced, not accumulated, round after
round, and that :func:`saip_fl.secagg_prg.config_record` accepts and refuses exactly what
Flower's ``ConfigRecord`` does.
"""

from __future__ import annotations

import gc
import importlib
from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_fl import engine, secagg_prg
from saip_fl.server import _GroupStrategy

secagg_prg.install()


class _Client(NumPyClient):  # FAKE client for tests: returns a known update
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        return [np.full(33, self.pid, np.float32) / 10], 1, {}


def _round(grid: engine.LocalGrid, rnd: int) -> np.ndarray | None:
    params = ndarrays_to_parameters([np.zeros(33, np.float32)])
    proxies = [GridClientProxy(nid, grid, 1) for nid in grid.get_node_ids()]
    capture = _GroupStrategy([(p, FitIns(params, {})) for p in proxies])
    state = RecordDict()
    state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({"current_round": rnd})
    state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, True)
    ctx = LegacyContext(
        Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
        config=ServerConfig(num_rounds=rnd),
        strategy=capture,
        client_manager=SimpleClientManager(),
    )
    with engine.server_identity(1):
        SecAggPlusWorkflow(num_shares=5, reconstruction_threshold=3, max_weight=1.0)(grid, ctx)
    return capture.result[0] if capture.result else None


def _state_sizes(grid: engine.LocalGrid) -> list[tuple[int, int]]:
    return [
        (len(ctx.state), sum(len(r) for r in ctx.state.config_records.values()))
        for ctx in grid._contexts.values()
    ]


def test_fl_secagg_client_state_stays_bounded_across_rounds() -> None:
    """Each round replaces the node's SecAgg+ state (one record, same entries, fresh keys); no
    per-round objects survive the round (tracked-object count flat from round 2 on)."""

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        return _Client(int(context.node_config["partition-id"])).to_client()

    grid = engine.LocalGrid(
        ClientApp(client_fn=client_fn, mods=[secaggplus_mod]), run_config={}, num_nodes=5
    )
    try:
        sizes, objects, keys = [], [], []
        for rnd in range(1, 6):
            result = _round(grid, rnd)
            assert result is not None
            np.testing.assert_allclose(result, np.full(33, 0.2), atol=1e-4)
            sizes.append(_state_sizes(grid))
            first = next(iter(grid._contexts.values())).state.config_records
            keys.append(bytes(first["secaggplus_state"]["sk1"]))  # type: ignore[arg-type]
            gc.collect()
            objects.append(len(gc.get_objects()))
        assert all(s == sizes[0] for s in sizes)
        assert all(n == 1 for n, _ in sizes[0])
        assert len(set(keys)) == len(keys)  # a fresh key pair every round
        assert max(objects[2:]) - objects[1] < 200  # no growth with rounds
    finally:
        grid.close()


_SCALAR = st.one_of(
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
)
_ODD = st.one_of(
    st.none(),
    st.just(np.float64(1.5)),
    st.just(np.int64(3)),
    st.just({"a": 1}),
    st.just((1, 2)),
    st.just(bytearray(b"x")),
)
_VALUE = st.one_of(
    _SCALAR,
    _ODD,
    st.lists(_SCALAR, max_size=4),
    st.lists(st.one_of(st.integers(0, 3), st.booleans()), max_size=4),
    st.lists(st.one_of(_SCALAR, _ODD), max_size=3),
)


def _outcome(build: Any, config: dict[Any, Any]) -> tuple[str, Any]:
    try:
        record = build(dict(config))
    except Exception as exc:  # the same error type and message as Flower's
        return ("error", (type(exc), str(exc)))
    assert type(record) is ConfigRecord
    return ("ok", dict(record))


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 2)), _VALUE, max_size=4),
)
def test_fl_config_record_accepts_and_refuses_exactly_as_flower(config: dict[Any, Any]) -> None:
    assert _outcome(secagg_prg.config_record, config) == _outcome(ConfigRecord, config)


def test_fl_config_record_refuses_bad_values_and_consumes_input_like_flower() -> None:
    with pytest.raises(TypeError):
        secagg_prg.config_record({"k": None})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        secagg_prg.config_record({"k": [1, "a"]})  # type: ignore[list-item]
    with pytest.raises(TypeError):
        secagg_prg.config_record({1: 1})  # type: ignore[dict-item]
    given_dict: dict[str, Any] = {"a": 1, "b": [b"x"]}
    record = secagg_prg.config_record(given_dict, False)
    assert given_dict == {}
    assert dict(record) == {"a": 1, "b": [b"x"]}
    kept: dict[str, Any] = {"a": 1}
    secagg_prg.config_record(kept)
    assert kept == {"a": 1}
    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    assert mod.ConfigRecord is secagg_prg.config_record


def test_fl_engine_message_copy_shares_nothing_mutable() -> None:
    """Each node receives its own copy (SecAgg+'s mod pops keys from what it receives): the
    engine's copy equals the original and no change to it reaches the original."""
    from flwr.app import Array, ArrayRecord, Error, Message, MetricRecord

    content = RecordDict(
        {
            "cfg": ConfigRecord({"stage": "share_keys", "pks": [b"a", b"b"], "n": 3}),
            "met": MetricRecord({"loss": 0.5, "hist": [1.0, 2.0]}),
            "arr": ArrayRecord({"w": Array(np.arange(6, dtype=np.float32).reshape(2, 3))}),
        }
    )
    with engine.server_identity(1):
        msg = Message(content, 1001, "train", group_id="g")
    copied = engine.copy_message(msg)
    assert type(copied.content) is RecordDict
    assert {k: type(v) for k, v in copied.content.items()} == {
        k: type(v) for k, v in msg.content.items()
    }
    assert dict(copied.content["cfg"]) == dict(content["cfg"])
    assert dict(copied.content["met"]) == dict(content["met"])
    np.testing.assert_array_equal(
        copied.content.array_records["arr"]["w"].numpy(), np.arange(6).reshape(2, 3)
    )
    assert copied.metadata.__dict__ == msg.metadata.__dict__

    copied.content.config_records["cfg"].pop("stage")
    copied.content.config_records["cfg"]["pks"].append(b"c")  # type: ignore[union-attr]
    copied.content.metric_records["met"]["hist"].append(3.0)  # type: ignore[union-attr]
    copied.content.array_records["arr"]["w"].data = b""
    copied.content.array_records["arr"].clear()
    copied.content["new"] = ConfigRecord({"x": 1})
    copied.metadata.__dict__["_message_id"] = "changed"
    assert dict(content["cfg"]) == {"stage": "share_keys", "pks": [b"a", b"b"], "n": 3}
    assert dict(content["met"]) == {"loss": 0.5, "hist": [1.0, 2.0]}
    np.testing.assert_array_equal(content.array_records["arr"]["w"].numpy().ravel(), range(6))
    assert "new" not in content
    assert msg.metadata.message_id != "changed"

    failed = Message(Error(code=1, reason="boom"), reply_to=msg)
    copied_error = engine.copy_message(failed)
    assert copied_error.has_error()
    assert copied_error.error.reason == "boom"
    copied_error.error.__dict__["_reason"] = "other"
    assert failed.error.reason == "boom"
