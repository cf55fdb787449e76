"""The benchmark baseline ``aggregation = "grouped_plaintext"`` and server-side torch threading.

``grouped_plaintext`` is grouped SecAgg+'s aggregation (same groups, FLTrust scoring, combination)
with the group means computed in the clear: the denominator of ``secagg_round_overhead``. It must
never be mistaken for, or mixed with, SecAgg+ (the server sees every update), and its group means
must be exactly what SecAgg+ would release (equal weights).
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from saip_fl import runner
from saip_fl.config import validate_run_config
from saip_fl.errors import FLConfigError
from saip_fl.server import _PlaintextGroupStrategy


def test_fl_grouped_plaintext_refuses_secagg_and_too_few_clients() -> None:
    """The clear-text baseline cannot be switched on next to SecAgg+ (it would bypass it)."""
    with pytest.raises(FLConfigError, match=r"cannot run with secagg\.enabled"):
        validate_run_config(
            {"num_clients": 10, "aggregation": "grouped_plaintext", "secagg": {"enabled": True}}
        )
    with pytest.raises(FLConfigError, match=r"at least secagg\.groups"):
        validate_run_config(
            {"num_clients": 3, "aggregation": "grouped_plaintext", "secagg": {"groups": 4}}
        )


def _res(arrays: list[np.ndarray], n: int = 1) -> FitRes:
    return FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, {})


def test_fl_plaintext_group_mean_is_equal_weighted_and_drops_unaddable_updates() -> None:
    """Equal weights as under SecAgg+ (self-reported counts ignored); NaN/mis-shaped updates are
    not averaged in (they would halt SecAgg+'s sum) and do not count as received."""
    shapes: list[tuple[int, ...]] = [(2, 2), (2,)]
    good = [
        [np.full((2, 2), 1.0, np.float32), np.full(2, 2.0, np.float32)],
        [np.full((2, 2), 3.0, np.float32), np.full(2, 4.0, np.float32)],
    ]
    nan = [np.full((2, 2), np.nan, np.float32), np.zeros(2, np.float32)]
    wrong = [np.zeros((3, 2), np.float32), np.zeros(2, np.float32)]
    capture = _PlaintextGroupStrategy([], shapes)
    results = [(None, _res(good[0], 1000)), (None, _res(good[1], 1))]
    results += [(None, _res(nan)), (None, _res(wrong))]
    capture.aggregate_fit(1, results, [])  # type: ignore[arg-type]
    assert capture.received == 2
    assert capture.result is not None
    np.testing.assert_allclose(capture.result[0], np.full((2, 2), 2.0))
    np.testing.assert_allclose(capture.result[1], np.full(2, 3.0))
    empty = _PlaintextGroupStrategy([], shapes)
    empty.aggregate_fit(1, [(None, _res(nan))], [])  # type: ignore[arg-type]
    assert empty.result is None
    assert empty.received == 0


def test_fl_grouped_plaintext_run_groups_scores_and_trains(tmp_path: Path) -> None:
    """Two groups of 5 every round; the attacker's group scores below the honest one and is
    dropped (holdout loss) as under grouped SecAgg+ with the same seed and attack."""
    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 2,
            "aggregation": "grouped_plaintext",
            "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
            "attack": {"kind": "flip_sign", "clients": [0], "scale": 10.0},
        }
    )
    res = runner.run(cfg, tmp_path / "run")
    rounds = res.metrics["rounds"]
    assert res.metrics["status"] == "ok"
    for r in rounds:
        assert len(r["groups"]) == 2
        assert sorted(m for g in r["groups"] for m in g["members"]) == sorted(
            {m for g in r["groups"] for m in g["members"]}
        )
        assert sum(g["size"] for g in r["groups"]) == 10
        attacked = next(g for g in r["groups"] if "1000" in g["members"])
        honest = next(g for g in r["groups"] if "1000" not in g["members"])
        assert honest["accepted"]
        assert attacked["cosine"] < honest["cosine"]
    assert not all(
        next(g for g in r["groups"] if "1000" in g["members"])["accepted"] for r in rounds
    )
    assert rounds[-1]["accuracy"] > 0.5


def test_fl_server_torch_work_runs_on_one_thread_and_restores_the_caller(tmp_path: Path) -> None:
    """The server's root update and holdout losses (tiny MLP) must not spin OpenMP threads on
    shared cores (30× their CPU time measured); the caller's thread setting comes back."""
    seen: list[int] = []
    from saip_fl import server

    orig = server.SaipStrategy.root_update

    def spy(self: server.SaipStrategy, *a: object, **k: object) -> object:
        seen.append(torch.get_num_threads())
        return orig(self, *a, **k)  # type: ignore[arg-type]

    before = torch.get_num_threads()
    server.SaipStrategy.root_update = spy  # type: ignore[method-assign,assignment]
    try:
        cfg = validate_run_config(
            {
                "num_clients": 10,
                "num_rounds": 1,
                "aggregation": "grouped_plaintext",
                "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
            }
        )
        runner.run(cfg, tmp_path / "run")
    finally:
        server.SaipStrategy.root_update = orig  # type: ignore[method-assign]
    assert seen
    assert set(seen) == {1}
    assert torch.get_num_threads() == before


