"""Model, local training and evaluation as plain functions (no Flower imports).

Weights travel as a list of NumPy arrays in ``model.state_dict()`` order. Clients send *updates*
(``local - global``), never raw weights: :func:`delta` and :func:`clip_update` implement the
norm bound that honest clients apply (McMahan et al., ICLR 2018, "Learning Differentially Private
Recurrent Language Models", Alg. 1 ``ClipFn``).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from saip_fl.data import Dataset
from saip_fl.noise import NoiseSource

log = logging.getLogger(__name__)

Weights = list[NDArray[np.float32]]


#: hidden-layer activations; ``tanh`` is the tempered sigmoid with scale 2, temperature 2 and
#: offset 1 that Papernot et al. (AAAI 2021, "Tempered Sigmoid Activations for Deep Learning
#: with Differential Privacy") found best under DP-SGD: bounded activations keep the gradient
#: norms, and with them the clipping loss, small
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh}


def build_model(
    num_features: int,
    num_classes: int,
    *,
    hidden: int = 64,
    seed: int = 0,
    activation: str = "relu",
) -> nn.Module:
    """A two-layer MLP (``Linear → activation → Linear``), initialised deterministically from
    ``seed``; ``activation`` is a key of :data:`ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(num_features, hidden),
        ACTIVATIONS[activation](),
        nn.Linear(hidden, num_classes),
    )
    with torch.no_grad():
        for p in model.parameters():
            bound = 1.0 / math.sqrt(p.shape[-1] if p.ndim > 1 else hidden)
            p.copy_(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
    return model


def get_weights(model: nn.Module) -> Weights:
    """The model's parameters as float32 NumPy arrays (copies)."""
    return [v.detach().cpu().numpy().astype(np.float32).copy() for v in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Weights) -> None:
    """Load ``weights`` (same order and shapes as :func:`get_weights`) into ``model``."""
    keys = list(model.state_dict().keys())
    if len(keys) != len(weights):
        raise ValueError(f"expected {len(keys)} arrays, got {len(weights)}")
    state = {
        k: torch.as_tensor(np.asarray(w, dtype=np.float32))
        for k, w in zip(keys, weights, strict=True)
    }
    model.load_state_dict(state, strict=True)


def delta(new: Weights, old: Weights) -> Weights:
    """``new - old`` array by array."""
    return [
        np.asarray(n, np.float32) - np.asarray(o, np.float32) for n, o in zip(new, old, strict=True)
    ]


def add(base: Weights, update: Weights, scale: float = 1.0) -> Weights:
    """``base + scale * update`` array by array."""
    return [(b + scale * u).astype(np.float32) for b, u in zip(base, update, strict=True)]


def flatten(arrays: Weights) -> NDArray[np.float64]:
    """All arrays as one float64 vector."""
    return (
        np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
        if arrays
        else np.zeros(0)
    )


def l2_norm(arrays: Weights) -> float:
    """Euclidean norm of all arrays together."""
    return float(np.linalg.norm(flatten(arrays)))


def clip_update(update: Weights, bound: float) -> tuple[Weights, float]:
    """Scale ``update`` down to L2 norm ``bound`` at most; return it and the original norm."""
    norm = l2_norm(update)
    factor = min(1.0, bound / norm) if norm > 0 else 1.0
    return [(u * factor).astype(np.float32) for u in update], norm


@dataclass(frozen=True)
class TrainResult:
    """What local training did."""

    num_examples: int
    loss: float
    steps: int
    #: DP-SGD only: noise multiplier and Poisson sample rate used (for the server's accountant)
    noise_multiplier: float = 0.0
    sample_rate: float = 0.0


def _tensors(data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(data.x)), torch.from_numpy(data.y)


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> TrainResult:
    """Plain mini-batch SGD (momentum 0.9) with cross-entropy for ``epochs`` epochs."""
    x, y = _tensors(data)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    steps, total = 0, 0.0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.item())
    return TrainResult(len(y), total / max(steps, 1), steps)


def train_dpsgd(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    sample_rate: float,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
    noise: NoiseSource,
) -> TrainResult:
    """DP-SGD (Abadi et al., CCS 2016): per-sample clipping, Gaussian noise, Poisson batches.

    Per-sample gradients and clipping are Opacus' (``GradSampleModule`` + ``DPOptimizer``); the
    Poisson sampling (each record joins a batch with probability exactly ``sample_rate``, the
    rate the server's accountant uses — Opacus' own loader would sample at ``1/len(loader)``) and
    the Gaussian noise come from ``noise``, a :class:`~saip_fl.noise.NoiseSource` keyed by the OS,
    so nobody who knows the run settings can regenerate and remove the noise. An empty batch
    still takes a noise-only step (skipping it would reveal that the sample was empty).
    ``noise_multiplier`` is calibrated by the caller for the whole run. The trained weights are
    written back into ``model``.
    """
    from opacus import GradSampleModule

    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    x, y = _tensors(data)
    n = len(y)
    work = copy.deepcopy(model)  # same architecture and weights, its own grad hooks
    gsm = GradSampleModule(work)
    expected = sample_rate * n
    opt = _secure_dp_optimizer()(
        torch.optim.SGD(gsm.parameters(), lr=lr, momentum=0.9),
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected,
        noise=noise,
    )
    loss_fn = nn.CrossEntropyLoss()
    gsm.train()
    steps_per_epoch = max(1, math.ceil(1 / sample_rate))
    steps, total = 0, 0.0
    for _ in range(epochs * steps_per_epoch):
        idx = torch.from_numpy(np.flatnonzero(noise.bernoulli(n, sample_rate)))
        opt.zero_grad(set_to_none=True)
        if len(idx) == 0:
            opt.noise_only_step()
        else:
            loss = loss_fn(gsm(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.item())
        steps += 1
    state = {k.removeprefix("_module."): v for k, v in gsm.state_dict().items()}
    model.load_state_dict(state)
    return TrainResult(n, total / max(steps, 1), steps, noise_multiplier, sample_rate)


def clipped_gradient_sum(
    model: nn.Module,
    data: Dataset,
    *,
    sample_rate: float,
    max_grad_norm: float,
    noise: NoiseSource,
) -> tuple[Weights, int, float]:
    """Sum of per-example gradients, each clipped to ``max_grad_norm``, over a Poisson sample.

    The building block of DP-FedSGD (McMahan et al., ICLR 2018, with per-example clipping as in
    Abadi et al., CCS 2016): each record joins the batch with probability ``sample_rate`` (drawn
    from ``noise``, the OS-keyed source), its gradient at the current ``model`` is clipped, and
    the clipped gradients are summed. No noise is added here: the caller adds its share.

    Returns
    -------
    (sums, batch_size, mean_loss)
    """
    from opacus import GradSampleModule

    x, y = _tensors(data)
    idx = torch.from_numpy(np.flatnonzero(noise.bernoulli(len(y), sample_rate)))
    params = list(model.parameters())
    if len(idx) == 0:
        return [np.zeros(tuple(p.shape), np.float32) for p in params], 0, math.nan
    gsm = GradSampleModule(model, loss_reduction="sum")
    gsm.train()
    gsm.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(gsm(x[idx]), y[idx], reduction="sum")
    loss.backward()  # type: ignore[no-untyped-call]
    per = [p.grad_sample.reshape(len(idx), -1) for p in params]  # type: ignore[attr-defined]
    norms = torch.sqrt(torch.stack([(g * g).sum(dim=1) for g in per]).sum(dim=0))
    factor = (max_grad_norm / (norms + 1e-12)).clamp(max=1.0)
    sums = [
        (factor[:, None] * g).sum(dim=0).reshape(p.shape).detach().numpy().astype(np.float32)
        for g, p in zip(per, params, strict=True)
    ]
    gsm._close()
    for p in params:
        p.grad_sample = None  # type: ignore[attr-defined]
        p.grad = None
    return sums, len(idx), float(loss.item()) / len(idx)


@functools.lru_cache(maxsize=1)
def _secure_dp_optimizer() -> type:
    """Opacus' ``DPOptimizer`` with its noise drawn from a :class:`NoiseSource` (lazy import)."""
    from opacus.optimizers import DPOptimizer
    from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

    class CsprngDPOptimizer(DPOptimizer):  # type: ignore[misc]
        def __init__(self, optimizer: torch.optim.Optimizer, *, noise: NoiseSource, **kw: Any):
            super().__init__(optimizer, **kw)
            self._noise = noise

        def _draw(self, ref: torch.Tensor) -> torch.Tensor:
            std = self.noise_multiplier * self.max_grad_norm
            z = self._noise.gaussian(tuple(ref.shape), std)
            return torch.from_numpy(z).to(ref.dtype)

        def add_noise(self) -> None:
            for p in self.params:
                _check_processed_flag(p.summed_grad)
                p.grad = (p.summed_grad + self._draw(p.summed_grad)).view_as(p)
                _mark_as_processed(p.summed_grad)

        def noise_only_step(self) -> None:
            for p in self.params:
                p.grad = self._draw(p.data).view_as(p) / self.expected_batch_size
            self.original_optimizer.step()

    return CsprngDPOptimizer


def evaluate(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data``."""
    x, y = _tensors(data)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        loss = float(nn.functional.cross_entropy(logits, y).item())
        acc = float((logits.argmax(1) == y).float().mean().item())
    return loss, acc


def predict(model: nn.Module, x: NDArray[np.float32]) -> NDArray[np.int64]:
    """Predicted labels for ``x``."""
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.ascontiguousarray(x))).argmax(1).numpy()
    return np.asarray(out, dtype=np.int64)


def weights_to_bytes(weights: Weights) -> bytes:
    """Serialise weights as an ``.npz`` archive (``arr_0``, ``arr_1``, ...; no pickle)."""
    import io

    buf = io.BytesIO()
    np.savez(buf, *weights)
    return buf.getvalue()


def weights_from_bytes(blob: bytes) -> Weights:
    """Inverse of :func:`weights_to_bytes`."""
    import io

    with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
        return [npz[f"arr_{i}"].astype(np.float32) for i in range(len(npz.files))]
