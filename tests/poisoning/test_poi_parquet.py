"""Parquet scan input (``--label-column``): hostile schemas first, then the happy path.

The files are real parquet files written with pyarrow; nothing is faked.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from saip_poisoning import PoisoningInputError, prepare
from saip_poisoning.loaders import MAX_PARQUET_STRING_CHARS, load_dataset


def _write(path: Path, columns: dict[str, object]) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_poi_parquet_missing_label_column_named(tmp_path: Path) -> None:
    f = _write(tmp_path / "t.parquet", {"a": [1.0, 2.0], "label": [0, 1]})
    with pytest.raises(PoisoningInputError, match=r"no label column 'target'"):
        load_dataset(f, label_column="target")
    with pytest.raises(PoisoningInputError, match=r"no producer column 'src'"):
        load_dataset(f, label_column="label", producer_column="src")
    with pytest.raises(PoisoningInputError, match="needs the name of its label column"):
        load_dataset(f)


def test_poi_parquet_nested_types_named(tmp_path: Path) -> None:
    f = _write(tmp_path / "n.parquet", {"a": [1.0, 2.0], "vec": [[1, 2], [3]], "label": [0, 1]})
    with pytest.raises(PoisoningInputError, match=r"feature column 'vec' has type list"):
        load_dataset(f, label_column="label")
    f = _write(tmp_path / "s.parquet", {"a": [1.0, 2.0], "label": [{"k": 1}, {"k": 2}]})
    with pytest.raises(PoisoningInputError, match=r"label column 'label' has type struct"):
        load_dataset(f, label_column="label")
    f = _write(tmp_path / "t.parquet", {"a": ["x", "y"], "label": [0, 1]})
    with pytest.raises(PoisoningInputError, match=r"feature column 'a' has type string"):
        load_dataset(f, label_column="label")


def test_poi_parquet_huge_strings_and_nulls_named(tmp_path: Path) -> None:
    huge = "A" * (MAX_PARQUET_STRING_CHARS + 1)
    f = _write(
        tmp_path / "h.parquet", {"a": [1.0, 2.0], "label": ["cat", "dog"], "id": [huge, "r"]}
    )
    with pytest.raises(PoisoningInputError, match=r"id column 'id' has a value of 4097 char"):
        load_dataset(f, label_column="label", id_column="id")
    f = _write(tmp_path / "n.parquet", {"a": [1.0, None], "label": [0, 1]})
    with pytest.raises(PoisoningInputError, match=r"feature column 'a' has empty values"):
        load_dataset(f, label_column="label")
    f = _write(tmp_path / "m.parquet", {"a": [1.0, 2.0], "label": ["cat", None]})
    with pytest.raises(PoisoningInputError, match=r"label column 'label' has empty values"):
        load_dataset(f, label_column="label")


def test_poi_parquet_hostile_column_name_escaped(tmp_path: Path) -> None:
    name = "\x1b[31mred\u202e" + "x" * 200
    f = _write(tmp_path / "e.parquet", {name: ["a", "b"], "label": [0, 1]})
    with pytest.raises(PoisoningInputError) as info:
        load_dataset(f, label_column="label")
    msg = str(info.value)
    assert "\x1b" not in msg
    assert "\u202e" not in msg
    assert "\\x1b[31mred" in msg
    assert "…" in msg
    assert "x" * 100 not in msg


@given(body=st.binary(max_size=300))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_poi_parquet_loader_never_crashes_untyped(tmp_path: Path, body: bytes) -> None:
    f = tmp_path / "fuzz.parquet"
    f.write_bytes(b"PAR1" + body + b"PAR1")
    with contextlib.suppress(PoisoningInputError):
        load_dataset(f, label_column="label")


def test_poi_parquet_happy_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((30, 3))
    kinds = pa.array(["cat" if i % 2 else "dog" for i in range(30)]).dictionary_encode()
    f = _write(
        tmp_path / "d.parquet",
        {
            "f1": x[:, 0],
            "f2": x[:, 1].astype(np.float32),
            "f3": (x[:, 2] * 10).astype(np.int16),
            "kind": kinds,
            "src": [f"p{i % 3}" for i in range(30)],
            "id": [f"r{i}" for i in range(30)],
        },
    )
    ds = load_dataset(f, label_column="kind", producer_column="src", id_column="id")
    assert ds.x.shape == (30, 3)
    assert ds.x.dtype == np.float64
    assert np.allclose(ds.x[:, 0], x[:, 0])
    d = prepare(ds.x, ds.y, producer=ds.producer, record_id=ds.record_id, min_per_class=5)
    assert d.classes == ("cat", "dog")
    assert d.record_id is not None
    assert d.record_id[4] == "r4"
    assert d.producer is not None
    assert d.producer[5] == "p2"
