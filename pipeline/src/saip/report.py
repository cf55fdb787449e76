"""The HTML security report: one self-contained file built from a pipeline run.

:func:`collect` reads ``report.json`` (written by ``saip demo``) and the artifacts it names — the
ingestion summary, the poisoning scan report and its input, the federated run's ``metrics.json``
— plus a header-only key audit of the data directory; or just ``metrics.json`` of a federated run
directory. :func:`render_html` turns that into one HTML page with every asset inline: charts are
inline SVG, sample thumbnails are PNG ``data:`` URIs, there is no script at all, and a
Content-Security-Policy forbids any network fetch (``default-src 'none'``).

Every string that comes from the run (producer names, reasons, paths) is HTML-escaped: producer
ids and quarantine reasons originate from untrusted input.

The flagged-sample grid shows plaintext training samples (so a trigger can be seen); the file is
written ``0600`` and :func:`render_html` leaves the grid out with ``include_samples=False`` (used
for copies sent elsewhere, e.g. experiment trackers).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from base64 import b64encode
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from saip import __version__
from saip.errors import InputError

SECTIONS = (
    ("summary", "Pipeline summary"),
    ("ingestion", "Ingestion"),
    ("producers", "Producer health over time"),
    ("scan", "Poisoning scan"),
    ("mitigation", "Mitigation"),
    ("federated", "Federated training"),
    ("keys", "Keys and rotation readiness"),
)
"""Section ids and titles, in page order (the browser test checks each one rendered)."""

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


@dataclass
class ReportInputs:
    """Everything a report is drawn from; any part may be missing (its section says so)."""

    source: Path
    steps: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, Any] = field(default_factory=dict)
    ingest: dict[str, Any] | None = None
    scan: dict[str, Any] | None = None
    scan_step: dict[str, Any] | None = None
    samples: tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]] | None = None
    fl: dict[str, Any] | None = None
    keys: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


# --- reading the run ------------------------------------------------------------------------------


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{what} {path} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"{what} {path} does not hold a JSON object")
    return doc


def _resolve(value: Any, base: Path) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    p = Path(value)
    for candidate in (p, base / p, base.parent / p):
        if candidate.is_file():
            return candidate
    return None


def _optional_json(value: Any, base: Path, what: str, notes: list[str]) -> dict[str, Any] | None:
    path = _resolve(value, base)
    if path is None:
        if value:
            notes.append(f"{what} {value} not found")
        return None
    try:
        return _read_json(path, what)
    except InputError as exc:
        notes.append(str(exc))
        return None


def collect(source: Path, *, audit_keys: bool = True) -> ReportInputs:
    """Read a run: ``report.json``, a data directory holding it, or a federated run directory.

    Raises :class:`InputError` when ``source`` is none of these.
    """
    if source.is_dir():
        if (source / "report.json").is_file():
            source = source / "report.json"
        elif (source / "metrics.json").is_file():
            source = source / "metrics.json"
        else:
            raise InputError(
                f"{source} holds neither report.json (a `saip demo` data directory) "
                "nor metrics.json (a `saip fl run` directory)"
            )
    elif not source.is_file():
        raise InputError(f"report source not found: {source}")
    doc = _read_json(source, "report source")
    base = source.parent
    inputs = ReportInputs(source=source)
    if "rounds" in doc and "steps" not in doc:  # a federated run's metrics.json
        inputs.fl = doc
        return inputs
    if not isinstance(doc.get("steps"), list):
        raise InputError(f"{source} is neither a pipeline report.json nor a metrics.json")
    inputs.steps = [s for s in doc["steps"] if isinstance(s, dict)]
    artifacts = doc.get("artifacts")
    inputs.artifacts = artifacts if isinstance(artifacts, dict) else {}
    arts = inputs.artifacts
    summary = arts.get("ingest_summary")
    inputs.ingest = summary if isinstance(summary, dict) else None
    inputs.scan = _optional_json(arts.get("scan_report"), base, "scan report", inputs.notes)
    inputs.scan_step = next((s for s in inputs.steps if s.get("name") == "poisoning scan"), None)
    inputs.fl = _optional_json(arts.get("fl_metrics"), base, "federated metrics", inputs.notes)
    scan_input = (inputs.scan_step or {}).get("details", {}).get("input")
    npz = _resolve(scan_input, base)
    if npz is not None and inputs.scan is not None:
        try:
            with np.load(npz, allow_pickle=False) as data:
                inputs.samples = (np.asarray(data["x"]), np.asarray(data["y"]))
        except (OSError, ValueError, KeyError) as exc:
            inputs.notes.append(f"scan input {npz} not readable: {exc}")
    if audit_keys:
        from saip_encryption.rotation import audit

        try:
            inputs.keys = audit([base]).to_dict()
        except Exception as exc:  # a report must not fail because one artifact is odd
            inputs.notes.append(f"key audit of {base} failed: {exc}")
    return inputs


# --- SVG charts -----------------------------------------------------------------------------------


def _num(v: float) -> str:
    return f"{v:.4g}"


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    vmax: float | None = None,
    unit: str = "",
    highlight: Iterable[str] = (),
    threshold: float | None = None,
) -> str:
    """Horizontal bars, one per ``(label, value)``; ``highlight`` labels are drawn in red."""
    marked = set(highlight)
    row, left, width = 22, 150, 420
    top = max(vmax or 0.0, *(v for _, v in items), threshold or 0.0, 1e-9)
    height = row * len(items) + 30
    parts = [
        f'<svg class="chart" role="img" width="{left + width + 90}" height="{height}" '
        f'viewBox="0 0 {left + width + 90} {height}"><title>{escape(title)}</title>'
    ]
    for i, (label, value) in enumerate(items):
        y = 10 + i * row
        w = max(0.0, value) / top * width
        colour = PALETTE[1] if label in marked else PALETTE[0]
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(label[:24])}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{colour}">'
            f"<title>{escape(label)}: {_num(value)}{escape(unit)}</title></rect>"
            f'<text x="{left + w + 4:.1f}" y="{y + 14}">{_num(value)}{escape(unit)}</text>'
        )
    if threshold is not None:
        x = left + threshold / top * width
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="4" y2="{height - 18}" class="gate"/>'
            f'<text x="{x:.1f}" y="{height - 4}" text-anchor="middle" class="gate-label">'
            f"gate {_num(threshold)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, title: str, bins: int = 24, log: bool = True) -> str:
    """A histogram of ``values`` (counts on a log scale by default: the tail is what matters)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return '<p class="missing">no scores</p>'
    counts, edges = np.histogram(arr, bins=bins)
    w, h, left, bottom = 520, 200, 40, 30

    def scale(c: int) -> float:
        return math.log10(1 + c) if log else float(c)

    top = max(scale(int(c)) for c in counts) or 1.0
    bw = w / bins
    parts = [
        f'<svg class="chart" role="img" width="{w + left + 10}" height="{h + bottom}" '
        f'viewBox="0 0 {w + left + 10} {h + bottom}"><title>{escape(title)}</title>'
    ]
    for i, c in enumerate(counts):
        bh = scale(int(c)) / top * (h - 10)
        parts.append(
            f'<rect x="{left + i * bw:.1f}" y="{h - bh:.1f}" width="{bw - 1:.1f}" '
            f'height="{bh:.1f}" fill="{PALETTE[0]}"><title>{_num(edges[i])}–{_num(edges[i + 1])}: '
            f"{int(c)}</title></rect>"
        )
    parts.append(
        f'<line x1="{left}" x2="{left + w}" y1="{h}" y2="{h}" class="axis"/>'
        f'<text x="{left}" y="{h + 16}">{_num(edges[0])}</text>'
        f'<text x="{left + w}" y="{h + 16}" text-anchor="end">{_num(edges[-1])}</text>'
        f'<text x="{left + w / 2}" y="{h + 28}" text-anchor="middle">score '
        f"(count, {'log' if log else 'linear'} scale)</text></svg>"
    )
    return "".join(parts)


