"""``saip scan``: poisoning detection over a dataset before training."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Attach ``scan`` to the root app."""
