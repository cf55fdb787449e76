"""The HTML report in a real headless Chromium: no console error, every section drawn, screenshot.

Run by ``make test-browser`` (which installs Debian's ``chromium`` with ``make browser``); the
``browser`` marker keeps these tests out of ``make test``. Screenshots land in ``.run/report/``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from saip.commands.report import write_html_report
from saip.report import SECTIONS

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / ".run" / "report"

SECTION_STATE = """
JSON.stringify(Array.from(document.querySelectorAll('section[data-section]')).map(s => ({
  id: s.id,
  height: s.getBoundingClientRect().height,
  svgs: Array.from(s.querySelectorAll('svg')).filter(g => g.getBoundingClientRect().width > 0
        && g.querySelectorAll('rect,polyline,circle').length > 0).length,
  images: Array.from(s.querySelectorAll('img')).filter(i => i.complete && i.naturalWidth > 0)
        .length,
  broken: Array.from(s.querySelectorAll('img')).filter(i => !i.complete || i.naturalWidth === 0)
        .length,
  missing: Array.from(s.querySelectorAll('.missing')).map(m => m.textContent),
})))
"""


def _sections(page: Any) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in json.loads(page.evaluate(SECTION_STATE))}


def test_hostile_run_data_is_shown_as_text(tmp_path: Path, browser: Any) -> None:
    """Producer ids and reasons come from untrusted input: markup in them must stay text."""
    evil = "<img src=x onerror=console.error('xss')><script>console.error('xss')</script>"
    summary = {
        "received": 3,
        "accepted": 1,
        "stored": 1,
        "duplicates": 0,
        "quarantined": 2,
        "conserved": True,
        "reasons": {evil: 2},
        "producers": {
            evil: {
                "received": 3,
                "accepted": 1,
                "quarantined": 2,
                "rejection_rate": 0.67,
                "max_label_tv": 0.0,
                "flagged": True,
                "windows": [{"start_ms": 0, "rejection_rate": 0.67, "label_drift": {"tv": None}}],
            }
        },
    }
    (tmp_path / "report.json").write_text(
        json.dumps(
            {
                "steps": [{"name": evil, "summary": evil, "details": {"seconds": 1.0}}],
                "artifacts": {"ingest_summary": summary, "scan_report": "/nonexistent/x.json"},
            }
        )
    )
    html = write_html_report(tmp_path, force=False)
    page = browser.open(html.as_uri())
    assert browser.errors() == []
    assert browser.console_messages() == []
    assert page.evaluate("document.querySelectorAll('script,[onerror]').length") == 0
    assert evil in page.evaluate("document.querySelector('#summary').textContent")
    sections = _sections(page)
    assert list(sections) == [sid for sid, _ in SECTIONS]
    assert sections["scan"]["missing"]  # said plainly, not a blank box
    page.screenshot(SHOTS / "hostile.png")


@pytest.mark.slow
def test_demo_report_renders_every_section(
    demo_run: tuple[Path, subprocess.CompletedProcess[str]], browser: Any
) -> None:
    data, proc = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = data / "report.html"
    text = html.read_text(encoding="utf-8")
    assert "http://" not in text
    assert "https://" not in text  # nothing to fetch: one self-contained file
    page = browser.open(html.as_uri())
    assert browser.errors() == []
    sections = _sections(page)
    assert list(sections) == [sid for sid, _ in SECTIONS]
    for sid, s in sections.items():
        assert s["height"] > 40, sid
        assert s["missing"] == [], (sid, s["missing"])
        assert s["broken"] == 0, sid
    assert sections["ingestion"]["svgs"] >= 2
    assert sections["producers"]["svgs"] >= 2
    assert sections["scan"]["svgs"] >= 3  # per class, per producer, histogram
    assert sections["scan"]["images"] >= 10  # the flagged-sample grid
    assert sections["mitigation"]["svgs"] >= 1
    assert sections["federated"]["svgs"] == 4  # accuracy, loss, ε, groups
    scan_text = page.evaluate("document.querySelector('#scan').textContent")
    assert "alpha" in scan_text  # the poisoned producer is named
    keys_text = page.evaluate("document.querySelector('#keys').textContent")
    assert "local" in keys_text
    shot = page.screenshot(SHOTS / "demo.png")
    assert shot.stat().st_size > 20_000
