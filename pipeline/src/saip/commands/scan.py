"""``saip scan``: poisoning detection over a dataset before training (the training gate).

``saip scan INPUT.npz [--model auto] [--json] [--output REPORT.json] [--force] [--max-risk N]``

The npz holds ``x`` (N×D or N×H×W floats), ``y`` (N ints) and optionally ``producer`` (N strings)
and ``record_id``. The scan fuses the detectors of :mod:`saip_poisoning`, prints a summary table
and writes the report (``risk_score``, ``flagged``, ``scores``, ``per_class``, ``per_producer``,
``mitigations``) as JSON on stdout with ``--json`` and/or to ``--output PATH`` (0600, never a
partial file). Inputs and outputs are checked before the detectors (and torch) are even imported.
The command exits 3 (a gate refused) when the risk exceeds ``--max-risk`` (default: the
``[scan] max_risk`` setting), 1 on an error.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from saip import tracking
from saip.context import get_state
from saip.errors import GateError, InputError
from saip.gate_formats import JunitOpt, SarifOpt, scan_findings, write_gate_files
from saip.outputs import require_input, require_output, write_text_output
from saip.progress import Stages

if TYPE_CHECKING:  # saip_poisoning imports torch: loaded only when a scan runs
    from saip_poisoning import ScanReport


def load_npz(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Read the scan input; raise :class:`PoisoningInputError` naming what is wrong."""
    from saip_poisoning import PoisoningInputError

    require_input(path)
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
    if value == "auto":
        return
    # A caller-supplied network needs its body/head split (see saip_poisoning.model); the CLI
    # accepts only the built-in probe so that no pickled code is ever loaded from disk.
    raise InputError(
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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON report on stdout.")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the JSON report to this file (0600).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing output files.")] = False,
    max_risk: Annotated[
        float | None,
        typer.Option("--max-risk", min=0, max=100, help="Fail above this risk (default: config)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the probe network.")] = 0,
    sarif: SarifOpt = None,
    junit: JunitOpt = None,
    mlflow: tracking.MlflowOpt = None,
) -> None:
    """Scan a dataset for poisoning; exit 3 if its risk exceeds the gate."""
    state = get_state()
    track = tracking.wanted(mlflow)
    # Everything that can be checked without the detectors is checked first: a typo costs
    # milliseconds, not a torch import and a 40-second scan.
    _model_arg(model)
    require_input(input_npz)
    for path in (output, sarif, junit):
        if path is not None:
            require_output(path, force=force)
    limit = state.config.scan.max_risk if max_risk is None else max_risk

    with Stages(state.console, "scan") as stages:
        stages.stage("loading the detectors (torch)")
        from saip_poisoning import scan

        arrays = load_npz(input_npz)
        n, classes = len(arrays["y"]), len(np.unique(arrays["y"]))
        stages.stage(f"{n} samples, {classes} classes")
        report = scan(
            arrays["x"], arrays["y"], producer=arrays.get("producer"), seed=seed,
            progress=stages.stage,
        )  # fmt: skip
        stages.stage(f"risk {report.risk_score:.1f}/100, {len(report.flagged)} samples flagged")
    payload = report.to_json()
    if output is not None:
        write_text_output(output, payload + "\n", force=force)
    write_gate_files(
        scan_findings(json.loads(payload), max_risk=limit),
        tool="saip-scan",
        artifact=str(input_npz),
        sarif=sarif,
        junit=junit,
        force=force,
    )
    if as_json:
        state.out.print(payload, markup=False)
    if track:
        record = tracking.scan_record(
            json.loads(payload),
            name=f"scan {input_npz.name}",
            params={"input": str(input_npz), "seed": seed, "max_risk": limit, "model": model},
            artifacts=[],
        )
        record.texts["scan_report.json"] = payload + "\n"
        run_id, uri = tracking.log_run(record, data_dir=state.data_dir)
        state.console.print(f"MLflow run {run_id} in {uri}", highlight=False, markup=False)
    state.console.print(_summary(report, n=len(report.flags)))
    for p in report.poisoned_producers:
        state.console.print(f"[red]poisoned producer:[/] {escape(p)}", highlight=False)
    for m in report.mitigations:
        state.console.print(f"[bold]{escape(m.action)}[/]: {escape(m.reason)}", highlight=False)
    if report.risk_score > limit:
        raise GateError(
            f"poisoning risk {report.risk_score:.1f} exceeds --max-risk {limit:g} "
            f"({len(report.flagged)} samples flagged)"
        )


def register(root: typer.Typer) -> None:
    """Attach ``scan`` to the root app."""
    root.command("scan")(scan_command)
