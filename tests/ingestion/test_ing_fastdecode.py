"""Issue 12 item 2: the msgspec fast path accepts exactly what the pydantic path accepts.

Attacker first: hostile inputs (duplicate keys at every level, huge and boundary integers, NaN and
overflowing floats, deep nesting, non-UTF-8, identifiers with a trailing newline, booleans and
floats for integers, unknown keys) are fed to both paths — by hand and by a hypothesis mutation
suite — and every one is quarantined with the same reason by the engine with and without the fast
path (never dropped). Then: the fast path really is taken for genuine records (not vacuous), and
the generator refuses a constraint it cannot map.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ConfigDict, Field, ValidationError, WrapValidator, with_config
from saip_ingestion.fastdecode import FAST_DECODERS, FastDecoder, fast_type
from saip_ingestion.quarantine import REASONS
from saip_ingestion.schemas import RECORD_ADAPTER, canonical_json, duplicate_key
from typing_extensions import TypedDict

Env = Any
B64_32 = "A" * 43 + "="
B64_64 = "A" * 86 + "=="


class Raw(str):
    """A JSON fragment emitted verbatim (literals json.dumps cannot write, e.g. ``1e400``)."""


class Obj(list):  # type: ignore[type-arg]
    """A JSON object as a list of (key, value) pairs: duplicate keys are representable."""


def dump(v: Any) -> str:
    if isinstance(v, Raw):
        return str(v)
    if isinstance(v, Obj):
        return "{" + ",".join(f"{json.dumps(k)}:{dump(x)}" for k, x in v) + "}"
    if isinstance(v, list):
        return "[" + ",".join(dump(x) for x in v) + "]"
    if isinstance(v, float) and not math.isfinite(v):
        return {math.inf: "Infinity", -math.inf: "-Infinity"}.get(v, "NaN")
    return json.dumps(v, ensure_ascii=False)


def to_obj(v: Any) -> Any:
    if isinstance(v, dict):
        return Obj((k, to_obj(x)) for k, x in v.items())
    if isinstance(v, list):
        return [to_obj(x) for x in v]
    return v


def base(schema: str = "image-sample") -> dict[str, Any]:
    payload: dict[str, Any] = {
        "image-sample": {"width": 2, "height": 2, "features": [0.0, 1, 2.5, 16.0], "label": 3},
        "tabular-sample": {"features": {"a": 1.0, "b_2": -3}, "label": 1},
        "text-sample": {"instruction": "hi", "response": "there"},
    }[schema]
    return {
        "record_id": "r-1",
        "producer_id": "alpha",
        "seq": 7,
        "ts": 1_764_100_000_000,
        "schema": {"name": schema, "version": 1},
        "sig": {
            "alg": "ed25519-merkle-sha256",
            "key_id": "0123456789abcdef",
            "tree_size": 4,
            "index": 1,
            "path": [B64_32, B64_32],
            "root_sig": B64_64,
        },
        "payload": payload,
    }


def slow(data: bytes) -> Any:
    """The pydantic path's verdict: the record, or None when it (or the duplicate check) refuses."""
    try:
        rec = RECORD_ADAPTER.validate_json(data)
    except ValidationError:
        return None
    return rec if duplicate_key(data, rec) is None else None


def typed(v: Any) -> Any:
    """A structure with the Python type of every leaf (1 and 1.0 and True differ)."""
    if isinstance(v, dict):
        return {k: typed(x) for k, x in v.items()}
    if isinstance(v, list):
        return [typed(x) for x in v]
    return (type(v).__name__, v)


def assert_agree(data: bytes) -> Any:
    """Fast path accepts ⇒ pydantic accepts the same value (types included, same stored bytes)."""
    name = None
    try:
        doc = json.loads(data)
        name = doc["schema"]["name"] if isinstance(doc, dict) else None
    except Exception:
        pass
    fast = FAST_DECODERS.get(f"{name}/v1", FAST_DECODERS["image-sample/v1"]).decode(data)
    ref = slow(data)
    if fast is not None:
        assert ref is not None, f"fast path accepted what pydantic refuses: {data[:300]!r}"
        assert typed(fast) == typed(ref)
        assert canonical_json(fast) == canonical_json(ref)
    return fast, ref


# ------------------------------------------------------------------------------- hostile

DEEP = Raw("[" * 5000 + "]" * 5000)
HOSTILE_VALUES = [
    None, True, False, 0, -1, 1, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**400,
    -(2**63), 1.0, -0.0, 0.5, 1e308, Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"),
    Raw("1E2"), Raw("1.0e0"), Raw("-0"), Raw("00"), Raw("1."), "", "1", "alpha\n", "alpha ",
    "ALPHA", "al\x00pha", "r-1\n", "é", B64_32 + "\n", "0123456789abcdef\n", [], {}, [1.0] * 5,
    DEEP, Obj([("a", 1), ("a", 2)]),
]  # fmt: skip
FIELDS = [
    ("record_id",), ("producer_id",), ("seq",), ("ts",), ("schema", "name"), ("schema", "version"),
    ("sig", "alg"), ("sig", "key_id"), ("sig", "tree_size"), ("sig", "index"), ("sig", "path"),
    ("sig", "root_sig"), ("payload", "width"), ("payload", "height"), ("payload", "label"),
    ("payload", "features"),
]  # fmt: skip


