"""A label-free image representation for the scan's second probe: texture statistics and
random-convolution energies, for images a flat probe on raw pixels cannot learn.

The scan judges labels with a cross-fitted probe and input-space neighbours. On natural
textures (e.g. 12×12 crops of photographs) neither works on raw pixels: the same texture at
another offset is far away in pixel space, so a flat MLP stays near chance and the scan is
rightly uncalibrated. A representation with the inductive bias of images fixes that without
learning from the labels:

- **texture statistics** (translation-invariant): histograms of intensity, of gradient
  magnitude and of gradient orientation weighted by magnitude (the cell histogram of HOG,
  Dalal & Triggs 2005, over the whole image), plus mean/std of intensity, gradient and
  Laplacian (the marginal and derivative statistics of texture models: Julesz 1962; Heeger &
  Bergen 1995; Portilla & Simoncelli 2000);
- **random-convolution energies**: two stages of fixed random zero-mean 3×3 filters,
  rectified (absolute value) and pooled (mean and max over the image; average pooling
  between the stages to at most ≈ 8×8 positions, 2×2 for small images). Random filters with
  rectification and pooling already give most of a trained convolutional network's
  discrimination (Jarrett et al. 2009, "What is the best multi-stage architecture for object
  recognition?"; Saxe et al. 2011, "On random weights and unsupervised feature learning").

Nothing here is fitted to the labels (only the histogram bin edges, from quantiles of the
data, and the random filters, from ``seed``), so neighbours in this space are as hard for a
label-flipping attacker to steer as pixel neighbours, and the probe/neighbour agreement check
compares two views of the same fixed representation. :func:`image_features` returns the
features z-scored per column; the scan embeds them with the same PCA + k-NN
(:func:`saip_poisoning.inputspace.input_space`) and cross-fits the same probe MLP on them.

Notes
-----
Pooling discards where in the image a pattern is: the representation is for judging *labels*
(label-noise rules). Trigger search and reconstruction stay in input space, where a patch has
coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray

from saip_poisoning.data import Prepared

__all__ = ["ImageProbe", "image_features", "is_image"]

#: rows used to fix the histogram bin edges (quantiles): enough for 8 bins, bounded cost
_EDGE_ROWS = 2000
#: ... and at most this many pixel values among them (2,000 28×28 images; large images: fewer)
_EDGE_VALUES = 2000 * 28 * 28
#: images per batch, at most
_BATCH = 512
#: values per batch (an image counts ``H·W·max(filters, 16)``): bounds the first convolution's
#: output, 512 × 32 × 28 × 28 float32 ≈ 51 MB, for any image size (one 512×512 image a batch)
_BATCH_VALUES = 512 * 32 * 28 * 28


@dataclass(frozen=True, kw_only=True)
class ImageProbe:
    """Configuration of the image-feature probe (validated at construction).

    Attributes
    ----------
    mode
        ``"auto"`` (default): used for N×H×W(×C) inputs when the first probe (PCA of the raw
        pixels) misses a calibration floor; ``"always"``: also computed and reported in
        ``calibration["probes"]`` when the pixel probe passes (which then still judges: the
        image view is an escalation, never a replacement).
    filters
        Random 3×3 filters per convolution stage (1–256).
    bins
        Bins of each histogram (4–64).
    min_side
        Smallest image height and width the probe accepts (3–64); smaller images keep the
        pixel probe only.
    """

    mode: Literal["auto", "always"] = "auto"
    filters: int = 32
    bins: int = 8
    min_side: int = 6

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "always"):
            raise ValueError(f"ImageProbe.mode must be 'auto' or 'always', got {self.mode!r}")
        for name, lo, hi in (("filters", 1, 256), ("bins", 4, 64), ("min_side", 3, 64)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"ImageProbe.{name} must be an int, got {type(v).__name__}")
            if not lo <= v <= hi:
                raise ValueError(f"ImageProbe.{name} must be in [{lo}, {hi}], got {v}")


def is_image(data: Prepared, probe: ImageProbe) -> bool:
    """Whether ``data`` holds images (N×H×W or N×H×W×C, C ≤ 4) the probe accepts."""
    s = data.shape
    if len(s) == 3 and s[2] > 4:
        return False
    return len(s) in (2, 3) and min(s[0], s[1]) >= probe.min_side


def _filters(k: int, cin: int, gen: torch.Generator) -> torch.Tensor:
    # float32 whatever torch's default dtype is in this process (the images are float32)
    w = torch.randn(k, cin, 3, 3, generator=gen, dtype=torch.float32)
    w = w - w.mean(dim=(1, 2, 3), keepdim=True)
    out: torch.Tensor = w / w.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None, None]
    return out


def _hist(
    v: NDArray[np.float64], edges: NDArray[np.float64], weights: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """Per-row histogram of ``v`` (``n×m``) over interior ``edges``, as shares of the row."""
    nb = len(edges) + 1
    n = len(v)
    idx = np.searchsorted(edges, v, side="right") + nb * np.arange(n)[:, None]
    w = None if weights is None else weights.ravel()
    out = np.bincount(idx.ravel(), weights=w, minlength=n * nb).reshape(n, nb).astype(np.float64)
    tot = out.sum(axis=1, keepdims=True)
    return out / np.where(tot > 0, tot, 1.0)


def image_features(data: Prepared, probe: ImageProbe, *, seed: int = 0) -> NDArray[np.float64]:
    """Label-free texture + random-convolution features of every image, z-scored per column.

    Parameters
    ----------
    data
        A prepared dataset with image shape (:func:`is_image`).
    probe
        Filter count, histogram bins.
    seed
        Seeds the random filters and the rows the bin edges are taken from.

    Raises
    ------
    ValueError
        ``data`` does not hold images the probe accepts.
    """
    if not is_image(data, probe):
        raise ValueError(
            f"the image probe needs N×H×W or N×H×W×C (C ≤ 4) inputs with sides ≥ "
            f"{probe.min_side}, got per-sample shape {data.shape}"
        )
    h, w = data.shape[0], data.shape[1]
    c = data.shape[2] if len(data.shape) == 3 else 1
    n = len(data.y)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    f1 = _filters(probe.filters, c, gen)
    f2 = _filters(probe.filters, probe.filters, gen)

    def lum_grad(rows: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        img = rows.reshape(len(rows), h, w, c)
        lum = img.mean(axis=3)
        gy, gx = np.gradient(lum, axis=(1, 2))
        return img, lum, np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)

    edge_rows = min(n, _EDGE_ROWS, max(1, _EDGE_VALUES // (h * w * c)))
    sample = data.xs[rng.choice(n, edge_rows, replace=False)]
    _, lum_s, mag_s, _ = lum_grad(sample)
    q = np.linspace(0.0, 1.0, probe.bins + 1)[1:-1]
    lum_edges = np.unique(np.quantile(lum_s, q))
    mag_edges = np.unique(np.quantile(mag_s, q))
    ang_edges = np.pi * np.arange(1, probe.bins) / probe.bins

    # the second stage runs on at most ~8×8 positions (2×2 pooling for small images, coarser
    # for large ones: its cost grows with filters² × positions)
    pool = max(2, -(-min(h, w) // 8))
    batch = max(1, min(_BATCH, _BATCH_VALUES // (h * w * max(probe.filters, 16))))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic summation order, and no oversubscription
    parts = []
    try:
        for i in range(0, n, batch):
            img, lum, mag, ang = lum_grad(data.xs[i : i + batch])
            m = len(img)
            lap = (
                4 * lum[:, 1:-1, 1:-1]
                - lum[:, :-2, 1:-1]
                - lum[:, 2:, 1:-1]
                - lum[:, 1:-1, :-2]
                - lum[:, 1:-1, 2:]
            )
            tex = [
                _hist(lum.reshape(m, -1), lum_edges, None),
                _hist(mag.reshape(m, -1), mag_edges, None),
                _hist(ang.reshape(m, -1), ang_edges, mag.reshape(m, -1)),
                img.mean(axis=(1, 2)),
                img.std(axis=(1, 2)),
                np.stack(
                    [mag.mean(axis=(1, 2)), mag.std(axis=(1, 2)), np.abs(lap).mean(axis=(1, 2))],
                    axis=1,
                ),
            ]
            with torch.no_grad():
                xt = torch.as_tensor(img, dtype=torch.float32).permute(0, 3, 1, 2)
                a1 = torch.nn.functional.conv2d(xt, f1, padding=1).abs_()
                p1 = torch.nn.functional.avg_pool2d(a1, pool, ceil_mode=True)
                a2 = torch.nn.functional.conv2d(p1, f2, padding=1).abs_()
                conv = torch.cat(
                    [
                        a1.mean(dim=(2, 3)),
                        a1.amax(dim=(2, 3)),
                        a2.mean(dim=(2, 3)),
                        a2.amax(dim=(2, 3)),
                    ],
                    dim=1,
                ).numpy()
            parts.append(np.hstack([*tex, conv.astype(np.float64)]))
    finally:
        torch.set_num_threads(threads)
    f = np.vstack(parts)
    sd = f.std(axis=0)
    out: NDArray[np.float64] = (f - f.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)
    return out
