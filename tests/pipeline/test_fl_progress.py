"""``saip fl run`` prints a line per round as it finishes (read from the run's metrics.json)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from saip.commands.fl import RoundLines


def _write(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)  # as the runner does


def _wait_for(buf: io.StringIO, text: str) -> None:
    deadline = time.monotonic() + 10
    while text not in buf.getvalue():
        assert time.monotonic() < deadline, buf.getvalue()
        time.sleep(0.05)


def test_one_line_per_finished_round(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"
    buf = io.StringIO()
    r1 = {"round": 1, "accuracy": None, "epsilon": None, "accepted": 0, "rejected": {}}
    with RoundLines(metrics, Console(file=buf, width=80), total=2, interval=0.05):
        time.sleep(0.2)  # no file yet: nothing, no error
        _write(metrics, {"status": "running", "rounds": [r1]})
        time.sleep(0.3)
        assert buf.getvalue() == ""  # round 1 is still being evaluated
        r1 = {**r1, "accuracy": 0.31, "epsilon": 5.07, "accepted": 1,
              "rejected": {"group 1": "norm 8.36 > bound 3 [x]"}}  # fmt: skip
        _write(metrics, {"status": "running", "rounds": [r1]})
        _wait_for(buf, "round 1/2")
        r2 = {"round": 2, "accuracy": 0.52, "epsilon": 8.0, "accepted": 2, "rejected": {}}
        _write(metrics, {"status": "ok", "rounds": [r1, r2]})
    lines = buf.getvalue().splitlines()
    assert lines == [
        "fl: round 1/2: accuracy 0.310, ε=5.07, 1 accepted, 1 rejected "
        "(group 1: norm 8.36 > bound 3 [x])",
        "fl: round 2/2: accuracy 0.520, ε=8.00, 2 accepted, 0 rejected",
    ]
