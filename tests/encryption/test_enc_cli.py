"""``saip encrypt/decrypt/inspect`` and ``saip keys create-local/rewrap/audit``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from saip.cli import main

SAIP = [sys.executable, "-m", "saip"]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    key = tmp_path / "keys" / "master.key"
    assert main(["keys", "create-local", str(key)]) == 0
    (tmp_path / "data.bin").write_bytes(os.urandom(300_000))
    return tmp_path


def _enc(w: Path, *extra: str, src: str = "data.bin", dst: str = "data.saip") -> int:
    return main(
        [
            "encrypt",
            "--key",
            f"local:{w / 'keys/master.key'}",
            "--context",
            "dataset=d1",
            *extra,
            str(w / src),
            str(w / dst),
        ]
    )


def _dec(w: Path, *extra: str, src: str = "data.saip", dst: str = "out.bin") -> int:
    return main(
        [
            "decrypt",
            "--key",
            f"local:{w / 'keys/master.key'}",
            "--context",
            "dataset=d1",
            *extra,
            str(w / src),
            str(w / dst),
        ]
    )


def test_create_local_key_mode_and_refusal(workdir: Path, capsys) -> None:
    key = workdir / "keys" / "master.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "create-local", str(key)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["keys", "create-local", "--rotate", str(key)]) == 0


def test_round_trip_and_inspect(workdir: Path, capsys) -> None:
    assert _enc(workdir) == 0
    assert _dec(workdir) == 0
    assert (workdir / "out.bin").read_bytes() == (workdir / "data.bin").read_bytes()
    capsys.readouterr()
    assert main(["inspect", "--json", str(workdir / "data.saip")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["context"] == {"dataset": "d1"}
    assert info["version"] == 2
    assert info["suite"].startswith("AES-256-GCM")
    assert info["key_slots"][0]["wrapped_keys"][0]["provider"] == "local"
    assert info["authenticated"] is False
    assert main(["inspect", str(workdir / "data.saip")]) == 0
    assert main(["inspect", str(workdir / "data.bin")]) == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "context", "wrong-key"])
def test_decryption_failure_exit_code_one_message_no_output(workdir: Path, capsys, damage) -> None:
    assert _enc(workdir) == 0
    blob = bytearray((workdir / "data.saip").read_bytes())
    extra: list[str] = []
    if damage == "flip":
        blob[-70_000] ^= 1  # inside the payload, after the first authentic segment
    elif damage == "truncate":
        blob = blob[: len(blob) // 2]
    (workdir / "data.saip").write_bytes(bytes(blob))
    capsys.readouterr()
    if damage == "context":
        rc = main(
            [
                "decrypt",
                "--key",
                f"local:{workdir / 'keys/master.key'}",
                "--context",
                "dataset=other",
                str(workdir / "data.saip"),
                str(workdir / "out.bin"),
            ]
        )
    elif damage == "wrong-key":
        other = workdir / "keys" / "other.key"
        assert main(["keys", "create-local", str(other)]) == 0
        capsys.readouterr()
        rc = main(
            [
                "decrypt",
                "--key",
                f"local:{other}",
                "--context",
                "dataset=d1",
                str(workdir / "data.saip"),
                str(workdir / "out.bin"),
            ]
        )
    else:
        rc = _dec(workdir, *extra)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == "saip: error: decryption failed [DecryptionError]"
    assert not (workdir / "out.bin").exists()
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".")] == []


def test_existing_output_needs_force(workdir: Path, capsys) -> None:
    (workdir / "data.saip").write_bytes(b"keep me")
    assert _enc(workdir) == 1
    assert "--force" in capsys.readouterr().err
    assert (workdir / "data.saip").read_bytes() == b"keep me"
    assert _enc(workdir, "--force") == 0


def test_bad_options(workdir: Path, capsys) -> None:
    assert main(["encrypt", "--key", "nope:x", str(workdir / "data.bin"), str(workdir / "x")]) == 1
    assert "unknown provider scheme" in capsys.readouterr().err
    assert main(["encrypt", str(workdir / "data.bin"), str(workdir / "x")]) == 1
    assert "no master key" in capsys.readouterr().err
    rc = main(
        [
            "encrypt",
            "--key",
            f"local:{workdir / 'keys/master.key'}",
            "--context",
            "novalue",
            str(workdir / "data.bin"),
            str(workdir / "x"),
        ]
    )
    assert rc == 2
    (workdir / "keys" / "master.key").chmod(0o644)
    assert _enc(workdir) == 1
    assert "chmod 600" in capsys.readouterr().err
    assert not (workdir / "x").exists()


def test_multi_key_and_rewrap_and_audit(workdir: Path, capsys) -> None:
    other = workdir / "keys" / "other.key"
    third = workdir / "keys" / "third.key"
    assert main(["keys", "create-local", str(other)]) == 0
    assert main(["keys", "create-local", str(third)]) == 0
    assert _enc(workdir, "--key", f"local:{other}") == 0
    capsys.readouterr()
    assert main(["keys", "audit", "--json", str(workdir)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["envelopes"] == 1
    assert len(report["keys"]) == 2
    rc = main(
        [
            "keys",
            "rewrap",
            "--to",
            f"local:{third}",
            "--from",
            f"local:{other}",
            str(workdir / "data.saip"),
        ]
    )
    assert rc == 0
    capsys.readouterr()
    assert main(["keys", "audit", "--json", str(workdir / "data.saip")]) == 0
    keys = json.loads(capsys.readouterr().out)["keys"]
    assert len(keys) == 1
    rc = main(
        [
            "decrypt",
            "--key",
            f"local:{third}",
            "--context",
            "dataset=d1",
            str(workdir / "data.saip"),
            str(workdir / "out.bin"),
        ]
    )
    assert rc == 0
    assert (workdir / "out.bin").read_bytes() == (workdir / "data.bin").read_bytes()
    assert _dec(workdir, "--force") == 1  # the first key was re-wrapped away
    assert main(["keys", "rewrap", "--to", f"local:{third}", str(workdir / "data.saip")]) == 1
    assert "--from" in capsys.readouterr().err


def test_stdin_stdout_pipeline_and_failure_leaves_no_stdout(workdir: Path) -> None:
    key = f"local:{workdir / 'keys/master.key'}"
    data = (workdir / "data.bin").read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    enc = subprocess.run(
        [*SAIP, "encrypt", "--key", key, "-", "-"],
        input=data,
        capture_output=True,
        check=True,
        env=env,
    )
    blob = enc.stdout
    dec = subprocess.run(
        [*SAIP, "decrypt", "--key", key, "-", "-"],
        input=blob,
        capture_output=True,
        check=True,
        env=env,
    )
    assert dec.stdout == data
    bad = blob[: len(blob) - 20]  # truncated: the authentic first segments must not leak
    fail = subprocess.run(
        [*SAIP, "decrypt", "--key", key, "-", "-"], input=bad, capture_output=True, env=env
    )
    assert fail.returncode == 1
    assert fail.stdout == b""
    assert fail.stderr.decode().strip() == "saip: error: decryption failed [DecryptionError]"
