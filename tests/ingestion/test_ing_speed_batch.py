"""Issue 12, second speed pass: each batch-level shortcut gives exactly the reference answer.

* identifier patterns checked after decoding, once per distinct value of a batch
  (``FastDecoder.decode_many`` / ``decode_any_many``), against the reference decoder that
  checks every pattern inside msgspec (``defer_patterns=False``) and against pydantic: hostile
  identifiers (a trailing newline, non-ASCII, empty, one character too long, a non-canonical
  base64 tail) mixed into batches whose other records share the same value or a valid one, so a
  bad value that is shared, or hidden among good ones, is refused in every record that holds it
  and in no other;
* the image payload bytes and the RFC 6962 leaf hash built in one pass (``image_leaf``) against
  ``image_payload_bytes`` + ``leaf_hash(record_leaf_data(...))``, for records decoded by either
  path, any float (subnormals, ``-0.0``, the largest finite), ints for floats, every size.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from saip_ingestion import provenance, schemas
from saip_ingestion.fastdecode import FAST_DECODERS, FastDecoder, decode_any, decode_any_many
from saip_ingestion.provenance import (
    image_leaf,
    image_payload_bytes,
    leaf_hash,
    record_leaf_data,
)
from saip_ingestion.schemas import (
    _B64_64,
    KEY_ID_PATTERN,
    PRODUCER_ID_PATTERN,
    RECORD_ADAPTER,
    RECORD_ID_PATTERN,
    duplicate_key,
)

B64_32 = "A" * 43 + "="
B64_64 = "A" * 86 + "=="

#: the reference: every pattern checked by msgspec itself, as before this pass
REFERENCE = {
    "image-sample/v1": FastDecoder(
        schemas.ImageRecordV1,
        key_count=FAST_DECODERS["image-sample/v1"]._key_count,
        defer_patterns=False,
    ),
    "tabular-sample/v1": FastDecoder(schemas.TabularRecordV1, defer_patterns=False),
    "text-sample/v1": FastDecoder(schemas.TextRecordV1, defer_patterns=False),
}


def reference_any(data: bytes) -> Any:
    rec = REFERENCE["image-sample/v1"].decode(data)
    if rec is None and b'"tabular-sample"' in data:
        rec = REFERENCE["tabular-sample/v1"].decode(data)
    if rec is None and b'"text-sample"' in data:
        rec = REFERENCE["text-sample/v1"].decode(data)
    return rec


def pydantic_accepts(data: bytes) -> bool:
    try:
        rec = RECORD_ADAPTER.validate_json(data)
    except ValidationError:
        return False
    return duplicate_key(data, rec) is None


def test_the_reference_really_checks_patterns_in_msgspec_and_the_fast_one_does_not() -> None:
    """Not vacuous: the two decoders differ in where the patterns are checked."""
    assert REFERENCE["image-sample/v1"].patterns == []
    fast = FAST_DECODERS["image-sample/v1"]
    assert [p for p, _ in fast.patterns] == [
        ("record_id",), ("producer_id",), ("sig", "key_id"), ("sig", "root_sig"),
    ]  # fmt: skip


def _rx(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern[:-1] + r"\Z", fullmatch=True)


def _hostile(pattern: str, good: str) -> st.SearchStrategy[str]:
    return (
        st.sampled_from(
            [
                good + "\n",  # Python's ``$`` would let this through; ``\Z`` must not
                "\n" + good,
                good + " ",
                "",
                good[:-1] + "é",
                good + good,  # too long for most identifier patterns
                good[:-1] + "B" if good.endswith("A==") else good.upper(),
                "x" * 200,
            ]
        )
        | _rx(pattern)
    )


FIELDS = {
    "record_id": (RECORD_ID_PATTERN, "r-1"),
    "producer_id": (PRODUCER_ID_PATTERN, "alpha"),
    "key_id": (KEY_ID_PATTERN, "0123456789abcdef"),
    "root_sig": (_B64_64, B64_64),
}


def _record(schema: str, ids: dict[str, str]) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "image-sample": {"width": 2, "height": 2, "features": [0.0, 1, 2.5, 16.0], "label": 3},
        "tabular-sample": {"features": {"a": 1.0, "b_2": -3}, "label": 1},
        "text-sample": {"instruction": "hi", "response": "there"},
    }[schema]
    return {
        "record_id": ids["record_id"],
        "producer_id": ids["producer_id"],
        "seq": 7,
        "ts": 1_764_100_000_000,
        "schema": {"name": schema, "version": 1},
        "sig": {
            "alg": "ed25519-merkle-sha256",
            "key_id": ids["key_id"],
            "tree_size": 4,
            "index": 1,
            "path": [B64_32],
            "root_sig": ids["root_sig"],
        },
        "payload": payload,
    }


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """A batch whose records share some identifier values (as a Merkle batch shares its
    producer, key and root signature) and carry hostile ones elsewhere."""
    shared = {k: draw(_hostile(p, g)) for k, (p, g) in FIELDS.items()}
    out = []
    for _ in range(draw(st.integers(1, 12))):
        ids = {}
        for k, (p, g) in FIELDS.items():
            ids[k] = draw(st.sampled_from([shared[k], g]) | _hostile(p, g))
        schema = draw(st.sampled_from(["image-sample"] * 3 + ["tabular-sample", "text-sample"]))
        line = json.dumps(_record(schema, ids), ensure_ascii=draw(st.booleans()))
        if draw(st.integers(0, 9)) == 0:
            line = line[: len(line) // 2]  # garbage among the records
        out.append(line.encode())
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches())
def test_batch_pattern_checks_accept_exactly_what_msgspec_patterns_accept(
    batch: list[bytes],
) -> None:
    got = decode_any_many(batch)
    want = [reference_any(d) for d in batch]
    assert got == want
    assert [decode_any(d) for d in batch] == want  # the per-record form too
    for d, rec in zip(batch, got, strict=True):
        if rec is not None:
            assert pydantic_accepts(d), d[:200]


def test_one_bad_identifier_among_good_ones_refuses_only_its_records() -> None:
    good = {k: g for k, (_p, g) in FIELDS.items()}
    lines = []
    for k in FIELDS:
        for bad in (good[k] + "\n", good[k] + "é", ""):
            lines.append(json.dumps(_record("image-sample", {**good, k: bad})).encode())
    genuine = json.dumps(_record("image-sample", good)).encode()
    batch = [genuine, *lines, genuine]
    got = decode_any_many(batch)
    assert got[0] is not None
    assert got[-1] is not None
    assert got[1:-1] == [None] * len(lines)
    assert not any(pydantic_accepts(d) for d in lines)


# ----------------------------------------------------- signing input + leaf hash in one pass

_FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [0.0, -0.0, 5e-324, -1.7976931348623157e308, 1e16]
)


@st.composite
def image_records(draw: st.DrawFn) -> dict[str, Any]:
    w, h = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rec = _record("image-sample", {k: draw(_rx(p)) for k, (p, _g) in FIELDS.items()})
    rec["seq"] = draw(st.integers(0, 2**63 - 1))
    rec["ts"] = draw(st.integers(0, 2**53))
    rec["payload"] = {
        "width": w,
        "height": h,
        "features": draw(st.lists(_FLOATS | st.integers(-(2**53), 2**53), min_size=w * h,
                                  max_size=w * h)),
        "label": draw(st.integers(0, 65535)),
    }  # fmt: skip
    return rec


@settings(max_examples=300, deadline=None)
@given(rec=image_records())
def test_image_leaf_is_the_reference_signing_input_and_leaf(rec: dict[str, Any]) -> None:
    data = json.dumps(rec).encode()
    for decoded in (
        RECORD_ADAPTER.validate_json(data),
        FAST_DECODERS["image-sample/v1"].decode(data),
    ):
        assert decoded is not None
        pixels, leaf = image_leaf(decoded)
        assert pixels == image_payload_bytes(decoded["payload"])
        assert leaf == leaf_hash(record_leaf_data(decoded))


def test_image_leaf_packer_cache_is_bounded() -> None:
    for n in range(1, 200):
        rec = _record("image-sample", {k: g for k, (_p, g) in FIELDS.items()})
        rec["payload"] = {"width": n, "height": 1, "features": [1.5] * n, "label": 0}
        assert image_leaf(rec)[1] == leaf_hash(record_leaf_data(rec))
    assert len(provenance._IMAGE_PACKERS) <= 64
