"""Help, --version, typo hints, warnings and non-TTY output of the ``saip`` command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from saip import __version__
from saip.cli import main

SAIP = [str(Path(sys.executable).parent / "saip")]


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SAIP, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"saip {__version__}"


def test_argument_help_is_rendered_without_internal_names() -> None:
    """Typer 0.20 + Click 8.5 dropped every argument's help; internal names leaked."""
    enc = _run("encrypt", "--help", COLUMNS="120").stdout
    assert "Plaintext file or - (stdin)." in enc
    assert "Envelope file or - (stdout)." in enc
    assert "input_path" not in enc
    assert "IN_FILE" in enc
    scan = _run("scan", "--help", COLUMNS="120").stdout
    assert "npz (x, y[, producer, record_id])" in scan  # brackets are not eaten as markup
    fl = _run("fl", "run", "--help", COLUMNS="120").stdout
    assert "encryption.key" in fl


def test_typo_hint_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scann"]) == 2
    assert capsys.readouterr().err.count("Did you mean 'scan'?") == 1
    assert main(["scan", "--jsn"]) == 2
    err = capsys.readouterr().err
    assert err.count("Did you mean") == 1
    assert "'--json'" in err


PROBE = """
import sys, warnings
from saip.cli import app, main

@app.command("warn-probe")
def warn_probe() -> None:  # a test-only command that warns like Ray and Opacus do
    warnings.warn_explicit("Tip: Ray will no longer override", FutureWarning,
                           "ray/_private/worker.py", 1, module="ray._private.worker")
    warnings.warn_explicit("Optimal order is the largest alpha", UserWarning,
                           "opacus/accountants/analysis/rdp.py", 1,
                           module="opacus.accountants.analysis.rdp")

sys.exit(main(sys.argv[1:]))
"""


def test_third_party_warnings_hidden_unless_debug() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    quiet = subprocess.run(
        [sys.executable, "-c", PROBE, "warn-probe"], capture_output=True, text=True, env=env
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "Ray" not in quiet.stderr
    assert "Optimal order" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", PROBE, "--debug", "warn-probe"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "Ray will no longer" in loud.stderr
    assert "Optimal order" in loud.stderr


def test_long_lines_not_hard_wrapped_off_a_tty(tmp_path: Path) -> None:
    """Paths and --key URIs used to be broken at 80 columns in logs and pipes."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    key = deep / "master.key"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run(
        [*SAIP, "keys", "create-local", str(key)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert f"--key local:{key}" in proc.stderr  # on one line, whole


def test_byte_progress_plain_lines_off_a_tty() -> None:
    import io

    from rich.console import Console
    from saip.progress import ByteProgress, Stages

    plain = io.StringIO()
    console = Console(file=plain, width=80)
    with ByteProgress(console, "encrypting", 64 << 20) as progress:
        for _ in range(64):
            progress.advance(1 << 20)
    with ByteProgress(console, "decrypting", 1 << 20) as progress:  # small: no noise
        progress.advance(1 << 20)
    with Stages(console, "scan") as stages:
        stages.stage("detector 1/8: [bold]class_size_prior")  # markup from data stays text
    lines = plain.getvalue().splitlines()
    assert lines == [
        "encrypting: 25% (16,777,216 bytes)",
        "encrypting: 50% (33,554,432 bytes)",
        "encrypting: 75% (50,331,648 bytes)",
        "encrypting: 100% (67,108,864 bytes)",
        "scan: detector 1/8: [bold]class_size_prior",
    ]
    tty = io.StringIO()
    with ByteProgress(Console(file=tty, force_terminal=True), "encrypting", 64 << 20) as p:
        p.advance(64 << 20)
    assert "\x1b" in tty.getvalue()  # a live bar on a terminal
