"""Provenance: RFC 6962 Merkle hashing, per-record inclusion proofs, Ed25519 batch signatures."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from saip_ingestion.provenance import (
    ProducerRegistry,
    Signer,
    Verifier,
    inclusion_root,
    leaf_hash,
    merkle_proofs,
    merkle_root,
    record_leaf_data,
)
from saip_ingestion.schemas import RECORD_ADAPTER

# RFC 6962 test inputs used by the certificate-transparency reference implementation
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]


def _reference_mth(data: list[bytes]) -> bytes:
    """Independent, literal transcription of RFC 6962 §2.1 MTH (recursive, on raw leaves)."""
    n = len(data)
    if n == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _reference_mth(data[:k]) + _reference_mth(data[k:])).digest()


def test_leaf_hash_of_empty_input_is_rfc6962() -> None:
    # SHA-256(0x00): the RFC 6962 hash of the empty leaf
    expected = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"").hex() == expected


def test_root_of_ct_vectors() -> None:
    leaves = [leaf_hash(d) for d in CT_LEAVES]
    root = merkle_root(leaves)
    assert root == _reference_mth(CT_LEAVES)
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33])
def test_every_inclusion_proof_verifies(n: int) -> None:
    data = [bytes([i]) * (i + 1) for i in range(n)]
    leaves = [leaf_hash(d) for d in data]
    root, paths = merkle_proofs(leaves)
    assert root == _reference_mth(data)
    for i, path in enumerate(paths):
        assert inclusion_root(i, n, leaves[i], path) == root
        if path:  # any altered sibling, index or size breaks it
            bad = [bytes(32), *path[1:]]
            assert inclusion_root(i, n, leaves[i], bad) != root
        if n > 1:
            assert inclusion_root((i + 1) % n, n, leaves[i], path) != root
    assert inclusion_root(n, n, leaves[0], paths[0]) is None


def _signed_batch(n: int) -> tuple[ProducerRegistry, Ed25519PrivateKey, list[dict[str, Any]], Any]:
    import tempfile
    from pathlib import Path

    registry = ProducerRegistry(Path(tempfile.mkdtemp()) / "producers")
    key = Ed25519PrivateKey.generate()
    registry.register("alpha", key.public_key())
    signer = Signer(producer_id="alpha", private_key=key)
    recs = [
        {
            "record_id": f"alpha-{i}",
            "producer_id": "alpha",
            "seq": i,
            "ts": 1,
            "schema": {"name": "image-sample", "version": 1},
            "payload": {"width": 2, "height": 1, "features": [float(i), 0.5], "label": i % 3},
        }
        for i in range(n)
    ]
    for r, s in zip(recs, signer.sign_batch([record_leaf_data(r) for r in recs]), strict=True):
        r["sig"] = s
    return registry, key, recs, signer


def _verify(verifier: Verifier, rec: dict[str, Any]) -> Any:
    sig = rec["sig"]
    return verifier.verify(
        producer_id=rec["producer_id"],
        key_id=sig["key_id"],
        tree_size=sig["tree_size"],
        index=sig["index"],
        path=sig["path"],
        root_sig=sig["root_sig"],
        leaf=leaf_hash(record_leaf_data(rec)),
    )


def test_each_record_is_verifiable_alone_and_batch_costs_one_signature_check() -> None:
    registry, _key, recs, _signer = _signed_batch(100)
    verifier = Verifier(registry)
    assert all(_verify(verifier, r) is None for r in recs)
    assert verifier.signature_checks == 1  # one Ed25519 verification for the batch
    lone = Verifier(registry)  # a fresh verifier with a single record from the middle
    assert _verify(lone, recs[57]) is None
    # the signed message binds the tree size: a proof replayed under another size fails
    resized = dict(recs[0], sig=dict(recs[0]["sig"], tree_size=128))
    assert _verify(Verifier(registry), resized)[0] == "bad_signature"


def test_signature_survives_avro_transport() -> None:
    from saip_ingestion.schemas import avro_decode, avro_encode

    registry, _key, recs, _signer = _signed_batch(4)
    back = RECORD_ADAPTER.validate_python(avro_decode(avro_encode(recs[2])))
    assert _verify(Verifier(registry), dict(back)) is None


def test_other_producers_key_or_name_fails() -> None:
    registry, _key, recs, _signer = _signed_batch(4)
    mallory = Ed25519PrivateKey.generate()
    registry.register("mallory", mallory.public_key())
    forged = dict(recs[0], producer_id="mallory")
    reason = _verify(Verifier(registry), forged)
    assert reason is not None
    assert reason[0] == "unknown_key"
    other = Signer(producer_id="alpha", private_key=mallory)
    resigned = dict(recs[0], sig=other.sign_batch([record_leaf_data(recs[0])])[0])
    assert _verify(Verifier(registry), resigned)[0] == "unknown_key"


def test_revoked_key(tmp_path: Any) -> None:
    registry, _key, recs, _signer = _signed_batch(2)
    path = registry.directory / "alpha.json"
    doc = json.loads(path.read_text())
    doc["keys"][0]["revoked"] = True
    path.write_text(json.dumps(doc))
    registry.reload()
    assert _verify(Verifier(registry), recs[0])[0] == "revoked_key"


def test_registry_rejects_inconsistent_files(tmp_path: Any) -> None:
    from saip_ingestion.errors import ProvenanceError

    d = tmp_path / "producers"
    d.mkdir()
    pub = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    (d / "alpha.json").write_text(
        json.dumps(
            {
                "producer_id": "alpha",
                "keys": [{"key_id": "0" * 16, "public_key": base64.b64encode(pub).decode()}],
            }
        )
    )
    with pytest.raises(ProvenanceError, match="key_id"):
        ProducerRegistry(d)


def test_signer_validates_eagerly() -> None:
    with pytest.raises(ValueError, match="producer_id"):
        Signer(producer_id="Bad Name", private_key=Ed25519PrivateKey.generate())
    with pytest.raises(TypeError):
        Signer(producer_id="alpha", private_key="not a key")  # type: ignore[arg-type]
