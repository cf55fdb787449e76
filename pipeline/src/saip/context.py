"""State shared by every ``saip`` subcommand (data directory, settings, consoles)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import click
from rich.console import Console

from saip.config import SaipConfig


@dataclass(frozen=True)
class AppState:
    """What the root callback resolved: use :func:`get_state` to reach it from a command."""

    data_dir: Path
    config: SaipConfig
    debug: bool = False
    #: progress, tables and messages go to stderr so that stdout stays machine-readable
    console: Console = field(default_factory=lambda: make_console(stderr=True))
    out: Console = field(default_factory=lambda: make_console(stderr=False))


NON_TTY_WIDTH = 240
"""Table width when the stream is not a terminal (logs, pipes): wide enough that paths, key URIs
and 32-hex quarantine ids are never broken; ``COLUMNS`` overrides it."""


def make_console(*, stderr: bool) -> Console:
    """A console for stdout or stderr: on a terminal, Rich's defaults; elsewhere soft-wrapped
    (lines are never hard-wrapped) at ``COLUMNS`` or :data:`NON_TTY_WIDTH` columns, no colour."""
    stream: TextIO = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr, soft_wrap=not stderr, highlight=stderr)
    width = int(os.environ["COLUMNS"]) if os.environ.get("COLUMNS", "").isdigit() else 0
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=width or NON_TTY_WIDTH)


def get_state(ctx: click.Context | None = None) -> AppState:
    """Return the :class:`AppState` of the running command."""
    ctx = ctx or click.get_current_context()
    state = ctx.find_object(AppState)
    if state is None:  # a command invoked outside the root app (tests calling it directly)
        state = AppState(data_dir=Path(".saip"), config=SaipConfig())
    return state
