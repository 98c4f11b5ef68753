"""UCI heart disease (Cleveland), read from a path or downloaded, sha256-checked either way.

Only the original `processed.cleveland.data` is accepted: the popular Kaggle `heart.csv` is recoded
(columns, flipped target, a duplicated and a missing patient), and a result on it is not a result on
this data. The checksum is what tells the two apart.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import ConfigError
from bench.data.datasets import RawDataset

FILENAME = "processed.cleveland.data"
SHA256 = "a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"
URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease/processed.cleveland.data"
COLUMNS = (
    "age", "sex", "cp", "trestbps", "chol", "fbs", "restecg",
    "thalach", "exang", "oldpeak", "slope", "ca", "thal",
)  # fmt: skip
CATEGORICAL = ("cp", "restecg", "slope", "thal")


def _cache_dir(cfg: dict[str, Any]) -> Path:
    if cfg.get("cache_dir"):
        return Path(cfg["cache_dir"]).expanduser()
    return Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "bench")) / "heart"


def _check(data: bytes, where: str, key: str, expected: str) -> None:
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise ConfigError(
            f"{key}: sha256 mismatch for {where}: expected {expected}, got {got}; bench accepts only "
            f"UCI's {FILENAME} (Kaggle's heart.csv is a different, recoded file)"
        )


def heart_bytes(cfg: dict[str, Any]) -> bytes:
    """The verified bytes of the file: from `path` if given, else from the cache or the UCI archive."""
    expected = cfg.get("sha256") or SHA256
    if cfg.get("path"):
        path = Path(cfg["path"]).expanduser()
        if path.is_dir():
            path = path / FILENAME
        if not path.is_file():
            raise ConfigError(f"dataset.path: file not found: {path}")
        data = path.read_bytes()
        _check(data, str(path), "dataset.path", expected)
        return data
    cached = _cache_dir(cfg) / FILENAME
    if cached.is_file():
        data = cached.read_bytes()
        _check(data, str(cached), "dataset.cache_dir", expected)
        return data
    url = cfg.get("url") or URL
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read()
    except OSError as exc:
        raise ConfigError(
            f"dataset.url: could not download {url} ({exc}); set dataset.path to a local copy"
        ) from None
    _check(data, url, "dataset.url", expected)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, cached)
    return data


def load_heart(cfg: dict[str, Any]) -> RawDataset:
    table = np.genfromtxt(
        io.BytesIO(heart_bytes(cfg)), delimiter=",", missing_values="?", filling_values=np.nan
    )
    X, num = table[:, :-1], table[:, -1]
    categorical = tuple(COLUMNS.index(c) for c in CATEGORICAL)
    return RawDataset(
        "heart", X.astype(np.float64), (num > 0).astype(np.int64), COLUMNS, categorical
    )
