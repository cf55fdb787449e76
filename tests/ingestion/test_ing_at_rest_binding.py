"""ING-09: an accepted batch is bound to its object key, and export refuses a record stored twice.

Hostile cases first: a batch object copied (byte for byte) under another key must not decrypt,
and a copy that *would* decrypt (re-encrypted for the new key, as an insider with the key could)
is still caught by the export's stored-twice check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from saip_ingestion.engine import ACCEPTED_PREFIX, IngestEngine, export_npz, read_batch
from saip_ingestion.errors import IngestError
from saip_ingestion.sealed import content_id, seal_lines


def _ingest_three(env: Any) -> str:
    p = env.producer("alpha")
    lines = [
        json.dumps(r, separators=(",", ":")).encode()
        for r in p.sign([p.record(label=i) for i in range(3)])
    ]
    assert [o for o, _ in env.ingest(lines)] == ["accepted"] * 3
    (key,) = list(env.store.list(ACCEPTED_PREFIX))
    return str(key)


def test_batch_copied_under_another_key_does_not_decrypt(env: Any) -> None:
    key = _ingest_three(env)
    moved = key.replace(ACCEPTED_PREFIX, f"{ACCEPTED_PREFIX}copy-", 1)
    env.store.put(moved, env.store.get(key))
    with pytest.raises(IngestError, match="do not open"):
        read_batch(env.store, env.encryptor, moved)
    assert len(read_batch(env.store, env.encryptor, key)) == 3  # the original still reads


def _stored_lines(env: Any, key: str) -> list[bytes]:
    return [
        json.dumps(e, separators=(",", ":")).encode()
        for e in read_batch(env.store, env.encryptor, key)
    ]


def _put_batch(env: Any, prefix: str, lines: list[bytes]) -> str:
    """Write ``lines`` as an accepted batch object the way the engine does (sealed, content id)."""
    key = f"{ACCEPTED_PREFIX}{prefix}/000000000001-{content_id(lines)}"
    env.store.put(key, seal_lines(env.encryptor, IngestEngine._context(key), lines))
    return key


def test_export_refuses_a_record_stored_twice(env: Any, tmp_path: Path) -> None:
    """A copy of a batch with the same records (what a buffering sink leaves after a crash)
    collapses to one record each; a copy whose record was edited under the same ids and leaf —
    written by someone holding the key — is refused, not silently dropped or trained on."""
    key = _ingest_three(env)
    lines = _stored_lines(env, key)
    _put_batch(env, "twin", lines)
    summary = export_npz(env.store, env.encryptor, tmp_path / "same.npz")
    assert summary["records"] == 3

    entries = [json.loads(x) for x in lines]
    entries[0]["record"]["payload"]["label"] = (entries[0]["record"]["payload"]["label"] + 1) % 10
    _put_batch(env, "twin2", [json.dumps(e, separators=(",", ":")).encode() for e in entries])
    with pytest.raises(IngestError, match="two contents"):
        export_npz(env.store, env.encryptor, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_export_revalidates_after_decryption(env: Any, tmp_path: Path) -> None:
    """A stored record that no longer passes the schema (written by someone holding the key)
    is refused at export, not trained on."""
    from pydantic import ValidationError
    from saip_ingestion.backends.local import LocalObjectStore

    key = _ingest_three(env)
    entries = [json.loads(x) for x in _stored_lines(env, key)]
    entries[0]["record"]["payload"]["features"][0] = 1e300  # outside any image value range
    entries[0]["record"]["payload"]["label"] = -1
    lines = [json.dumps(e).encode() for e in entries]
    other = LocalObjectStore(tmp_path / "tampered")  # only the re-sealed, edited batch
    edited = f"{ACCEPTED_PREFIX}tampered/000000000001-{content_id(lines)}"
    other.put(edited, seal_lines(env.encryptor, IngestEngine._context(edited), lines))
    with pytest.raises(ValidationError):
        export_npz(other, env.encryptor, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
