"""Per-producer health per time window: rejection rate, duplicate rate, label drift.

Drift compares a producer's label distribution (accepted records) in a window with the pooled
distribution of *all other* producers in the same window (leave-one-out, so a producer cannot
dilute its own reference): total variation distance ``TV = ½ Σ |p_i − q_i|`` and Pearson's
chi-square goodness-of-fit statistic against the others' proportions (add-one smoothed), with
its p-value from :func:`scipy.stats.chi2.sf`. A producer is ``flagged`` when its rejection rate
exceeds ``max_rejection_rate`` or its labels drift (``p < alpha`` and ``TV > min_tv``); the flags
are a signal for the poisoning gate, not a verdict.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HealthTracker"]


@dataclass
class _Window:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    labels: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)


class HealthTracker:
    """Counts outcomes per ``(producer, window)``; :meth:`summary` computes the health view.

    Parameters
    ----------
    window_ms:
        Window length in milliseconds of producer time (``ts``); records without a trusted ``ts``
        (unauthenticated) fall into the window of the receipt time.
    alpha, min_tv:
        Drift flag thresholds (chi-square p-value and total variation distance).
    max_rejection_rate:
        Rejection-rate flag threshold.
    """

    def __init__(
        self,
        *,
        window_ms: int = 3_600_000,
        alpha: float = 0.01,
        min_tv: float = 0.05,
        max_rejection_rate: float = 0.05,
    ) -> None:
        if window_ms < 1:
            raise ValueError("window_ms must be >= 1")
        if not 0 < alpha < 1 or not 0 <= min_tv <= 1 or not 0 <= max_rejection_rate <= 1:
            raise ValueError("alpha in (0,1); min_tv and max_rejection_rate in [0,1]")
        self.window_ms = window_ms
        self.alpha = alpha
        self.min_tv = min_tv
        self.max_rejection_rate = max_rejection_rate
        self._w: dict[tuple[str, int], _Window] = defaultdict(_Window)

    def observe(
        self,
        producer: str,
        ts: int,
        outcome: str,
        *,
        label: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Count one record: ``outcome`` is ``accepted``, ``duplicate`` or ``quarantined``.

        A duplicate counts as accepted (``received == accepted + quarantined``) and as duplicate.
        """
        w = self._w[(producer, ts // self.window_ms * self.window_ms)]
        w.received += 1
        if outcome == "accepted":
            w.accepted += 1
            if label is not None:
                w.labels[label] += 1
        elif outcome == "duplicate":  # accepted content, already stored: counted, not re-stored
            w.accepted += 1
            w.duplicates += 1
        else:
            w.quarantined += 1
            if reason:
                w.reasons[reason] += 1

    def _drift(self, own: Counter[int], others: Counter[int]) -> dict[str, Any]:
        from scipy.stats import chi2  # type: ignore[import-untyped]

        n, m = sum(own.values()), sum(others.values())
        if n == 0 or m == 0:
            return {"tv": None, "chi2": None, "p_value": None}
        classes = sorted(set(own) | set(others))
        k = len(classes)
        q = [(others[c] + 1) / (m + k) for c in classes]
        p = [own[c] / n for c in classes]
        tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
        stat = sum((own[c] - n * qc) ** 2 / (n * qc) for c, qc in zip(classes, q, strict=True))
        pval = float(chi2.sf(stat, k - 1)) if k > 1 else 1.0
        return {"tv": round(tv, 4), "chi2": round(stat, 3), "p_value": pval}

    def summary(self) -> dict[str, Any]:
        """``{producer: {totals..., flagged, windows: [...]}}``."""
        by_window: dict[int, dict[str, _Window]] = defaultdict(dict)
        for (producer, start), w in self._w.items():
            by_window[start][producer] = w
        out: dict[str, Any] = {}
        for producer in sorted({p for p, _ in self._w}):
            windows: list[dict[str, Any]] = []
            totals = Counter[str]()
            reasons = Counter[str]()
            flagged_any = False
            for start in sorted(by_window):
                found = by_window[start].get(producer)
                if found is None:
                    continue
                w = found
                others: Counter[int] = Counter()
                for other, ow in by_window[start].items():
                    if other != producer:
                        others.update(ow.labels)
                drift = self._drift(w.labels, others)
                rejection = w.quarantined / w.received if w.received else 0.0
                dup = w.duplicates / w.received if w.received else 0.0
                drifted = (
                    drift["p_value"] is not None
                    and drift["p_value"] < self.alpha
                    and drift["tv"] > self.min_tv
                )
                flagged = drifted or rejection > self.max_rejection_rate
                flagged_any |= flagged
                windows.append(
                    {
                        "start_ms": start,
                        "received": w.received,
                        "accepted": w.accepted,
                        "duplicates": w.duplicates,
                        "quarantined": w.quarantined,
                        "rejection_rate": round(rejection, 4),
                        "duplicate_rate": round(dup, 4),
                        "labels": {str(k): v for k, v in sorted(w.labels.items())},
                        "label_drift": drift,
                        "drift_flag": drifted,
                        "flagged": flagged,
                        "reasons": dict(sorted(w.reasons.items())),
                    }
                )
                totals.update(
                    received=w.received,
                    accepted=w.accepted,
                    duplicates=w.duplicates,
                    quarantined=w.quarantined,
                )
                reasons.update(w.reasons)
            received = totals["received"]
            out[producer] = {
                "received": received,
                "accepted": totals["accepted"],
                "duplicates": totals["duplicates"],
                "quarantined": totals["quarantined"],
                "rejection_rate": round(totals["quarantined"] / received, 4) if received else 0.0,
                "duplicate_rate": round(totals["duplicates"] / received, 4) if received else 0.0,
                "max_label_tv": max((x["label_drift"]["tv"] or 0.0 for x in windows), default=0.0),
                "flagged": flagged_any,
                "reasons": dict(sorted(reasons.items())),
                "windows": windows,
            }
        return out
