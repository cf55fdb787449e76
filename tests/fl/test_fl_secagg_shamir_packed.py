"""The packed (all chunks at once) Shamir sharing equals the plain per-chunk evaluation.

``secagg_shamir.create_shares`` evaluates every 16-byte chunk's polynomial in one big integer
with a slot per chunk. The oracle below is the straightforward per-chunk Horner evaluation
(TEST-ONLY reference, the previous implementation): given the same random bytes, both must
produce byte-identical shares for any secret length, threshold and number of shares, including
share indices above 255 where a product spills more than 8 bits past 128 and slots must not
carry into each other. The interoperability with Flower/PyCryptodome and the hostile cases
(fewer than threshold shares, tampering) are in ``test_fl_secagg_fast.py``.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_fl import secagg_shamir


def _reference_create_shares(
    secret: bytes, threshold: int, num: int, rand: bytes, only: set[int] | None = None
) -> dict[int, bytes]:
    """Per-chunk Horner evaluation over GF(2^128) (TEST-ONLY oracle); share i-1 by index i."""
    padded = secagg_shamir._pad(secret)
    chunks = [int.from_bytes(padded[i : i + 16], "big") for i in range(0, len(padded), 16)]
    k = threshold - 1
    shares = {}
    for idx in range(1, num + 1):
        if only is not None and idx - 1 not in only:
            continue
        out = bytearray(idx.to_bytes(4, "little"))
        for c, chunk in enumerate(chunks):
            poly = [
                int.from_bytes(rand[o : o + 16], "big")
                for o in range(c * k * 16, (c + 1) * k * 16, 16)
            ]
            y = 0
            for coeff in [*poly, chunk]:
                y = secagg_shamir._reduce(secagg_shamir._clmul_small(y, idx)) ^ coeff
            out += y.to_bytes(16, "big")
        shares[idx - 1] = bytes(out)
    return shares


def _packed_with(
    monkeypatch: pytest.MonkeyPatch, secret: bytes, threshold: int, num: int, seed: int
) -> tuple[list[bytes], bytes]:
    rng = random.Random(seed)
    drawn: list[bytes] = []

    def urandom(n: int) -> bytes:
        drawn.append(bytes(rng.getrandbits(8) for _ in range(n)))
        return drawn[-1]

    monkeypatch.setattr(secagg_shamir.os, "urandom", urandom)
    shares = secagg_shamir.create_shares(secret, threshold, num)
    monkeypatch.undo()
    assert len(drawn) == 1  # one draw per secret, as PyCryptodome
    return shares, drawn[0]


@settings(max_examples=80, deadline=None)
@given(
    secret=st.binary(min_size=0, max_size=300),
    num=st.integers(1, 40),
    data=st.data(),
    seed=st.integers(0, 2**32),
)
def test_fl_shamir_packed_equals_per_chunk_reference(
    secret: bytes, num: int, data: st.DataObject, seed: int
) -> None:
    threshold = data.draw(st.integers(1, num))
    with pytest.MonkeyPatch.context() as mp:
        packed, rand = _packed_with(mp, secret, threshold, num, seed)
    reference = _reference_create_shares(secret, threshold, num, rand)
    assert packed == [reference[i] for i in range(num)]


@pytest.mark.parametrize(("num", "threshold"), [(255, 2), (256, 3), (300, 2), (70_000, 2)])
def test_fl_shamir_packed_slots_do_not_carry_at_large_indices(num: int, threshold: int) -> None:
    """Indices of 9+ bits (and 17 bits: a 3-byte slot pad) spill further past 128 bits."""
    secret = bytes(range(241))  # a P-256 PEM private key's length
    with pytest.MonkeyPatch.context() as mp:
        packed, rand = _packed_with(mp, secret, threshold, num, seed=7)
    check = {i for i in (0, 1, 127, 128, 254, 255, 65_534, 65_535, num - 2, num - 1) if i < num}
    reference = _reference_create_shares(secret, threshold, num, rand, check)
    for i in sorted(check):
        assert packed[i] == reference[i]
    assert secagg_shamir.combine_shares([packed[0], packed[-1], packed[100]][:threshold]) == secret
