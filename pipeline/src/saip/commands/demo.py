"""``saip demo``: the whole pipeline on the embedded local default (no cloud, no service)."""

from __future__ import annotations

from typing import Annotated

import typer

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
    state.console.print(f"HTML report: {html}", highlight=False, markup=False)


def register(root: typer.Typer) -> None:
    """Attach ``demo`` to the root app."""
    root.command("demo")(demo)
