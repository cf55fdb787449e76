"""ING-11: the per-producer health numbers are the right numbers, not just present.

Each rate, the total-variation distance and the chi-square p-value are recomputed here from the
counts fed in (independently of the tracker, with ``scipy.stats.chisquare``), and each flag is
checked on the side of its threshold where it must fire and where it must not."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip_ingestion.health import HealthTracker
from scipy.stats import chisquare  # type: ignore[import-untyped]

HOUR = 3_600_000
CLASSES = list(range(10))


def _feed(t: HealthTracker, producer: str, ts: int, counts: dict[int, int]) -> None:
    for label, n in counts.items():
        for _ in range(n):
            t.observe(producer, ts, "accepted", label=label)


def _uniform(n: int) -> dict[int, int]:
    return dict.fromkeys(CLASSES, n)


def test_drifted_producer_is_flagged_with_the_right_tv_and_p_value() -> None:
    t = HealthTracker(window_ms=HOUR)
    honest = _uniform(30)
    poisoned = dict(_uniform(30))
    poisoned[0] += 60  # all-to-one: 60 extra records relabelled to class 0
    _feed(t, "alpha", 10, poisoned)
    _feed(t, "beta", 20, honest)
    _feed(t, "gamma", 30, honest)
    s = t.summary()

    # independent reference: per-class median of the three producers' proportions, smoothed
    dists = []
    for c in (poisoned, honest, honest):
        total = sum(c.values())
        dists.append({k: v / total for k, v in c.items()})
    med = {k: statistics.median(d[k] for d in dists) for k in CLASSES}
    eps = 1.0 / (1000 * len(CLASSES))
    norm = sum(med.values()) + eps * len(CLASSES)
    ref = [(med[k] + eps) / norm for k in CLASSES]
    n = sum(poisoned.values())
    own = [poisoned[k] / n for k in CLASSES]
    tv = 0.5 * sum(abs(a - b) for a, b in zip(own, ref, strict=True))
    p = chisquare([poisoned[k] for k in CLASSES], [r * n for r in ref]).pvalue

    (w,) = s["alpha"]["windows"]
    assert w["label_drift"]["tv"] == pytest.approx(tv, abs=1e-4)
    assert w["label_drift"]["p_value"] == pytest.approx(p, rel=1e-6)
    assert p < 1e-6
    assert tv > 0.05
    assert w["drift_flag"]
    assert s["alpha"]["flagged"]
    for honest_name in ("beta", "gamma"):
        assert not s[honest_name]["flagged"]
        assert s[honest_name]["windows"][0]["label_drift"]["p_value"] > 0.5


def test_rejection_rate_flags_only_above_the_threshold() -> None:
    """The threshold is strict (rate > max): 6 of 100 flags, 5 of 100 does not."""
    t = HealthTracker(window_ms=HOUR, max_rejection_rate=0.05)
    for producer, rejected in (("over", 6), ("edge", 5)):
        accepted = _uniform(10)
        accepted[9] -= rejected  # 100 received in all
        _feed(t, producer, 0, accepted)
        for _ in range(rejected):
            t.observe(producer, 0, "quarantined", reason="bad_signature")
    s = t.summary()
    assert s["over"]["received"] == s["edge"]["received"] == 100
    assert s["over"]["rejection_rate"] == pytest.approx(0.06)
    assert s["edge"]["rejection_rate"] == pytest.approx(0.05)
    assert s["over"]["flagged"]
    assert s["over"]["reasons"] == {"bad_signature": 6}
    assert not s["edge"]["flagged"]


def test_duplicate_rate_is_counted_and_conserved() -> None:
    t = HealthTracker(window_ms=HOUR)
    _feed(t, "dup", 0, _uniform(8))  # 80 accepted
    for _ in range(20):
        t.observe("dup", 0, "duplicate")
    s = t.summary()["dup"]
    assert s["received"] == 100 == s["accepted"] + s["quarantined"]
    assert s["duplicates"] == 20
    assert s["duplicate_rate"] == pytest.approx(0.2)


def test_drift_is_per_window() -> None:
    """A producer honest in the first hour and drifting in the second is flagged in the second
    window only."""
    t = HealthTracker(window_ms=HOUR)
    for producer in ("alpha", "beta", "gamma"):
        _feed(t, producer, 0, _uniform(30))
    _feed(t, "alpha", HOUR + 1, _uniform(30) | {0: 90})
    _feed(t, "beta", HOUR + 1, _uniform(30))
    _feed(t, "gamma", HOUR + 1, _uniform(30))
    first, second = t.summary()["alpha"]["windows"]
    assert (first["start_ms"], second["start_ms"]) == (0, HOUR)
    assert not first["drift_flag"]
    assert second["drift_flag"]


def test_bad_thresholds_are_refused() -> None:
    for kwargs in ({"alpha": 0.0}, {"min_tv": 1.5}, {"max_rejection_rate": -0.1}, {"window_ms": 0}):
        with pytest.raises(ValueError):
            HealthTracker(**kwargs)  # type: ignore[arg-type]


_OBS = st.tuples(
    st.sampled_from(["a", "b", "(unauthenticated)"]),
    st.integers(0, 3 * HOUR),
    st.sampled_from(["accepted", "duplicate", "quarantined"]),
    st.one_of(st.none(), st.integers(0, 3)),
    st.sampled_from(["bad_signature", "schema", "stale"]),
)


def _apply(t: HealthTracker, obs: list[tuple[str, int, str, int | None, str]]) -> None:
    for producer, ts, outcome, label, reason in obs:
        if outcome == "accepted" and label is not None and ts % 2:
            t.observe_accepted(Counter({(producer, t.window_of(ts), label): 1}))
        else:
            t.observe(producer, ts, outcome, label=label, reason=reason)


@settings(max_examples=150, deadline=None)
@given(before=st.lists(_OBS, max_size=20), during=st.lists(_OBS, max_size=20))
def test_health_batch_that_fails_is_taken_back_and_one_that_commits_counts_once(
    before: list[tuple[str, int, str, int | None, str]],
    during: list[tuple[str, int, str, int | None, str]],
) -> None:
    """A batch that did not commit (a scale-out stream fenced it: its messages come back and
    are counted when re-delivered) leaves the counters exactly as they were — windows it
    created are gone, windows it touched are restored; a committed batch counts as if no
    batch were open."""
    t = HealthTracker(window_ms=HOUR)
    _apply(t, before)
    snapshot = t.state()

    def fenced_batch() -> None:
        with t.batch():
            _apply(t, during)
            raise RuntimeError("fenced")

    with pytest.raises(RuntimeError, match="fenced"):
        fenced_batch()
    assert t.state() == snapshot
    with t.batch():
        _apply(t, during)
    direct = HealthTracker(window_ms=HOUR)
    _apply(direct, before + during)
    assert t.state() == direct.state()


def test_health_batches_do_not_nest() -> None:
    t = HealthTracker(window_ms=HOUR)
    with t.batch(), pytest.raises(RuntimeError, match="does not nest"), t.batch():
        pass
