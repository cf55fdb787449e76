"""One input/output policy: fail fast, before heavy imports; never overwrite without ``--force``;
plaintext outputs 0600 and atomic; a directory where a file is expected gets its own message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from saip.cli import main
from saip.errors import InputError
from saip.outputs import atomic_output, require_input, require_output

PROBE = """
import sys
from saip.cli import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "saip_poisoning", "flwr", "ray") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(rc)
"""


def _probe(*args: str, cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``saip ARGS`` in a fresh interpreter; report which heavy modules it imported."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    heavy = lines[-1].removeprefix("HEAVY=")
    return proc.returncode, "\n".join(lines[:-1]), [h for h in heavy.split(",") if h]


# --- hostile / bad input first ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["scan", "nope.npz"], "input file not found: nope.npz"),
        (["scan", "in.npz", "--labels", "sub"], "labels sub is a directory; expected a file"),
        (["scan", "in.npz", "--output", "/nonexistent/r.json"], "directory /nonexistent does"),
        (["scan", "in.npz", "--output", "sub"], "output sub is a directory; give a file path"),
        (["scan", "in.npz", "--output", "taken.json"], "exists (use --force to replace it)"),
        (["scan", "in.npz", "--model", "x.pt"], "only 'auto'"),
    ],
)
def test_scan_fails_fast_before_torch(tmp_path: Path, args: list[str], message: str) -> None:
    """The issue: 'not found' cost 7 CPU-s and 392 MB; a bad --json path failed after the scan."""
    (tmp_path / "in.npz").write_bytes(b"never read")
    (tmp_path / "sub").mkdir()
    (tmp_path / "taken.json").write_text("keep")
    rc, err, heavy = _probe(*args, cwd=tmp_path)
    assert rc == 1, err
    assert message in err
    assert len(err.splitlines()) == 1, err
    assert heavy == []
    assert (tmp_path / "taken.json").read_text() == "keep"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encrypt", "sub", "out.saip"], "input sub is a directory"),
        (["encrypt", "nope", "out.saip"], "input file not found: nope"),
        (["encrypt", "plain", "sub"], "output sub is a directory; give a file path"),
        (["encrypt", "plain", "no/dir/out"], "directory no/dir does not exist"),
        (["decrypt", "plain", "taken.json"], "output taken.json exists (use --force"),
    ],
)
def test_encrypt_decrypt_paths_checked_before_keys(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked before any key provider is built: an unknown key scheme is never reached."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "plain").write_bytes(b"x")
    (tmp_path / "taken.json").write_text("keep")
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        rc = main([*args, "--key", "nope:never-built"])
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert rc == 1
    assert message in err
    assert "[InputError]" in err
    assert "nope" not in err.replace("input file not found: nope", "")


def test_fl_check_rejects_missing_npz_dataset(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'dataset = "npz:{tmp_path / "missing.npz"}"\n')
    rc, err, _heavy = _probe("fl", "check", "--config", str(cfg), cwd=tmp_path)
    assert rc == 1
    assert "dataset file not found" in err
    rc, err, heavy = _probe("fl", "check", "--config", str(tmp_path / "none.toml"), cwd=tmp_path)
    assert rc == 1
    assert "run configuration file not found" in err
    assert "flwr" not in heavy


def test_fl_run_refuses_existing_run_dir_without_force(tmp_path: Path) -> None:
    """`fl run --name X` twice used to overwrite the first run silently."""
    cfg = tmp_path / "run.toml"
    cfg.write_text('dataset = "digits"\n')
    existing = tmp_path / "d" / "fl" / "r1"
    existing.mkdir(parents=True)
    (existing / "metrics.json").write_text("{}")
    args = ("--data-dir", str(tmp_path / "d"), "fl", "run", "--config", str(cfg), "--name", "r1")
    rc, err, heavy = _probe(*args, cwd=tmp_path)
    assert rc == 1
    assert "exists (use --force to replace it)" in err
    assert (existing / "metrics.json").read_text() == "{}"
    assert "ray" not in heavy


def test_ingest_outputs_private_and_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    src = tmp_path / "a.jsonl"
    base = ["--data-dir", data, "ingest"]
    assert main([*base, "produce", str(src), "--producer", "alpha", "--limit", "60"]) == 0
    for path in (src, tmp_path / "a.jsonl.truth.json"):
        assert path.stat().st_mode & 0o777 == 0o600, path
    before = src.read_bytes()
    assert main([*base, "produce", str(src), "--producer", "alpha", "--limit", "5"]) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert src.read_bytes() == before
    assert main([*base, "run", "--source", str(src), "--json"]) == 0
    out = tmp_path / "x.npz"
    capsys.readouterr()
    assert main([*base, "export", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 60
    assert out.stat().st_mode & 0o777 == 0o600  # plaintext training data
    assert main([*base, "export", str(out)]) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert main([*base, "export", str(out), "--force"]) == 0
    assert main([*base, "export", str(tmp_path / "x.data")]) == 1
    assert "must end in .npz" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# --- the policy itself ----------------------------------------------------------------------------


def _write_then(dest: Path, then: Callable[[], None]) -> None:
    with atomic_output(dest, force=False) as tmp:
        tmp.write_text("partial")
        then()


def test_atomic_output_leaves_nothing_on_any_exception(tmp_path: Path) -> None:
    dest = tmp_path / "r.json"
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):

        def fail(exc: BaseException = exc) -> None:
            raise exc

        with pytest.raises(type(exc)):
            _write_then(dest, fail)
        assert list(tmp_path.iterdir()) == []
    with atomic_output(dest, force=False) as tmp:
        tmp.write_text("whole")
    assert dest.read_text() == "whole"
    assert dest.stat().st_mode & 0o777 == 0o600


def test_output_appearing_during_work_is_not_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "r.json"
    with pytest.raises(InputError, match="exists"):
        _write_then(dest, lambda: dest.write_text("theirs") and None)
    assert dest.read_text() == "theirs"


def test_symlink_output_needs_force(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("t")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with pytest.raises(InputError, match="exists"):
        require_output(tmp_path / "link", force=False)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InputError, match="exists"):
        require_output(tmp_path / "dangling", force=False)


def test_device_or_fifo_output_is_refused_even_with_force(tmp_path: Path) -> None:
    """Renaming the finished file over /dev/null (as root) would replace the device."""
    for special in (Path("/dev/null"), tmp_path / "fifo"):
        if special.name == "fifo":
            os.mkfifo(special)
        with pytest.raises(InputError, match="not a regular file"):
            require_output(special, force=True)
    assert Path("/dev/null").is_char_device()


def test_stdio_dash(tmp_path: Path) -> None:
    require_input("-", allow_stdin=True)
    require_output("-", force=False, allow_stdout=True)
    with pytest.raises(InputError, match="not found"):
        require_input("-")


def test_quarantine_accepts_unique_qid_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "d")
    src = tmp_path / "a.jsonl"
    base = ["--data-dir", data, "ingest"]
    assert main([*base, "produce", str(src), "--producer", "alpha", "--limit", "20",
                 "--poison", "malformed:n=3"]) == 0  # fmt: skip
    assert main([*base, "run", "--source", str(src)]) == 0
    capsys.readouterr()
    assert main([*base, "quarantine", "list", "--json"]) == 0
    qids = [e["qid"] for e in json.loads(capsys.readouterr().out)]
    assert len(qids) >= 2
    prefix = next(
        q[:n] for n in range(6, 32) for q in qids if sum(o.startswith(q[:n]) for o in qids) == 1
    )
    assert main([*base, "quarantine", "show", prefix]) == 0
    assert json.loads(capsys.readouterr().out)["qid"].startswith(prefix)
    missing = next(
        p for p in ("ffffff", "eeeeee", "dddddd") if not any(q.startswith(p) for q in qids)
    )
    assert main([*base, "quarantine", "show", missing]) == 1
    assert "matches 0 entries" in capsys.readouterr().err
