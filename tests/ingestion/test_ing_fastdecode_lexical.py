"""The fast decoder's ``':'``-count key check against lexical tricks (hypothesis).

The check is sound if the number of ``:`` bytes in valid JSON can equal the decoded record's key
count only when every input key is a distinct known key. Adversarial spellings of the same
document: any JSON whitespace between tokens, keys and strings with characters written as
``\\uXXXX`` (``\\u003a`` is a colon without a ``:`` byte; ``"s\\u0065q"`` is ``"seq"``), a key
repeated under another spelling, a ``:`` inside a string, an unknown key carrying an escaped
colon. Whatever the fast path accepts, pydantic (with the exact duplicate check) must accept with
the same value, stored as the same canonical bytes (keys in any order).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.fastdecode import FAST_DECODERS
from saip_ingestion.schemas import RECORD_ADAPTER, canonical_json, duplicate_key

B64_32 = "A" * 43 + "="
B64_64 = "A" * 86 + "=="
WS = st.text(alphabet=" \t\n\r", max_size=2)


def base() -> dict[str, Any]:
    return {
        "record_id": "r-1",
        "producer_id": "alpha",
        "seq": 7,
        "ts": 1_764_100_000_000,
        "schema": {"name": "image-sample", "version": 1},
        "sig": {
            "alg": "ed25519-merkle-sha256",
            "key_id": "0123456789abcdef",
            "tree_size": 4,
            "index": 1,
            "path": [B64_32],
            "root_sig": B64_64,
        },
        "payload": {"width": 1, "height": 2, "features": [0.5, 3], "label": 3},
    }


def slow(data: bytes) -> Any:
    try:
        rec = RECORD_ADAPTER.validate_json(data)
    except Exception:
        return None
    return rec if duplicate_key(data, rec) is None else None


@st.composite
def spelled(draw: st.DrawFn, text: str) -> str:
    """A JSON string literal for ``text``, some characters written as ``\\uXXXX``."""
    out = []
    for ch in text:
        if draw(st.integers(0, 4)) == 0:
            out.append(f"\\u{ord(ch):04{draw(st.sampled_from(['x', 'X']))}}")
        else:
            out.append(json.dumps(ch)[1:-1])
    return '"' + "".join(out) + '"'


@st.composite
def emit(draw: st.DrawFn, v: Any) -> str:
    ws = lambda: draw(WS)  # noqa: E731
    if isinstance(v, dict):
        items = draw(st.permutations(list(v.items())))  # any key order
        if draw(st.integers(0, 9)) == 0 and items:  # a key again, maybe spelled differently
            k, x = items[draw(st.integers(0, len(items) - 1))]
            items.append((k, x))
        if draw(st.integers(0, 9)) == 0:  # an unknown key that looks like a known one
            items.append((draw(st.sampled_from(["seq:", "x:y", "seq\u003a", "a"])), 1))
        parts = [
            ws() + draw(spelled(k)) + ws() + ":" + ws() + draw(emit(x)) + ws() for k, x in items
        ]
        return "{" + ",".join(parts) + "}"
    if isinstance(v, list):
        return "[" + ",".join(ws() + draw(emit(x)) + ws() for x in v) + "]"
    if isinstance(v, str):
        if draw(st.integers(0, 9)) == 0:  # a colon in a string value (escaped or not)
            v = v + draw(st.sampled_from([":", "\u003a"]))
        return draw(spelled(v))
    return json.dumps(v)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fast_path_accepts_no_spelling_pydantic_refuses(data: st.DataObject) -> None:
    line = (data.draw(WS) + data.draw(emit(base())) + data.draw(WS)).encode()
    fast = FAST_DECODERS["image-sample/v1"].decode(line)
    ref = slow(line)
    if fast is not None:
        assert ref is not None, line
        assert canonical_json(fast) == canonical_json(ref)


def test_escaped_spellings_are_not_vacuous() -> None:
    """The suite's rewrites reach both outcomes: an escaped key spelling is accepted by both
    paths, the same key twice under two spellings by neither."""
    good = json.dumps(base(), separators=(",", ":")).replace('"seq"', '"s\\u0065q"').encode()
    assert FAST_DECODERS["image-sample/v1"].decode(good) is not None
    twice = good.replace(b'"s\\u0065q":7', b'"s\\u0065q":7,"seq":8')
    assert FAST_DECODERS["image-sample/v1"].decode(twice) is None
    assert slow(twice) is None


def test_keys_in_another_order_are_stored_in_schema_order() -> None:
    """Stored records are the canonical re-serialisation (ING-14): msgspec keeps the input's
    key order, pydantic the schema's; the fast path accepted a record with its keys reversed
    and the stored bytes followed the producer's order."""
    doc = base()
    rev = {k: dict(reversed(v.items())) if isinstance(v, dict) else v for k, v in doc.items()}
    line = json.dumps(dict(reversed(rev.items()))).encode()
    fast = FAST_DECODERS["image-sample/v1"].decode(line)
    ref = slow(line)
    assert ref is not None
    assert canonical_json(ref).startswith(b'{"record_id":')
    assert fast is not None
    assert canonical_json(fast) == canonical_json(ref)
    in_order = json.dumps(doc).encode()
    assert FAST_DECODERS["image-sample/v1"].decode(in_order) is not None  # not vacuous
