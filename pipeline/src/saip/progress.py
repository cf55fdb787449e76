"""Progress of long ``saip`` commands, on stderr (stdout stays machine-readable).

On a terminal: a spinner naming the running stage, and a byte bar for streams. Elsewhere (CI logs,
pipes, files): plain, unwrapped lines — one per stage, and one per quarter of a known-size stream —
with no control characters, so logs stay greppable.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.status import Status


class _LiveDisplay:
    """Owns at most one Rich live display (a spinner or a bar), closed with the context."""

    _live: Status | Progress | None = None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)


class Stages(_LiveDisplay):
    """Announce the named stages of a long command (``with Stages(console, "scan") as s: ...``).

    Every stage is printed as one line ``PREFIX: TEXT`` (escaped: texts may carry names from
    untrusted input); on a terminal a spinner also shows the running stage and its elapsed time.
    """

    def __init__(self, console: Console, prefix: str) -> None:
        self._console = console
        self._prefix = prefix
        self._status: Status | None = None
        self._started = time.monotonic()

    def __enter__(self) -> Stages:
        if self._console.is_terminal:
            self._status = self._console.status(escape(self._prefix))
            self._status.__enter__()
            self._live = self._status
        return self

    def stage(self, text: str) -> None:
        """Start the stage ``text`` (the previous one is over)."""
        line = f"{self._prefix}: {text}"
        elapsed = time.monotonic() - self._started
        self._console.print(
            f"{escape(line)} [dim]({elapsed:.1f}s)[/]" if self._status else escape(line),
            highlight=False,
            soft_wrap=True,
        )
        if self._status is not None:
            self._status.update(escape(line))


class ByteProgress(_LiveDisplay):
    """Byte progress of a stream of ``total`` bytes (``None``: unknown, e.g. a pipe).

    A bar on a terminal; otherwise a plain line at each quarter of a known total (nothing for an
    unknown total). Use :meth:`advance` from the reading loop.
    """

    #: streams smaller than this finish too fast for progress to help
    MIN_BYTES = 32 << 20

    def __init__(self, console: Console, label: str, total: int | None) -> None:
        self._console = console
        self._label = label
        self._total = total
        self._done = 0
        self._next_quarter = 1
        self._bar: Progress | None = None
        self._task: Any = None
        self._quiet = total is not None and total < self.MIN_BYTES

    def __enter__(self) -> ByteProgress:
        if self._console.is_terminal and not self._quiet:
            self._bar = Progress(
                TextColumn(escape(self._label)),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self._label, total=self._total)
            self._live = self._bar
        return self

    def advance(self, n: int) -> None:
        """Record ``n`` more bytes processed."""
        self._done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self._done)
            return
        if self._quiet or not self._total:
            return
        while self._next_quarter <= 4 and self._done * 4 >= self._total * self._next_quarter:
            self._console.print(
                escape(f"{self._label}: {25 * self._next_quarter}% ({self._done:,} bytes)"),
                highlight=False,
                soft_wrap=True,
            )
            self._next_quarter += 1
