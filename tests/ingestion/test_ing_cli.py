"""``saip ingest``: produce → run → quarantine list/show/release → export, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from saip.cli import main


def _run(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def produced(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three producers (one poisoned + invalid lines) written once for this module."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    files = []
    for i, (name, extra) in enumerate(
        [
            ("alpha", ["--poison", "patch:rate=0.2,target=0", "--poison", "malformed:n=6",
                       "--poison", "replay:n=2"]),
            ("beta", []),
            ("gamma", []),
        ],
        start=1,
    ):  # fmt: skip
        out = root / f"{name}.jsonl"
        assert main(["--data-dir", str(data), "ingest", "produce", "--producer", name,
                     "--shard", f"{i}/3", *extra, str(out)]) == 0  # fmt: skip
        files.append(out)
    combined = root / "all.jsonl"
    combined.write_bytes(b"".join(f.read_bytes() for f in files))
    return {"root": root, "data": data, "source": combined}


def test_produce_registers_key_and_run_accepts(produced: dict[str, Any], capsys: Any) -> None:
    data, source = produced["data"], produced["source"]
    assert (data / "ingest" / "producers" / "alpha.json").is_file()
    pem = data / "producers" / "alpha" / "ed25519.pem"
    assert pem.stat().st_mode & 0o777 == 0o600
    truth = json.loads((produced["root"] / "alpha.jsonl.truth.json").read_text())
    assert len(truth["poisoned_record_ids"]) == 120
    code, out, _err = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source",
                           str(source), "--json")  # fmt: skip
    assert code == 0
    s = json.loads(out)
    n_lines = sum(1 for _ in source.open())
    assert s["received"] == n_lines == s["accepted"] + s["quarantined"]
    assert s["duplicates"] == 2
    assert s["reasons"] == {
        "bad_signature": 1, "malformed_json": 1, "missing_signature": 1, "non_finite": 1,
        "out_of_range": 1, "replay": 2, "schema_invalid": 1, "ts_out_of_window": 2,
    }  # fmt: skip
    producers = s["producers"]
    assert producers["alpha"]["flagged"]  # the poisoned producer's labels drift
    assert producers["alpha"]["max_label_tv"] > 0.1
    assert not producers["beta"]["flagged"]
    assert not producers["gamma"]["flagged"]
    # a second run over the same file resumes from the checkpoint: nothing new
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source",
                        str(source), "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["received"] == 0
    # export for the poisoning scan
    npz_path = produced["root"] / "ds.npz"
    code, out, _ = _run(
        capsys, "--data-dir", str(data), "ingest", "export", str(npz_path), "--json"
    )
    assert code == 0
    npz = np.load(npz_path)
    assert npz["x"].shape == (s["accepted"] - s["duplicates"], 64)
    assert set(npz["producer"]) == {"alpha", "beta", "gamma"}
    assert len(set(npz["record_id"])) == len(npz["record_id"])
    assert (npz["x"] >= 0).all()
    assert (npz["x"] <= 16).all()


def test_quarantine_list_show_release(
    produced: dict[str, Any], capsys: Any, tmp_path: Path
) -> None:
    data = produced["data"]
    # an unknown producer's records are quarantined; after registering its key they are released
    stranger_dir = tmp_path / "stranger-home"
    src = tmp_path / "delta.jsonl"
    assert main(["--data-dir", str(stranger_dir), "ingest", "produce", "--producer", "delta",
                 "--limit", "3", str(src)]) == 0  # fmt: skip
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", str(src),
                        "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["reasons"] == {"unknown_producer": 3}
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "list",
                        "--reason", "unknown_producer", "--json")  # fmt: skip
    entries = json.loads(out)
    assert code == 0
    assert len(entries) == 3
    qid = entries[0]["qid"]
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "show", qid)
    shown = json.loads(out)
    assert shown["reason"] == "unknown_producer"
    assert json.loads(shown["raw"])["producer_id"] == "delta"
    # release refuses while the producer is still unknown
    code, _, err = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "release", qid)
    assert code == 1
    assert "unknown_producer" in err
    assert err.startswith("saip: error:")
    # register delta's public key (hand-over of the public key only), then release
    reg = json.loads((stranger_dir / "ingest" / "producers" / "delta.json").read_text())
    (data / "ingest" / "producers" / "delta.json").write_text(json.dumps(reg))
    code, _, err = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "release", qid)
    assert code == 0, err
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "list", "--json")
    released = [e for e in json.loads(out) if e["qid"] == qid]
    assert released[0]["released"] is True
    code, _, err = _run(capsys, "--data-dir", str(data), "ingest", "quarantine", "release", qid)
    assert code == 1
    assert "already released" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "run", "--source", "/nonexistent.jsonl"], "source file not found"),
        (["ingest", "run", "--source", "stream", "--backend", "nope"], "unknown ingestion backend"),
        (["ingest", "run", "--source", "stream", "--bucket", "b"], "local backend does not take"),
        (["ingest", "produce", "--producer", "Bad Name", "x.jsonl"], "must match"),
        (
            ["ingest", "produce", "--producer", "ok", "--poison", "zap", "x.jsonl"],
            "invalid --poison",
        ),
        (["ingest", "quarantine", "show", "zz"], "invalid quarantine id"),
        (["ingest", "export", "out.npz"], "no accepted image records"),
    ],
)
def test_errors_are_one_line_and_non_zero(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    code, _out, err = _run(capsys, "--data-dir", str(tmp_path / "d"), *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1].startswith("saip: error:")
    assert message in lines[-1]
    assert "Traceback" not in err


def test_publish_then_consume_the_local_stream(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "d"
    src = tmp_path / "p.jsonl"
    assert main(["--data-dir", str(data), "ingest", "produce", "--producer", "pub",
                 "--limit", "40", "--poison", "replay:n=1", str(src)]) == 0  # fmt: skip
    assert main(["--data-dir", str(data), "ingest", "publish", str(src), "--batch-size", "7"]) == 0
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", "stream",
                        "--json")  # fmt: skip
    assert code == 0
    s = json.loads(out)
    assert (s["received"], s["stored"], s["duplicates"]) == (43, 40, 1)
    assert s["reasons"] == {"replay": 1, "ts_out_of_window": 1}
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", "stream",
                        "--json")  # fmt: skip
    assert json.loads(out)["received"] == 0  # checkpointed