def line_chart(
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    xlabels: Sequence[str],
    ymin: float | None = None,
    ymax: float | None = None,
) -> str:
    """One polyline per series over the shared ``xlabels`` (``None`` points are skipped)."""
    w, h, left, bottom = 480, 180, 44, 34
    values = [v for s in series.values() for v in s if v is not None and math.isfinite(v)]
    if not values:
        return f'<p class="missing">{escape(title)}: no values</p>'
    lo = min(values) if ymin is None else ymin
    hi = max(values) if ymax is None else ymax
    if hi <= lo:
        hi = lo + 1.0
    n = max(len(xlabels), 2)

    def px(i: int) -> float:
        return left + i * (w - 10) / (n - 1)

    def py(v: float) -> float:
        return 8 + (hi - v) / (hi - lo) * (h - 16)

    parts = [
        f'<svg class="chart" role="img" width="{w + left}" height="{h + bottom}" '
        f'viewBox="0 0 {w + left} {h + bottom}"><title>{escape(title)}</title>'
        f'<line x1="{left}" x2="{left}" y1="4" y2="{h}" class="axis"/>'
        f'<line x1="{left}" x2="{left + w}" y1="{h}" y2="{h}" class="axis"/>'
        f'<text x="{left - 4}" y="{py(hi) + 4:.1f}" text-anchor="end">{_num(hi)}</text>'
        f'<text x="{left - 4}" y="{py(lo) + 4:.1f}" text-anchor="end">{_num(lo)}</text>'
    ]
    for i, label in enumerate(xlabels):
        parts.append(
            f'<text x="{px(i):.1f}" y="{h + 14}" text-anchor="middle">{escape(label)}</text>'
        )
    for k, (name, points) in enumerate(series.items()):
        colour = PALETTE[k % len(PALETTE)]
        coords = [
            (px(i), py(v)) for i, v in enumerate(points) if v is not None and math.isfinite(v)
        ]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}"/>')
        for (x, y), v in zip(coords, [v for v in points if v is not None], strict=False):
            parts.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}">'
                f"<title>{escape(name)}: {_num(v)}</title></circle>"
            )
        parts.append(
            f'<text x="{left + 8 + 130 * k}" y="{h + 30}" fill="{colour}">■ {escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<figure><figcaption>{escape(title)}</figcaption>{''.join(parts)}</figure>"


# --- sample thumbnails ----------------------------------------------------------------------------


def png_gray(pixels: np.ndarray[Any, Any]) -> bytes:
    """Encode a 2-D array scaled to 0..1 as an 8-bit greyscale PNG (RFC 2083), no dependency."""
    img = np.clip(np.nan_to_num(pixels) * 255.0, 0, 255).astype(np.uint8)
    height, width = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _thumbnail(row: np.ndarray[Any, Any], title: str) -> str:
    flat = np.asarray(row, dtype=float).ravel()
    side = math.isqrt(flat.size)
    if side * side != flat.size:
        return ""
    lo, hi = float(np.nanmin(flat)), float(np.nanmax(flat))
    norm = (flat - lo) / (hi - lo) if hi > lo else np.zeros_like(flat)
    data = b64encode(png_gray(norm.reshape(side, side))).decode("ascii")
    return (
        f'<img class="sample" src="data:image/png;base64,{data}" alt="{escape(title)}" '
        f'title="{escape(title)}" width="48" height="48">'
    )


def sample_grid(inputs: ReportInputs, *, per_class: int = 10) -> str:
    """Flagged samples per class, highest score first, so a shared trigger can be seen."""
    if inputs.samples is None or inputs.scan is None:
        return '<p class="missing">scan input not available: no sample grid</p>'
    x, y = inputs.samples
    flagged = [int(i) for i in inputs.scan.get("flagged", []) if 0 <= int(i) < len(y)]
    scores = inputs.scan.get("scores", [])
    if not flagged:
        return "<p>no sample was flagged</p>"
    by_class: dict[int, list[int]] = {}
    for i in flagged:
        by_class.setdefault(int(y[i]), []).append(i)
    rows = []
    for c in sorted(by_class):
        idx = sorted(by_class[c], key=lambda i: -float(scores[i]) if i < len(scores) else 0.0)[
            :per_class
        ]
        thumbs = "".join(_thumbnail(x[i], f"sample {i} (label {c})") for i in idx)
        rows.append(
            f'<tr><th scope="row">class {c}<br><small>{len(by_class[c])} flagged</small></th>'
            f'<td class="grid">{thumbs}</td></tr>'
        )
    return f'<table class="samples">{"".join(rows)}</table>'


# --- sections -------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _missing(what: str) -> str:
    return f'<p class="missing">{escape(what)}</p>'


def _summary(inputs: ReportInputs) -> str:
    if not inputs.steps:
        return _missing("a federated run directory: no pipeline steps")
    rows = [
        (s.get("name", "?"), s.get("summary", ""), f"{s.get('details', {}).get('seconds', 0):.1f}")
        for s in inputs.steps
    ]
    return _table(("step", "result", "seconds"), rows)


def _ingestion(inputs: ReportInputs) -> str:
    s = inputs.ingest
    if not s:
        return _missing("no ingestion summary in this run")
    counts = [
        ("received", float(s.get("received", 0))),
        ("accepted", float(s.get("accepted", 0))),
        ("stored", float(s.get("stored", 0))),
        ("duplicates", float(s.get("duplicates", 0))),
        ("quarantined", float(s.get("quarantined", 0))),
    ]
    reasons = sorted(((str(k), float(v)) for k, v in s.get("reasons", {}).items()), key=str)
    out = [
        bar_chart(counts, title="record counts", highlight={"quarantined"}),
        "<h3>Quarantine reasons</h3>",
        bar_chart(reasons, title="quarantine reasons") if reasons else "<p>none</p>",
        f"<p>Counts conserved (received = accepted + quarantined): "
        f"<b>{'yes' if s.get('conserved') else 'NO'}</b>.</p>",
    ]
    return "".join(out)


def _producers(inputs: ReportInputs) -> str:
    producers = (inputs.ingest or {}).get("producers") or {}
    if not producers:
        return _missing("no producer health in this run")
    starts = sorted(
        {int(w.get("start_ms", 0)) for p in producers.values() for w in p.get("windows", [])}
    )
    labels = [f"w{i + 1}" for i in range(len(starts))] or ["all"]
    rejection: dict[str, list[float | None]] = {}
    drift: dict[str, list[float | None]] = {}
    for name, p in producers.items():
        by_start = {int(w.get("start_ms", 0)): w for w in p.get("windows", [])}
        rejection[name] = [
            100 * by_start[t]["rejection_rate"] if t in by_start else None for t in starts
        ]
        drift[name] = [
            (by_start[t].get("label_drift") or {}).get("tv") if t in by_start else None
            for t in starts
        ]
    rows = [
        (
            name,
            p.get("received", 0),
            p.get("accepted", 0),
            p.get("quarantined", 0),
            f"{100 * p.get('rejection_rate', 0):.1f}",
            f"{p.get('max_label_tv', 0):.3f}",
            "FLAGGED" if p.get("flagged") else "ok",
        )
        for name, p in producers.items()
    ]
    table = _table(
        ("producer", "received", "accepted", "quarantined", "reject %", "label TV", ""), rows
    )
    flagged = {name for name, p in producers.items() if p.get("flagged")}
    if len(starts) <= 1:  # one window: a line would be a single dot
        last = {name: (rejection[name] or [None])[-1] for name in producers}
        tv = {name: (drift[name] or [None])[-1] for name in producers}
        return "".join(
            [
                table,
                "<h3>Rejection rate (%), one window</h3>",
                bar_chart([(n, v or 0.0) for n, v in last.items()], title="rejection rate",
                          vmax=100, unit="%", highlight=flagged),
                "<h3>Label drift (total variation), one window</h3>",
                bar_chart([(n, v or 0.0) for n, v in tv.items()], title="label drift",
                          highlight=flagged),
            ]
        )  # fmt: skip
    return "".join(
        [
            table,
            "<h3>Rejection rate per window (%)</h3>",
            line_chart(rejection, title="rejection rate per window", xlabels=labels, ymin=0),
            "<h3>Label drift per window (total variation)</h3>",
            line_chart(drift, title="label drift per window", xlabels=labels, ymin=0),
        ]
    )


def _scan(inputs: ReportInputs) -> str:
    r = inputs.scan
    if not r:
        return _missing("no poisoning scan in this run")
    gate = (inputs.scan_step or {}).get("details", {}).get("gate")
    per_class = [(f"class {c}", float(v.get("risk_score", 0))) for c, v in r["per_class"].items()]
    suspects = {f"class {c}" for c, v in r["per_class"].items() if v.get("class_tests")}
    per_producer = [(str(p), float(v.get("risk_score", 0))) for p, v in r["per_producer"].items()]
    named = {str(p) for p, v in r["per_producer"].items() if v.get("named")}
    return "".join(
        [
            f'<p class="risk risk-{escape(str(r.get("band", "")))}">risk '
            f"<b>{float(r['risk_score']):.1f}</b>/100 ({escape(str(r.get('band', '')))}): "
            f"{len(r.get('flagged', []))} of {r.get('n_samples', '?')} samples flagged"
            + (f"; gate {escape(str(gate))}" if gate is not None else "")
            + "</p>",
            "<h3>Risk per class</h3>",
            bar_chart(per_class, title="risk per class", vmax=100, highlight=suspects,
                      threshold=float(gate) if gate is not None else None),
            "<h3>Risk per producer</h3>",
            bar_chart(per_producer, title="risk per producer", vmax=100, highlight=named,
                      threshold=float(gate) if gate is not None else None)
            if per_producer
            else "<p>no producer ids in the scanned data</p>",
            "<h3>Score histogram</h3>",
            histogram(r.get("scores", []), title="per-sample suspicion score"),
            "<h3>Flagged samples per class</h3>",
            sample_grid(inputs),
        ]
    )  # fmt: skip


def _mitigation(inputs: ReportInputs) -> str:
    details = (inputs.scan_step or {}).get("details", {})
    if not details and not inputs.scan:
        return _missing("no poisoning gate in this run")
    mitigations = details.get("mitigations") or (inputs.scan or {}).get("mitigations", [])
    rows = [(m.get("action", ""), m.get("reason", "")) for m in mitigations]
    parts = [_table(("recommended action", "why"), rows) if rows else "<p>none recommended</p>"]
    if "residual_risk" in details:
        before = float(details.get("risk_score", 0))
        after = float(details["residual_risk"])
        parts.append(
            bar_chart(
                [("risk before", before), ("risk after filtering", after)],
                title="risk before and after filtering",
                vmax=100,
                threshold=float(details["gate"]) if "gate" in details else None,
            )
        )
    asr = [
        (label, float(details[key]) * 100)
        for key, label in (("asr_before", "backdoor success before"), ("asr_after", "after"))
        if isinstance(details.get(key), int | float)
    ]
    verification = details.get("verification") or {}
    for c, v in (verification.get("asr_after") or {}).items():
        if isinstance(v, int | float):
            asr.append((f"after mitigation, class {c}", float(v) * 100))
    if verification.get("reason"):
        parts.append(f"<p>Verification: {escape(str(verification['reason']))}</p>")
    fl_asr = ((inputs.fl or {}).get("final") or {}).get("backdoor_asr")
    if isinstance(fl_asr, int | float):
        asr.append(("backdoor success, trained model", float(fl_asr) * 100))
    parts.append(
        bar_chart(asr, title="attack success rate", vmax=100, unit="%")
        if asr
        else "<p>Attack success rate: not measured in this run.</p>"
    )
    return "".join(parts)


def _federated(inputs: ReportInputs) -> str:
    m = inputs.fl
    if not m:
        return _missing("no federated run in this report")
    rounds = m.get("rounds", [])
    labels = [str(r.get("round", i + 1)) for i, r in enumerate(rounds)]
    acc = {"accuracy": [r.get("accuracy") for r in rounds]}
    loss = {"loss": [r.get("loss") for r in rounds]}
    eps = {"ε": [r.get("epsilon") for r in rounds]}
    groups = {
        "accepted": [float(r.get("accepted", 0)) for r in rounds],
        "rejected": [float(len(r.get("rejected", {}))) for r in rounds],
    }
    rows = [
        (
            r.get("round"),
            "-" if r.get("accuracy") is None else f"{r['accuracy']:.3f}",
            "-" if r.get("epsilon") is None else f"{r['epsilon']:.2f}",
            r.get("accepted", 0),
            "; ".join(f"{k}: {v}" for k, v in r.get("rejected", {}).items()) or "-",
            "yes" if r.get("rolled_back") else "",
        )
        for r in rounds
    ]
    final = m.get("final") or {}
    status = str(m.get("status", "?"))
    return "".join(
        [
            f"<p>status <b>{escape(status)}</b>; final accuracy "
            f"<b>{_fmt(final.get('accuracy'), '.3f')}</b>, ε = {_fmt(final.get('epsilon'), '.2f')}"
            f" at δ = {_fmt(final.get('delta'), 'g')}</p>",
            '<div class="row">',
            line_chart(acc, title="accuracy per round", xlabels=labels, ymin=0, ymax=1),
            line_chart(loss, title="loss per round", xlabels=labels),
            "</div><div class=\"row\">",
            line_chart(eps, title="privacy budget ε per round", xlabels=labels, ymin=0),
            line_chart(groups, title="groups accepted / rejected per round", xlabels=labels,
                       ymin=0),
            "</div>",
            _table(("round", "accuracy", "ε", "accepted", "rejected (reason)", "rolled back"),
                   rows),
        ]
    )  # fmt: skip


def _fmt(value: Any, spec: str) -> str:
    return "-" if not isinstance(value, int | float) else format(value, spec)


def _keys(inputs: ReportInputs) -> str:
    k = inputs.keys
    if k is None:
        return _missing("no key audit (the source is not a data directory)")
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for use in k.get("keys", []):
        by_key.setdefault((use["provider"], use["key"]), []).append(use)
    rows = []
    for (provider, key), uses in sorted(by_key.items()):
        versions = sorted(uses, key=lambda u: str(u["version"]))
        older = sum(u["artifacts"] for u in versions[:-1])
        ready = (
            "ready: every artifact is under one version"
            if len(versions) == 1
            else f"re-wrap {older} artifact(s) still under older versions before disabling them"
        )
        for u in versions:
            rows.append((provider, key, u["version"], u["artifacts"], ready))
    problems = [(path, why) for path, why in k.get("problems", {}).items()]
    parts = [
        f"<p>{k.get('envelopes', 0)} envelope(s) in {k.get('scanned_files', 0)} file(s); "
        "read from headers only (nothing decrypted).</p>",
        _table(("provider", "master key", "version", "artifacts", "rotation readiness"), rows)
        if rows
        else "<p>no envelope found</p>",
    ]
    if problems:
        parts.append("<h3>Broken envelopes</h3>" + _table(("file", "problem"), problems))
    return "".join(parts)


STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px;color:#222}
header{border-bottom:2px solid #1f77b4;margin-bottom:8px}
nav a{margin-right:12px}
section{border:1px solid #ddd;border-radius:6px;padding:8px 16px;margin:14px 0}
h2{margin:4px 0 8px}
table{border-collapse:collapse;margin:6px 0}
th,td{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}
svg.chart{font-size:11px;display:block;margin:4px 0}
svg .axis{stroke:#999}
svg .gate{stroke:#d62728;stroke-dasharray:4 3}
svg .gate-label{fill:#d62728}
.row{display:flex;flex-wrap:wrap;gap:12px}
.missing{color:#888;font-style:italic}
.risk{font-size:16px}
.risk-critical b,.risk-high b{color:#d62728}
img.sample{image-rendering:pixelated;border:1px solid #ccc;margin:1px}
td.grid{max-width:560px}
small{color:#666}
figure{margin:4px 0}
figcaption{font-weight:600;font-size:13px}
"""


def render_html(inputs: ReportInputs, *, include_samples: bool = True) -> str:
    """The whole report as one HTML document (no script, no network: see the module notes)."""
    if not include_samples:
        inputs = ReportInputs(**{**inputs.__dict__, "samples": None})
    builders = {
        "summary": _summary,
        "ingestion": _ingestion,
        "producers": _producers,
        "scan": _scan,
        "mitigation": _mitigation,
        "federated": _federated,
        "keys": _keys,
    }
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title in SECTIONS)
    sections = "".join(
        f'<section id="{sid}" data-section="{sid}"><h2>{escape(title)}</h2>'
        f"{builders[sid](inputs)}</section>"
        for sid, title in SECTIONS
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in inputs.notes)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>saip security report</title><style>{STYLE}</style></head><body>"
        f"<header><h1>saip security report</h1><p>source <code>{escape(str(inputs.source))}"
        f"</code> · saip {escape(__version__)}</p><nav>{nav}</nav></header>"
        f"{sections}"
        + (f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else "")
        + "</body></html>\n"
    )
