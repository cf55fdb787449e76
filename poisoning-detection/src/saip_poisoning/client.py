"""Client-side scan hook for federated clients.

A federated client can scan its own shard before local training and drop what the fused
detectors flag. ``saip_fl`` must not import this package; the ``saip`` pipeline passes
:func:`client_filter` into the FL client as a plain callable with the signature
``(x, y) -> keep_mask``.
"""

from __future__ import annotations

import logging

import numpy as np
from numpy.typing import ArrayLike, NDArray

from saip_poisoning.data import prepare
from saip_poisoning.scan import scan

__all__ = ["client_filter"]

logger = logging.getLogger(__name__)


def client_filter(
    x: ArrayLike,
    y: ArrayLike,
    *,
    max_drop_fraction: float = 0.5,
    min_per_class: int = 5,
    epochs: int = 6,
    seed: int = 0,
) -> NDArray[np.bool_]:
    """Scan a client's shard and return the boolean keep-mask (``True`` = train on it).

    Parameters
    ----------
    x, y
        The client's local samples (``N×D`` or ``N×H×W``) and integer labels.
    max_drop_fraction
        Safety cap: if the scan flags more than this share of the shard, only the
        highest-scoring ``max_drop_fraction`` are dropped (a client must not silently discard
        its whole shard; the FL server's update validation still applies).
    min_per_class
        Classes present on the client need at least this many samples; smaller classes are
        kept unscanned (their samples are kept) rather than failing the client.
    epochs, seed
        Probe training settings (see :func:`saip_poisoning.scan.scan`).

    Returns
    -------
    numpy.ndarray
        ``N`` booleans.

    Raises
    ------
    PoisoningInputError
        Malformed input (shape, NaN, mismatched lengths).
    """
    if not 0.0 < max_drop_fraction <= 1.0:
        raise ValueError(f"max_drop_fraction must be in (0, 1], got {max_drop_fraction}")
    ya = np.asarray(y)
    xa = np.asarray(x)
    keep = np.ones(len(ya), dtype=bool)
    if ya.ndim != 1:
        # let the validation produce the typed error
        prepare(xa, ya, min_per_class=min_per_class)
    labels, counts = np.unique(ya, return_counts=True)
    big = labels[counts >= min_per_class]
    sel = np.flatnonzero(np.isin(ya, big))
    if len(big) < 2:
        logger.warning(
            "client_filter: fewer than two classes with >= %d samples; nothing scanned",
            min_per_class,
        )
        return keep
    # remap the scanned classes to 0..k-1 so absent labels do not count as empty classes
    remap = {int(c): i for i, c in enumerate(big)}
    ys = np.array([remap[int(v)] for v in ya[sel]], dtype=np.int64)
    # prepared once with the caller's min_per_class; the scan and its detectors reuse it
    data = prepare(xa[sel], ys, min_per_class=min_per_class)
    report = scan(data, epochs=epochs, seed=seed)
    # a keep-mask cannot relabel: label-noise flags the scan set aside (clean-level, but
    # possibly an attacker's flips within the allowance) are dropped as well; being unflagged,
    # their scores are below every flag's, so the cap drops them last
    drop = report.flags if report.set_aside is None else report.flags | report.set_aside
    flagged = np.flatnonzero(drop)
    cap = int(np.floor(max_drop_fraction * len(ya)))
    if len(flagged) > cap:
        order = np.argsort(-report.scores[flagged])
        flagged = flagged[order[:cap]]
    keep[sel[flagged]] = False
    logger.info(
        "client_filter: dropping %d of %d samples (risk %.1f)",
        (~keep).sum(),
        len(keep),
        report.risk_score,
    )
    return keep
