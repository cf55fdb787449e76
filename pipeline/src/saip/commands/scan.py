"""``saip scan``: poisoning detection over a dataset before training (the training gate).

``saip scan INPUT [--labels Y.npy | --label-column COL] [--json] [--output OUT] [--max-risk N]``

INPUT is an npz with ``x`` (N×D, N×H×W or N×H×W×C), ``y`` (N integer or string labels) and
optionally ``producer`` and ``record_id`` (what ``saip ingest export`` writes); an ``.npy`` of
features with ``--labels``; a CSV or parquet file with ``--label-column`` (and optional
``--producer-column``, ``--id-column``); or a folder with one sub-folder of images per class. The
scan (:mod:`saip_poisoning`) shows a summary and, with ``--json``, writes the report
(``risk_score``, ``calibrated``, ``flagged``, ``flagged_record_ids``, ``reasons``, ``triggers``,
``per_class``, ``per_producer``, ``mitigations``) on stdout with ``--json`` and/or to ``--output
OUT`` (0600, never partial; ``--sarif``/``--junit`` for CI). Inputs and outputs are checked before
torch is imported. Exit 3 (gate refused) when the risk exceeds ``--max-risk`` (default: ``[scan]
max_risk``) or the scan is not calibrated (unless ``--allow-uncalibrated``).
"""

from __future__ import annotations

import json
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


def load_input(
    path: Path,
    *,
    labels: Path | None = None,
    label_column: str | None = None,
    producer_column: str | None = None,
    id_column: str | None = None,
) -> dict[str, np.ndarray[Any, Any]]:
    """Read the scan input (npz, npy + labels, CSV, image folder); raise
    :class:`PoisoningInputError` naming what is wrong."""
    from saip_poisoning.loaders import load_dataset

    ds = load_dataset(
        path,
        labels=labels,
        label_column=label_column,
        producer_column=producer_column,
        id_column=id_column,
    )
    out = {"x": ds.x, "y": ds.y}
    if ds.producer is not None:
        out["producer"] = ds.producer
    if ds.record_id is not None:
        out["record_id"] = ds.record_id
    return out


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
    for v in report.per_class.values():
        table.add_row(
            escape(str(v["name"])),
            str(v["n"]),
            str(v["flagged"]),
            f"{v['risk_score']:.0f}",
            ", ".join(v["class_tests"]),
        )
    aside = 0 if report.set_aside is None else int(report.set_aside.sum())
    table.caption = (
        f"{len(report.flagged)} of {n} samples flagged"
        + (
            f"; {aside} label-noise flags set aside ("
            + (
                "clean-data level next to a flagged pattern"
                if report.carrier.any()
                else "the label-noise rules abstained: natural class overlap"
            )
            + ": not counted as poison, relabelled or dropped by mitigation)"
            if aside
            else ""
        )
    ) + (
        ""
        if report.calibrated
        else " — NOT CALIBRATED: " + escape(str(report.calibration["reason"]))
    )
    return table


def scan_command(
    input_npz: Annotated[
        Path,
        typer.Argument(
            help="npz (x, y[, producer, record_id]), .npy, .csv, .parquet or image folder."
        ),
    ],
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
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Labels .npy for an .npy features input.")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Label column of a CSV or parquet input.")
    ] = None,
    producer_column: Annotated[
        str | None,
        typer.Option("--producer-column", help="Producer column of a CSV or parquet input."),
    ] = None,
    id_column: Annotated[
        str | None, typer.Option("--id-column", help="Record-ID column of a CSV or parquet input.")
    ] = None,
    allow_uncalibrated: Annotated[
        bool,
        typer.Option(
            "--allow-uncalibrated",
            help="Pass the gate even when the probe was too weak to judge labels.",
        ),
    ] = False,
    sarif: SarifOpt = None,
    junit: JunitOpt = None,
    mlflow: tracking.MlflowOpt = None,
) -> None:
    """Scan a dataset for poisoning; exit 3 if its risk exceeds the gate."""
    state = get_state()
    track = tracking.wanted(mlflow)
    # Everything that can be checked without the detectors is checked first: a typo costs
    # milliseconds, not a torch import and a long scan.
    _model_arg(model)
    if not input_npz.is_dir():  # a folder is an image-folder input
        require_input(input_npz)
    if labels is not None:
        require_input(labels, what="labels")
    for path in (output, sarif, junit):
        if path is not None:
            require_output(path, force=force)
    limit = state.config.scan.max_risk if max_risk is None else max_risk

    with Stages(state.console, "scan") as stages:
        stages.stage("loading the detectors (torch)")
        from saip_poisoning import scan

        arrays = load_input(
            input_npz,
            labels=labels,
            label_column=label_column,
            producer_column=producer_column,
            id_column=id_column,
        )
        stages.stage(f"{len(arrays['y'])} samples: training the probe, running the detectors")
        report = scan(
            arrays["x"],
            arrays["y"],
            producer=arrays.get("producer"),
            record_id=arrays.get("record_id"),
            seed=seed,
        )
        stages.stage(f"risk {report.risk_score:.1f}/100, {len(report.flagged)} samples flagged")
    payload = report.to_json()
    if output is not None:
        write_text_output(output, payload + "\n", force=force)
    if as_json:
        state.out.print(payload, markup=False)
    write_gate_files(
        scan_findings(json.loads(payload), max_risk=limit),
        tool="saip-scan",
        artifact=str(input_npz),
        sarif=sarif,
        junit=junit,
        force=force,
    )
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
        state.console.print(f"[red]poisoned producer:[/] {escape(p)}")
    for m in report.mitigations:
        state.console.print(f"[bold]{m.action}[/]: {escape(m.reason)}")
    if report.risk_score > limit:
        raise GateError(
            f"poisoning risk {report.risk_score:.1f} exceeds --max-risk {limit:g} "
            f"({len(report.flagged)} samples flagged)"
        )
    if not report.calibrated and not allow_uncalibrated:
        raise GateError(
            "poisoning scan not calibrated, so the data cannot be vouched for: "
            f"{report.calibration.get('reason', 'unknown')} (--allow-uncalibrated to pass anyway)"
        )


def register(root: typer.Typer) -> None:
    """Attach ``scan`` to the root app."""
    root.command("scan")(scan_command)
