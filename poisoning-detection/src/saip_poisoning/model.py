"""The small probe network that gives detectors their representation, losses and gradients.

Activation clustering, spectral signatures, loss trajectories and gradient checks all need a
model trained *on the suspect data itself* (the poison must leave its mark in the model). When the
caller brings no model, :func:`fit_probe` trains a two-hidden-layer MLP for a few epochs and
records, for every sample, the loss after each epoch (the trajectory), the penultimate-layer
activations and the last-layer gradient. A caller with its own network can build a
:class:`ProbeView` from it (e.g. :func:`view_from_module`) and pass it as ``model=``.

Notes
-----
The probe is deliberately small and trained briefly (early epochs): Chen et al. 2018 and Tran
et al. 2018 both observe that the poison signal is present in the learned representation once
the backdoor is learned, and loss-based separation (Li et al. 2021, "Anti-Backdoor Learning",
arXiv:2110.11571) is strongest in early epochs before the network memorises everything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

__all__ = ["ProbeView", "crossfit_probs", "fit_probe", "train_mlp", "view_from_module"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeView:
    """What the detectors read from a trained model, one row per sample.

    Attributes
    ----------
    features
        Penultimate-layer activations, ``N×H``.
    probs
        Softmax outputs, ``N×C``.
    loss_trajectory
        Cross-entropy of each sample's *given* label after each training epoch, ``E×N``
        (a single row when the model came from the caller).
    last_layer_grad
        Gradient of the loss w.r.t. the last layer's weights, flattened, ``N×(C·H)``:
        ``(p - onehot(y)) ⊗ h``.
    """

    features: NDArray[np.float64]
    probs: NDArray[np.float64]
    loss_trajectory: NDArray[np.float64]
    last_layer_grad: NDArray[np.float64]


class _MLP(nn.Module):
    def __init__(self, d: int, c: int, hidden: int, penultimate: int) -> None:
        super().__init__()
        # float32 whatever torch's default dtype is in this process (the inputs are float32)
        f32 = torch.float32
        self.body = nn.Sequential(
            nn.Linear(d, hidden, dtype=f32),
            nn.ReLU(),
            nn.Linear(hidden, penultimate, dtype=f32),
            nn.ReLU(),
        )
        self.head = nn.Linear(penultimate, c, dtype=f32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.body(x))
        return out


def _view(
    body: nn.Module,
    head: nn.Linear,
    xt: torch.Tensor,
    yt: torch.Tensor,
    traj: list[NDArray[np.float64]],
) -> ProbeView:
    with torch.no_grad():
        h = body(xt)
        logits = head(h)
        p = torch.softmax(logits, dim=1)
    onehot = torch.nn.functional.one_hot(yt, num_classes=p.shape[1]).to(p.dtype)
    err = (p - onehot).numpy().astype(np.float64)
    hn = h.numpy().astype(np.float64)
    grad = (err[:, :, None] * hn[:, None, :]).reshape(len(hn), -1)
    if not traj:
        loss = torch.nn.functional.cross_entropy(logits, yt, reduction="none")
        traj = [loss.numpy().astype(np.float64)]
    return ProbeView(
        features=hn,
        probs=p.numpy().astype(np.float64),
        loss_trajectory=np.vstack(traj),
        last_layer_grad=grad,
    )


def fit_probe(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    n_classes: int,
    epochs: int = 6,
    hidden: int = 256,
    penultimate: int = 64,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
) -> ProbeView:
    """Train the probe MLP on ``(x, y)`` and return its :class:`ProbeView`.

    Parameters
    ----------
    x
        ``N×D`` float inputs (already scaled; see :func:`saip_poisoning.data.prepare`).
    y
        ``N`` integer labels in ``[0, n_classes)``.
    epochs, hidden, penultimate, batch_size, lr
        Training settings; the defaults train MNIST-sized data in about a second per epoch.
        ``batch_size`` is an upper bound: small datasets use smaller batches so that every
        epoch has at least 60 optimiser steps (otherwise an "early epoch" on 1,400 samples is
        a third of one on 4,000, and the loss trajectory means something else).
    seed
        Seeds the weight initialisation and batch order (deterministic for a given seed).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    # train_mlp runs on one thread: batch-64 MLP steps are as fast and never oversubscribe
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    traj: list[NDArray[np.float64]] = []

    def record(net: nn.Module) -> None:
        with torch.no_grad():
            loss = torch.nn.functional.cross_entropy(net(xt), yt, reduction="none")
        traj.append(loss.numpy().astype(np.float64))

    net = train_mlp(
        x,
        y,
        n_classes=n_classes,
        epochs=epochs,
        hidden=hidden,
        penultimate=penultimate,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        on_epoch=record,
    )
    assert isinstance(net, _MLP)
    return _view(net.body, net.head, xt, yt, traj)


