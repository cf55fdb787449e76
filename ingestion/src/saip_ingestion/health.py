"""Per-producer health per time window: rejection rate, duplicate rate, label drift.

Drift compares a producer's label distribution (accepted records) in a window with a robust
reference: the per-class *median* of all producers' label proportions in that window
(renormalised, add-one smoothed). A pooled reference would be dragged towards a compromised
producer and make the honest ones look drifted; the median is robust while fewer than half of
the producers are compromised (with two producers it is their mean, and a drift cannot be
attributed to either). Reported per window: total variation distance ``TV = ½ Σ |p_i − q_i|``
and Pearson's chi-square goodness-of-fit statistic against the reference, with its p-value from
:func:`scipy.stats.chi2.sf`. A producer is ``flagged`` when its rejection rate
exceeds ``max_rejection_rate`` or its labels drift (``p < alpha`` and ``TV > min_tv``); the flags
are a signal for the poisoning gate, not a verdict.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
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

    def copy(self) -> _Window:
        return _Window(
            self.received,
            self.accepted,
            self.duplicates,
            self.quarantined,
            Counter(self.labels),
            Counter(self.reasons),
        )


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
        # inside :meth:`batch`: each window's counters before the batch first touched it
        self._undo: dict[tuple[str, int], _Window | None] | None = None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Count one batch all or nothing: if the block raises (the batch was not committed,
        e.g. a scale-out stream fenced it and hands its messages back for re-delivery), every
        window it touched is put back, so a record is never counted for a batch that was not
        stored and again when it is re-delivered."""
        if self._undo is not None:
            raise RuntimeError("HealthTracker.batch() does not nest")
        self._undo = {}
        try:
            yield
        except BaseException:
            for key, before in self._undo.items():
                if before is None:
                    self._w.pop(key, None)
                else:
                    self._w[key] = before
            raise
        finally:
            self._undo = None

    def _window(self, key: tuple[str, int]) -> _Window:
        if self._undo is not None and key not in self._undo:
            old = self._w.get(key)
            self._undo[key] = None if old is None else old.copy()
        return self._w[key]

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
        w = self._window((producer, ts // self.window_ms * self.window_ms))
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

    def observe_accepted(self, counts: Counter[tuple[str, int, int | None]]) -> None:
        """Count many accepted records at once: ``{(producer, ts_window_start, label): n}``.

        ``ts_window_start`` must be ``ts // window_ms * window_ms`` (see :meth:`window_of`).
        """
        for (producer, start, label), n in counts.items():
            w = self._window((producer, start))
            w.received += n
            w.accepted += n
            if label is not None:
                w.labels[label] += n

    def state(self, *, since_ms: int | None = None) -> dict[str, Any]:
        """JSON form of the counters (windows starting before ``since_ms`` are dropped), so that
        health persists across runs: producers ingested in separate runs are still compared
        with each other in the windows they share."""
        windows = []
        for (producer, start), w in sorted(self._w.items()):
            if since_ms is not None and start + self.window_ms < since_ms:
                continue
            windows.append(
                {
                    "producer": producer,
                    "start_ms": start,
                    "received": w.received,
                    "accepted": w.accepted,
                    "duplicates": w.duplicates,
                    "quarantined": w.quarantined,
                    "labels": {str(k): v for k, v in w.labels.items()},
                    "reasons": dict(w.reasons),
                }
            )
        return {"format": "saip.health.v1", "window_ms": self.window_ms, "windows": windows}

    def restore(self, state: dict[str, Any]) -> None:
        """Add the counters of :meth:`state` (same ``window_ms`` required, else ignored)."""
        if state.get("format") != "saip.health.v1" or state.get("window_ms") != self.window_ms:
            return
        for item in state["windows"]:
            w = self._w[(str(item["producer"]), int(item["start_ms"]))]
            w.received += int(item["received"])
            w.accepted += int(item["accepted"])
            w.duplicates += int(item["duplicates"])
            w.quarantined += int(item["quarantined"])
            w.labels.update({int(k): int(v) for k, v in item["labels"].items()})
            w.reasons.update({str(k): int(v) for k, v in item["reasons"].items()})

    def window_of(self, ts: int) -> int:
        """Start of the window that ``ts`` falls in."""
        return ts // self.window_ms * self.window_ms

    def _drift(self, own: Counter[int], reference: dict[int, float]) -> dict[str, Any]:
        from scipy.stats import chi2  # type: ignore[import-untyped]

        n = sum(own.values())
        if n == 0 or not reference:
            return {"tv": None, "chi2": None, "p_value": None}
        classes = sorted(set(own) | set(reference))
        k = len(classes)
        q = [reference.get(c, 0.0) for c in classes]
        p = [own[c] / n for c in classes]
        tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
        stat = sum((own[c] - n * qc) ** 2 / (n * qc) for c, qc in zip(classes, q, strict=True))
        pval = float(chi2.sf(stat, k - 1)) if k > 1 else 1.0
        return {"tv": round(tv, 4), "chi2": round(stat, 3), "p_value": pval}

    @staticmethod
    def _reference(windows: dict[str, _Window]) -> dict[int, float]:
        """Per-class median of the producers' label proportions (smoothed, renormalised)."""
        import statistics

        dists: list[dict[int, float]] = []
        for w in windows.values():
            total = sum(w.labels.values())
            if total:
                dists.append({c: v / total for c, v in w.labels.items()})
        if len(dists) < 2:
            return {}
        classes = sorted({c for d in dists for c in d})
        med: dict[int, float] = {
            c: float(statistics.median(d.get(c, 0.0) for d in dists)) for c in classes
        }
        eps = 1.0 / (1000 * len(classes))
        norm = sum(med.values()) + eps * len(classes)
        return {c: (v + eps) / norm for c, v in med.items()}

    def summary(self) -> dict[str, Any]:
        """``{producer: {totals..., flagged, windows: [...]}}``."""
        by_window: dict[int, dict[str, _Window]] = defaultdict(dict)
        for (producer, start), w in self._w.items():
            by_window[start][producer] = w
        references = {
            start: self._reference({p: w for p, w in ws.items() if not p.startswith("(")})
            for start, ws in by_window.items()
        }
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
                drift = self._drift(w.labels, references[start])
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
