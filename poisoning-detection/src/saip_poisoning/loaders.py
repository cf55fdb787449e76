"""Reading a dataset to scan from disk: ``.npz``, ``.npy`` pairs, CSV, parquet, image folders.

Every loader returns a :class:`LoadedDataset` or raises
:class:`~saip_poisoning.errors.PoisoningInputError` naming the file and what is wrong; nothing
is unpickled (``allow_pickle=False``), and image files are decoded by Pillow with its
decompression-bomb limit in force.

- ``.npz``: ``x``, ``y`` [, ``producer``, ``record_id``] (what ``saip ingest export`` writes);
- ``.npy``: the features, with ``labels=`` a second ``.npy`` of N labels;
- ``.csv``: one row per sample; ``label_column`` names the label, optional ``producer_column``
  and ``id_column``; every other column must be numeric;
- ``.parquet``: like CSV (``label_column`` required), read with pyarrow. The schema is checked
  from the file's metadata *before* any data is read: a named column that is missing, a nested
  type (list, struct, map) or a non-numeric feature column, a label/producer/ID column that is not
  integers or strings, or a string column larger than :data:`MAX_PARQUET_STRING_BYTES`
  (uncompressed, per the metadata) raises :class:`~saip_poisoning.errors.PoisoningInputError`
  naming the column; so does a null label or feature. Column names from the file are shown
  escaped and shortened.
- a directory: one sub-directory per class holding PNG/JPEG/BMP/GIF images of one size, read
  as N×H×W (grayscale) or N×H×W×C.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from saip_poisoning.errors import PoisoningInputError

__all__ = ["MAX_PARQUET_STRING_BYTES", "LoadedDataset", "load_dataset"]

#: refuse a parquet string column (label, producer, record ID) larger than this, uncompressed
MAX_PARQUET_STRING_BYTES = 256 * 1024 * 1024
#: refuse a single label/producer/record-ID string longer than this (characters)
MAX_PARQUET_STRING_CHARS = 4096
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass(frozen=True)
class LoadedDataset:
    """Arrays read from disk (unvalidated beyond the format: ``prepare`` validates them)."""

    x: NDArray[Any]
    y: NDArray[Any]
    producer: NDArray[Any] | None = None
    record_id: NDArray[Any] | None = None


def load_dataset(
    path: Path,
    *,
    labels: Path | None = None,
    label_column: str | None = None,
    producer_column: str | None = None,
    id_column: str | None = None,
) -> LoadedDataset:
    """Read ``path`` according to its suffix (or as an image folder if it is a directory)."""
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise PoisoningInputError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix == ".npy":
        if labels is None:
            raise PoisoningInputError(f"{path} holds features only: pass the labels .npy too")
        return LoadedDataset(x=_load_npy(path), y=_load_npy(labels))
    if suffix == ".csv":
        if label_column is None:
            raise PoisoningInputError(f"{path}: a CSV needs the name of its label column")
        return _load_csv(path, label_column, producer_column, id_column)
    if suffix == ".parquet":
        if label_column is None:
            raise PoisoningInputError(f"{path}: a parquet file needs the name of its label column")
        return _load_parquet(path, label_column, producer_column, id_column)
    raise PoisoningInputError(
        f"{path}: unsupported input type {suffix or '(none)'!r} "
        "(.npz, .npy, .csv, .parquet or a folder)"
    )


def _load_npz(path: Path) -> LoadedDataset:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise PoisoningInputError(f"{path} is not a readable .npz file: {exc}") from None
    for key in ("x", "y"):
        if key not in arrays:
            raise PoisoningInputError(
                f"{path} has no '{key}' array (found: {sorted(arrays)}); expected x, y[, producer]"
            )
    return LoadedDataset(
        x=arrays["x"],
        y=arrays["y"],
        producer=arrays.get("producer"),
        record_id=arrays.get("record_id"),
    )


def _load_npy(path: Path) -> NDArray[Any]:
    if not path.is_file():
        raise PoisoningInputError(f"input file not found: {path}")
    try:
        out: NDArray[Any] = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PoisoningInputError(f"{path} is not a readable .npy file: {exc}") from None
    return out


def _load_csv(
    path: Path, label_column: str, producer_column: str | None, id_column: str | None
) -> LoadedDataset:
    import pandas as pd  # type: ignore[import-untyped]

    try:
        frame = pd.read_csv(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise PoisoningInputError(f"{path} is not a readable CSV file: {exc}") from None
    named = [c for c in (label_column, producer_column, id_column) if c is not None]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise PoisoningInputError(
            f"{path} has no column(s) {missing} (columns: {[str(c) for c in frame.columns][:20]})"
        )
    features = frame.drop(columns=named)
    bad = [str(c) for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    if bad:
        raise PoisoningInputError(f"{path}: feature column(s) {bad[:5]} are not numeric")
    if features.shape[1] == 0:
        raise PoisoningInputError(f"{path} has no feature columns besides the label")
    y = frame[label_column]
    if y.isna().any():
        raise PoisoningInputError(f"{path}: label column {label_column!r} has empty values")
    yv = y.to_numpy()
    if not pd.api.types.is_numeric_dtype(y):
        yv = yv.astype(str)
    return LoadedDataset(
        x=features.to_numpy(dtype=np.float64),
        y=yv,
        producer=None if producer_column is None else frame[producer_column].astype(str).to_numpy(),
        record_id=None if id_column is None else frame[id_column].astype(str).to_numpy(),
    )


def _shown(name: object) -> str:
    """A column name from an untrusted file, escaped (``repr``) and shortened for messages."""
    text = str(name)
    return repr(text if len(text) <= 60 else text[:60] + "…")


def _load_parquet(
    path: Path, label_column: str, producer_column: str | None, id_column: str | None
) -> LoadedDataset:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyarrow.types as pt

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        meta = pf.metadata
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PoisoningInputError(f"{path} is not a readable parquet file: {exc}") from None
    names = list(schema.names)
    if len(set(names)) != len(names):
        raise PoisoningInputError(f"{path}: duplicate column names")
    roles = {"label": label_column, "producer": producer_column, "id": id_column}
    for role, col in roles.items():
        if col is not None and col not in names:
            raise PoisoningInputError(
                f"{path} has no {role} column {_shown(col)} "
                f"(columns: {[_shown(c) for c in names[:20]]})"
            )
    named = {c for c in roles.values() if c is not None}
    features = [c for c in names if c not in named]
    if not features:
        raise PoisoningInputError(f"{path} has no feature columns besides the label")
    for c in features:
        typ = schema.field(c).type
        if pt.is_nested(typ) or not (
            pt.is_integer(typ) or pt.is_floating(typ) or pt.is_boolean(typ)
        ):
            raise PoisoningInputError(
                f"{path}: feature column {_shown(c)} has type {typ}; expected numbers"
            )
    for role, col in roles.items():
        if col is None:
            continue
        typ = schema.field(col).type
        if pt.is_dictionary(typ):
            typ = typ.value_type
        if not (pt.is_integer(typ) or pt.is_string(typ) or pt.is_large_string(typ)):
            raise PoisoningInputError(
                f"{path}: {role} column {_shown(col)} has type {typ}; expected integers or strings"
            )
        if pt.is_string(typ) or pt.is_large_string(typ):
            size = sum(
                meta.row_group(g).column(j).total_uncompressed_size
                for g in range(meta.num_row_groups)
                for j in range(meta.num_columns)
                if meta.row_group(g).column(j).path_in_schema == col
            )
            if size > MAX_PARQUET_STRING_BYTES:
                raise PoisoningInputError(
                    f"{path}: {role} column {_shown(col)} holds {size} bytes of strings "
                    f"(limit {MAX_PARQUET_STRING_BYTES})"
                )
    try:
        table = pf.read()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise PoisoningInputError(f"{path} is not a readable parquet file: {exc}") from None
    n = table.num_rows
    x = np.empty((n, len(features)), dtype=np.float64)
    for j, c in enumerate(features):
        col = table.column(c)
        if col.null_count:
            raise PoisoningInputError(f"{path}: feature column {_shown(c)} has empty values")
        x[:, j] = col.to_numpy()

    def _strings(col: str, role: str) -> NDArray[Any]:
        arr = table.column(col)
        if arr.null_count:
            raise PoisoningInputError(f"{path}: {role} column {_shown(col)} has empty values")
        values: NDArray[Any] = np.asarray(arr.to_numpy(zero_copy_only=False))
        if values.dtype.kind == "O":
            longest = max((len(v) for v in values), default=0)
            if longest > MAX_PARQUET_STRING_CHARS:
                raise PoisoningInputError(
                    f"{path}: {role} column {_shown(col)} has a value of {longest} characters "
                    f"(limit {MAX_PARQUET_STRING_CHARS})"
                )
            out: NDArray[Any] = values.astype(str)
            return out
        return values

    y = _strings(label_column, "label")
    return LoadedDataset(
        x=x,
        y=y,
        producer=None
        if producer_column is None
        else _strings(producer_column, "producer").astype(str),
        record_id=None if id_column is None else _strings(id_column, "id").astype(str),
    )


def _load_folder(path: Path) -> LoadedDataset:
    from PIL import Image, UnidentifiedImageError

    xs: list[NDArray[Any]] = []
    ys: list[str] = []
    ids: list[str] = []
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise PoisoningInputError(
            f"{path}: expected one sub-directory per class (found {len(classes)})"
        )
    shape: tuple[int, ...] | None = None
    for cdir in classes:
        for f in sorted(cdir.iterdir()):
            if f.suffix.lower() not in _IMAGE_SUFFIXES or not f.is_file():
                continue
            try:
                with Image.open(f) as im:
                    arr = np.asarray(
                        im.convert("L") if im.mode in ("1", "L", "P", "I;16") else im.convert("RGB")
                    )
            except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
                raise PoisoningInputError(f"{f}: not a readable image: {exc}") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise PoisoningInputError(
                    f"{f}: image shape {arr.shape} differs from the first image's {shape}"
                )
            xs.append(arr.astype(np.float64) / 255.0)
            ys.append(cdir.name)
            ids.append(str(f.relative_to(path)))
    if not xs:
        raise PoisoningInputError(f"{path}: no images found in its class sub-directories")
    return LoadedDataset(x=np.stack(xs), y=np.array(ys), record_id=np.array(ids))
