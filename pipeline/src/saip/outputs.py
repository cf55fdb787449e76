"""One input/output policy for every ``saip`` command.

- Inputs are checked before any heavy import or long computation (:func:`require_input`).
- Outputs are checked for writability up front (:func:`require_output`); an existing output is
  never replaced without ``--force``; a directory where a file is expected gets its own message.
- Outputs are written to a private temporary directory next to the destination and renamed
  into place only when the whole output was produced (:func:`atomic_output`), so an error,
  Ctrl-C or SIGTERM leaves no partial file. Files are created ``0600`` (plaintext data, reports
  naming producers and keys): widen them yourself if you must share them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from saip.errors import InputError

STDIO = "-"
"""The path that means stdin (for inputs) or stdout (for outputs)."""

PRIVATE_MODE = 0o600


def require_input(path: str | Path, *, what: str = "input", allow_stdin: bool = False) -> None:
    """Raise :class:`InputError` unless ``path`` names a readable file (or a pipe).

    A directory gets its own message; ``-`` is accepted when ``allow_stdin``.
    """
    if allow_stdin and str(path) == STDIO:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory; expected a file")
    if not p.exists():
        raise InputError(f"{what} file not found: {p}")
    if not os.access(p, os.R_OK):
        raise InputError(f"{what} {p} is not readable")


def require_output(
    path: str | Path, *, force: bool, what: str = "output", allow_stdout: bool = False
) -> None:
    """Raise :class:`InputError` unless ``path`` can be written now.

    Refuses a directory, a device/FIFO/socket (renaming a file over ``/dev/null`` would replace
    the device), an existing file without ``force``, a missing or read-only parent directory.
    Call it before any long work so a typo fails in milliseconds, not after a scan.
    """
    if allow_stdout and str(path) == STDIO:
        return
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{what} {p} is a directory; give a file path")
    if p.exists() and not p.is_file():  # a device, FIFO or socket: never renamed over
        raise InputError(f"{what} {p} is not a regular file (use - for stdout)")
    if (p.exists() or p.is_symlink()) and not force:
        raise InputError(f"{what} {p} exists (use --force to replace it)")
    parent = p.parent
    if not parent.is_dir():
        raise InputError(f"{what} {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {p}: directory {parent} is not writable")


@contextmanager
def atomic_output(
    path: str | Path, *, force: bool, what: str = "output", mode: int = PRIVATE_MODE
) -> Iterator[Path]:
    """Yield a temporary path; on normal exit move it to ``path`` (``mode``), else remove it.

    The temporary file lives in a fresh ``0700`` directory beside ``path`` (same file system, so
    the final ``os.replace`` is atomic) and keeps ``path``'s name, so writers that look at the
    suffix behave the same. Any exception — including ``KeyboardInterrupt`` from Ctrl-C or
    SIGTERM — removes it: nothing partial is ever left at ``path``.
    """
    require_output(path, force=force, what=what)
    dest = Path(path)
    workdir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    tmp = workdir / dest.name
    try:
        yield tmp
        if not tmp.is_file():
            raise InputError(f"{what} {dest}: the writer produced no file")
        os.chmod(tmp, mode)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if not force and (dest.exists() or dest.is_symlink()):  # appeared while we worked
            raise InputError(f"{what} {dest} exists (use --force to replace it)")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_text_output(path: str | Path, text: str, *, force: bool, what: str = "output") -> None:
    """Write ``text`` to ``path`` through :func:`atomic_output` (``0600``)."""
    with atomic_output(path, force=force, what=what) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
