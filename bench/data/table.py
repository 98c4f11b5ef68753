"""A table of the user's own: `dataset=table dataset.path=FILE dataset.target=COLUMN`.

CSV or Parquet (by suffix), read with pandas. The target column becomes class indices 0..k-1 in
sorted order of its values; every other column is a feature. Numeric columns stay numeric;
text, boolean and pandas-categorical columns, and any column named in `dataset.categorical`, are
categorical (their values become codes, then one-hot encoded). Missing values stay NaN and are
imputed as for the heart data: median for numeric, most frequent for categorical, fitted on the
training part of each split only (bench.data.split). Rows whose target is missing are dropped
(a label cannot be imputed), and the loader says how many.

`dataset.sha256`, when given, must match the file's bytes; the digest of the bytes read is
recorded in every row either way (`dataset_sha256`), so two runs on "the same" file can be told
apart when the file changed in between. Every refusal is one line that names the key and the
file: a missing or empty file, a missing target column, a target with one class, a text column
with so many distinct values that it cannot be a category (an identifier or free text: drop it,
or name it in `dataset.categorical` if it is one).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import ConfigError
from bench.data.datasets import RawDataset

SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
# A text column with more distinct values than this share of its rows (and more than 20) is an
# identifier or free text, not a category: refused, unless named in dataset.categorical.
TEXT_UNIQUE_SHARE = 0.5


def _path(cfg: dict[str, Any]) -> Path:
    if not cfg.get("path"):
        raise ConfigError("dataset.path: dataset=table needs a CSV or Parquet file")
    path = Path(cfg["path"]).expanduser()
    if not path.is_file():
        raise ConfigError(f"dataset.path: file not found: {path}")
    if path.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"dataset.path: {path}: unknown file type {path.suffix!r}; use one of "
            f"{sorted(SUFFIXES)}"
        )
    return path


def _read(path: Path, data: bytes):
    import io

    import pandas as pd

    if not data.strip():
        raise ConfigError(f"dataset.path: {path} is empty")
    try:
        if SUFFIXES[path.suffix.lower()] == "parquet":
            return pd.read_parquet(io.BytesIO(data))
        sep = "\t" if path.suffix.lower() == ".tsv" else None
        return pd.read_csv(io.BytesIO(data), sep=sep, engine="python")
    except Exception as exc:  # noqa: BLE001 - pandas and pyarrow raise many kinds
        raise ConfigError(
            f"dataset.path: cannot read {path}: {' '.join(str(exc).split())}"
        ) from None


def load_table(cfg: dict[str, Any]) -> RawDataset:
    """The user's table as a RawDataset (features float64 with NaN for missing values)."""
    import pandas as pd

    path = _path(cfg)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if cfg.get("sha256") and cfg["sha256"] != digest:
        raise ConfigError(
            f"dataset.sha256: sha256 mismatch for {path}: expected {cfg['sha256']}, got {digest}"
        )
    frame = _read(path, data)
    target = cfg.get("target")
    if not target:
        raise ConfigError("dataset.target: dataset=table needs the name of the label column")
    if frame.empty or len(frame.columns) == 0:
        raise ConfigError(f"dataset.path: {path} has no rows")
    if target not in frame.columns:
        shown = ", ".join(map(str, list(frame.columns)[:12]))
        raise ConfigError(f"dataset.target: no column {target!r} in {path} (columns: {shown})")
    named = list(cfg.get("categorical") or [])
    unknown = [c for c in named if c not in frame.columns or c == target]
    if unknown:
        raise ConfigError(f"dataset.categorical: no feature column {unknown[0]!r} in {path}")
    labelled = frame[frame[target].notna()]
    classes = sorted(labelled[target].unique(), key=str)
    if len(classes) < 2:
        raise ConfigError(
            f"dataset.target: column {target!r} of {path} has {len(classes)} class(es); a "
            "classifier needs at least 2"
        )
    y = labelled[target].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    features = labelled.drop(columns=[target])
    if features.shape[1] == 0:
        raise ConfigError(f"dataset.path: {path} has no feature column besides {target!r}")
    columns, categorical, categories = [], [], []
    for i, name in enumerate(features.columns):
        column = features[name]
        numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
        if numeric and name not in named:
            columns.append(column.to_numpy(np.float64, na_value=np.nan))
            continue
        values = column.dropna()
        distinct = values.nunique()
        if name not in named and distinct > max(20, TEXT_UNIQUE_SHARE * len(values)):
            raise ConfigError(
                f"dataset.categorical: column {name!r} of {path} is text with {distinct} "
                f"distinct values in {len(values)} rows (an identifier or free text?); drop it "
                "from the file, or name it in dataset.categorical if it is a category"
            )
        codes, values = pd.factorize(column.astype("string"), sort=True)
        columns.append(np.where(codes < 0, np.nan, codes).astype(np.float64))
        categorical.append(i)
        categories.append(tuple(str(v) for v in values))
    X = np.column_stack(columns)
    names = tuple(str(c) for c in features.columns)
    return RawDataset(
        "table", X, y, names, tuple(categorical), sha256=digest,
        classes=tuple(str(c) for c in classes), dropped=len(frame) - len(labelled),
        categories=tuple(categories),
    )  # fmt: skip
