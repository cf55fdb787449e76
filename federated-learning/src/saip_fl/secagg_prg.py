"""SecAgg+ primitives installed into Flower 1.42's client mod and server workflow.

**Mask generator (security).** Flower 1.42's ``pseudo_rand_gen`` XOR-folds the 256-bit pairwise
key into a 32-bit seed for NumPy's ``RandomState`` (flwrlabs/flower#7522, open): a server
colluding with one member of a small group can try all 2³² seeds for the remaining pairwise mask
and read an individual update. Bell et al. (CCS 2020, §3) and Bonawitz et al. (CCS 2017, §4)
require a PRG keyed by the full agreed key. :func:`mask_prg` is that PRG: an AES-256 key derived
from a domain-separation label and the *whole* seed with SHAKE-256 (FIPS 202), expanded with
AES-256-CTR (NIST SP 800-38A; a key is used for one mask, so the all-zero initial counter is
never reused under a key), read as little-endian 64-bit words reduced modulo ``num_range`` (exact
for a power of two such as SecAgg+'s 2³² modulus; bias ≤ ``num_range``/2⁶⁴ otherwise).

**Speed (same protocol).** A SecAgg+ round spent most of its time in Flower's helpers, not in
the protocol's arithmetic (profile in the federated-learning README). :func:`install` also puts
in place, at the same module-attribute seams:

* :func:`saip_fl.secagg_shamir.create_shares` / ``combine_shares``: the same Shamir sharing over
  GF(2^128) and the same share format, without PyCryptodome's bit-by-bit multiplication and a
  thread pool per call (shares interoperate with Flower's, tested);
* :func:`load_private_key`: Flower parses the same PEM private key once per neighbour per stage
  (≈ 0.7 ms each for P-384); the last key each thread parsed is memoised (keyed by the PEM
  bytes the caller already holds, no older key retained);
* :func:`config_record`: the mod saves its whole state into a new ``ConfigRecord`` after each
  of the 4 messages per client and round, and Flower's constructor type-checks every value and
  every list element with ``isinstance`` against a ``typing`` union (≈ 53 µs for the 22-entry
  state). The drop-in accepts values whose type is exactly one of ``ConfigRecord``'s scalar types
  (or a list of one such type) directly and sends anything else through Flower's own check, so
  it accepts and refuses exactly what ``ConfigRecord`` does and returns a real ``ConfigRecord``;
* :func:`saip_fl.secagg_npy.bytes_to_ndarray` / ``parameters_to_ndarrays``: the ``.npy``
  parsing of the client's fit result (mod) and of every masked vector (workflow) with a memo of
  headers NumPy already validated (same arrays as ``np.load``; ≈ 20 → 3 µs per tensor);
* :func:`generate_key_pairs`: SecAgg+'s two per-round ECDH key pairs on NIST P-256 instead of
  P-384 (≈ 10× cheaper key generation and agreement). Every other primitive of Flower's SecAgg+
  works at the 128-bit level — the Shamir shares of the mask seed and of the private key travel
  under Fernet (AES-128-CBC + HMAC-SHA256) and are shares in GF(2^128) — so P-384's 192-bit level
  protected nothing the protocol did not already expose at 128 bits.

Both sides of a run must install the same primitives (``saip_fl.apps`` does on import, which the
ServerApp and every ClientApp do); a client refuses SecAgg+ otherwise. Mixed installations make
masks that do not cancel, so every group aggregate is noise — which the server's group checks
then reject.
"""

from __future__ import annotations

import hashlib
import importlib
import math
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any, cast

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from flwr.app import ConfigRecord
from flwr.app.typing import ConfigRecordValues
from numpy.typing import NDArray

from saip_fl import secagg_npy, secagg_shamir

_DOMAIN = b"saip-secagg-mask-prg-v2\x00"
_MOD = "flwr.client.mod.secure_aggregation.secaggplus_mod"
_WORKFLOW = "flwr.server.workflow.secure_aggregation.secaggplus_workflow"
#: the SecAgg+ key-agreement curve (see the module docstring)
CURVE = ec.SECP256R1()


