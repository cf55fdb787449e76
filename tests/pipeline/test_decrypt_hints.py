"""``saip decrypt`` hints from the public header — and the one opaque error everywhere else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from saip.cli import main

OPAQUE = "saip: error: decryption failed [DecryptionError]"


@pytest.fixture
def sealed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """data.saip sealed under version v2 of keys/k.key with context tenant=acme; keys/old.key is
    a copy of the key file taken before the rotation (v1 only)."""
    keys = tmp_path / "keys"
    keys.mkdir()
    assert main(["keys", "create-local", str(keys / "k.key")]) == 0
    shutil.copy2(keys / "k.key", keys / "old.key")
    assert main(["keys", "create-local", "--rotate", str(keys / "k.key")]) == 0
    assert main(["keys", "create-local", str(keys / "other.key")]) == 0
    (tmp_path / "data.bin").write_bytes(b"secret rows" * 1000)
    rc = main(["encrypt", "--key", f"local:{keys / 'k.key'}", "--context", "tenant=acme",
               str(tmp_path / "data.bin"), str(tmp_path / "data.saip")])  # fmt: skip
    assert rc == 0
    capsys.readouterr()
    return tmp_path


def _decrypt(root: Path, key: str, *context: str) -> int:
    args = ["decrypt", "--key", f"local:{root / 'keys' / key}"]
    for c in context:
        args += ["--context", c]
    return main([*args, str(root / "data.saip"), str(root / "out.bin")])


# --- the opaque cases first: no oracle for a wrong key, a wrong value or tampering ---------------


def test_wrong_key_stays_opaque(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _decrypt(sealed, "other.key", "tenant=acme") == 1
    assert capsys.readouterr().err.strip() == OPAQUE
    assert not (sealed / "out.bin").exists()


def test_wrong_context_value_stays_opaque(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _decrypt(sealed, "k.key", "tenant=evil") == 1
    assert capsys.readouterr().err.strip() == OPAQUE


def test_tampered_payload_stays_opaque(sealed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blob = bytearray((sealed / "data.saip").read_bytes())
    blob[-20] ^= 1
    (sealed / "data.saip").write_bytes(bytes(blob))
    assert _decrypt(sealed, "k.key", "tenant=acme") == 1
    assert capsys.readouterr().err.strip() == OPAQUE


# --- what the public header can explain ---------------------------------------------------------


def test_key_copied_before_rotation_is_named(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key file lacks the version the header names: the provider's own error says so."""
    assert _decrypt(sealed, "old.key", "tenant=acme") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "version v2 is not in key file" in err
    assert not (sealed / "out.bin").exists()


def test_missing_and_extra_context_keys_are_named(
    sealed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _decrypt(sealed, "k.key") == 1
    err = capsys.readouterr().err.strip()
    assert "context key 'tenant' missing" in err
    assert err.endswith("[HintedDecryptionError]")
    assert len(err.splitlines()) == 1
    assert not (sealed / "out.bin").exists()
    assert _decrypt(sealed, "k.key", "tenant=acme", "team=x") == 1
    assert "context key 'team' is not in this file's context" in capsys.readouterr().err
    assert _decrypt(sealed, "k.key", "tenant=acme") == 0


def test_header_strings_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Context keys come from the (unauthenticated) header: no terminal escape reaches stderr."""
    key = tmp_path / "k.key"
    assert main(["keys", "create-local", str(key)]) == 0
    (tmp_path / "p").write_bytes(b"x")
    rc = main(["encrypt", "--key", f"local:{key}", "--context", "\x1b[2Jk=v",
               str(tmp_path / "p"), str(tmp_path / "c")])  # fmt: skip
    if rc != 0:
        pytest.fail(f"encrypt refused the control character: {capsys.readouterr().err}")
    capsys.readouterr()
    assert main(["decrypt", "--key", f"local:{key}", str(tmp_path / "c"), str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\\x1b[2Jk" in err
