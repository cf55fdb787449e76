"""``saip keys rewrap A B C``: a failure names its file, earlier results stay reported, later
files are not touched (real local keys, real envelopes; no fakes)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from saip.cli import main

HOSTILE_NAME = "b\x1b[2J\r\u202e.saip"  # clears the screen / rewrites the line if printed raw
ESCAPED_NAME = "b\\x1b[2J\\r\\u202e.saip"


def _key(tmp: Path, name: str) -> str:
    path = tmp / f"{name}.key"
    assert main(["keys", "create-local", str(path)]) == 0
    return f"local:{path}"


def _seal(tmp: Path, key: str, name: str) -> tuple[Path, bytes]:
    plain = tmp / f"{name}.plain"
    data = os.urandom(20_000)
    plain.write_bytes(data)
    assert main(["encrypt", "--key", key, str(plain), str(tmp / name)]) == 0
    return tmp / name, data


def _decrypts(tmp: Path, key: str, env: Path, data: bytes) -> bool:
    out = tmp / "check.out"
    out.unlink(missing_ok=True)
    ok = main(["decrypt", "--key", key, str(env), str(out)]) == 0
    return ok and out.read_bytes() == data


def _break_magic(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    blob[0] ^= 0xFF
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("failure", ["other-key", "tampered-header"])
@pytest.mark.parametrize("as_json", [False, True])
def test_failure_in_the_middle_names_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failure: str, as_json: bool
) -> None:
    old, other, new = _key(tmp_path, "old"), _key(tmp_path, "other"), _key(tmp_path, "new")
    first, first_data = _seal(tmp_path, old, "a.saip")
    middle, _ = _seal(tmp_path, other if failure == "other-key" else old, HOSTILE_NAME)
    if failure == "tampered-header":
        _break_magic(middle)
    third, third_data = _seal(tmp_path, old, "c.saip")
    third_before = third.read_bytes()
    capsys.readouterr()

    argv = ["keys", "rewrap", "--from", old, "--to", new, str(first), str(middle), str(third)]
    rc = main(argv[:2] + (["--json"] if as_json else []) + argv[2:])
    out, err = capsys.readouterr()

    assert rc == 1
    # Per-file results go to stderr as they happen; the failure is one line, the last one.
    *reported, error = err.splitlines()
    assert error.startswith("saip: error: ")
    assert err.count("saip: error") == 1
    assert [line.split(" (")[0] for line in reported] == [f"re-wrapped {first}"]
    err = error
    assert f"while re-wrapping {tmp_path}/{ESCAPED_NAME}: file 2 of 3" in err
    assert "1 re-wrapped before it, 1 not attempted" in err
    for raw in ("\x1b", "\r", "\u202e"):  # nothing reaches the terminal unescaped
        assert raw not in err
        assert raw not in out
    # The first file was re-wrapped (and reported), the third is byte-for-byte untouched.
    assert _decrypts(tmp_path, new, first, first_data)
    assert not _decrypts(tmp_path, old, first, first_data)
    assert third.read_bytes() == third_before
    assert _decrypts(tmp_path, old, third, third_data)
    if as_json:
        report = json.loads(out)
        assert [r["file"] for r in report["rewrapped"]] == [str(first)]
        assert report["failed"]["file"] == str(middle)
    else:
        assert out == ""


def test_all_files_rewrapped_when_none_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = _key(tmp_path, "old"), _key(tmp_path, "new")
    sealed = [_seal(tmp_path, old, f"{n}.saip") for n in "abc"]
    capsys.readouterr()
    rc = main(
        ["keys", "rewrap", "--json", "--from", old, "--to", new, *(str(p) for p, _ in sealed)]
    )
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads(out)
    assert [r["file"] for r in report["rewrapped"]] == [str(p) for p, _ in sealed]
    assert "failed" not in report
    assert all(_decrypts(tmp_path, new, p, d) for p, d in sealed)