def _set(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    target = out
    for k in path[:-1]:
        target = target.get(k) if isinstance(target, dict) else None
    if isinstance(target, dict):
        target[path[-1]] = value
    return out


def _line(doc: Any) -> bytes:
    return dump(to_obj(doc) if not isinstance(doc, Obj) else doc).encode()


@pytest.mark.parametrize("path", FIELDS, ids=".".join)
def test_every_hostile_value_in_every_field_gets_the_same_verdict(path: tuple[str, ...]) -> None:
    for value in HOSTILE_VALUES:
        fast, ref = assert_agree(_line(_set(base(), path, value)))
        assert fast is None or ref is not None


def test_duplicate_keys_at_every_level_never_take_the_fast_path() -> None:
    doc = base()
    lines = []
    top = to_obj(doc)
    lines.append(dump(Obj([*top, ("seq", 8)])).encode())  # record level, last value differs
    lines.append(dump(Obj([*top, ("seq", 7)])).encode())  # same value repeated
    for i, (k, v) in enumerate(top):
        if isinstance(v, Obj):  # schema, sig, payload
            twice = Obj([*v, v[0]])
            lines.append(dump(Obj([*top[:i], (k, twice), *top[i + 1 :]])).encode())
    tab = to_obj(base("tabular-sample"))
    feats = dict(tab)["payload"]
    feats_twice = Obj([("features", Obj([("a", 1.0), ("a", 2.0)])), ("label", 1)])
    lines.append(dump(Obj([(k, feats_twice if v is feats else v) for k, v in tab])).encode())
    for data in lines:
        fast, ref = assert_agree(data)
        assert fast is None, data
        assert ref is None, data


def test_unknown_keys_and_key_like_strings_go_to_pydantic() -> None:
    extra = dump(Obj([*to_obj(base()), ("extra", 1)])).encode()
    assert assert_agree(extra) == (None, None)
    nested = _set(base(), ("payload", "x"), 1)
    assert assert_agree(_line(nested)) == (None, None)
    # a value containing '":' is legal; the fast path defers (never refuses) and pydantic accepts
    tricky = _line(_set(base("text-sample"), ("payload", "instruction"), 'say "x": 1'))
    fast, ref = assert_agree(tricky)
    assert fast is None
    assert ref is not None


@pytest.mark.parametrize(
    "data",
    [
        b'{"record_id":"r\xff","producer_id":"alpha"}',
        _line(base()).replace(b'"alpha"', b'"alph\xe9"'),
        _line(base("text-sample")).replace(b'"hi"', b'"h\xed\xa0\x80"'),  # encoded surrogate
        b"\xef\xbb\xbf" + _line(base()),  # BOM
        _line(base()) + b"\n",
        _line(base()) + b" x",
        b"",
        b"null",
        dump(DEEP).encode(),
    ],
)
def test_non_utf8_and_framing_garbage_never_take_the_fast_path(data: bytes) -> None:
    fast, _ = assert_agree(data)
    if data == _line(base()) + b"\n":
        return  # trailing whitespace is valid JSON for both
    assert fast is None


def test_engine_reasons_are_identical_with_and_without_the_fast_path(env: Env) -> None:
    p = env.producer("alpha")
    good = p.sign([p.record(label=i) for i in range(4)])
    lines = [env.line(r) for r in good]
    hostile = [
        lines[0].replace(b'"seq":', b'"seq":1,"seq":', 1),
        lines[1].replace(b'"width":8', b'"width":8,"width":8', 1),
        lines[2].replace(b'"label":2', b'"label":2.0', 1),
        lines[3].replace(b'"ts":', b'"ts":1e400,"x":', 1),
        lines[0].replace(b'"producer_id":"alpha"', b'"producer_id":"alpha\\n"', 1),
        lines[1].replace(b"[0.0,", b"[NaN,", 1),
        lines[2].replace(b'"seq":2', b'"seq":' + str(2**64).encode(), 1),
        lines[3].replace(b'"alpha"', b'"alph\xff"', 1),
        dump(DEEP).encode(),
        lines[0][:-1] + b',"extra":{"a":1,"a":2}}',
    ]
    outs = []
    for fast in (True, False):
        env.tmp = env.tmp / f"fast-{fast}"
        env.store = type(env.store)(env.tmp / "objects")
        eng = env.open(fast_decode=fast)
        outs.append(eng.process_and_commit(env.msgs([*hostile, *lines])))
        assert eng.summary.received == eng.summary.accepted + eng.summary.quarantined
    assert outs[0] == outs[1]
    assert [o for o, _ in outs[0][: len(hostile)]] == ["quarantined"] * len(hostile)
    assert all(r in REASONS for _, r in outs[0][: len(hostile)])
    assert [o for o, _ in outs[0][len(hostile) :]] == ["accepted"] * 4


# ------------------------------------------------------------------------- property suite

_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**53 - 2, max_value=2**64 + 2),
    st.integers(min_value=-3, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HOSTILE_VALUES),
    st.text(max_size=12),
    st.from_regex(r"\A[a-z][a-z0-9-]{1,5}\n?\Z"),
)
_VALUE = st.recursive(_LEAF, lambda inner: st.lists(inner, max_size=5), max_leaves=8)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    doc = base(draw(st.sampled_from(["image-sample", "tabular-sample", "text-sample"])))
    ops = draw(st.lists(st.integers(0, 5), min_size=0, max_size=3))
    for op in ops:
        ref = doc.get("schema")
        name = ref.get("name") if isinstance(ref, dict) else None
        payload = doc.get("payload")
        if not isinstance(payload, dict):
            payload = doc["payload"] = {}
        if op in (0, 1):  # replace a field (or a nested one) with anything
            path = draw(st.sampled_from(FIELDS[:12] + [("payload", k) for k in doc["payload"]]))
            doc = _set(doc, path, draw(_VALUE))
        elif op == 2:  # drop a key
            path = draw(st.sampled_from(FIELDS[:12] + [("payload", k) for k in doc["payload"]]))
            target = doc
            for k in path[:-1]:
                target = target.get(k) if isinstance(target, dict) else None
            if isinstance(target, dict):
                target.pop(path[-1], None)
        elif op == 3 and name == "image-sample":  # shape / features
            n = draw(st.integers(0, 6))
            doc["payload"]["features"] = draw(st.lists(_LEAF, min_size=n, max_size=n))
        elif op == 4 and name == "tabular-sample":
            feats = draw(st.dictionaries(st.text(max_size=6), _LEAF, max_size=4))
            doc["payload"]["features"] = feats
        elif op == 5 and isinstance(ref, dict):
            ref["name"] = draw(st.sampled_from(["image-sample", "tabular-sample", "x"]))
    obj = to_obj(doc)
    if draw(st.booleans()):  # a duplicated or unknown key somewhere
        where = draw(st.sampled_from(["", "schema", "sig", "payload"]))
        key = draw(st.sampled_from(["seq", "name", "index", "label", "width", "zz", "version"]))
        val = draw(_LEAF)
        if where:
            inner = dict(obj)[where]
            if isinstance(inner, Obj):
                inner.append((key, val))
        else:
            obj.append((key, val))
    return dump(obj).encode()


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated())
def test_fast_and_pydantic_paths_agree_on_any_mutated_record(data: bytes) -> None:
    assert_agree(data)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400) | mutated().map(lambda b: b[: len(b) // 2]))
def test_fast_path_refuses_garbage_pydantic_refuses(data: bytes) -> None:
    assert_agree(data)


# ------------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("schema", ["image-sample", "tabular-sample", "text-sample"])
def test_genuine_records_take_the_fast_path(schema: str) -> None:
    data = _line(base(schema))
    fast, ref = assert_agree(data)
    assert fast is not None
    assert fast == ref
    assert type(fast["payload"]["features" if schema != "text-sample" else "response"]) in (
        list,
        dict,
        str,
    )


def test_the_engine_takes_the_fast_path_for_genuine_records(env: Env, monkeypatch: Any) -> None:
    p = env.producer("alpha")
    lines = [env.line(r) for r in p.sign([p.record(label=i) for i in range(8)])]
    eng = env.open()
    calls = []
    monkeypatch.setattr(RECORD_ADAPTER, "validate_json", lambda *a, **k: calls.append(a))
    assert [o for o, _ in eng.process_and_commit(env.msgs(lines))] == ["accepted"] * 8
    assert calls == []


def test_a_constraint_without_a_fast_mapping_fails_at_import_time() -> None:
    @with_config(ConfigDict(extra="forbid", strict=True, allow_inf_nan=False))
    class Odd(TypedDict):
        x: Annotated[int, WrapValidator(lambda v, h: h(v))]

    with pytest.raises(TypeError, match="no fast-path mapping"):
        fast_type(Odd)

    @with_config(ConfigDict(extra="allow", strict=True, allow_inf_nan=False))
    class Loose(TypedDict):
        x: Annotated[int, Field(ge=0)]

    with pytest.raises(TypeError, match="extra=forbid"):
        FastDecoder(Loose)
