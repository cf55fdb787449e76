"""Short federated runs driven through the ``saip fl run`` CLI (local engine unless stated).

1. Grouped SecAgg+ (10 clients, 2 random groups of 5, one sign-flipping attacker) trains, drops
   the attacker's group aggregate, seals the model with the envelope encryptor, and leaves no
   Ray directory or process behind.
2. A SecAgg+ round that loses too many clients (3 of 5 drop out, threshold 3) halts the protocol:
   Flower would exit 0 with an untrained model; ``saip fl run`` exits 1 and metrics.json says
   ``failed``.
3. The same CLI on Flower's Ray simulation (``--engine ray``) still trains and leaves no Ray
   directory, process or PYTHONPATH behind.
4. Ctrl-C on ``saip fl run`` stops it within seconds, exits 130, writes ``metrics.json`` with
   status ``interrupted``, seals no model and leaves no process (children or reparented).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from saip.cli import main
from saip.compose import default_key_path

pytestmark = pytest.mark.slow


def _toml(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


def _no_ray_children() -> list[str]:
    return [
        p.name()
        for p in psutil.Process().children(recursive=True)
        if "ray" in " ".join(p.cmdline()).lower()
    ]


def test_fl_sim_grouped_secagg_trains_drops_attacker_group_and_seals_model(
    tmp_path, capsys
) -> None:
    from saip_encryption import EnvelopeEncryptor, from_uri
    from saip_encryption.errors import DecryptionError

    cfg = _toml(
        tmp_path / "run.toml",
        """
num_clients = 10
num_rounds = 2
local_epochs = 2
[secagg]
enabled = true
groups = 2
num_shares = 5
reconstruction_threshold = 3
[attack]
kind = "sign_flip"
clients = [0]
scale = 10.0
""",
    )
    data = tmp_path / "d"
    rc = main(
        ["--data-dir", str(data), "fl", "run", "--config", str(cfg), "--name", "smoke", "--json"]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[-1]["accuracy"] > 0.5  # initial model: ~0.08
    assert all(len(r["groups"]) == 2 for r in rounds)
    # the attacker's group mean points away from the root update in every round
    assert all(any(not g["accepted"] for g in r["groups"]) for r in rounds)
    run_dir = data / "fl" / "smoke"
    assert all(g["contributors"] == 5 for r in rounds for g in r["groups"])
    model = Path(summary["model"]["path"])
    assert model.name == "model.saipenc"
    assert summary["model"]["encrypted"]
    blob = model.read_bytes()
    assert b"arr_0" not in blob  # not a plaintext npz
    enc = EnvelopeEncryptor([from_uri(f"local:{default_key_path(data)}")])
    assert not (data / "keys").exists()  # the default key is kept outside the data directory
    plain = enc.decrypt(blob, context=summary["model"]["context"])
    assert plain.startswith(b"PK")  # the npz (zip) of the final weights
    # the context is bound: the same blob under another run's context does not open
    other = {**summary["model"]["context"], "run": "another-run"}
    with pytest.raises(DecryptionError):
        enc.decrypt(blob, context=other)
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(model.stat().st_mode) == 0o600
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert metrics["rounds"][0]["seconds"] > 0


def test_fl_sim_halted_secagg_fails_the_run(tmp_path, capsys) -> None:
    cfg = _toml(
        tmp_path / "halt.toml",
        """
num_clients = 5
num_rounds = 1
[secagg]
enabled = true
groups = 1
num_shares = 5
reconstruction_threshold = 3
[attack]
kind = "dropout"
clients = [0, 1, 2]
""",
    )
    data = tmp_path / "d"
    rc = main(["--data-dir", str(data), "fl", "run", "--config", str(cfg), "--name", "halt"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "ProtocolHaltedError" in err
    assert "no aggregate" in err
    metrics = json.loads((data / "fl" / "halt" / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert "halted" in metrics["error"]
    assert not (data / "fl" / "halt" / "model.saipenc").exists()
    assert not _no_ray_children()


def test_fl_ray_engine_still_trains_and_cleans_up(tmp_path, capsys) -> None:
    cfg = _toml(tmp_path / "ray.toml", "num_clients = 4\nnum_rounds = 2\nlocal_epochs = 2\n")
    data = tmp_path / "d"
    pythonpath = os.environ.get("PYTHONPATH")
    argv = ["--data-dir", str(data), "fl", "run", "--config", str(cfg), "--name", "ray"]
    rc = main([*argv, "--engine", "ray", "--json"])
    assert rc == 0
    # Ray/Flower export PYTHONPATH for their workers; the run must not leak it to later processes
    assert os.environ.get("PYTHONPATH") == pythonpath
    summary = json.loads(capsys.readouterr().out)
    assert summary["final"]["accuracy"] > 0.5
    assert not (data / "fl" / "ray" / "ray").exists()
    assert not _no_ray_children()


def test_fl_run_ctrl_c_stops_within_seconds_exits_130_and_leaves_nothing(tmp_path) -> None:
    cfg = _toml(
        tmp_path / "long.toml",
        "num_clients = 6\nnum_rounds = 500\n[secagg]\nenabled = true\ngroups = 1\n"
        "num_shares = 5\nreconstruction_threshold = 3\n",
    )
    data = tmp_path / "d"
    run_dir = data / "fl" / "long"
    code = "import sys; from saip.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = ["--data-dir", str(data), "fl", "run", "--config", str(cfg), "--name", "long"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = run_dir / "metrics.json"
            if metrics.exists() and json.loads(metrics.read_text())["rounds"]:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        children = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err.decode()
    assert took < 10
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert not (run_dir / "model.saipenc").exists()
    assert not (run_dir / "model.npz").exists()
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    # reparented processes too: nothing anywhere still runs with this run's data directory
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if str(data) in " ".join(p.info["cmdline"] or []):
                left.append(p.info["pid"])
        except psutil.Error:
            continue
    assert not left
