"""State shared by every ``saip`` subcommand (data directory, settings, consoles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    console: Console = field(default_factory=lambda: Console(stderr=True))
    out: Console = field(default_factory=lambda: Console(soft_wrap=True, highlight=False))


def get_state(ctx: click.Context | None = None) -> AppState:
    """Return the :class:`AppState` of the running command."""
    ctx = ctx or click.get_current_context()
    state = ctx.find_object(AppState)
    if state is None:  # a command invoked outside the root app (tests calling it directly)
        state = AppState(data_dir=Path(".saip"), config=SaipConfig())
    return state
