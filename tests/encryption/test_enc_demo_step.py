"""The demo's "keys" step: key created 0600 (then reused), round trip, tamper rejected."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from saip.compose import default_key_path
from saip.config import SaipConfig
from saip.pipeline import PipelineContext
from saip.steps import keys


def test_keys_step_creates_then_reuses_the_key(tmp_path: Path) -> None:
    ctx = PipelineContext(data_dir=tmp_path / "d", config=SaipConfig(), console=Console(quiet=True))
    first = keys.run(ctx)
    key = default_key_path(tmp_path / "d")
    assert ctx.artifacts["key_uri"] == f"local:{key}"
    assert not key.is_relative_to(tmp_path / "d")  # kept outside the data directory
    assert key.stat().st_mode & 0o777 == 0o600
    assert first.details["created"] is True
    assert first.details["tamper_rejected"] is True
    assert first.details["wrong_context_rejected"] is True
    assert "rejected" in first.summary
    assert "MiB/s" in first.summary
    before = key.read_bytes()
    second = keys.run(ctx)
    assert second.details["created"] is False
    assert key.read_bytes() == before
