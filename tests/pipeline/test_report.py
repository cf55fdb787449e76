"""``saip report``: inputs, escaping of untrusted strings, the overwrite policy, inline assets.

The browser half (each section drawn, no console error) is ``test_report_browser.py``.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from saip.cli import main
from saip.errors import InputError
from saip.report import SECTIONS, bar_chart, collect, line_chart, png_gray, render_html

FL_METRICS = {
    "status": "ok",
    "rounds": [
        {"round": 1, "accuracy": 0.3, "loss": 2.1, "epsilon": 5.0, "accepted": 1,
         "rejected": {"group 1": "norm 8.4 > bound 3"}},
        {"round": 2, "accuracy": 0.5, "loss": 1.9, "epsilon": 7.9, "accepted": 2, "rejected": {}},
    ],
    "final": {"accuracy": 0.5, "epsilon": 7.9, "delta": 1e-5, "backdoor_asr": 0.02},
}  # fmt: skip


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="report source not found"):
        collect(tmp_path / "nope.json")
    with pytest.raises(InputError, match=r"neither report\.json"):
        collect(tmp_path)
    (tmp_path / "report.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not readable JSON"):
        collect(tmp_path)
    (tmp_path / "report.json").write_text('{"something": 1}')
    with pytest.raises(InputError, match=r"neither a pipeline report\.json nor a metrics\.json"):
        collect(tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_untrusted_labels_never_become_markup(label: str) -> None:
    """Producer ids and reasons reach the page only as escaped text (property)."""
    for svg in (
        bar_chart([(label, 1.0)], title=label),
        line_chart({label: [1.0, 2.0]}, title=label, xlabels=[label, "2"]),
    ):
        # every "<" in the output opens one of our own elements
        tags = {t.split(" ", 1)[0].split(">", 1)[0] for t in svg.split("<")[1:]}
        assert tags <= {"svg", "/svg", "title", "/title", "text", "/text", "rect", "/rect",
                        "line", "polyline", "circle", "/circle", "figure", "/figure",
                        "figcaption", "/figcaption"}, tags  # fmt: skip


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_png_encoder_round_trips(h: int, w: int, seed: int) -> None:
    pixels = np.random.default_rng(seed).random((h, w))
    png = png_gray(pixels)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (w, h)
    idat_len = int.from_bytes(png[33:37], "big")
    raw = zlib.decompress(png[41 : 41 + idat_len])
    rows = [raw[r * (w + 1) : (r + 1) * (w + 1)] for r in range(h)]
    assert all(row[0] == 0 for row in rows)  # filter type 0
    got = np.array([list(row[1:]) for row in rows], dtype=np.uint8)
    assert np.array_equal(got, (pixels * 255).astype(np.uint8))


def test_fl_run_directory_report(tmp_path: Path) -> None:
    (tmp_path / "metrics.json").write_text(json.dumps(FL_METRICS))
    html = render_html(collect(tmp_path))
    for sid, _title in SECTIONS:
        assert f'id="{sid}"' in html
    fl = html.split('id="federated"')[1].split("</section>")[0]
    assert fl.count("<svg") == 4
    assert "norm 8.4 &gt; bound 3" in fl
    mitigation = html.split('id="mitigation"')[1].split("</section>")[0]
    assert "no poisoning gate" in mitigation
    assert "<script" not in html
    assert "default-src &#x27;none&#x27;" in html or "default-src 'none'" in html


def test_report_command_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(FL_METRICS))
    out = tmp_path / "r.html"
    assert main(["report", str(run), "--output", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    assert main(["report", str(run), "--output", str(out)]) == 1
    assert "exists (use --force" in capsys.readouterr().err
    assert main(["report", str(run), "--output", str(out), "--force"]) == 0
    assert main(["report", str(run), "--output", str(tmp_path)]) == 1
    assert "is a directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "report source not found" in capsys.readouterr().err


def test_no_samples_leaves_out_training_data(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 64))
    y = np.arange(40) % 4
    np.savez(tmp_path / "in.npz", x=x, y=y)
    scan = {"risk_score": 50.0, "band": "high", "n_samples": 40, "flagged": [1, 2, 5],
            "scores": [0.1] * 40, "per_class": {"0": {"risk_score": 50, "class_tests": []}},
            "per_producer": {}, "mitigations": []}  # fmt: skip
    (tmp_path / "scan.json").write_text(json.dumps(scan))
    (tmp_path / "report.json").write_text(
        json.dumps(
            {
                "steps": [{"name": "poisoning scan", "summary": "s",
                           "details": {"input": str(tmp_path / "in.npz"), "gate": 40}}],
                "artifacts": {"scan_report": str(tmp_path / "scan.json")},
            }
        )
    )  # fmt: skip
    inputs = collect(tmp_path, audit_keys=False)
    assert render_html(inputs).count("data:image/png") == 3
    assert "data:image/png" not in render_html(inputs, include_samples=False)
