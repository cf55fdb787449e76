"""Fixtures of the pipeline tests: one ``saip demo`` run shared by the tests that read its output,
and a real headless Chromium (``headless.py``) for the HTML report."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def demo_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``saip demo`` once per session: its data directory and the finished process."""
    data = tmp_path_factory.mktemp("demo") / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "saip", "--data-dir", str(data), "demo"],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
            "PYTHONWARNINGS": "ignore",
        },
        timeout=600,
    )
    return data, proc


@pytest.fixture
def browser() -> Iterator[Any]:
    with _load("headless").Browser() as b:
        yield b
