"""SecAgg+ mask generator keyed by the whole shared secret (replaces Flower's 32-bit one).

Flower 1.42's ``pseudo_rand_gen`` XOR-folds the 256-bit pairwise key into a 32-bit seed for
NumPy's ``RandomState`` (flwrlabs/flower#7522, open): a server colluding with one member of a
small group can try all 2³² seeds for the remaining pairwise mask and read an individual update.
Bell et al. (CCS 2020, §3) and Bonawitz et al. (CCS 2017, §4) require a PRG keyed by the full
agreed key.

:func:`shake_prg` is that PRG: SHAKE-256 (FIPS 202) over a domain-separation label and the whole
seed, read as little-endian 64-bit words reduced modulo ``num_range`` (bias ≤ ``num_range``/2⁶⁴).
:func:`install` puts it in place of ``pseudo_rand_gen`` in *both* Flower's client mod and server
workflow; both sides of a run must use it (``saip_fl.apps`` installs it on import, which the
ServerApp and every ClientApp do), otherwise the masks do not cancel and every group aggregate is
noise — which the server's group checks then reject.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from types import ModuleType

import numpy as np
from numpy.typing import NDArray

_DOMAIN = b"saip-secagg-mask-prg-v1\x00"
_TARGETS = (
    "flwr.client.mod.secure_aggregation.secaggplus_mod",
    "flwr.server.workflow.secure_aggregation.secaggplus_workflow",
)


def shake_prg(
    seed: bytes, num_range: int, dimensions_list: list[tuple[int, ...]]
) -> list[NDArray[np.int64]]:
    """Masks in ``[0, num_range)`` with the shapes of ``dimensions_list``, derived from ``seed``.

    Drop-in for ``flwr.common.secure_aggregation.secaggplus_utils.pseudo_rand_gen``.
    """
    if num_range < 2 or num_range > 2**62:
        raise ValueError(f"num_range {num_range} outside [2, 2**62]")
    sizes = [math.prod(d) if len(d) else 1 for d in dimensions_list]
    xof = hashlib.shake_256(_DOMAIN + len(seed).to_bytes(4, "big") + bytes(seed))
    words = np.frombuffer(xof.digest(8 * sum(sizes)), dtype="<u8")
    values = (words % np.uint64(num_range)).astype(np.int64)
    out: list[NDArray[np.int64]] = []
    start = 0
    for dims, size in zip(dimensions_list, sizes, strict=True):
        out.append(values[start : start + size].reshape(tuple(dims)))
        start += size
    return out


def _modules() -> list[ModuleType]:
    # by module path: the packages re-export functions under the same names as the modules
    return [importlib.import_module(name) for name in _TARGETS]


def install() -> None:
    """Replace ``pseudo_rand_gen`` in Flower's SecAgg+ client mod and server workflow."""
    for module in _modules():
        if not hasattr(module, "pseudo_rand_gen"):
            raise RuntimeError(f"{module.__name__} has no pseudo_rand_gen: Flower changed")
        module.pseudo_rand_gen = shake_prg  # type: ignore[attr-defined]


def installed() -> bool:
    """Whether both Flower modules use :func:`shake_prg`."""
    return all(getattr(m, "pseudo_rand_gen", None) is shake_prg for m in _modules())
