"""Malicious-client behaviours for evaluation (pure functions, no Flower imports).

* ``label_flip`` — train on ``y → C-1-y`` (Tolpegin et al., ESORICS 2020).
* ``sign_flip`` — send ``-scale × update`` (a sign-flipping Byzantine client); ``flip_sign``
  trains on flipped labels first, then sign-flips and scales.
* ``scale`` — model replacement: send ``scale × update`` (Bagdasaryan et al., AISTATS 2020).
* ``backdoor`` — stamp a ``trigger_size`` patch of 1.0 in the bottom-right corner on a fraction of
  local samples, relabel them ``target_label``, and boost the update by ``scale`` (model
  replacement, Bagdasaryan et al.); :func:`attack_success_rate` measures it.
* ``nan`` — send NaN; ``free_rider`` — send a zero update while claiming many examples;
  ``dropout`` — crash during training (under SecAgg+: a drop-out after the key exchange).

A malicious client runs its own code: it skips the client-side norm clip and range check that
honest clients apply, which is why every check that matters is repeated on the server.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from saip_fl.data import Dataset
from saip_fl.model import Weights


class SimulatedDropout(RuntimeError):  # noqa: N818 - it is an event, not an error of ours
    """Raised by a ``dropout`` client to leave the round, as a crashed device would."""


def stamp_trigger(
    x: NDArray[np.float32], *, image_side: int | None, size: int
) -> NDArray[np.float32]:
    """Return a copy of ``x`` with the trigger patch (value 1.0) set."""
    out = np.array(x, dtype=np.float32, copy=True)
    if image_side is not None and image_side * image_side == out.shape[1]:
        img = out.reshape(len(out), image_side, image_side)
        img[:, -size:, -size:] = 1.0
        return img.reshape(len(out), -1)
    out[:, -size * size :] = 1.0
    return out


def poison_data(
    data: Dataset,
    kind: str,
    *,
    target_label: int,
    poison_fraction: float,
    trigger_size: int,
    seed: int,
) -> Dataset:
    """The local dataset a malicious client trains on (unchanged for update-level attacks)."""
    if kind in ("label_flip", "flip_sign"):
        return Dataset(
            data.x,
            (data.num_classes - 1 - data.y).astype(np.int64),
            data.num_classes,
            data.image_side,
        )
    if kind == "backdoor":
        rng = np.random.default_rng(seed)
        n = len(data.y)
        idx = rng.choice(n, size=max(1, round(poison_fraction * n)), replace=False)
        x = np.array(data.x, copy=True)
        y = np.array(data.y, copy=True)
        x[idx] = stamp_trigger(x[idx], image_side=data.image_side, size=trigger_size)
        y[idx] = target_label
        return Dataset(x, y, data.num_classes, data.image_side)
    return data


def tamper_update(update: Weights, kind: str, *, scale: float) -> Weights:
    """The update a malicious client sends instead of its honest one."""
    if kind in ("sign_flip", "flip_sign"):
        return [(-scale * u).astype(np.float32) for u in update]
    if kind in ("scale", "backdoor"):
        return [(scale * u).astype(np.float32) for u in update]
    if kind == "nan":
        return [np.full_like(u, np.nan) for u in update]
    if kind == "free_rider":
        return [np.zeros_like(u) for u in update]
    return update


def attack_success_rate(
    predict: object, test: Dataset, *, target_label: int, trigger_size: int
) -> float:
    """Share of test samples (true label ≠ target) classified as ``target_label`` once triggered."""
    keep = test.y != target_label
    if not np.any(keep):
        return 0.0
    x = stamp_trigger(test.x[keep], image_side=test.image_side, size=trigger_size)
    assert callable(predict)
    pred = np.asarray(predict(x))
    return float(np.mean(pred == target_label))
