"""The ``saip`` command line.

Subcommand groups mirror the folders: ``ingest`` (ingestion/), ``keys``/``encrypt``/``decrypt``/
``inspect`` (encryption/), ``fl`` (federated-learning/), ``scan`` (poisoning-detection/) and
``demo`` (the whole pipeline). Exit code 0 only on success; an error prints one line (``--debug``
shows the traceback).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import click
import typer

from saip import __version__
from saip.commands import crypto, demo, fl, ingest, report, scan, tfconfig
from saip.config import load_config
from saip.context import AppState
from saip.errors import GateError


def _keep_argument_help() -> None:
    """Show argument help again under the pinned Typer 0.20 / Click 8.5.

    ``TyperArgument.__init__`` stores ``help`` and then calls Click 8.5's ``Argument.__init__``,
    which resets it to ``None``: every argument's help text vanished from ``--help``. Re-apply it
    after the parent constructor (idempotent; a no-op once Typer fixes the order).
    """
    from typer.core import TyperArgument

    original = TyperArgument.__init__
    if getattr(original, "_saip_keeps_help", False):
        return

    def init(self: TyperArgument, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if kwargs.get("help") and not self.help:
            self.help = kwargs["help"]

    init._saip_keeps_help = True  # type: ignore[attr-defined]
    TyperArgument.__init__ = init  # type: ignore[method-assign]


_keep_argument_help()


def _help_is_literal_text() -> None:
    """Render every help text literally: Rich must not read ``[word]`` in a help string as markup.

    Typer's ``rich`` markup mode passes each command, option and argument help through
    ``Text.from_markup``, which silently drops anything that looks like a tag (``[encryption]``
    vanished from ``fl run --help``). ``rich_markup_mode=None`` is no way out under Typer 0.20 /
    Click 8.5 (it prints a literal ``\\[required]`` and lists every argument twice), and
    ``markdown`` would eat ``*`` and ``_``. So the one function through which Typer turns help
    text into Rich text escapes it first: every command at once, including ones added later.
    Our help strings carry no intended markup. Idempotent.
    """
    from rich.markup import escape
    from typer import rich_utils

    original = rich_utils._make_rich_text
    if getattr(original, "_saip_literal", False):
        return

    def make_rich_text(*, text: str, style: str = "", markup_mode: Any) -> Any:
        if markup_mode == rich_utils.MARKUP_MODE_RICH:
            text = escape(text)
        return original(text=text, style=style, markup_mode=markup_mode)

    make_rich_text._saip_literal = True  # type: ignore[attr-defined]
    rich_utils._make_rich_text = make_rich_text


_help_is_literal_text()

app = typer.Typer(
    name="saip",
    help="Secure AI pipelines: ingestion, envelope encryption, poisoning scan, federated training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"saip {__version__}")
        raise typer.Exit()


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
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
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
report.register(app)
tfconfig.register(app)


EXIT_GATE = 3
"""Exit code of a security gate that ran and refused (see :class:`saip.errors.GateError`)."""
EXIT_INTERRUPTED = 130
"""Exit code after Ctrl-C (SIGINT): 128 + 2, the shell convention. SIGTERM gives 143 (128 + 15)."""

_signals_received: list[int] = []


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    """Turn SIGINT/SIGTERM into ``KeyboardInterrupt`` so that every ``finally``/``except
    BaseException`` runs: temporary outputs are removed and nothing partial is sealed or renamed
    into place. (Python's default SIGTERM action kills the process without any clean-up.)"""
    _signals_received.append(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _install_signal_handlers() -> dict[int, Any]:
    """Install :func:`_on_signal`; return the previous handlers (restored when ``main`` ends)."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for sig in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(sig) is signal.SIG_IGN:  # e.g. started with nohup: keep ignoring
            continue
        previous[sig] = signal.signal(sig, _on_signal)
    return previous


def _interrupted() -> int:
    signum = _signals_received[0] if _signals_received else int(signal.SIGINT)
    name = signal.Signals(signum).name
    print(f"saip: interrupted ({name})", file=sys.stderr)
    return 128 + signum


THIRD_PARTY = r"(ray|opacus|flwr|torch|sklearn|art|google|azure|boto3|botocore|pydantic)(\.|$)"


def _quiet_third_party_warnings() -> bool:
    """Hide library warnings (Ray FutureWarning, Opacus RDP-order hints...) from normal output.

    ``--debug`` shows them. Our own code reports through one-line errors and the report, never
    through ``warnings``; Ray workers inherit the filter for future/deprecation warnings.
    Returns whether ``PYTHONWARNINGS`` was set here (``main`` removes it again).
    """
    warnings.filterwarnings("ignore", module=THIRD_PARTY)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "PYTHONWARNINGS" in os.environ:
        return False
    os.environ["PYTHONWARNINGS"] = "ignore::FutureWarning,ignore::DeprecationWarning"
    return True


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``saip`` script; returns the process exit code.

    Exit codes: 0 success, 1 error, 2 usage error, 3 a security gate refused, 130 interrupted
    (Ctrl-C), 143 terminated (SIGTERM). Every non-zero exit prints exactly one line on stderr.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _signals_received.clear()
    with warnings.catch_warnings():  # filters and handlers are restored for in-process callers
        set_env = False if _debug_requested(args) else _quiet_third_party_warnings()
        previous = _install_signal_handlers()
        try:
            return _run(args)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if set_env:
                os.environ.pop("PYTHONWARNINGS", None)


def _run(args: list[str]) -> int:
    try:
        rv = app(args=args, prog_name="saip", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:  # usage errors: bad option, missing argument
        if "Did you mean" in exc.message and getattr(exc, "possibilities", None):
            # Typer already put the typo hint in the message; Click 8.5 would append it again
            setattr(exc, "possibilities", None)  # noqa: B010 - typed Final in click's stubs
        exc.show()
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt):
        return _interrupted()
    except GateError as exc:
        print(f"saip: gate: {exc}", file=sys.stderr)
        return EXIT_GATE
    except Exception as exc:
        if _debug_requested(args):
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        notes = [str(n) for n in getattr(exc, "__notes__", ()) if str(n).startswith("while ")]
        if notes:  # e.g. which file of a multi-file command failed
            message += f" ({'; '.join(notes)})"
        print(f"saip: error: {message} [{type(exc).__name__}]", file=sys.stderr)
        return 1
    # Typer turns KeyboardInterrupt into Exit(130) and, outside standalone mode, *returns* the
    # code: a Ctrl-C must never become exit 0.
    if _signals_received or rv == EXIT_INTERRUPTED:
        return _interrupted()
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
