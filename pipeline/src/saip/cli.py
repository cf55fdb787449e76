"""The ``saip`` command line.

Subcommand groups mirror the folders: ``ingest`` (ingestion/), ``keys``/``encrypt``/``decrypt``/
``inspect`` (encryption/), ``fl`` (federated-learning/), ``scan`` (poisoning-detection/) and
``demo`` (the whole pipeline). Exit code 0 only on success; an error prints one line (``--debug``
shows the traceback).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import click
import typer

from saip.commands import crypto, demo, fl, ingest, scan, tfconfig
from saip.config import load_config
from saip.context import AppState
from saip.errors import GateError

app = typer.Typer(
    name="saip",
    help="Secure AI pipelines: ingestion, envelope encryption, poisoning scan, federated training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="SAIP_DATA_DIR", help="Data directory (default ./.saip)."
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="TOML settings file (unknown keys are rejected)."),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    cfg = load_config(config)
    resolved = data_dir or cfg.data_dir or Path(".saip")
    ctx.obj = AppState(data_dir=resolved, config=cfg, debug=debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


crypto.register(app)
ingest.register(app)
scan.register(app)
fl.register(app)
demo.register(app)
tfconfig.register(app)


EXIT_GATE = 3
"""Exit code of a security gate that ran and refused (see :class:`saip.errors.GateError`)."""


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saip`` script; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        # with standalone_mode=False click *returns* the code of typer.Exit / Ctrl-C (130)
        rc = app(args=args, prog_name="saip", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        exc.show()
        return 2
    except click.exceptions.Abort:
        print("saip: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("saip: interrupted", file=sys.stderr)
        return 130
    except GateError as exc:
        print(f"saip: gate: {exc}", file=sys.stderr)
        return EXIT_GATE
    except Exception as exc:
        if _debug_requested(args):
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        print(f"saip: error: {message} [{type(exc).__name__}]", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
