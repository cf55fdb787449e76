"""``saip demo``: the whole pipeline on the embedded local default (no cloud, no service)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from saip import tracking
from saip.commands.report import write_html_report
from saip.context import get_state
from saip.pipeline import PipelineContext, Step, prepare_data_dir, run_steps, write_report


def _steps() -> list[tuple[str, Step]]:
    # Imported here, not at module level: each step pulls in its capability package (torch, Flower),
    # which would slow every other `saip` command's start-up.
    from saip.steps import fl, ingest, keys, scan

    return [
        ("prepare the data directory", prepare_data_dir),
        ("master key and envelope encryption", keys.run),
        ("signed producers → ingestion → encrypted landing + quarantine", ingest.run),
        ("poisoning gate before training", scan.run),
        ("federated training: grouped SecAgg+, DP-SGD, update validation", fl.run),
    ]


def demo(
    seed: Annotated[int, typer.Option(help="Seed for data generation and training.")] = 0,
) -> None:
    """Run every pipeline step on the local default and print what each one did."""
    state = get_state()
    ctx = PipelineContext(
        data_dir=state.data_dir, config=state.config, console=state.console, seed=seed
    )
    results = run_steps(ctx, _steps())
    report = write_report(ctx, results)
    # the demo owns its data directory: its report is regenerated on every run
    html = write_html_report(report, force=True)
    state.console.print(
        f"[bold green]demo finished[/]: {len(results)} steps; report at {report}", highlight=False
    )
    if tracking.available():
        run_id, uri = tracking.log_run(_pipeline_record(report), data_dir=state.data_dir)
        state.console.print(f"MLflow run {run_id} in {uri}", highlight=False, markup=False)
    state.console.print(f"HTML report: {html}", highlight=False, markup=False)


def _pipeline_record(report_json: Path) -> tracking.RunRecord:
    """The demo as one MLflow run: step summaries, scan risk, FL rounds, reports (no samples)."""
    from saip.report import collect, render_html

    inputs = collect(report_json)
    record = tracking.RunRecord(name="saip demo", kind="pipeline")
    for step in inputs.steps:
        record.params[f"step.{step.get('name', '?')}"] = step.get("summary", "")
    if inputs.scan is not None:
        scan = tracking.scan_record(inputs.scan, name="", params={}, artifacts=[])
        record.metrics.update({f"scan.{k}": v for k, v in scan.metrics.items()})
    if inputs.fl is not None:
        fl = tracking.fl_record(inputs.fl, name="", artifacts=[], model_path=None)
        record.steps.extend(fl.steps)
        record.metrics.update(fl.metrics)
        model = (inputs.fl.get("model") or {}).get("path")
        if model:
            record.texts["sealed_model_path.txt"] = f"{model}\n"
    for key in ("received", "accepted", "quarantined"):
        if inputs.ingest and isinstance(inputs.ingest.get(key), int):
            record.metrics[f"ingest.{key}"] = float(inputs.ingest[key])
    record.artifacts.append(report_json)
    record.texts["report.html"] = render_html(inputs, include_samples=False)
    # the full report (with the flagged-sample thumbnails, plaintext data) stays local
    return record


def register(root: typer.Typer) -> None:
    """Attach ``demo`` to the root app."""
    root.command("demo")(demo)
