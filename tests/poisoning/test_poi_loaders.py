"""Scan inputs from disk: npy pairs, CSV with a label column, image folders; hostile files first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from saip_poisoning import PoisoningInputError, prepare
from saip_poisoning.loaders import load_dataset


def test_poi_loaders_refuse_hostile_files(tmp_path: Path) -> None:
    (tmp_path / "pickled.npy").write_bytes(
        b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
        + b" " * 60
        + b"\n"
        + b"\x80\x04N."
    )
    with pytest.raises(PoisoningInputError, match=r"not a readable \.npy"):
        load_dataset(tmp_path / "pickled.npy", labels=tmp_path / "pickled.npy")
    with pytest.raises(PoisoningInputError, match=r"labels \.npy"):
        load_dataset(tmp_path / "pickled.npy")
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n1,x,cat\n2,3,dog\n")
    with pytest.raises(PoisoningInputError, match="not numeric"):
        load_dataset(csv, label_column="label")
    with pytest.raises(PoisoningInputError, match="no column"):
        load_dataset(csv, label_column="nope")
    with pytest.raises(PoisoningInputError, match="label column"):
        load_dataset(csv)
    (tmp_path / "t.parquet").write_text("x")
    with pytest.raises(PoisoningInputError, match="not a readable parquet"):
        load_dataset(tmp_path / "t.parquet", label_column="label")
    (tmp_path / "t.feather").write_text("x")
    with pytest.raises(PoisoningInputError, match="unsupported input type"):
        load_dataset(tmp_path / "t.feather")
    folder = tmp_path / "imgs"
    for cls, size in (("a", 4), ("b", 5)):
        (folder / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(folder / cls / "0.png")
    with pytest.raises(PoisoningInputError, match="differs from the first image"):
        load_dataset(folder)
    (folder / "b" / "0.png").write_bytes(b"not a png")
    with pytest.raises(PoisoningInputError, match="not a readable image"):
        load_dataset(folder)


def test_poi_loaders_npy_csv_and_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((30, 4)), np.arange(30) % 3
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    ds = load_dataset(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert np.array_equal(ds.x, x)
    lines = ["f1,f2,kind,src,id"] + [
        f"{a:.3f},{b:.3f},{'cat' if i % 2 else 'dog'},p{i % 3},r{i}"
        for i, (a, b) in enumerate(x[:, :2])
    ]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset(
        tmp_path / "d.csv", label_column="kind", producer_column="src", id_column="id"
    )
    d = prepare(ds.x, ds.y, producer=ds.producer, record_id=ds.record_id, min_per_class=5)
    assert d.classes == ("cat", "dog")
    assert d.x.shape == (30, 2)
    assert d.record_id is not None
    assert d.record_id[4] == "r4"
    folder = tmp_path / "imgs"
    for cls in ("ants", "bees"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((6, 6, 3)) * 255).astype(np.uint8)).save(
                folder / cls / f"{i}.png"
            )
    ds = load_dataset(folder)
    assert ds.x.shape == (6, 6, 6, 3)
    assert list(ds.y) == ["ants"] * 3 + ["bees"] * 3
    assert ds.record_id is not None
    assert str(ds.record_id[0]).endswith("0.png")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.text(max_size=200))
def test_poi_csv_loader_never_crashes_untyped(tmp_path: Path, body: str) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_text("a,label\n" + body, encoding="utf-8")
    try:
        ds = load_dataset(path, label_column="label")
    except PoisoningInputError:
        return
    assert len(ds.x) == len(ds.y)
