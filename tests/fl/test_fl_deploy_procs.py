"""Process management of saip_fl.deploy: every process group is stopped, even detached ones.

The trees here are small Python programs that behave like Flower's: a parent that starts a child
in a NEW session (as ``flower-superlink`` starts ``flower-superexec``), and a process that
ignores SIGTERM. No Flower process is needed, so these tests are fast.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
from saip_fl import deploy
from saip_fl.deploy import DeploymentError, LocalFederation, ProcessSupervisor

# parent prints the PID of a grandchild it starts in a new session, then sleeps
_DETACHING_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"],
                         start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""
_IGNORES_SIGTERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    info = deploy._read_proc(pid)
    return info is not None and not info.zombie


def _wait_for_line(log: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if text.strip():
            return text.strip().splitlines()[0]
        time.sleep(0.05)
    raise AssertionError(f"no output in {log}")


def test_detached_grandchild_is_tracked_and_stopped(tmp_path: Path) -> None:
    sup = ProcessSupervisor(run_dir=tmp_path, env=os.environ, grace=2)
    started = sup.start("parent", [sys.executable, "-c", _DETACHING_PARENT], log=tmp_path / "p.log")
    grandchild = int(_wait_for_line(tmp_path / "p.log"))
    sup.refresh()
    gc_info = deploy._read_proc(grandchild)
    assert gc_info is not None
    assert gc_info.pgid == grandchild != started.pid
    state = json.loads((tmp_path / "processes.json").read_text())
    assert set(state["process_groups"]) == {started.pid, grandchild}
    assert sup.stop_all() == []
    assert not _alive(started.pid)
    assert not _alive(grandchild)
    assert json.loads((tmp_path / "processes.json").read_text())["stopped"] is True


def test_orphaned_detached_child_is_still_stopped(tmp_path: Path) -> None:
    """The parent dies first (as the SuperLink may): its detached child is stopped anyway."""
    sup = ProcessSupervisor(run_dir=tmp_path, env=os.environ, grace=2)
    parent = sup.start("parent", [sys.executable, "-c", _DETACHING_PARENT], log=tmp_path / "p.log")
    grandchild = int(_wait_for_line(tmp_path / "p.log"))
    sup.refresh()
    os.kill(parent.pid, 9)
    assert sup.wait("parent", timeout=10) is not None
    assert _alive(grandchild)
    assert sup.stop_all() == []
    assert not _alive(grandchild)


def test_sigterm_ignoring_process_is_killed(tmp_path: Path) -> None:
    sup = ProcessSupervisor(run_dir=tmp_path, env=os.environ, grace=0.5)
    proc = sup.start("stubborn", [sys.executable, "-c", _IGNORES_SIGTERM], log=tmp_path / "s.log")
    _wait_for_line(tmp_path / "s.log")
    assert sup.stop_all() == []
    assert sup.returncode("stubborn") == -9
    assert not _alive(proc.pid)


def test_stop_one_process_leaves_the_others(tmp_path: Path) -> None:
    sup = ProcessSupervisor(run_dir=tmp_path, env=os.environ, grace=2)
    a = sup.start("a", [sys.executable, "-c", _DETACHING_PARENT], log=tmp_path / "a.log")
    a_child = int(_wait_for_line(tmp_path / "a.log"))
    b = sup.start("b", [sys.executable, "-c", "import time; time.sleep(300)"], log=tmp_path / "b")
    assert sup.stop("a") == []
    assert not _alive(a.pid)
    assert not _alive(a_child)
    assert _alive(b.pid)
    assert sup.stop_all() == []
    assert not _alive(b.pid)


def test_processes_of_a_killed_controller_are_stopped_by_the_next_run(tmp_path: Path) -> None:
    """The controller itself is SIGKILLed (no finally runs): the next run stops its leftovers."""
    run = tmp_path / "run-1"
    run.mkdir()
    sup = ProcessSupervisor(run_dir=run, env=os.environ, grace=2)
    parent = sup.start("parent", [sys.executable, "-c", _DETACHING_PARENT], log=run / "p.log")
    grandchild = int(_wait_for_line(run / "p.log"))
    sup.refresh()
    sup._stop_watch.set()  # the controller "dies": nobody calls stop_all
    assert deploy.stop_stale(tmp_path) == []  # while its controller lives, the run is not stale
    assert _alive(grandchild)
    state = json.loads((run / "processes.json").read_text())
    assert state["stopped"] is False
    state["controller"]["start"] -= 1  # as if the controller were gone (its PID recycled)
    (run / "processes.json").write_text(json.dumps(state))
    stopped = deploy.stop_stale(tmp_path, grace=2)
    assert set(stopped) == {parent.pid, grandchild}
    assert not _alive(parent.pid)
    assert not _alive(grandchild)
    assert json.loads((run / "processes.json").read_text())["stopped"] is True
    assert deploy.stop_stale(tmp_path) == []  # idempotent
    sup.wait("parent", timeout=5)


def test_misconfiguration_fails_before_anything_starts(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "something").write_text("x")
    with pytest.raises(DeploymentError, match="not empty"):
        LocalFederation(run_dir=busy)
    with pytest.raises(DeploymentError, match="flower-superlink not found"):
        LocalFederation(run_dir=tmp_path / "r1", bin_dir=tmp_path)
    with pytest.raises(ValueError, match="startup_timeout"):
        LocalFederation(run_dir=tmp_path / "r2", startup_timeout=0)
    with pytest.raises(ValueError, match="num_supernodes"):
        deploy.run_local_deployment(run_dir=tmp_path / "r3", num_supernodes=0)
    with pytest.raises(TypeError, match="num_supernodes"):
        deploy.run_local_deployment(run_dir=tmp_path / "r4", num_supernodes=True)
    with pytest.raises(ValueError, match=r"\['num-round'\] not declared"):
        deploy.run_local_deployment(run_dir=tmp_path / "r5", run_config={"num-round": 1})
    with pytest.raises(ValueError, match="num-clients=5 differs from num_supernodes=3"):
        deploy.run_local_deployment(run_dir=tmp_path / "r6", run_config={"num-clients": 5})
    with pytest.raises(ValueError, match="no Flower app"):
        deploy.run_local_deployment(run_dir=tmp_path / "r7", app_dir=tmp_path)
    for name in ("r3", "r4", "r5", "r6", "r7"):  # refused before anything was created
        assert not (tmp_path / name).exists()


def test_cli_exits_non_zero_on_misconfiguration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert deploy.main(["--run-dir", str(tmp_path), "--run-config", "nope=1"]) == 1
    err = capsys.readouterr().err
    assert "fl-deploy: FAILED" in err
    assert "['nope'] not declared in [tool.flwr.app.config]" in err
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_cli_config_values_are_typed() -> None:
    parsed = deploy._parse_config(["num-rounds=2", "secagg.enabled=false", 'dataset="digits"'])
    assert parsed == {"num-rounds": 2, "secagg.enabled": False, "dataset": "digits"}
    assert deploy._parse_config(["name=plain words"]) == {"name": "plain words"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        deploy._parse_config(["novalue"])
    with pytest.raises(ValueError, match="only bool/int/float/str"):
        deploy._parse_config(["x=[1, 2]"])
