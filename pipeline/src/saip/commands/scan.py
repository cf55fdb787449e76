"""``saip scan``: poisoning detection over a dataset before training (the training gate).

``saip scan INPUT.npz [--model auto|PATH] [--json OUT] [--max-risk N]``

The npz holds ``x`` (N×D or N×H×W floats), ``y`` (N ints) and optionally ``producer`` (N strings)
and ``record_id``. The scan fuses the detectors of :mod:`saip_poisoning`, prints a summary table
and, with ``--json``, writes the report (``risk_score``, ``flagged``, ``scores``, ``per_class``,
``per_producer``, ``mitigations``) to OUT (``-`` for stdout). The command exits non-zero when the
risk exceeds ``--max-risk`` (default: the ``[scan] max_risk`` setting).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.table import Table

from saip.context import get_state
from saip.errors import PipelineError

if TYPE_CHECKING:  # saip_poisoning imports torch: loaded only when a scan runs
    from saip_poisoning import ScanReport


def load_npz(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Read the scan input; raise :class:`PoisoningInputError` naming what is wrong."""
    from saip_poisoning import PoisoningInputError

    if not path.is_file():
        raise PoisoningInputError(f"input file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PoisoningInputError(f"{path} is not a readable .npz file: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise PoisoningInputError(
                f"{path} has no '{key}' array (found: {sorted(arrays)}); expected x, y[, producer]"
            )
    return arrays


def _model_arg(value: str) -> None:
    from saip_poisoning import PoisoningInputError

    if value == "auto":
        return
    # A caller-supplied network needs its body/head split (see saip_poisoning.model); the CLI
    # accepts only the built-in probe so that no pickled code is ever loaded from disk.
    raise PoisoningInputError(
        f"--model {value!r}: only 'auto' (train the probe network on the data) is supported by "
        "the CLI; pass a ProbeView to saip_poisoning.scan() from Python to use your own model"
    )


def _summary(report: ScanReport, *, n: int) -> Table:
    table = Table(title=f"poisoning scan: risk {report.risk_score:.0f}/100 ({report.band})")
    table.add_column("class", justify="right")
    table.add_column("n", justify="right")
    table.add_column("flagged", justify="right")
    table.add_column("risk", justify="right")
    table.add_column("class tests fired")
    for c, v in report.per_class.items():
        table.add_row(
            str(c),
            str(v["n"]),
            str(v["flagged"]),
            f"{v['risk_score']:.0f}",
            ", ".join(v["class_tests"]),
        )
    table.caption = f"{len(report.flagged)} of {n} samples flagged"
    return table


def scan_command(
    input_npz: Annotated[Path, typer.Argument(help="npz with x, y[, producer, record_id].")],
    model: Annotated[
        str, typer.Option("--model", help="'auto' trains the probe network.")
    ] = "auto",
    json_out: Annotated[
        str | None, typer.Option("--json", help="Write the JSON report here ('-' = stdout).")
    ] = None,
    max_risk: Annotated[
        float | None,
        typer.Option("--max-risk", min=0, max=100, help="Fail above this risk (default: config)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the probe network.")] = 0,
) -> None:
    """Scan a dataset for poisoning; exit non-zero if its risk exceeds the gate."""
    from saip_poisoning import scan

    state = get_state()
    _model_arg(model)
    arrays = load_npz(input_npz)
    limit = state.config.scan.max_risk if max_risk is None else max_risk
    with state.console.status("scanning for poisoning"):
        report = scan(arrays["x"], arrays["y"], producer=arrays.get("producer"), seed=seed)
    payload = report.to_json()
    if json_out == "-":
        state.out.print(payload, markup=False)
    elif json_out:
        Path(json_out).write_text(payload + "\n", encoding="utf-8")
    state.console.print(_summary(report, n=len(report.flags)))
    for p in report.poisoned_producers:
        state.console.print(f"[red]poisoned producer:[/] {p}")
    for m in report.mitigations:
        state.console.print(f"[bold]{m.action}[/]: {m.reason}")
    if report.risk_score > limit:
        raise PipelineError(
            f"poisoning risk {report.risk_score:.1f} exceeds --max-risk {limit:g} "
            f"({len(report.flagged)} samples flagged)"
        )


def register(root: typer.Typer) -> None:
    """Attach ``scan`` to the root app."""
    root.command("scan")(scan_command)
