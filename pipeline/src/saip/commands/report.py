"""``saip report``: a self-contained HTML security report of a pipeline run.

``saip report [SOURCE] [--output REPORT.html] [--force] [--no-samples]``

SOURCE is ``report.json`` (written by ``saip demo``), the data directory holding it (default: the
``--data-dir``), or a ``saip fl run`` directory (``metrics.json``). The report is one HTML file with
every asset inline and no script (see :mod:`saip.report`), written ``0600`` next to the source
unless ``--output`` says otherwise; an existing file is replaced only with ``--force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from saip.context import get_state
from saip.outputs import require_output, write_text_output


def write_html_report(
    source: Path, output: Path | None = None, *, force: bool, include_samples: bool = True
) -> Path:
    """Build the report of ``source`` and write it to ``output`` (default: beside the source)."""
    from saip.report import collect, render_html

    if output is None:
        output = (source if source.is_dir() else source.parent) / "report.html"
    require_output(output, force=force)
    html = render_html(collect(source), include_samples=include_samples)
    write_text_output(output, html, force=force)
    return output


def report_cmd(
    source: Annotated[
        Path | None,
        typer.Argument(
            help="report.json, a data directory holding it, or an `fl run` directory "
            "(default: the data directory)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="HTML file to write (default: report.html beside SOURCE)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the output if it exists.")
    ] = False,
    samples: Annotated[
        bool,
        typer.Option(
            "--samples/--no-samples",
            help="Include thumbnails of flagged training samples (plaintext data).",
        ),
    ] = True,
) -> None:
    """Write a self-contained HTML security report (one file, no network, no script)."""
    state = get_state()
    path = write_html_report(source or state.data_dir, output, force=force, include_samples=samples)
    state.console.print(f"report written to {path}", highlight=False, markup=False)


def register(root: typer.Typer) -> None:
    """Attach ``report`` to the root app."""
    root.command("report")(report_cmd)
