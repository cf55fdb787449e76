"""The faster SecAgg+ primitives keep the protocol: same Shamir sharing, full-seed uniform masks,
exact aggregates with dropouts down to the threshold, a loud halt below it.

Hostile cases first: fewer shares than the threshold, tampered/duplicate/mismatched shares, two
keys with the same 32-bit fold, too many dropouts. The protocol runs are Flower's own
``SecAggPlusWorkflow`` and ``secaggplus_mod`` over the local engine's in-process grid, with a
labelled fake ``NumPyClient`` (fixed updates) so the aggregate can be checked exactly.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import ConfigRecord, Context, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import FitIns, ndarrays_to_parameters
from flwr.common.secure_aggregation.crypto import shamir as flower_shamir
from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen as flower_prg
from flwr.compat.common import recorddict_compat as compat
from flwr.server import ServerConfig
from flwr.server.client_manager import SimpleClientManager
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.supercore.primitives import asymmetric as flower_asym
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_fl import engine, secagg_prg, secagg_shamir
from saip_fl.server import _GroupStrategy

secagg_prg.install()


# ------------------------------------------------------------------ Shamir (hostile first)
@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=0, max_size=330),
    num=st.integers(2, 9),
    data=st.data(),
)
def test_fl_shamir_fewer_shares_than_threshold_do_not_reconstruct(
    secret: bytes, num: int, data: st.DataObject
) -> None:
    threshold = data.draw(st.integers(2, num))
    shares = secagg_shamir.create_shares(secret, threshold, num)
    few = data.draw(
        st.lists(st.sampled_from(shares), min_size=1, max_size=threshold - 1, unique=True)
    )
    # wrong padding after interpolation is refused (ValueError), as Flower's combine does
    with contextlib.suppress(ValueError):
        assert secagg_shamir.combine_shares(few) != secret


def test_fl_shamir_refuses_malformed_duplicate_and_tampered_shares() -> None:
    secret = os.urandom(32)
    shares = secagg_shamir.create_shares(secret, 3, 5)
    with pytest.raises(ValueError, match="Duplicate"):
        secagg_shamir.combine_shares([shares[0], shares[0], shares[1]])
    with pytest.raises(ValueError, match="different lengths"):
        secagg_shamir.combine_shares([shares[0], shares[1][:-16], shares[2]])
    with pytest.raises(ValueError, match="malformed"):
        secagg_shamir.combine_shares([shares[0][:10]])
    with pytest.raises(ValueError, match="no shares"):
        secagg_shamir.combine_shares([])
    with pytest.raises(ValueError, match="index 0"):
        secagg_shamir.combine_shares([bytes(4) + shares[0][4:], shares[1], shares[2]])
    tampered = bytearray(shares[2])
    tampered[10] ^= 1
    with contextlib.suppress(ValueError):
        assert secagg_shamir.combine_shares([shares[0], shares[1], bytes(tampered)]) != secret
    with pytest.raises(ValueError):
        secagg_shamir.create_shares(secret, 6, 5)


@settings(max_examples=60, deadline=None)
@given(secret=st.binary(min_size=0, max_size=330), num=st.integers(1, 9), data=st.data())
def test_fl_shamir_interoperates_with_flowers_both_ways(
    secret: bytes, num: int, data: st.DataObject
) -> None:
    """Same field, encoding and layout as Flower/PyCryptodome: any threshold-sized subset of
    either implementation's shares reconstructs with the other one."""
    threshold = data.draw(st.integers(1, num))
    ours = secagg_shamir.create_shares(secret, threshold, num)
    theirs = flower_shamir.create_shares(secret, threshold, num)
    assert [len(s) for s in ours] == [len(s) for s in theirs]
    pick = data.draw(st.lists(st.integers(0, num - 1), min_size=threshold, unique=True))
    assert flower_shamir.combine_shares([ours[i] for i in pick]) == secret
    assert secagg_shamir.combine_shares([theirs[i] for i in pick]) == secret
    assert secagg_shamir.combine_shares([ours[i] for i in pick]) == secret