def view_from_module(
    body: nn.Module, head: nn.Linear, x: NDArray[np.float64], y: NDArray[np.int64]
) -> ProbeView:
    """Build a :class:`ProbeView` from a caller's trained network split as ``head(body(x))``.

    ``body`` must map a batch of inputs to the penultimate activations and ``head`` must be the
    final linear layer (this split is what ART 1.20.1 gets wrong for ``nn.Sequential`` models:
    it reads the logits instead of the penultimate layer).
    """
    body.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.long)
    return _view(body, head, xt, yt, [])


def train_mlp(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    n_classes: int,
    epochs: int = 6,
    hidden: int = 256,
    penultimate: int = 64,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    on_epoch: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Train the probe MLP on ``(x, y)`` and return the network (eval mode, one thread);
    ``on_epoch(net)`` runs after every epoch with the network in eval mode."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.long)
        # small sets: at least 60 steps per epoch; large sets: at most ~250 steps per epoch
        # (larger batches), so training time stops growing with N
        bs = max(8, min(batch_size, len(xt) // 60), -(-len(xt) // 250))
        net = _MLP(xt.shape[1], n_classes, hidden, penultimate)
        opt = torch.optim.Adam(
            net.parameters(), lr=lr * max(1.0, (bs / batch_size) ** 0.5), foreach=True
        )
        lossf = nn.CrossEntropyLoss()
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), bs):
                b = perm[i : i + bs]
                opt.zero_grad()
                lossf(net(xt[b]), yt[b]).backward()
                opt.step()
            net.eval()
            if on_epoch is not None:
                on_epoch(net)
        net.eval()
        return net
    finally:
        torch.set_num_threads(threads)


def predict_proba(net: nn.Module, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """Softmax outputs of ``net`` on ``x`` (batched, no gradient)."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), 8192):
            xt = torch.as_tensor(x[i : i + 8192], dtype=torch.float32)
            out.append(torch.softmax(net(xt), dim=1).numpy())
    return np.vstack(out).astype(np.float64)


def crossfit_probs(
    x: NDArray[np.float64],
    y: NDArray[np.int64],
    *,
    n_classes: int,
    folds: int = 2,
    epochs: int = 8,
    seed: int = 0,
) -> NDArray[np.float64]:
    """Out-of-fold class probabilities: each sample is predicted by a probe that never saw it.

    Cross-fitting (Chernozhukov et al. 2018; used for label errors by Northcutt et al. 2021,
    "Confident Learning", arXiv:1911.00068) keeps the probe's memorisation of a sample out of
    that sample's own score, so the held-out accuracy measures how learnable the data is.
    Folds are stratified by label.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    probs = np.zeros((len(y), n_classes))
    for f in range(folds):
        test = fold == f
        net = train_mlp(
            x[~test],
            y[~test],
            n_classes=n_classes,
            epochs=epochs,
            hidden=128,
            batch_size=128,
            seed=seed + f,
        )
        probs[test] = predict_proba(net, x[test])
    return probs
