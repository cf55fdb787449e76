"""``saip scan``: JSON report, the --max-risk gate, and clear errors for malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from saip.cli import main
from saip_poisoning.attacks import add_patch


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


@pytest.fixture
def poisoned_npz(tmp_path: Path, digits: tuple[np.ndarray, np.ndarray]) -> Path:
    x, y = digits
    x, y = x.copy(), y.copy()
    rng = np.random.default_rng(5)
    producer = np.array([f"p{i}" for i in rng.integers(0, 3, len(y))])
    pick = rng.choice(np.flatnonzero((producer == "p1") & (y != 0)), 120, replace=False)
    x[pick] = add_patch(x[pick])
    y[pick] = 0
    return _write(tmp_path / "in.npz", x=x, y=y, producer=producer)


def test_poi_cli_json_report_and_gate(
    poisoned_npz: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    rc = main(
        [
            "--data-dir",
            str(tmp_path / "d"),
            "scan",
            str(poisoned_npz),
            "--output",
            str(out),
            "--max-risk",
            "40",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 3  # the gate ran and refused
    assert "exceeds --max-risk 40" in err
    assert "poisoned producer" in err
    assert "p1" in err
    doc = json.loads(out.read_text())
    assert doc["risk_score"] > 40
    assert doc["per_producer"]["p1"]["named"] is True
    assert all(isinstance(i, int) for i in doc["flagged"])
    rc = main(["scan", str(poisoned_npz), "--json", "--max-risk", "100"])
    captured = capsys.readouterr()
    assert rc == 0
    assert json.loads(captured.out)["risk_score"] == doc["risk_score"]


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"x": np.zeros((30, 4)), "z": np.zeros(30)}, "no 'y' array"),
        ({"x": np.full((30, 4), np.nan), "y": np.arange(30) % 2}, "NaN"),
        ({"x": np.zeros((30, 4)), "y": np.arange(29) % 2}, "30 samples but y has 29"),
        ({"x": np.zeros((30,)), "y": np.arange(30) % 2}, "N×D, N×H×W or N×H×W×C"),
        (
            {"x": np.zeros((30, 4)), "y": np.r_[np.zeros(27), np.ones(3)].astype(int)},
            "too few samples per class",
        ),
    ],
)
def test_poi_cli_malformed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arrays: dict[str, np.ndarray], match: str
) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    assert main(["scan", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert err.startswith("saip: error:")
    assert match in err
    assert "PoisoningInputError" in err
    assert "Traceback" not in err


def test_poi_cli_missing_and_corrupt_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(tmp_path / "nope.npz")]) == 1
    assert "input file not found" in capsys.readouterr().err
    bad = tmp_path / "corrupt.npz"
    bad.write_bytes(b"not a zip")
    assert main(["scan", str(bad)]) == 1
    assert "not a readable .npz" in capsys.readouterr().err


def test_poi_cli_model_path_rejected(
    poisoned_npz: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(poisoned_npz), "--model", "weights.pt"]) == 1
    assert "only 'auto'" in capsys.readouterr().err


def test_poi_cli_uncalibrated_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # nothing learnable: the scan cannot vouch for the data, the gate refuses (exit 3) and says
    # why; with --allow-uncalibrated it passes (no false "critical")
    rng = np.random.default_rng(0)
    path = _write(tmp_path / "noise.npz", x=rng.random((400, 12)), y=rng.integers(0, 3, 400))
    out = tmp_path / "r.json"
    assert main(["scan", str(path), "--output", str(out)]) == 3
    err = capsys.readouterr().err
    assert "not calibrated" in err
    doc = json.loads(out.read_text())
    assert doc["calibrated"] is False
    assert doc["risk_score"] < 20
    assert main(["scan", str(path), "--allow-uncalibrated"]) == 0
