"""``saip keys``, ``saip encrypt``, ``saip decrypt``, ``saip inspect``: envelope encryption."""

from __future__ import annotations

import typer

keys_app = typer.Typer(no_args_is_help=True, help="Master keys: create a local key, re-wrap, audit.")


def register(root: typer.Typer) -> None:
    """Attach the key group and the encrypt/decrypt/inspect commands to the root app."""
    root.add_typer(keys_app, name="keys")