def test_fl_shamir_shares_are_fresh_each_time() -> None:
    secret = os.urandom(32)
    a, b = secagg_shamir.create_shares(secret, 3, 5), secagg_shamir.create_shares(secret, 3, 5)
    assert all(x[:4] == y[:4] and x[4:] != y[4:] for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------ masks and keys
def test_fl_mask_prg_full_seed_uniform_and_in_range() -> None:
    rng = np.random.default_rng(1)
    k1 = bytes(rng.integers(0, 256, 32, dtype=np.uint8))
    words = bytearray(k1)
    for i in range(4):  # same 32-bit XOR fold as k1
        words[i] ^= 0xA5
        words[8 + i] ^= 0xA5
    k2 = bytes(words)
    dims = [(64, 64), (64,), ()]
    assert np.array_equal(flower_prg(k1, 2**32, dims)[0], flower_prg(k2, 2**32, dims)[0])
    m1, m2 = secagg_prg.mask_prg(k1, 2**32, dims), secagg_prg.mask_prg(k2, 2**32, dims)
    assert [m.shape for m in m1] == [(64, 64), (64,), ()]
    assert not np.array_equal(m1[0], m2[0])
    assert np.array_equal(m1[0], secagg_prg.mask_prg(k1, 2**32, dims)[0])  # deterministic
    big = secagg_prg.mask_prg(os.urandom(32), 2**32, [(200_000,)])[0]
    assert big.min() >= 0
    assert big.max() < 2**32
    # uniform: 16 buckets of the top 4 bits, chi-square with 15 dof (p ≈ 1e-6 at 50)
    counts = np.bincount((big >> 28).astype(np.int64), minlength=16)
    expected = big.size / 16
    assert ((counts - expected) ** 2 / expected).sum() < 50
    odd = secagg_prg.mask_prg(k1, 1_000_003, [(50_000,)])[0]
    assert odd.min() >= 0
    assert odd.max() < 1_000_003
    assert abs(odd.mean() / 500_001 - 1) < 0.02


def test_fl_secagg_primitives_are_installed_on_both_sides_and_keys_are_p256() -> None:
    import saip_fl.apps  # noqa: F401 - installs on import

    assert secagg_prg.installed()
    mod = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
    wf = importlib.import_module("flwr.server.workflow.secure_aggregation.secaggplus_workflow")
    assert mod.create_shares is secagg_shamir.create_shares
    assert wf.combine_shares is secagg_shamir.combine_shares
    sk, pk = mod.generate_key_pairs()
    assert isinstance(sk.curve, ec.SECP256R1)
    assert isinstance(pk.curve, ec.SECP256R1)
    pem = mod.private_key_to_bytes(sk)
    assert secagg_prg.load_private_key(pem) is secagg_prg.load_private_key(pem)
    with pytest.raises(ValueError):
        secagg_prg.load_private_key(b"not a PEM key")


# ------------------------------------------------------------------ the protocol, end to end
class _FixedUpdateClient(NumPyClient):  # FAKE client for tests: returns a known update
    def __init__(self, pid: int, drop: bool) -> None:
        self.pid, self.drop = pid, drop

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        if self.drop:
            raise RuntimeError("simulated dropout")
        return [_update(self.pid)], 1, {}


def _update(pid: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, 257, dtype=np.float32) * (pid + 1) / 10


_STOCK = {  # Flower 1.42's own primitives, as a node without saip's install() runs them
    "pseudo_rand_gen": flower_prg,
    "create_shares": flower_shamir.create_shares,
    "bytes_to_private_key": flower_asym.bytes_to_private_key,
    "generate_key_pairs": flower_asym.generate_key_pairs,
}


def _run_group(
    num: int, dropped: set[int], stock: frozenset[int] = frozenset()
) -> tuple[np.ndarray | None, int]:
    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        pid = int(context.node_config["partition-id"])
        return _FixedUpdateClient(pid, pid in dropped).to_client()

    mod_module = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")

    def mixed_mod(msg, ctxt, call_next):  # type: ignore[no-untyped-def]
        if int(ctxt.node_config["partition-id"]) not in stock:
            return secaggplus_mod(msg, ctxt, call_next)
        saved = {name: getattr(mod_module, name) for name in _STOCK}
        try:  # one worker: no other node runs while these are swapped
            for name, fn in _STOCK.items():
                setattr(mod_module, name, fn)
            return secaggplus_mod(msg, ctxt, call_next)
        finally:
            for name, fn in saved.items():
                setattr(mod_module, name, fn)

    app = ClientApp(client_fn=client_fn, mods=[mixed_mod if stock else secaggplus_mod])
    grid = engine.LocalGrid(app, run_config={}, num_nodes=num, workers=1 if stock else 2)
    try:
        params = ndarrays_to_parameters([np.zeros(257, np.float32)])
        fit = FitIns(params, {})
        proxies = [GridClientProxy(nid, grid, 1) for nid in grid.get_node_ids()]
        capture = _GroupStrategy([(p, fit) for p in proxies])
        state = RecordDict()
        state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord({"current_round": 1})
        state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params, True)
        ctx = LegacyContext(
            Context(run_id=1, node_id=0, node_config={}, state=state, run_config={}),
            config=ServerConfig(num_rounds=1),
            strategy=capture,
            client_manager=SimpleClientManager(),
        )
        with engine.server_identity(1):
            SecAggPlusWorkflow(num_shares=5, reconstruction_threshold=3, max_weight=1.0)(grid, ctx)
    finally:
        grid.close()
    return (capture.result[0] if capture.result else None), capture.received


