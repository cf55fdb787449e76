"""``saip ingest``: see the ingest package README."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Secure ingestion: produce signed records, validate, sanitize, verify provenance, quarantine.")


def register(root: typer.Typer) -> None:
    """Attach this command group to the root app."""
    root.add_typer(app, name="ingest")
