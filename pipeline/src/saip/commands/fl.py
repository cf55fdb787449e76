"""``saip fl``: see the fl package README."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Federated learning with Flower: SecAgg+, differential privacy, update validation.")


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="fl")
