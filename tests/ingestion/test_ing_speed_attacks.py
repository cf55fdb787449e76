"""Adversarial review of the speed pass (issue 12): correctly signed records with hostile content.

Each shortcut is compared with the path it replaces, end to end through the engine:

* the decision loop (``_decide_all`` with ``SeqWindows.accept_new``) against the general
  ``_decide`` alone (``accept_new`` disabled on one of two engines fed the same messages):
  replays, forged rivals on a used ``seq``, exact re-deliveries, ``record_id`` conflicts,
  duplicates inside one batch, ``seq`` gaps and window wrap, ``ts`` exactly at and one past each
  edge of the freshness window, content quarantines, producers reopened from their window files.
  Same outcome and reason per record, same stored bytes, same window files, same counters;
* the one-call msgspec stored line against the pydantic-core canonical form for every JSON
  spelling of a number an attacker may send (negative zero, subnormals, ``1E-7`` / ``1e-07`` /
  ``0.0000001``, ints where floats are due, 17+ significant digits, ``2**53 + 1``), with and
  without the fast decoder;
* the level-wise Merkle root against the RFC 6962 known answers (the certificate-transparency
  test vectors) for every size 1–8, and against the recursive definition for every size 1–300
  with leaves that differ only in their last byte.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_ingestion.engine import ACCEPTED_PREFIX, ImageSpec, IngestEngine
from saip_ingestion.fastdecode import FAST_DECODERS, decode_any
from saip_ingestion.provenance import leaf_hash, merkle_root, merkle_root_recursive
from saip_ingestion.schemas import RECORD_ADAPTER, canonical_json
from saip_ingestion.sealed import open_lines

Env = Any
_COUNTER = itertools.count()
MAX_AGE, MAX_SKEW, WINDOW = 10_000, 2_000, 4


def reference_line(rec: Any, leaf_hex: str) -> bytes:
    """The stored line of an unsanitised record as written before the msgspec shortcut."""
    head = (
        f'{{"record_id":"{rec["record_id"]}","producer_id":"{rec["producer_id"]}",'
        f'"seq":{rec["seq"]},"ts":{rec["ts"]},"leaf":"{leaf_hex}","audit":'
    ).encode()
    return head + b'[],"record":' + canonical_json(rec) + b"}"


def _stored(env: Env) -> list[bytes]:
    out: list[bytes] = []
    for key in sorted(env.store.list(ACCEPTED_PREFIX)):
        blob = env.store.get(key)
        out.extend(open_lines(env.encryptor, IngestEngine._context(key), blob, digest=None))
    return out


def _windows(env: Env) -> dict[str, bytes]:
    d = env.tmp / "state" / "windows"
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.win"))}


# ----------------------------------------------------------- decision loop vs _decide alone

_TS = st.sampled_from([0, -MAX_AGE, -MAX_AGE - 1, MAX_SKEW, MAX_SKEW + 1, -1, 1])
_OP = st.one_of(
    st.tuples(
        st.just("new"),
        st.sampled_from(["alpha", "beta"]),
        # -1: the producer's next seq (the common case); else gaps, wrap, far jumps
        st.sampled_from([-1, -1, -1]) | st.integers(0, 14) | st.sampled_from([2**63 - 1, 2**40]),
        st.integers(0, 3),  # record_id pool: conflicts across seqs
        _TS,
        st.sampled_from(["good", "good", "good", "rival", "label", "range", "tabular"]),
    ),
    st.tuples(st.just("again"), st.integers(0, 1000)),  # exact re-delivery of an earlier line
    st.tuples(st.just("cut")),  # batch boundary
    st.tuples(st.just("reopen")),  # close (windows to files) and reopen
)


def _payload(kind: str, seq: int) -> tuple[dict[str, Any], str]:
    feats = [float((i + seq) % 17) for i in range(64)]
    if kind == "rival":  # another record on the same seq: a different leaf
        feats[0] = 16.5 if feats[0] != 16.5 else 0.5
    label = 99 if kind == "label" else 3
    if kind == "range":
        feats[5] = 1e300
    if kind == "tabular":
        return {"features": {"a": float(seq), "b": -0.0}, "label": 1}, "tabular-sample"
    return {"width": 8, "height": 8, "features": feats, "label": label}, "image-sample"


def _build(env: Env, ops: list[Any], reference: Env) -> list[list[bytes]]:
    producers = {name: env.producer(name) for name in ("alpha", "beta")}
    for name, p in producers.items():  # the same producer keys in the reference's registry
        reference.registry.register(name, p.key.public_key())
    batches: list[list[bytes]] = [[]]
    sent: list[bytes] = []
    top = {"alpha": -1, "beta": -1}
    for op in ops:
        if op[0] in ("cut", "reopen"):
            batches.append([op[0].encode()] if op[0] == "reopen" else [])
            continue
        if op[0] == "again":
            if sent:
                batches[-1].append(sent[op[1] % len(sent)])
            continue
        _, name, seq, rid, dts, kind = op
        seq = top[name] + 1 if seq == -1 else seq
        top[name] = max(top[name], seq)
        p = producers[name]
        payload, schema = _payload(kind, seq)
        rec = p.record(payload, schema=schema, ts=env.NOW + dts, seq=seq, record_id=f"r{rid}")
        line = env.line(p.sign([rec])[0])
        batches[-1].append(line)
        sent.append(line)
    return batches


def _run(env: Env, batches: list[list[bytes]], *, shortcut: bool) -> Any:
    kw = {"max_age_ms": MAX_AGE, "max_skew_ms": MAX_SKEW, "seq_window": WINDOW}
    eng = env.open(**kw)
    outcomes = []
    for batch in batches:
        if batch[:1] == [b"reopen"]:
            env.close()
            batch = batch[1:]
        eng = env.engine or env.open(**kw)
        if not shortcut:  # the reference: every record decided by _decide
            eng.windows.accept_new = lambda *a: False  # type: ignore[method-assign]
        if batch:
            outcomes.append(eng.process_and_commit(env.msgs(batch)))
    summary = dataclasses.asdict(eng.summary)
    env.close()
    return outcomes, _stored(env), _windows(env), summary


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_OP, min_size=1, max_size=30))
def test_decision_loop_decides_and_stores_exactly_as_decide(env: Env, ops: list[Any]) -> None:
    base = env.tmp / f"ex{next(_COUNTER)}"
    fast, slow = type(env)(base / "fast", env.encryptor), type(env)(base / "slow", env.encryptor)
    batches = _build(fast, ops, slow)
    got, expected = _run(fast, batches, shortcut=True), _run(slow, batches, shortcut=False)
    assert got[0] == expected[0]  # outcome and reason of every record
    assert got[1] == expected[1]  # stored bytes
    assert got[2] == expected[2]  # window files
    assert got[3] == expected[3]  # counters


def test_decision_loop_attacks_are_not_vacuous(env: Env) -> None:
    """The scenario the property test draws from, spelled out: every kind of refusal occurs."""
    ops: list[Any] = [
        ("new", "alpha", 0, 0, 0, "good"),
        ("new", "alpha", 0, 0, 0, "rival"),  # forged rival on a used seq, same batch
        ("again", 0),  # exact re-delivery inside the batch
        ("new", "alpha", 1, 0, 0, "good"),  # record_id of seq 0 on a new seq
        ("new", "alpha", 2, 1, -MAX_AGE - 1, "good"),  # one ms too old
        ("new", "alpha", 2, 1, MAX_SKEW, "good"),  # exactly at the future edge: accepted
        ("new", "alpha", 3, 2, 0, "label"),
        ("cut",),
        ("again", 6),  # re-delivery of a content quarantine
        ("new", "alpha", 9, 3, -MAX_AGE, "good"),  # gap, exactly at the old edge: accepted
        ("reopen",),
        ("new", "alpha", 5, 4, 0, "good"),  # 5 <= 9 - 4: below the window
        ("new", "alpha", 8, 5, 0, "tabular"),  # late but in the window
        ("again", 7),
    ]
    fast = type(env)(env.tmp / "fast", env.encryptor)
    slow = type(env)(env.tmp / "slow", env.encryptor)
    batches = _build(fast, ops, slow)
    got, expected = _run(fast, batches, shortcut=True), _run(slow, batches, shortcut=False)
    assert got == expected
    reasons = [r.split(":")[0] if r else o for batch in got[0] for o, r in batch]
    for want in ("accepted", "duplicate", "replay", "conflict", "ts_out_of_window",
                 "label_invalid", "seq_out_of_window"):  # fmt: skip
        assert any(want in r for r in reasons), (want, reasons)


# ------------------------------------------------------- stored line: hostile number spellings

HOSTILE_NUMBERS = [
    b"-0", b"-0.0", b"0e0", b"-0e-10", b"5e-324", b"4.9406564584124654e-324",
    b"2.2250738585072011e-308", b"2.2250738585072012e-308", b"1E-7", b"1e-07", b"1.0e-7",
    b"0.0000001", b"0.00001", b"1e-5", b"1e-6", b"9007199254740993", b"-9007199254740993",
    b"9007199254740992.5000000000000000001",
    b"1.00000000000000011102230246251565404236316680908203125",
    b"9999999999999998", b"9999999999999999", b"1e16", b"1E+16", b"123456789012345678901234567890",
    b"0." + b"0" * 300 + b"1", b"1" + b"0" * 15, b"1" + b"0" * 300 + b"e-300", b"7", b"-1E0",
]  # fmt: skip


def _image_line(env: Env, p: Any, feats: list[bytes]) -> bytes:
    """A signed image record whose features are spelled ``feats`` on the wire (the signature
    covers the values, not their spelling: the values the line decodes to are signed)."""
    vals = [float(v) for v in json.loads(b"[" + b",".join(feats) + b"]")]
    payload = {"width": len(feats), "height": 1, "features": vals, "label": 1}
    (rec,) = p.sign([p.record(payload)])
    line = env.line(rec)
    start = line.index(b'"features":[') + len(b'"features":')
    end = line.index(b"]", start) + 1
    return line[:start] + b"[" + b",".join(feats) + b"]" + line[end:]


def test_every_hostile_number_spelling_is_stored_as_pydantic_core_writes_it(env: Env) -> None:
    """Each spelling alone in a record (so the shortcut's 1e16 bound is probed from both sides)
    and all of them in one record: the stored line is the pydantic-core one, with and without
    the fast decoder."""
    p = env.producer("alpha")
    lines = [_image_line(env, p, [f]) for f in HOSTILE_NUMBERS]
    mixed = _image_line(env, p, HOSTILE_NUMBERS)
    for fast in (True, False):
        for spec_w, batch in ((1, lines), (len(HOSTILE_NUMBERS), [mixed])):
            env.tmp = env.tmp / f"fast-{fast}-{spec_w}"
            env.store = type(env.store)(env.tmp / "objects")
            spec = ImageSpec(spec_w, 1, -1e300, 1e300, frozenset(range(10)))
            eng = env.open(image_spec=spec, fast_decode=fast)
            assert eng.process_and_commit(env.msgs(batch)) == [("accepted", None)] * len(batch)
            stored = _stored(env)
            for line, got in zip(batch, stored, strict=True):
                rec = RECORD_ADAPTER.validate_json(line)
                assert got == reference_line(rec, json.loads(got)["leaf"]), (fast, got)
    feats = HOSTILE_NUMBERS
    # and each below 1e16 alone takes the one-call msgspec line (the ``plain`` shortcut)
    plain = [f for f in feats if abs(float(json.loads(f))) < 1e16]
    line = _image_line(env, p, plain)
    spec = ImageSpec(len(plain), 1, -1e300, 1e300, frozenset(range(10)))
    env.tmp = env.tmp / "plain"
    env.store = type(env.store)(env.tmp / "objects")
    eng = env.open(image_spec=spec)
    assert eng.process_and_commit(env.msgs([line])) == [("accepted", None)]
    (stored,) = _stored(env)
    rec = RECORD_ADAPTER.validate_json(line)
    assert stored == reference_line(rec, json.loads(stored)["leaf"])
    assert b'"features":[0.0,-0.0,0.0,-0.0,5e-324,5e-324,' in stored


@settings(max_examples=300, deadline=None)
@given(
    x=st.floats(allow_nan=False, allow_infinity=False, width=64),
    spelling=st.sampled_from(["repr", "e", "E+", "zeros", "int"]),
)
def test_fast_decoder_value_and_stored_bytes_equal_pydantic_for_any_spelling(
    x: float, spelling: str
) -> None:
    """One feature, any JSON spelling: the fast decoder yields the same float (bit for bit) as
    pydantic, and the record serialises to the same canonical bytes."""
    if spelling == "repr":
        lit = repr(x)
    elif spelling == "e":
        lit = f"{x:.17e}"
    elif spelling == "E+":
        lit = f"{x:.20E}".replace("E", "E+").replace("E+-", "E-").replace("E++", "E+")
    elif spelling == "zeros":
        lit = f"{x:.340f}".rstrip("0") + "0"
    else:
        lit = str(int(x)) if abs(x) < 1e300 else repr(x)
    base = _base_image_bytes()
    data = base.replace(b'"features":[1.0]', b'"features":[' + lit.encode() + b"]")
    slow = RECORD_ADAPTER.validate_json(data)
    fast = FAST_DECODERS["image-sample/v1"].decode(data)
    assert fast is not None
    assert fast == slow
    a, b = fast["payload"]["features"][0], slow["payload"]["features"][0]
    assert a.hex() == b.hex()  # -0.0 vs 0.0 too
    assert canonical_json(fast) == canonical_json(slow)


def _base_image_bytes() -> bytes:
    rec = {
        "record_id": "r-1",
        "producer_id": "alpha",
        "seq": 7,
        "ts": 1_764_100_000_000,
        "schema": {"name": "image-sample", "version": 1},
        "sig": {
            "alg": "ed25519-merkle-sha256",
            "key_id": "0123456789abcdef",
            "tree_size": 1,
            "index": 0,
            "path": [],
            "root_sig": "A" * 86 + "==",
        },
        "payload": {"width": 1, "height": 1, "features": [1.0], "label": 1},
    }
    return json.dumps(rec, separators=(",", ":")).encode()


# ---------------------------------------------------------------- decode_any: schema routing


def test_a_text_record_that_spells_another_schema_name_still_takes_the_fast_path() -> None:
    """``decode_any`` routes on the bytes ``"tabular-sample"``, which a text record can carry
    as a value: it must still reach the text decoder (the fast path, not pydantic)."""
    rec = json.loads(_base_image_bytes())
    rec["schema"]["name"] = "text-sample"
    rec["payload"] = {"instruction": "tabular-sample", "response": "image-sample"}
    data = json.dumps(rec, separators=(",", ":")).encode()
    assert decode_any(data) == RECORD_ADAPTER.validate_json(data)
    rec["schema"]["name"] = "tabular-sample"
    rec["payload"] = {"features": {"a": 1.0}}
    rec["record_id"] = "text-sample"
    data = json.dumps(rec, separators=(",", ":")).encode()
    assert decode_any(data) == RECORD_ADAPTER.validate_json(data)


# ------------------------------------------------------------------------------ Merkle root

#: RFC 6962 Merkle Tree Hash of the first n of the certificate-transparency test inputs
CT_INPUTS = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
             bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]  # fmt: skip
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_level_merkle_root_gives_the_rfc6962_known_answers() -> None:
    leaves = [leaf_hash(d) for d in CT_INPUTS]
    for n in range(1, 9):
        assert merkle_root(leaves[:n]).hex() == CT_ROOTS[n - 1], n
        assert merkle_root(tuple(leaves[:n])).hex() == CT_ROOTS[n - 1], n


def test_level_merkle_root_tells_apart_leaves_that_differ_in_one_byte_at_any_size() -> None:
    """Sizes 1–300, a single leaf flipped at every position of the odd-count right edge and the
    left edge: the level-wise root follows the recursive one (no carried node is dropped or
    hashed twice, single leaf returned as itself, no domain-separation byte lost)."""
    base = [hashlib.sha256(i.to_bytes(2, "big")).digest() for i in range(300)]
    for n in range(1, 301):
        leaves = base[:n]
        ref = merkle_root_recursive(leaves)
        assert merkle_root(leaves) == ref, n
        for i in {0, n // 2, n - 1}:
            alt = list(leaves)
            alt[i] = alt[i][:-1] + bytes([alt[i][-1] ^ 1])
            assert merkle_root(alt) == merkle_root_recursive(alt) != ref, (n, i)
    one = hashlib.sha256(b"x").digest()
    assert merkle_root([one]) == one  # a single leaf is the root, not H(0x01 || leaf)
    a, b = base[0], base[1]
    assert merkle_root([a, b]) == hashlib.sha256(b"\x01" + a + b).digest()


def test_merkle_root_of_no_leaves_is_refused() -> None:
    for f in (merkle_root, merkle_root_recursive):
        try:
            f([])
        except ValueError:
            continue
        raise AssertionError(f"{f.__name__}([]) returned")
