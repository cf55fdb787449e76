"""An attacker who can write to the store: forged artifacts, hostile headers, malformed key IDs.

Every test here is the attack first; the fix is what makes it fail cleanly:
* re-wrap never takes unwrap keys from the (unauthenticated) header — CLI and library;
* nothing from a header reaches the terminal unescaped or as Rich markup;
* the key-ID grammar is strict, and a malformed key version is the one opaque DecryptionError.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import boto3
import pytest
from saip.cli import main
from saip_encryption import DecryptionError, EnvelopeEncryptor, KeyProviderError, from_uri, wire
from saip_encryption.providers.base import WrappedKey
from saip_encryption.providers.local import LocalKeyProvider, create_local_key
from saip_encryption.rotation import read_header, rewrap_file

CTX = {"dataset": "d1"}
ESC_ID = "\x1b[32m\rdecrypted OK\x07\x1b[0m"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _forge_artifact(path: Path, provider: object) -> None:
    enc = EnvelopeEncryptor(provider, cache=False)  # type: ignore[arg-type]
    with open(path, "wb") as out:
        enc.encrypt_stream(io.BytesIO(b"attacker's weights" * 100), out, context=CTX)


def _set_slot(blob: bytes, keys: list[tuple[bytes, bytes, bytes]], generation: int = 1) -> bytes:
    """Rewrite slot 0 with raw (provider, key_id, wrapped) triples, CRC fixed (no grammar check)."""
    header = wire.parse_header(blob, strict=False)
    cap = header.slot_capacity
    body = struct.pack(">IB", generation, len(keys))
    for prov, kid, wrapped in keys:
        body += bytes((len(prov),)) + prov + struct.pack(">H", len(kid)) + kid
        body += struct.pack(">H", len(wrapped)) + wrapped
    body += bytes(cap - len(body) - 4)
    slot = body + struct.pack(">I", zlib.crc32(body))
    start = header.key_area_offset + 3
    return blob[:start] + slot + blob[start + cap :]


def _set_context(blob: bytes, context_bytes: bytes) -> bytes:
    header = wire.parse_header(blob, strict=False)
    prefix = bytearray(header.prefix[: wire.PREFIX_SIZE])
    prefix[-2:] = struct.pack(">H", len(context_bytes))
    return bytes(prefix) + context_bytes + blob[len(header.prefix) :]


# -- 1. re-wrap never unwraps with a key named by the header ----------------------------------


def test_cli_rewrap_of_an_artifact_forged_under_an_attackers_kms_key(
    tmp_path: Path, moto_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The attacker wraps under *their* KMS key; the operator's rewrap must not launder it."""
    attacker = boto3.client("kms", endpoint_url=moto_url, region_name="us-east-1")
    arn = attacker.create_key(Description="attacker")["KeyMetadata"]["Arn"]
    forged = tmp_path / "model.saip"
    _forge_artifact(forged, from_uri(f"aws-kms:{arn}", endpoint_url=moto_url))
    before = _digest(forged)
    operator_old, operator_new = tmp_path / "a.key", tmp_path / "b.key"
    create_local_key(operator_old)
    create_local_key(operator_new)
    base = ["keys", "rewrap", "--to", f"local:{operator_new}", "--endpoint-url", moto_url]

    capsys.readouterr()
    assert main([*base, str(forged)]) == 1  # no --from, no configured key: refuse
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "--from" in err
    assert "never used" in err
    assert _digest(forged) == before

    cfg = tmp_path / "saip.toml"
    cfg.write_text(f'[encryption]\nkey = "local:{operator_old}"\n')
    assert main(["--config", str(cfg), *base, str(forged)]) == 1  # the configured key only
    err = capsys.readouterr().err.strip()
    # one opaque line: the failing file is named (multi-file rewrap), the cause is not
    assert err.startswith("saip: error: decryption failed (while re-wrapping ")
    assert err.endswith(" [DecryptionError]")
    assert "\n" not in err
    assert _digest(forged) == before
    assert main([*base, "--from", f"local:{operator_old}", str(forged)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("saip: error: decryption failed (while re-wrapping ")
    assert err.endswith(" [DecryptionError]")
    assert _digest(forged) == before
    dec = ["decrypt", "--key", f"local:{operator_new}", "--context", "dataset=d1"]
    assert main([*dec, str(forged), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_library_rewrap_applies_the_allow_list(tmp_path: Path, local: LocalKeyProvider) -> None:
    path = tmp_path / "a.saip"
    _forge_artifact(path, local)
    before = _digest(path)
    other = tmp_path / "o.key"
    create_local_key(other)
    with pytest.raises(DecryptionError):
        rewrap_file(
            path,
            unwrap_with=[local],
            wrap_with=[LocalKeyProvider(other)],
            allowed_key_ids={"0" * 32 + "/v1"},
        )
    assert _digest(path) == before
    result = rewrap_file(
        path,
        unwrap_with=[local],
        wrap_with=[LocalKeyProvider(other)],
        allowed_key_ids={local.primary_key_id},
    )
    assert result.in_place


# -- 3. hostile header strings -----------------------------------------------------------------


@pytest.mark.parametrize(
    "key_id",
    [
        ESC_ID.encode(),
        b"aws\x9b31mkey",  # C1 CSI
        "k\u202eyek".encode(),  # bidi override
        b"[bold red]spoof[/] with space",
    ],
)
def test_hostile_key_ids_break_the_grammar_and_decrypt_opaquely(
    tmp_path: Path, local: LocalKeyProvider, key_id: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.saip"
    _forge_artifact(path, local)
    blob = _set_slot(path.read_bytes(), [(b"aws-kms", key_id, b"x" * 40)])
    path.write_bytes(blob)
    with pytest.raises(DecryptionError):
        EnvelopeEncryptor(local).decrypt(blob, context=CTX)
    header = read_header(path)
    assert not header.slots[0].valid  # not a wrapped key anyone will be asked to unwrap
    capsys.readouterr()
    rc = main(["decrypt", "--key", local.uri, "--context", "dataset=d1", str(path), "-"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.err.strip() == "saip: error: decryption failed [DecryptionError]"
    assert captured.out == ""


def _hostile_artifact(tmp_path: Path, local: LocalKeyProvider) -> Path:
    """Valid grammar, but Rich markup in a key ID and control characters in the context."""
    path = tmp_path / "evil.saip"
    _forge_artifact(path, local)
    blob = path.read_bytes()
    ctx = wire.encode_context({"dataset": ESC_ID, "[/]": "[bold]x[/bold]\r\x1b]0;title\x07"})
    blob = _set_context(blob, ctx)
    arn = "arn:aws:kms:us-east-1:111122223333:key/[/red]oops[link=x]"
    blob = _set_slot(
        blob, [(b"aws-kms", arn.encode(), b"w" * 40), (b"local", b"0" * 32 + b"/v1", b"z" * 60)]
    )
    path.write_bytes(blob)
    return path


def test_inspect_and_audit_escape_hostile_headers(
    tmp_path: Path, local: LocalKeyProvider, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _hostile_artifact(tmp_path, local)
    good = tmp_path / "good.saip"
    _forge_artifact(good, local)
    for argv in (
        ["inspect", str(path)],
        ["inspect", "--json", str(path)],
        ["keys", "audit", str(tmp_path)],
        ["keys", "audit", "--json", str(tmp_path)],
    ):
        capsys.readouterr()
        assert main(argv) == 0, argv
        out = capsys.readouterr()
        text = out.out + out.err
        for raw in ("\x1b", "\r", "\x07"):
            assert raw not in text, (argv, raw)
        if "--json" not in argv:
            assert "\\x1b" in text or "audit" in argv[0:2][-1]
    capsys.readouterr()
    assert main(["inspect", "--json", str(path)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["context"]["dataset"] == "\\x1b[32m\\rdecrypted OK\\x07\\x1b[0m"
    keys = info["key_slots"][0]["wrapped_keys"]
    assert keys[0]["key_id"].endswith("[/red]oops[link=x]")  # shown literally, not as markup
    capsys.readouterr()
    assert main(["keys", "audit", "--json", str(tmp_path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["envelopes"] == 2  # the hostile file did not abort the directory scan
    assert main(["keys", "audit", str(tmp_path)]) == 0
    assert "[/red]oops" in capsys.readouterr().out


def test_key_provider_error_messages_escape_key_ids(tmp_path: Path) -> None:
    """An operational failure lists key IDs: escaped, whatever a provider put in its message."""

    class Loud:
        uri = "static:loud"

        def accepts(self, key_id: str) -> bool:
            return True

        def generate_data_key(self, *, context):  # type: ignore[no-untyped-def]
            return bytearray(32), WrappedKey("static", "loud/v1", b"\x01" * 32)

        def wrap(self, data_key, *, context):  # type: ignore[no-untyped-def]
            return WrappedKey("static", "loud/v1", b"\x01" * 32)

        def unwrap(self, wrapped, *, context):  # type: ignore[no-untyped-def]
            raise KeyProviderError(f"key {ESC_ID} is disabled")

    enc = EnvelopeEncryptor(Loud(), cache=False)
    blob = enc.encrypt(b"x", context=CTX)
    with pytest.raises(KeyProviderError) as info:
        enc.decrypt(blob, context=CTX)
    assert "\x1b" not in str(info.value)
    assert "\\x1b" in str(info.value)


@pytest.mark.parametrize("version", ["v0", "v", "v٣", "v²", "v01", "v1 ", "v99999999999", "x1"])
def test_malformed_local_key_version_is_the_opaque_error(
    tmp_path: Path, local: LocalKeyProvider, version: str
) -> None:
    key_id = f"{local.key_uuid}/{version}"
    assert not wire.valid_key_id("local", key_id)
    with pytest.raises(DecryptionError):
        local.unwrap(WrappedKey("local", key_id, b"\x00" * 60), context=CTX)
    assert not local.accepts(key_id)
    _forge_artifact(tmp_path / "a.saip", local)
    blob = (tmp_path / "a.saip").read_bytes()
    kid = version.encode("utf-8")
    forged = _set_slot(blob, [(b"local", local.key_uuid.encode() + b"/" + kid, b"\x00" * 60)])
    with pytest.raises(DecryptionError) as info:
        EnvelopeEncryptor(local, cache=False).decrypt(forged, context=CTX)
    assert str(info.value) == "decryption failed"


def test_escape_helper() -> None:
    assert wire.escape("plain [b]x[/b]") == "plain [b]x[/b]"
    assert wire.escape("a\x1b[2Jb\rc\x07\u202e") == "a\\x1b[2Jb\\rc\\x07\\u202e"
    with pytest.raises(ValueError, match="grammar"):
        wire.encode_slot([WrappedKey("local", "not-a-uuid/v1", b"x")], generation=1, capacity=200)
