"""The ingestion benchmarks' ``main`` pins the process to one core only while measuring (the
shared ``one_core`` of ``benchmarks/ingestion.py``): a caller in the same process — the test
suite — gets its CPU set back. Nothing here is timed; ``tests/conftest.py::_cpu_set_unchanged``
also fails a test that leaves the set changed."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a CPU set of two or more cores to see a pin",
)


_SCRIPTS = ("ingestion", "ingestion_junk", "ingestion_provenance")


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``benchmarks/`` importable for the test (the scripts import their sibling
    ``ingestion.py`` the same way); their modules are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    yield
    for name in _SCRIPTS:
        sys.modules.pop(name, None)


@pytest.mark.parametrize(
    ("stem", "argv"),
    [
        ("ingestion_junk", ["--quick"]),
        ("ingestion_provenance", ["--quick", "--records", "512", "--repeats", "1"]),
    ],
)
def test_bench_main_gives_the_cpu_set_back(
    stem: str, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripts: None
) -> None:
    # was: both pinned the process to one core with sched_setaffinity and never restored it,
    # so every later test in the session (and its subprocesses) ran on one core
    bench = importlib.import_module(stem)
    seen: list[set[int]] = []
    real = bench.one_core

    @contextlib.contextmanager
    def spy() -> Iterator[None]:
        with real():
            seen.append(os.sched_getaffinity(0))
            yield

    monkeypatch.setattr(bench, "one_core", spy)
    before = os.sched_getaffinity(0)
    out = tmp_path / f"{stem}.json"
    assert bench.main([*argv, "--out", str(out)]) == 0
    assert os.sched_getaffinity(0) == before
    assert [len(s) for s in seen] == [1]  # measured on one core, once
    assert json.loads(out.read_text())
