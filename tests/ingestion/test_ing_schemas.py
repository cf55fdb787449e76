"""One schema source: the committed JSON Schema / Avro files are current and agree with the code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastavro
import pytest
from saip_ingestion.schemas import (
    RECORD_ADAPTER,
    avro_decode,
    avro_encode,
    avro_schema,
    default_schema_dir,
    export_schemas,
    json_schemas,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "ingestion" / "schemas"

SIG = {
    "alg": "ed25519-merkle-sha256",
    "key_id": "0123456789abcdef",
    "tree_size": 2,
    "index": 1,
    "path": ["A" * 43 + "="],
    "root_sig": "A" * 86 + "==",
}


def _rec(schema: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "record_id": "r-1",
        "producer_id": "alpha",
        "seq": 1,
        "ts": 5,
        "schema": {"name": schema, "version": 1},
        "sig": SIG,
        "payload": payload,
    }


RECORDS = [
    _rec("image-sample", {"width": 2, "height": 1, "features": [0.0, 1.5], "label": 3}),
    _rec("tabular-sample", {"features": {"age": 41.0, "income": 1.5e4}, "label": 1}),
    _rec("tabular-sample", {"features": {"age": 41.0}, "label": None}),
    _rec("text-sample", {"instruction": "Summarise.", "response": "Short."}),
]


def test_committed_schema_files_are_current() -> None:
    assert default_schema_dir() == SCHEMA_DIR
    stale = export_schemas(SCHEMA_DIR, check=True)
    assert stale == [], f"regenerate with: python -m saip_ingestion.schemas export ({stale})"


def test_generator_cli_check_and_export(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "saip_ingestion.schemas"]
    assert subprocess.run([*cmd, "check", str(tmp_path)], capture_output=True).returncode == 1
    assert subprocess.run([*cmd, "export", str(tmp_path)], capture_output=True).returncode == 0
    assert subprocess.run([*cmd, "check", str(tmp_path)], capture_output=True).returncode == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "image-sample.v1.schema.json",
        "record.v1.avsc",
        "record.v1.schema.json",
        "tabular-sample.v1.schema.json",
        "text-sample.v1.schema.json",
    ]


def test_avsc_is_a_valid_avro_schema_and_matches_the_code() -> None:
    committed = json.loads((SCHEMA_DIR / "record.v1.avsc").read_text())
    assert committed == avro_schema()
    fastavro.parse_schema(committed)
    fields = [f["name"] for f in committed["fields"]]
    assert fields == ["record_id", "producer_id", "seq", "ts", "schema", "sig", "payload"]


@pytest.mark.parametrize("rec", RECORDS, ids=lambda r: r["schema"]["name"])
def test_avro_round_trip_keeps_the_record(rec: dict[str, Any]) -> None:
    back = avro_decode(avro_encode(rec))
    assert RECORD_ADAPTER.validate_python(back) == RECORD_ADAPTER.validate_python(rec)


def test_avro_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="Avro"):
        avro_decode(b"\xff\x00garbage")


def test_json_schemas_forbid_unknown_fields_and_pin_identifiers() -> None:
    schemas = json_schemas()
    for name in ("image-sample.v1.schema.json", "text-sample.v1.schema.json"):
        assert schemas[name]["additionalProperties"] is False
    defs = schemas["record.v1.schema.json"]["$defs"]
    image = defs["ImageRecordV1"]
    assert image["additionalProperties"] is False
    assert image["properties"]["producer_id"]["pattern"] == "^[a-z][a-z0-9-]{1,62}$"
    assert image["properties"]["record_id"]["pattern"].startswith("^[A-Za-z0-9]")
    text = schemas["text-sample.v1.schema.json"]["properties"]
    assert text["instruction"]["maxLength"] == 8192


def test_code_and_json_schema_agree_on_examples() -> None:
    import jsonschema  # installed with the project (ray depends on it)

    schema = json_schemas()["record.v1.schema.json"]
    for rec in RECORDS:
        jsonschema.validate(rec, schema)
        RECORD_ADAPTER.validate_python(rec)
    bad = dict(RECORDS[0], extra=1)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
