"""The end-to-end pipeline: an ordered list of steps sharing one :class:`PipelineContext`.

Data flows one way: producer → ingestion → encryption at rest → poisoning gate → federated
training → encrypted model artifact → report. Each capability contributes one step module under
``saip.steps``; a step reads what earlier steps recorded in ``ctx.artifacts`` and returns a
:class:`StepResult` that the demo prints and the report keeps.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from saip.config import SaipConfig
from saip.errors import PipelineError


@dataclass(frozen=True)
class StepResult:
    """What a step did, in one line for people and a JSON-able dict for the report."""

    name: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineContext:
    """State handed from step to step."""

    data_dir: Path
    config: SaipConfig
    console: Console
    seed: int = 0
    #: named outputs of earlier steps (paths, key URIs, ...), e.g. ``"key_uri"``, ``"dataset_npz"``
    artifacts: dict[str, Any] = field(default_factory=dict)


Step = Callable[[PipelineContext], StepResult]


def prepare_data_dir(ctx: PipelineContext) -> StepResult:
    """Create the data directory owner-only (0700) and record where the run's outputs go."""
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    ctx.data_dir.chmod(0o700)
    mode = ctx.data_dir.stat().st_mode & 0o777
    if mode & 0o077:
        raise PipelineError(
            f"data directory {ctx.data_dir} is accessible to others (mode {mode:o})"
        )
    return StepResult(
        name="data directory",
        summary=f"{ctx.data_dir} (mode {mode:o}, owner-only)",
        details={
            "path": str(ctx.data_dir),
            "mode": f"{mode:o}",
            "python": platform.python_version(),
        },
    )


def run_steps(ctx: PipelineContext, steps: list[tuple[str, Step]]) -> list[StepResult]:
    """Run ``steps`` in order, printing each result; stop at the first failure (re-raised)."""
    results: list[StepResult] = []
    total = len(steps)
    for i, (title, step) in enumerate(steps, start=1):
        ctx.console.rule(f"[bold]step {i}/{total}: {title}")
        started = time.perf_counter()
        try:
            result = step(ctx)
        except Exception:
            ctx.console.print(f"[red]✗ step {i}/{total} ({title}) failed")
            raise
        seconds = time.perf_counter() - started
        ctx.console.print(f"[green]✓[/] {result.name}: {result.summary} [dim]({seconds:.1f}s)")
        results.append(
            StepResult(result.name, result.summary, {**result.details, "seconds": seconds})
        )
    return results


def write_report(ctx: PipelineContext, results: list[StepResult]) -> Path:
    """Write ``report.json`` in the data directory: every step's summary and details."""
    path = ctx.data_dir / "report.json"
    report = {
        "steps": [{"name": r.name, "summary": r.summary, "details": r.details} for r in results],
        "artifacts": dict(ctx.artifacts),
    }
    # paths, arrays and other objects are written as their string form
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    path.write_text(text + "\n", encoding="utf-8")
    return path