def mask_prg(
    seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]
) -> list[NDArray[np.int64]]:
    """Masks in ``[0, num_range)`` with the shapes of ``dimensions_list``, derived from ``seed``.

    Drop-in for ``flwr.common.secure_aggregation.secaggplus_utils.pseudo_rand_gen``.
    """
    if num_range < 2 or num_range > 2**62:
        raise ValueError(f"num_range {num_range} outside [2, 2**62]")
    sizes = [math.prod(d) if len(d) else 1 for d in dimensions_list]
    key = hashlib.shake_256(_DOMAIN + len(seed).to_bytes(4, "big") + bytes(seed)).digest(32)
    stream = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(stream.update(bytes(8 * sum(sizes))), dtype="<u8")
    if num_range & (num_range - 1) == 0:
        values = (words & np.uint64(num_range - 1)).astype(np.int64)
    else:
        values = (words % np.uint64(num_range)).astype(np.int64)
    out: list[NDArray[np.int64]] = []
    start = 0
    for dims, size in zip(dimensions_list, sizes, strict=True):
        out.append(values[start : start + size].reshape(tuple(dims)))
        start += size
    return out


_LAST_KEY = threading.local()


def load_private_key(private_key_bytes: bytes) -> ec.EllipticCurvePrivateKey:
    """Parse a PEM private key (drop-in for Flower's ``bytes_to_private_key``).

    Flower parses the same key once per neighbour inside one stage's loop; only the *last* key
    parsed by each thread is memoised, so no past round's ephemeral private key stays alive in
    this module once the thread moves on (a larger cache kept up to 128 of them).
    """
    last: tuple[bytes, ec.EllipticCurvePrivateKey] | None = getattr(_LAST_KEY, "entry", None)
    if last is not None and last[0] == private_key_bytes:
        return last[1]
    key = serialization.load_pem_private_key(private_key_bytes, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("SecAgg+ private key is not an elliptic-curve key")
    _LAST_KEY.entry = (bytes(private_key_bytes), key)
    return key


def generate_key_pairs() -> tuple[ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey]:
    """A fresh ECDH key pair on :data:`CURVE` (drop-in for Flower's ``generate_key_pairs``)."""
    private_key = ec.generate_private_key(CURVE)
    return private_key, private_key.public_key()


#: the scalar types a ConfigRecord stores (flwr.app.typing.ConfigScalar), matched exactly
_SCALARS = frozenset({bool, int, float, str, bytes})


def _plain_value(value: object) -> bool:
    """Whether ``value`` is exactly a ConfigRecord scalar or a list of one exact scalar type."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is not list:
        return False
    items = cast(list[object], value)
    if not items:
        return True
    types = set(map(type, items))
    return len(types) == 1 and types.pop() in _SCALARS


def config_record(
    config_dict: dict[str, ConfigRecordValues] | None = None, keep_input: bool = True
) -> ConfigRecord:
    """A ``ConfigRecord`` of ``config_dict`` (drop-in for the constructor in SecAgg+'s modules).

    Values of exactly a scalar type, or lists whose elements all have one exact scalar type,
    are stored directly; everything else goes through ``ConfigRecord.__setitem__`` (Flower's
    checks and errors), so the same inputs are accepted and refused as by ``ConfigRecord``.
    """
    record = ConfigRecord()
    if not config_dict:
        return record
    data: dict[str, ConfigRecordValues] = record.__dict__["_data"]
    for key, value in config_dict.items():
        if type(key) is str and _plain_value(value):
            data[key] = value
        else:
            record[key] = value
    if not keep_input:
        config_dict.clear()
    return record


def _replacements() -> dict[str, dict[str, Callable[..., Any]]]:
    return {
        _MOD: {
            "pseudo_rand_gen": mask_prg,
            "create_shares": secagg_shamir.create_shares,
            "bytes_to_private_key": load_private_key,
            "generate_key_pairs": generate_key_pairs,
            "ConfigRecord": config_record,
            "parameters_to_ndarrays": secagg_npy.parameters_to_ndarrays,
        },
        _WORKFLOW: {
            "pseudo_rand_gen": mask_prg,
            "combine_shares": secagg_shamir.combine_shares,
            "bytes_to_private_key": load_private_key,
            "ConfigRecord": config_record,
            "bytes_to_ndarray": secagg_npy.bytes_to_ndarray,
        },
    }


def _module(name: str) -> ModuleType:
    # by module path: the packages re-export functions under the same names as the modules
    return importlib.import_module(name)


def install() -> None:
    """Put the primitives above in place in Flower's SecAgg+ client mod and server workflow."""
    for name, names in _replacements().items():
        module = _module(name)
        for attr in names:
            if not hasattr(module, attr):
                raise RuntimeError(f"{module.__name__} has no {attr}: Flower changed")
        for attr, fn in names.items():
            setattr(module, attr, fn)


def installed() -> bool:
    """Whether Flower's SecAgg+ mod and workflow use every primitive of this module."""
    return all(
        cast(object, getattr(_module(name), attr, None)) is fn
        for name, names in _replacements().items()
        for attr, fn in names.items()
    )
