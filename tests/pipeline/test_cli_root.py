"""The ``saip`` root command: help, settings validation, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from saip.cli import main
from saip.config import ConfigError, load_config

SAIP = [sys.executable, "-m", "saip"]


def test_help_lists_every_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group in ("ingest", "keys", "encrypt", "decrypt", "inspect", "fl", "scan", "demo"):
        assert group in out, group


def test_unknown_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[ingest]\nbakend = "aws"\n')
    assert main(["--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "unknown setting 'ingest.bakend'" in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_value_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[scan]\nmax_risk = 250\n")
    with pytest.raises(ConfigError, match=r"setting 'scan\.max_risk'"):
        load_config(bad)


def test_missing_and_malformed_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[ingest\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(broken)


def test_valid_config_sets_data_dir(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(f'data_dir = "{tmp_path / "d"}"\n[ingest]\nbackend = "gcp"\n')
    cfg = load_config(good)
    assert cfg.ingest.backend == "gcp"
    assert cfg.data_dir == tmp_path / "d"


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_debug_shows_traceback_only_when_asked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("unknown = 1\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    quiet = subprocess.run([*SAIP, "--config", str(bad)], capture_output=True, text=True, env=env)
    loud = subprocess.run(
        [*SAIP, "--debug", "--config", str(bad)], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert "unknown setting 'unknown'" in quiet.stderr


def test_console_script_is_installed() -> None:
    exe = Path(sys.executable).parent / "saip"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "demo" in proc.stdout


def test_demo_data_dir_is_owner_only(tmp_path: Path) -> None:
    from rich.console import Console
    from saip.config import SaipConfig
    from saip.pipeline import PipelineContext, prepare_data_dir, run_steps, write_report

    ctx = PipelineContext(
        data_dir=tmp_path / "data", config=SaipConfig(), console=Console(file=io.StringIO())
    )
    results = run_steps(ctx, [("prepare", prepare_data_dir)])
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    report = json.loads(write_report(ctx, results).read_text())
    assert report["steps"][0]["details"]["mode"] == "700"