def test_fl_run_freezes_the_warmed_up_heap_only_while_it_runs(tmp_path: Path) -> None:
    """From round 2 the warmed-up heap is exempt from full GC passes; the run undoes it, also
    when it fails in a later round, so the caller's process is left as it was."""
    from saip_fl import server
    from saip_fl.errors import FLError

    frozen: list[int] = []
    orig = server.SaipStrategy.root_update

    def spy(self: server.SaipStrategy, *a: object, **k: object) -> object:
        frozen.append(gc.get_freeze_count())
        if fail_in_round_2 and len(frozen) == 2:
            raise RuntimeError("injected failure in round 2")
        return orig(self, *a, **k)  # type: ignore[arg-type]

    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 2,
            "aggregation": "grouped_plaintext",
            "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
        }
    )
    server.SaipStrategy.root_update = spy  # type: ignore[method-assign,assignment]
    try:
        fail_in_round_2 = False
        runner.run(cfg, tmp_path / "ok")
        assert frozen[0] == 0
        assert frozen[-1] > 0
        assert gc.get_freeze_count() == 0
        frozen.clear()
        fail_in_round_2 = True
        with pytest.raises(FLError, match="injected failure"):
            runner.run(cfg, tmp_path / "failed")
    finally:
        server.SaipStrategy.root_update = orig  # type: ignore[method-assign]
    assert frozen[-1] > 0
    assert gc.get_freeze_count() == 0


def test_fl_run_leaves_a_callers_own_gc_freeze_in_place(tmp_path: Path) -> None:
    """A host process that froze its own heap (the pre-fork pattern ``gc.freeze`` exists for)
    must find it frozen after a run: ``gc.unfreeze`` cannot tell whose objects it thaws, so the
    run must not freeze (and later thaw) a permanent generation it did not start empty."""
    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 2,
            "aggregation": "grouped_plaintext",
            "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
        }
    )
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        runner.run(cfg, tmp_path / "run")
        assert gc.get_freeze_count() > frozen // 2  # objects freed meanwhile leave it
    finally:
        gc.unfreeze()


def test_fl_check_labels_grouped_plaintext_as_not_private(tmp_path: Path, capsys: Any) -> None:
    """ "grouped" reads like grouped SecAgg+: ``saip fl check`` must name the aggregation and say
    that the server sees every individual update."""
    from saip.cli import main

    cfg = tmp_path / "baseline.toml"
    cfg.write_text(
        'num_clients = 10\nnum_rounds = 2\naggregation = "grouped_plaintext"\n'
        "[secagg]\ngroups = 2\n"
        "num_shares = 5\nreconstruction_threshold = 3\n",
        encoding="utf-8",
    )
    assert main(["--data-dir", str(tmp_path / "d"), "fl", "check", "--config", str(cfg)]) == 0
    out = " ".join("".join(capsys.readouterr()).split())
    assert "aggregation=grouped_plaintext" in out
    assert "NOT private" in out
    assert "sees every individual update" in out
    # and ``saip fl run`` says it before it starts
    rc = main(["--data-dir", str(tmp_path / "d"), "fl", "run", "--config", str(cfg), "--name", "r"])
    assert rc == 0
    assert "NOT private" in " ".join("".join(capsys.readouterr()).split())


def test_fl_ctrl_c_right_after_the_heap_freeze_still_thaws_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT raises KeyboardInterrupt wherever the main thread is, including between
    ``gc.freeze()`` and the line that records it: the frozen heap must still be thawed."""
    real_freeze = gc.freeze

    def freeze_then_interrupt() -> None:
        real_freeze()
        raise KeyboardInterrupt("SIGINT")

    monkeypatch.setattr(gc, "freeze", freeze_then_interrupt)
    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 2,
            "aggregation": "grouped_plaintext",
            "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
        }
    )
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg, tmp_path / "run")
    assert gc.get_freeze_count() == 0


def test_fl_ctrl_c_right_after_the_thread_cut_restores_the_callers_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing just after the server cut torch to one thread must still give the
    caller its own intra-op thread count back."""
    real_set = torch.set_num_threads
    before = torch.get_num_threads()
    calls: list[int] = []

    def set_then_interrupt(n: int) -> None:
        real_set(n)
        calls.append(n)
        if len(calls) == 1:
            raise KeyboardInterrupt("SIGINT")

    cfg = validate_run_config(
        {
            "num_clients": 10,
            "num_rounds": 1,
            "aggregation": "grouped_plaintext",
            "secagg": {"groups": 2, "num_shares": 5, "reconstruction_threshold": 3},
        }
    )
    real_set(before + 1)
    try:
        monkeypatch.setattr(torch, "set_num_threads", set_then_interrupt)
        with pytest.raises(KeyboardInterrupt):
            runner.run(cfg, tmp_path / "run")
        assert calls[0] == 1
        assert torch.get_num_threads() == before + 1
    finally:
        monkeypatch.undo()
        real_set(before)
