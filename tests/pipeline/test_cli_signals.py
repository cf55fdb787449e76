"""Ctrl-C (SIGINT) and SIGTERM: exit 130/143 with one line, never a partial or sealed output.

Each test runs the real ``saip`` script in a subprocess (its own session, so the signal reaches
only it), waits until the command is provably inside its long work — blocked reading a pipe whose
writer is still open, or polling an empty stream — and then sends the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SAIP = [str(Path(sys.executable).parent / "saip")]
EXPECTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}


def _spawn(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*SAIP, *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen[str], sig: signal.Signals) -> tuple[int, str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _assert_interrupted(rc: int, out: str, err: str, sig: signal.Signals) -> None:
    assert rc == EXPECTED[sig], (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("saip: interrupted")
    assert sig.name in lines[0]
    assert "Traceback" not in err
    assert "crypted" not in err  # no "encrypted N bytes" success line
    assert out == ""


def _no_output_left(workdir: Path, name: str) -> None:
    assert not (workdir / name).exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    subprocess.run(
        [*SAIP, "keys", "create-local", str(tmp_path / "k.key")],
        check=True,
        capture_output=True,
        env=_env(),
    )
    return tmp_path


class _HeldPipe:
    """A FIFO whose writer sends ``data`` and then keeps the pipe open (the input is unfinished)."""

    def __init__(self, path: Path, data: bytes) -> None:
        os.mkfifo(path)
        self.path = path
        self.written = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._write, args=(data,), daemon=True)
        self._thread.start()

    def _write(self, data: bytes) -> None:
        with open(self.path, "wb") as fh:  # blocks until the reader opens the FIFO
            fh.write(data)  # returns once the reader has taken all but one pipe buffer
            fh.flush()
            self.written.set()
            self._release.wait(120)

    def close(self) -> None:
        self._release.set()
        self._thread.join(10)


@pytest.fixture
def held_pipe(workdir: Path) -> Iterator[type[_HeldPipe]]:
    pipes: list[_HeldPipe] = []

    def make(path: Path, data: bytes) -> _HeldPipe:
        pipe = _HeldPipe(path, data)
        pipes.append(pipe)
        return pipe

    yield make  # type: ignore[misc]
    for p in pipes:
        p.close()


@SIGNALS
def test_encrypt_from_unfinished_pipe_never_seals(
    workdir: Path, held_pipe: type[_HeldPipe], sig: signal.Signals
) -> None:
    """The issue's case: 1,000,000 bytes in, writer still open, signal → no artifact at all."""
    pipe = held_pipe(workdir / "in", b"\0" * 1_000_000)
    proc = _spawn(["encrypt", "in", "out.saip", "--key", f"local:{workdir / 'k.key'}"], workdir)
    assert pipe.written.wait(30), "saip never read the pipe"
    time.sleep(0.3)  # the reader is now blocked waiting for the rest of the input
    rc, out, err = _finish(proc, sig)
    _assert_interrupted(rc, out, err, sig)
    _no_output_left(workdir, "out.saip")


@SIGNALS
def test_decrypt_from_unfinished_pipe_writes_nothing(
    workdir: Path, held_pipe: type[_HeldPipe], sig: signal.Signals
) -> None:
    key = f"local:{workdir / 'k.key'}"
    (workdir / "plain.bin").write_bytes(os.urandom(3_000_000))
    done = subprocess.run(
        [*SAIP, "encrypt", "plain.bin", "sealed.saip", "--key", key],
        cwd=workdir,
        env=_env(),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    sealed = (workdir / "sealed.saip").read_bytes()
    pipe = held_pipe(workdir / "in", sealed[: len(sealed) // 2])
    proc = _spawn(["decrypt", "in", "out.bin", "--key", key], workdir)
    assert pipe.written.wait(30)
    time.sleep(0.3)
    rc, out, err = _finish(proc, sig)
    _assert_interrupted(rc, out, err, sig)
    _no_output_left(workdir, "out.bin")


@SIGNALS
def test_ingest_run_interrupted_mid_source(workdir: Path, sig: signal.Signals) -> None:
    """One record per batch (an fsync each) keeps the run busy for seconds: signal it midway."""
    data = str(workdir / "d")
    made = subprocess.run(
        [*SAIP, "--data-dir", data, "ingest", "produce", "a.jsonl", "--producer", "alpha"],
        cwd=workdir,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    proc = _spawn(
        [
            *("--data-dir", data, "ingest", "run", "--source", "a.jsonl", "--batch-size", "1"),
            *("--key", f"local:{workdir / 'k.key'}", "--json"),
        ],
        workdir,
    )
    deadline = time.monotonic() + 30
    while not (workdir / "d" / "ingest" / "state").exists():  # the engine has started
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    assert proc.poll() is None, "the run finished before the signal: make it longer"
    rc, out, err = _finish(proc, sig)
    _assert_interrupted(rc, out, err, sig)


@SIGNALS
def test_scan_interrupted_writes_no_report(workdir: Path, sig: signal.Signals) -> None:
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    np.savez(workdir / "in.npz", x=x.astype(np.float32), y=y)
    proc = _spawn(["scan", "in.npz", "--output", "r.json", "--json"], workdir)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # progress goes to stderr as plain lines when not a TTY
    while line and "scan:" not in line:
        line = proc.stderr.readline()
    assert "scan:" in line, "scan never reported progress"
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    rest = [ln for ln in err.strip().splitlines() if not ln.startswith("scan:")]
    assert proc.returncode == EXPECTED[sig], err
    assert len(rest) == 1, err
    assert rest[0].startswith("saip: interrupted"), err
    assert out == ""
    _no_output_left(workdir, "r.json")
