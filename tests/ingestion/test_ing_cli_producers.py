"""Issue 11 item 10: producers add/list/revoke, signing your own records, declared specs,
``--fail-on-quarantine-rate`` (exit 3), repeatable ``--source``, health that persists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from saip.cli import main
from saip_ingestion.provenance import generate_key, public_key_pem


def _run(capsys: Any, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _own_records(path: Path, n: int = 12) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        lines.append({"schema": {"name": "image-sample", "version": 1},
                      "payload": {"width": 28, "height": 28, "label": i % 10,
                                  "features": rng.integers(0, 256, 784).tolist()}})  # fmt: skip
    lines.append({"schema": {"name": "text-sample", "version": 1}, "record_id": "faq-1",
                  "payload": {"instruction": "What is <b>2+2</b>?", "response": "4"}})  # fmt: skip
    lines.append({"schema": {"name": "tabular-sample", "version": 1},
                  "payload": {"features": {"age": 41.0, "income": 52000}, "label": 1}})  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_sign_own_records_then_ingest_with_a_declared_image_spec(
    tmp_path: Path, capsys: Any
) -> None:
    producer_home, consumer = tmp_path / "producer", tmp_path / "consumer"
    src, signed = tmp_path / "mine.jsonl", tmp_path / "signed.jsonl"
    _own_records(src)
    code, out, err = _run(capsys, "--data-dir", str(producer_home), "ingest", "sign",
                          "--producer", "lab-a", str(src), str(signed), "--json")  # fmt: skip
    assert code == 0, err
    info = json.loads(out)
    assert info["records"] == 14
    # hand over the public key only; the consumer registers it
    code, _, err = _run(capsys, "--data-dir", str(consumer), "ingest", "producers", "add",
                        "lab-a", "--public-key", info["public_key"])  # fmt: skip
    assert code == 0, err
    code, out, err = _run(capsys, "--data-dir", str(consumer), "ingest", "run", "--source",
                          str(signed), "--image-shape", "28x28", "--value-range", "0,255",
                          "--json")  # fmt: skip
    assert code == 0, err
    s = json.loads(out)
    assert (s["received"], s["accepted"], s["quarantined"]) == (14, 14, 0)
    # the same records against digits' spec: images refused for their shape, never clamped
    code, out, _ = _run(capsys, "--data-dir", str(tmp_path / "other"), "ingest", "producers",
                        "add", "lab-a", "--public-key", info["public_key"])  # fmt: skip
    code, out, _ = _run(capsys, "--data-dir", str(tmp_path / "other"), "ingest", "run",
                        "--source", str(signed), "--dataset", "digits", "--json")  # fmt: skip
    assert json.loads(out)["reasons"] == {"shape_mismatch": 12}


def test_signed_batch_header_records_are_proven_later_by_cli(tmp_path: Path, capsys: Any) -> None:
    """``sign`` writes v2 records (index, no path) by default; the consumer stores their leaf
    lists; ``ingest verify`` proves one stored record (exit 0) and refuses (exit 3) a missing
    one or one whose key was revoked since."""
    producer_home, consumer = tmp_path / "producer", tmp_path / "consumer"
    src, signed, v1 = tmp_path / "mine.jsonl", tmp_path / "signed.jsonl", tmp_path / "v1.jsonl"
    _own_records(src)
    code, out, err = _run(capsys, "--data-dir", str(producer_home), "ingest", "sign",
                          "--producer", "lab-a", "--tree-size", "5", str(src), str(signed),
                          "--json")  # fmt: skip
    assert code == 0, err
    info = json.loads(out)
    recs = [json.loads(x) for x in signed.read_text().splitlines()]
    assert {len(r["sig"]["path"]) for r in recs} == {0}
    code, _, err = _run(capsys, "--data-dir", str(producer_home), "ingest", "sign",
                        "--producer", "lab-a", "--batch-format", "v1", str(src),
                        str(v1))  # fmt: skip
    assert code == 0, err
    assert all(json.loads(x)["sig"]["path"] for x in v1.read_text().splitlines()[:5])
    code, _, err = _run(capsys, "--data-dir", str(consumer), "ingest", "producers", "add",
                        "lab-a", "--public-key", info["public_key"])  # fmt: skip
    assert code == 0, err
    for source in (signed, v1):
        code, out, err = _run(capsys, "--data-dir", str(consumer), "ingest", "run", "--source",
                              str(source), "--image-shape", "28x28", "--value-range", "0,255",
                              "--json")  # fmt: skip
        assert code == 0, err
        # the v1 copy re-uses the caller's explicit record ids under new seqs: conflict
        assert set(json.loads(out)["reasons"]) <= ({"conflict"} if source == v1 else set())
    seq = recs[3]["seq"]
    v1_seq = next(
        r["seq"] for r in map(json.loads, v1.read_text().splitlines())
        if r["record_id"].startswith("lab-a-")
    )  # fmt: skip
    for s, fmt in ((seq, "v2-batch-header"), (v1_seq, "v1-inclusion-proof")):
        code, out, err = _run(capsys, "--data-dir", str(consumer), "ingest", "verify",
                              "--producer", "lab-a", "--seq", str(s), "--json")  # fmt: skip
        assert code == 0, err
        assert json.loads(out)["format"] == fmt
    code, _, err = _run(capsys, "--data-dir", str(consumer), "ingest", "verify",
                        "--producer", "lab-a", "--seq", "999999")  # fmt: skip
    assert code == 3
    assert "not_found" in err
    _run(capsys, "--data-dir", str(consumer), "ingest", "producers", "revoke", "lab-a")
    code, _, err = _run(capsys, "--data-dir", str(consumer), "ingest", "verify",
                        "--producer", "lab-a", "--seq", str(seq))  # fmt: skip
    assert code == 3
    assert "revoked_key" in err


def test_sign_refuses_invalid_input_with_its_line_and_writes_nothing(
    tmp_path: Path, capsys: Any
) -> None:
    src, out_path = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = {"schema": {"name": "text-sample", "version": 1},
            "payload": {"instruction": "a", "response": "b"}}  # fmt: skip
    bad = dict(good, seq=5)
    src.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    code, _, err = _run(capsys, "--data-dir", str(tmp_path / "d"), "ingest", "sign",
                        "--producer", "lab-a", str(src), str(out_path))  # fmt: skip
    assert code == 1
    assert ":2: cannot sign" in err
    assert not out_path.exists()
    src.write_text('{"schema":{"name":"text-sample","version":1},"schema":{}}\n')
    code, _, err = _run(capsys, "--data-dir", str(tmp_path / "d"), "ingest", "sign",
                        "--producer", "lab-a", str(src), str(out_path))  # fmt: skip
    assert code == 1
    assert "duplicate key" in err


def test_producers_list_and_revoke(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "consumer"
    key = generate_key()
    pem = tmp_path / "k.pem"
    pem.write_bytes(public_key_pem(key.public_key()))
    assert main(["--data-dir", str(data), "ingest", "producers", "add", "lab-b",
                 "--public-key", str(pem)]) == 0  # fmt: skip
    capsys.readouterr()
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "producers", "list", "--json")
    [row] = json.loads(out)
    assert row["producer_id"] == "lab-b"
    assert row["revoked"] is False
    code, _, _ = _run(capsys, "--data-dir", str(data), "ingest", "producers", "revoke", "lab-b")
    assert code == 0
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "producers", "list", "--json")
    assert json.loads(out)[0]["revoked"] is True
    code, _, err = _run(capsys, "--data-dir", str(data), "ingest", "producers", "revoke", "nobody")
    assert code == 1
    assert "unknown producer" in err
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    code, _, err = _run(capsys, "--data-dir", str(data), "ingest", "producers", "add", "lab-c",
                        "--public-key", str(bad))  # fmt: skip
    assert code == 1
    assert "Ed25519" in err


def test_revoked_producer_records_are_quarantined(tmp_path: Path, capsys: Any) -> None:
    data, src, signed = tmp_path / "d", tmp_path / "in.jsonl", tmp_path / "s.jsonl"
    _own_records(src, 3)
    assert main(["--data-dir", str(data), "ingest", "sign", "--producer", "lab-a", str(src),
                 str(signed)]) == 0  # fmt: skip
    assert main(["--data-dir", str(data), "ingest", "producers", "revoke", "lab-a"]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", str(signed),
                        "--image-shape", "28x28", "--value-range", "0,255", "--json")  # fmt: skip
    assert code == 0
    assert json.loads(out)["reasons"] == {"revoked_key": 5}


def test_quarantine_rate_gate_exits_3_and_sources_repeat(tmp_path: Path, capsys: Any) -> None:
    data = tmp_path / "d"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["--data-dir", str(data), "ingest", "produce", "--producer", "alpha",
                 "--limit", "20", str(a)]) == 0  # fmt: skip
    b.write_text("{}\n[]\nnot json\n")
    capsys.readouterr()
    code, out, err = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", str(a),
                          "--source", str(b), "--fail-on-quarantine-rate", "0.1",
                          "--json")  # fmt: skip
    s = json.loads(out)
    assert (s["received"], s["accepted"], s["quarantined"]) == (23, 20, 3)
    assert code == 3
    assert "quarantine rate" in err
    # under the limit: exit 0
    c = tmp_path / "c.jsonl"
    assert main(["--data-dir", str(data), "ingest", "produce", "--producer", "alpha",
                 "--limit", "20", str(c)]) == 0  # fmt: skip
    capsys.readouterr()
    code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", str(c),
                        "--fail-on-quarantine-rate", "0.1", "--json")  # fmt: skip
    assert code == 0


def test_health_persists_so_separate_runs_still_flag_the_drifting_producer(
    tmp_path: Path, capsys: Any
) -> None:
    data = tmp_path / "d"
    files = []
    for i, (name, extra) in enumerate(
        [("alpha", ["--poison", "patch:rate=0.2,target=0"]), ("beta", []), ("gamma", [])], start=1
    ):
        out = tmp_path / f"{name}.jsonl"
        assert main(["--data-dir", str(data), "ingest", "produce", "--producer", name,
                     "--shard", f"{i}/3", *extra, str(out)]) == 0  # fmt: skip
        files.append(out)
    capsys.readouterr()
    summaries = []
    for f in files:  # the case-study recipe by hand: one run per producer
        code, out, _ = _run(capsys, "--data-dir", str(data), "ingest", "run", "--source", str(f),
                            "--json")  # fmt: skip
        assert code == 0
        summaries.append(json.loads(out))
    last = summaries[-1]["producers"]
    assert set(last) >= {"alpha", "beta", "gamma"}
    assert last["alpha"]["flagged"] is True
    assert last["beta"]["flagged"] is False
    assert last["gamma"]["flagged"] is False
