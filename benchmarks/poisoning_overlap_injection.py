"""Natural class overlap vs label flips: a data-driven reference by flip injection, and the
position of the flags along the axis between their two classes — measured where the label-noise
rule's depth test runs (``saip_poisoning.scan._depth_test``), neither adopted.

Run: ``.venv/bin/python benchmarks/poisoning_overlap_injection.py`` (~10 min on a shared
2-core machine) → ``benchmarks/results/poisoning_overlap_injection.json``. Development
measurement behind the README's "Limits" (clean data with heavy class overlap): nothing in
``src/`` reads it. Companion of ``poisoning_overlap_nulls.py`` (same wrapping, same cases plus
the nearest-class flips and more fresh line draws).

The depth test is wrapped (not changed): each time a scan reaches it, the statistics below are
computed on the same inputs and the depth test's own result is returned unchanged.

Statistics
----------
``injection`` (pooled over two injections, each one more cross-fit)
    The fixed 0.43 cut replaced by a reference from the data itself: a copy of the labels gets
    known synthetic flips — 10 % of the samples the first pass did not flag, (a) to a uniformly
    drawn other class, (b) to each sample's nearest other class (centroid of its clear members
    in the judging view) — the probe is re-cross-fitted with the same settings and the rule's
    first pass re-run (neighbours voting with the injected labels). In that run the depth
    percentiles (:func:`saip_poisoning.scan._depth_percentiles`) of the flags that are *not*
    injected (the data's own flags) are compared with those of the injected flips that were
    caught: ``diff`` = injected mean − own mean, ``p`` = one-sided Mann–Whitney (own flags
    shallower). Premise: under clean overlap the own flags are natural tail intruders,
    shallower than flips caught by the same rule; under real flips both are flips.
``axis_depth``
    Shape of the intruder density: a natural intruder of class ``a`` into ``b`` lies on
    ``a``'s side of ``b`` (its density relative to ``b``'s falls off monotonically away from
    ``a``: for equal-variance Gaussians the log ratio is linear in the position along the axis
    joining the means), a flipped ``b`` sample is spread like ``b``. Each flag (label ``a``,
    predicted ``b``) is projected on the axis from ``a``'s to ``b``'s centroid (clear members,
    judging view) and given its mid-rank percentile among ``b``'s clear members on that axis;
    the mean (0.5 under the flip model) and the share in the lowest third (1/3 under it).
``side_axis_depth`` (adopted: :func:`saip_poisoning.scan._side_depth` computes the same)
    The axis depth with the reference conditioned on the side: ``b``'s clear members whose
    nearest other class centroid is ``a`` (at least 5). Flips to each sample's nearest class
    are spread like that part of ``b``; overlap sits at its ``a`` edge.

The committed JSON's ``flagged_pct``/``risk``/``calibrated`` are from the scan before the side
depth decided (the statistics are computed on the depth test's inputs and do not depend on
it); ``side_axis_depth_scan_seeds_1_2`` holds the ``--no-injection --scan-seed 1`` and ``2``
runs of the key cases (printed, merged by hand).

Data. **Tuning**: the benchmark's tuning set digits (flip 5/10/20 % on its 80 % split; 5 / 10 %
of the whole set flipped to the nearest class, as
``test_poi_side_flips_to_the_nearest_class_are_found``), MNIST-5k flip 5 %, and the synthetic
flip families of ``tests/poisoning/test_poi_overlap.py``.
**Fresh draws** (tuning for any cut): three clean Gaussian classes on a line, 2 SD apart (draws
6–21) and 2.5 SD apart (draws 6–11) — not the draws the xfail tests use. **Evaluation only**,
measured last: the xfail tests' own draws — 2 SD draws 0 and 3, 2.5 SD draws 12, 13, 16.
Scan seed 0 (the injection adds noise of its own: one draw of injected flips per kind).
``--no-injection``: the cheap statistics only, printed, no JSON; ``--scan-seed N``.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from saip_poisoning import scan
from saip_poisoning.model import crossfit_probs
from scipy.stats import mannwhitneyu

sys.path.insert(0, str(Path(__file__).parent))
from poisoning import _load
from poisoning_overlap_nulls import Case, _digits_flips, _gaussians, _percentile

OUT = Path(__file__).parent / "results" / "poisoning_overlap_injection.json"
SCAN = importlib.import_module("saip_poisoning.scan")  # the module (the package exports a function)
RATE = 0.10
SCAN_SEED = [0]
INJECT = [True]  # ``--no-injection``: the cheap statistics only (no extra cross-fits)
_RECORD: list[dict[str, Any]] = []
_DEPTH_TEST = SCAN._depth_test


def _centroids(data: Any, space: Any, oof: np.ndarray) -> np.ndarray:
    y, k = data.y, data.n_classes
    ref = (y == oof.argmax(1)) & (space.majority == y)
    cent = np.full((k, space.z.shape[1]), np.nan)
    for c in range(k):
        if (ref & (y == c)).any():
            cent[c] = space.z[ref & (y == c)].mean(axis=0)
    return cent


def _inject(data: Any, space: Any, oof: np.ndarray, flags: np.ndarray, kind: str) -> Any:
    """One injection run: (own flags' depth percentiles, caught injected flips' ones, counts)."""
    y, k, n = data.y, data.n_classes, len(data.y)
    rng = np.random.default_rng(1000 if kind == "uniform" else 2000)
    m = max(10, int(RATE * n))
    idx = rng.choice(np.flatnonzero(~flags), m, replace=False)
    yi = y.copy()
    if kind == "uniform":
        yi[idx] = (y[idx] + 1 + rng.integers(0, k - 1, m)) % k
    else:
        d = ((space.z[idx, None, :] - _centroids(data, space, oof)[None]) ** 2).sum(axis=-1)
        d[np.arange(m), y[idx]] = np.inf
        yi[idx] = np.nan_to_num(d, nan=np.inf).argmin(axis=1)
    injected = np.zeros(n, dtype=bool)
    injected[idx] = True
    z = space.z / (float(space.z.std()) or 1.0)
    oofi = crossfit_probs(z, yi, n_classes=k, seed=101)
    caught = SCAN._noise_rule(replace(data, y=yi), space, oofi, labels=yi)
    pct = SCAN._depth_percentiles(yi, k, space, oofi, caught)
    own, inj = pct[caught & ~injected], pct[caught & injected]
    return own[~np.isnan(own)], inj[~np.isnan(inj)], int((caught & injected).sum()), m


def _axis_depth(data: Any, space: Any, oof: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    y, pred = data.y, oof.argmax(1)
    cent = _centroids(data, space, oof)
    d = ((space.z[:, None, :] - cent[None]) ** 2).sum(axis=-1)
    d = np.nan_to_num(d, nan=np.inf)
    d[np.arange(len(y)), pred] = np.inf
    side = d.argmin(axis=1)  # the nearest class other than the predicted one
    pct, side_pct = [], []
    for i in np.flatnonzero(flags & (y != pred)):
        a, b = y[i], pred[i]
        ref = (y == b) & (pred == b) & (space.majority == b)
        if not ref.any() or np.isnan(cent[[a, b]]).any():
            continue
        u = cent[b] - cent[a]
        pct.append(_percentile(space.z[ref] @ u, np.array([space.z[i] @ u]))[0])
        facing = ref & (side == a)
        if facing.sum() >= 5:
            side_pct.append(_percentile(space.z[facing] @ u, np.array([space.z[i] @ u]))[0])
    v, w = np.array(pct), np.array(side_pct)
    return {
        "axis_depth": round(float(v.mean()), 3) if len(v) else None,
        "axis_low_third": round(float((v < 1 / 3).mean()), 3) if len(v) else None,
        "side_axis_depth": round(float(w.mean()), 3) if len(w) else None,
        "side_axis_n": len(w),
    }


def _wrapped(data: Any, space: Any, oof: np.ndarray, flags: np.ndarray) -> dict[str, Any]:
    result: dict[str, Any] = _DEPTH_TEST(data, space, oof, flags)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {
        "depth_mean": result.get("mean_depth_percentile"),
        "first_pass_flags": int(flags.sum()),
        **_axis_depth(data, space, oof, flags),
    }
    if not INJECT[0]:
        _RECORD.append(rec)
        return result
    own, inj, per_kind = [], [], {}
    for kind in ("uniform", "nearest"):
        a, b, caught, m = _inject(data, space, oof, flags, kind)
        own.append(a)
        inj.append(b)
        per_kind[kind] = {
            "injected": m,
            "caught": caught,
            "diff": round(float(b.mean() - a.mean()), 3) if len(a) and len(b) else None,
        }
    a, b = np.concatenate(own), np.concatenate(inj)
    rec["injection"] = {
        "own_mean": round(float(a.mean()), 3),
        "injected_mean": round(float(b.mean()), 3),
        "diff": round(float(b.mean() - a.mean()), 3),
        "p": round(float(mannwhitneyu(a, b, alternative="less").pvalue), 4),
        "n_own": len(a),
        "n_injected": len(b),
        "by_kind": per_kind,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    _RECORD.append(rec)
    return result


def _line3(sep: float, seed: int) -> Case:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), 250)
    x = rng.normal(size=(len(y), 10))
    x[:, 0] += sep * y
    return x, y, np.zeros(len(y), dtype=bool)


def _nearest(name: str, rate: float) -> Case:
    """``rate`` of the whole set, drawn at random, each flipped to its nearest class centroid."""
    x, y = _load(name)
    k = int(y.max()) + 1
    cent = np.stack([x[y == c].mean(axis=0) for c in range(k)])
    d = ((x[:, None, :] - cent[None]) ** 2).sum(axis=-1)
    d[np.arange(len(y)), y] = np.inf
    idx = np.random.default_rng(1).choice(len(y), int(rate * len(y)), replace=False)
    yp = y.copy()
    yp[idx] = d[idx].argmin(axis=1)
    truth = np.zeros(len(y), dtype=bool)
    truth[idx] = True
    return x, yp, truth


CASES: list[tuple[str, str, Callable[[], Case]]] = [
    ("tuning", "digits flip 5 %", lambda: _digits_flips(0.05)),
    ("tuning", "digits flip 10 %", lambda: _digits_flips(0.10)),
    ("tuning", "digits flip 20 %", lambda: _digits_flips(0.20)),
    ("tuning", "digits nearest-class flips 5 %", lambda: _nearest("digits", 0.05)),
    ("tuning", "digits nearest-class flips 10 %", lambda: _nearest("digits", 0.10)),
    ("tuning", "MNIST-5k flip 5 %", lambda: _digits_flips(0.05, "mnist5k")),
    ("synthetic flips", "Gaussians 2 SD, 5 % core flips", lambda: _gaussians(2.0, 0, "core")),
    ("synthetic flips", "Gaussians 3 SD, 5 % core flips", lambda: _gaussians(3.0, 0, "core")),
    ("synthetic flips", "Gaussians 3 SD, 10 % random flips", lambda: _gaussians(3.0, 0, "random")),
    (
        "synthetic flips",
        "Gaussians 3 SD, 5 % core + 10 % boundary flips",
        lambda: _gaussians(3.0, 0, "core+boundary"),
    ),
    *[
        ("fresh draw", f"three classes on a line {s} SD, draw {d}", lambda s=s, d=d: _line3(s, d))
        for s, draws in ((2.0, range(6, 22)), (2.5, range(6, 12)))
        for d in draws
    ],
    *[
        (
            "evaluation only",
            f"three classes on a line {s} SD, draw {d} (xfail)",
            lambda s=s, d=d: _line3(s, d),
        )
        for s, draws in ((2.0, (0, 3)), (2.5, (12, 13, 16)))
        for d in draws
    ],
]


def main() -> int:
    INJECT[0] = "--no-injection" not in sys.argv
    if "--scan-seed" in sys.argv:
        SCAN_SEED[0] = int(sys.argv[sys.argv.index("--scan-seed") + 1])
    SCAN._depth_test = _wrapped
    results: dict[str, Any] = {}
    for group, name, make in CASES:
        x, y, truth = make()
        _RECORD.clear()
        r = scan(x, y, seed=SCAN_SEED[0], verify=False)
        run: dict[str, Any] = {
            "group": group,
            "flagged_pct": round(100 * float(r.flags.mean()), 2),
            "risk": r.risk_score,
            "calibrated": r.calibrated,
        }
        if truth.any():
            run["recall"] = round(float(r.flags[truth].mean()), 3)
        if _RECORD:
            run.update(_RECORD[0])
        results[name] = run
        print(f"{name:52s} {json.dumps(run)}", flush=True)
    if not INJECT[0] or SCAN_SEED[0]:
        return 0
    OUT.write_text(json.dumps({"scan_seed": 0, "rate": RATE, "cases": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