def test_fl_secagg_too_many_dropouts_halts_without_an_aggregate() -> None:
    result, received = _run_group(5, dropped={0, 1, 2})
    assert result is None
    assert received == 0


@pytest.mark.parametrize("dropped", [set(), {3}, {1, 4}])
def test_fl_secagg_aggregate_is_exact_with_dropouts_down_to_the_threshold(
    dropped: set[int],
) -> None:
    """Masks cancel and dropped members' pairwise masks are removed from reconstructed keys:
    the unmasked sum is the survivors' mean (to quantization error)."""
    result, received = _run_group(5, dropped=dropped)
    survivors = [p for p in range(5) if p not in dropped]
    assert received == len(survivors)
    assert result is not None
    expected = np.mean([_update(p) for p in survivors], axis=0)
    np.testing.assert_allclose(result, expected, atol=1e-4)


def test_fl_parsed_secagg_private_keys_are_not_retained_across_keys() -> None:
    """The PEM memo must not keep past rounds' ephemeral private keys alive (Flower drops them
    when the next round's keys replace them): parsing another key releases the previous one."""
    import sys

    from cryptography.hazmat.primitives import serialization

    def pem() -> bytes:
        sk = ec.generate_private_key(ec.SECP256R1())
        return sk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    first, second = pem(), pem()
    base = sys.getrefcount(first)
    a = secagg_prg.load_private_key(first)
    assert secagg_prg.load_private_key(first) is a  # memoised inside a stage's loop
    b = secagg_prg.load_private_key(second)
    assert sys.getrefcount(first) == base  # nothing in the module holds the old key's PEM
    assert a.private_numbers() != b.private_numbers()
    again = secagg_prg.load_private_key(first)  # no confusion between keys
    assert again.private_numbers() == a.private_numbers()


def test_fl_secagg_node_with_stock_flower_fails_its_group_instead_of_weakening_it() -> None:
    """A node without saip's primitives (32-bit mask seed, P-384 keys) cannot take part quietly:
    key agreement across curves fails, the group halts and yields no aggregate."""
    result, received = _run_group(5, dropped=set(), stock=frozenset({2}))
    assert result is None
    assert received == 0
    assert secagg_prg.installed()  # the swap was undone
