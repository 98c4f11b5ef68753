"""The datasets bench knows, and the user's own tables and image folders, each loaded into a
RawDataset of plain numpy arrays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class RawDataset:
    name: str
    X: np.ndarray  # float64, NaN where a value is missing
    y: np.ndarray  # int64 class indices 0..k-1
    feature_names: tuple[str, ...]
    categorical: tuple[int, ...] = ()  # columns to one-hot encode (after imputation)
    sha256: str | None = None  # a file's (folder's) digest (dataset=table, images): in every row
    classes: tuple[str, ...] = ()  # the target's values / class folders, class index order
    dropped: int = 0  # rows left out for a missing target (dataset=table)
    # dataset=table: each text column's values, in code order (bench.score maps new files by them)
    categories: tuple[tuple[str, ...], ...] = ()

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1


def _from_sklearn(name: str, loader: Callable[..., Any]) -> RawDataset:
    bunch = loader()
    names = tuple(str(n) for n in getattr(bunch, "feature_names", range(bunch.data.shape[1])))
    return RawDataset(name, bunch.data.astype(np.float64), bunch.target.astype(np.int64), names)


def _breast_cancer(cfg: dict[str, Any]) -> RawDataset:
    from sklearn.datasets import load_breast_cancer

    return _from_sklearn("breast_cancer", load_breast_cancer)


def _digits(cfg: dict[str, Any]) -> RawDataset:
    from sklearn.datasets import load_digits

    return _from_sklearn("digits", load_digits)


def _synthetic(cfg: dict[str, Any]) -> RawDataset:
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=cfg["n_samples"],
        n_features=cfg["n_features"],
        n_informative=cfg["n_informative"],
        n_redundant=0,
        n_classes=cfg["n_classes"],
        random_state=cfg["data_seed"],
    )
    names = tuple(f"x{i}" for i in range(X.shape[1]))
    return RawDataset("synthetic", X.astype(np.float64), y.astype(np.int64), names)


def _heart(cfg: dict[str, Any]) -> RawDataset:
    from bench.data.heart import load_heart

    return load_heart(cfg)


def _table(cfg: dict[str, Any]) -> RawDataset:
    from bench.data.table import load_table

    return load_table(cfg)


def _images(cfg: dict[str, Any]) -> RawDataset:
    from bench.data.images import load_images

    return load_images(cfg)


LOADERS: dict[str, Callable[[dict[str, Any]], RawDataset]] = {
    "breast_cancer": _breast_cancer,
    "digits": _digits,
    "synthetic": _synthetic,
    "heart": _heart,
    "table": _table,
    "images": _images,
}


def load(cfg: dict[str, Any]) -> RawDataset:
    """Load the dataset a (plain dict) dataset config names."""
    try:
        loader = LOADERS[cfg["name"]]
    except KeyError:
        raise ValueError(
            f"dataset.name: unknown dataset {cfg['name']!r}; known: {sorted(LOADERS)}"
        ) from None
    return loader(cfg)
