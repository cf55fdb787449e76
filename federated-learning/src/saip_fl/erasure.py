"""Post-training backdoor erasure on the server's clean root data: clean-subspace projection.

Under grouped SecAgg+ a norm-bounded backdoor hides inside group means that pass every check the
server can run on them (norm, cosine to the root update, holdout loss: the holdout carries no
trigger), so part of it reaches the global model whatever the server screens. What the server
still holds is clean root data (FLTrust's assumption, Cao et al., NDSS 2021).

Fine-Pruning (Liu, Dolan-Gavitt & Garg, RAID 2018, "Fine-Pruning: Defending Against Backdooring
Attacks on Deep Neural Networks") removes what clean data leaves dormant: the neurons a clean set
never activates carry the backdoor. :func:`project_input_layer` applies the same idea to the
*input directions* of the first layer, in closed form: with ``Σ`` the covariance of the clean
root inputs (mean ``μ``), the first layer ``W x + b`` becomes ``W P (x − μ) + W μ + b`` with the
ridge projection ``P = Σ (Σ + λ I)⁻¹``. Directions in which the clean data varies much more than
``λ`` pass unchanged (``P ≈ I`` there), so the clean function barely moves; directions the clean
data hardly uses — where a patch trigger on usually-blank pixels lives — are shrunk towards
zero, so the trigger no longer reaches the hidden layer. No knowledge of the trigger, the target
label or the attackers is used, and nothing is trained (deterministic, milliseconds).

The server applies it to the final global model (``secagg.erase_ridge``); applied every round it
also removes the directions honest training slowly builds up and costs accuracy (measured in the
federated-learning README), and the attackers simply re-inject in the next round.

Notes
-----
Limits: the root data must be clean and representative, and larger than the input dimension
(else ``Σ`` is singular and every unseen direction is erased; refused at start-up). A trigger
built from features the clean data does use (blended, image-wide, or semantic triggers) lies in
the kept subspace and survives; so does a backdoor that lives only in deeper layers. ``λ`` trades
backdoor removal against clean accuracy; it is chosen on development seeds.
"""

from __future__ import annotations

import numpy as np

from saip_fl.data import Dataset
from saip_fl.model import Weights


def project_input_layer(weights: Weights, clean: Dataset, *, ridge: float) -> Weights:
    """Project the first layer of ``weights`` onto the clean data's input subspace (ridge ``λ``).

    Parameters
    ----------
    weights
        Model weights in ``state_dict`` order; ``weights[0]`` is the first layer's matrix
        ``(hidden, features)`` and ``weights[1]`` its bias ``(hidden,)``. Not modified.
    clean
        The server's clean root data (``features`` columns).
    ridge
        ``λ > 0`` in the units of the inputs' variance: directions whose clean variance is
        ``λ`` keep half their weight, much smaller ones almost none.

    Returns
    -------
    Weights
        New arrays; every layer after the first is copied unchanged.

    Raises
    ------
    ValueError
        ``ridge`` not positive and finite, shapes that do not match the data, or fewer clean
        samples than features.
    """
    if not (np.isfinite(ridge) and ridge > 0):
        raise ValueError(f"ridge must be positive and finite, got {ridge!r}")
    if len(weights) < 2:
        raise ValueError("expected the first layer's matrix and bias")
    w1 = np.asarray(weights[0], np.float64)
    b1 = np.asarray(weights[1], np.float64)
    x = np.asarray(clean.x, np.float64)
    if w1.ndim != 2 or b1.shape != (w1.shape[0],) or x.ndim != 2 or x.shape[1] != w1.shape[1]:
        raise ValueError(
            f"first layer {w1.shape} / bias {b1.shape} do not match clean data with "
            f"{x.shape[-1]} features"
        )
    if len(x) <= x.shape[1]:
        raise ValueError(
            f"{len(x)} clean samples for {x.shape[1]} features: the clean covariance is "
            "singular and the projection would erase directions the task needs"
        )
    mu = x.mean(axis=0)
    centred = x - mu
    cov = centred.T @ centred / len(x)
    # P = Σ (Σ + λI)⁻¹; both symmetric, so solve instead of inverting
    proj = np.linalg.solve(cov + ridge * np.eye(len(cov)), cov).T
    w_new = w1 @ proj
    b_new = b1 + w1 @ mu - w_new @ mu
    return [
        w_new.astype(np.float32),
        b_new.astype(np.float32),
        *[np.array(w, dtype=np.float32, copy=True) for w in weights[2:]],
    ]
