"""Reference poisoning attacks, used to *evaluate* the detectors (tests, benchmark, demo).

These inject the classic data-poisoning attacks into a clean ``(x, y)`` set so that detection
can be measured against ground truth. They are evaluation tools, not part of the defence.

- Patch backdoor, all-to-one and all-to-all: BadNets (Gu, Dolan-Gavitt, Garg 2017,
  arXiv:1708.06733) — a small bright square in the bottom-right corner; all-to-one relabels
  samples of other classes to one target class, all-to-all relabels class ``c`` to ``c + 1``.
- Blended trigger: Chen, Liu, Li, Lu, Song 2017 ("Targeted Backdoor Attacks on Deep Learning
  Systems Using Data Poisoning", arXiv:1712.05526) — ``x' = (1 - a) x + a k`` with a fixed random
  key pattern ``k`` and ``a = 0.2``, relabelled to the target class.
- Random label flip: each chosen sample gets a uniformly random *different* label.

All functions take images as ``N×H×W`` or flattened ``N×D`` arrays with pixel values in
``[0, 1]``; a flattened input must be square (``D = side²``) for the patch to be placed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["Poisoned", "add_patch", "blend", "poison"]

AttackName = Literal[
    "a2o", "a2o_replace", "a2a", "flip", "pair_flip", "blend", "clean_label", "clean"
]


@dataclass(frozen=True)
class Poisoned:
    """A poisoned copy of a dataset and its ground truth.

    Attributes
    ----------
    x, y
        The poisoned inputs (same shape as given) and labels.
    is_poison
        Boolean mask of the samples the attack changed.
    target
        The target class of an all-to-one attack (``None`` otherwise).
    """

    x: NDArray[np.float64]
    y: NDArray[np.int64]
    is_poison: NDArray[np.bool_]
    target: int | None


def add_patch(x: NDArray[np.float64], *, size: int | None = None) -> NDArray[np.float64]:
    """Return ``x`` with a BadNets square (value 1.0) in the bottom-right corner.

    ``size`` defaults to ``max(2, side // 7)`` pixels (2 on 8×8 digits, 4 on 28×28 MNIST),
    placed one pixel in from the border. Non-square (tabular) samples get the tabular analogue:
    their last ``size`` features (default ``max(2, D // 10)``) set to 1.0.
    """
    d = int(np.prod(x.shape[1:]))
    side = math.isqrt(d)
    if side * side != d:
        s = size if size is not None else max(2, d // 10)
        flat = x.reshape(len(x), d).copy()
        flat[:, d - s :] = 1.0
        return flat.reshape(x.shape)
    s = size if size is not None else max(2, side // 7)
    img = x.reshape(len(x), side, side).copy()
    img[:, side - 1 - s : side - 1, side - 1 - s : side - 1] = 1.0
    return img.reshape(x.shape)


def blend(
    x: NDArray[np.float64], *, alpha: float = 0.2, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Blend a fixed uniform-noise key pattern into ``x``: ``(1 - alpha) x + alpha k``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    key = rng.random(int(np.prod(x.shape[1:])))
    flat = x.reshape(len(x), -1)
    return ((1.0 - alpha) * flat + alpha * key).reshape(x.shape)


def poison(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    attack: AttackName,
    rate: float,
    rng: np.random.Generator,
    target: int = 0,
    n_classes: int | None = None,
) -> Poisoned:
    """Poison ``rate`` of the dataset (a fraction of all N samples) with ``attack``.

    Parameters
    ----------
    x, y
        Clean data (pixels in ``[0, 1]``) and integer labels.
    attack
        ``"a2o"`` (patch, all-to-one), ``"a2a"`` (patch, ``c → c+1``), ``"flip"`` (random
        label flip), ``"blend"`` (blended key, all-to-one), ``"a2o_replace"`` (patched samples
        *replace* target-class samples: class sizes unchanged), ``"clean_label"`` (patched
        target-class samples keep their label), ``"pair_flip"`` (class ``target + 1`` relabelled
        ``target``) or ``"clean"`` (nothing changed).
    rate
        Fraction of the whole dataset that is poisoned, in ``[0, 0.5]``. For all-to-one attacks
        the poisoned samples are drawn from the non-target classes.
    rng
        Random generator (choice of samples, flipped labels, key pattern).
    target
        Target class of all-to-one attacks.
    n_classes
        Number of classes (default ``y.max() + 1``).
    """
    if not 0.0 <= rate <= 0.5:
        raise ValueError(f"rate must be in [0, 0.5], got {rate}")
    x = np.asarray(x, dtype=np.float64).copy()
    y = np.asarray(y, dtype=np.int64).copy()
    k = int(n_classes if n_classes is not None else y.max() + 1)
    n = len(y)
    n_poison = round(rate * n)
    is_poison = np.zeros(n, dtype=bool)
    if attack == "clean" or n_poison == 0:
        return Poisoned(x, y, is_poison, None)
    if attack == "a2o_replace":
        # class sizes unchanged: patched non-target samples take the place of target samples
        tgt = np.flatnonzero(y == target)
        src = rng.choice(
            np.flatnonzero(y != target), size=min(n_poison, len(tgt) // 2), replace=False
        )
        slots = rng.choice(tgt, size=len(src), replace=False)
        x[slots] = add_patch(x[src])
        is_poison[slots] = True
        return Poisoned(x, y, is_poison, target)
    if attack == "clean_label":
        # poison keeps its true label: patched samples of the target class (Turner et al. 2019)
        tgt = np.flatnonzero(y == target)
        idx = rng.choice(tgt, size=min(n_poison, len(tgt) // 2), replace=False)
        x[idx] = add_patch(x[idx])
        is_poison[idx] = True
        return Poisoned(x, y, is_poison, target)
    if attack == "pair_flip":
        # targeted label flip: samples of one source class relabelled to the target
        source = (target + 1) % k
        pool = np.flatnonzero(y == source)
        idx = rng.choice(pool, size=min(n_poison, len(pool) // 2), replace=False)
        y[idx] = target
        is_poison[idx] = True
        return Poisoned(x, y, is_poison, target)
    pool = np.flatnonzero(y != target) if attack in ("a2o", "blend") else np.arange(n)
    idx = rng.choice(pool, size=min(n_poison, len(pool)), replace=False)
    is_poison[idx] = True
    if attack == "a2o":
        x[idx] = add_patch(x[idx])
        y[idx] = target
        return Poisoned(x, y, is_poison, target)
    if attack == "blend":
        x[idx] = blend(x[idx], rng=rng)
        y[idx] = target
        return Poisoned(x, y, is_poison, target)
    if attack == "a2a":
        x[idx] = add_patch(x[idx])
        y[idx] = (y[idx] + 1) % k
        return Poisoned(x, y, is_poison, None)
    if attack == "flip":
        shift = rng.integers(1, k, size=len(idx))
        y[idx] = (y[idx] + shift) % k
        return Poisoned(x, y, is_poison, None)
    raise ValueError(f"unknown attack {attack!r}")
