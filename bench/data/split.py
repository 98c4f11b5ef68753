"""Train/test split from the split seed, then preprocessing fitted on the training rows only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.data.datasets import RawDataset


@dataclass(frozen=True)
class Split:
    X_train: np.ndarray  # float32, preprocessed
    y_train: np.ndarray  # int64
    X_test: np.ndarray
    y_test: np.ndarray
    test_index: np.ndarray  # rows of the raw dataset, ascending: a fixed order for churn
    n_classes: int


def _preprocessor(raw: RawDataset):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [i for i in range(raw.X.shape[1]) if i not in raw.categorical]
    parts = [("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric)]
    if raw.categorical:
        onehot = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        cat = make_pipeline(SimpleImputer(strategy="most_frequent"), onehot)
        parts.append(("cat", cat, list(raw.categorical)))
    return ColumnTransformer(parts)


def split(raw: RawDataset, seed_split: int, test_size: float) -> Split:
    from sklearn.model_selection import train_test_split

    index = np.arange(len(raw.y))
    train_idx, test_idx = train_test_split(
        index, test_size=test_size, random_state=seed_split, stratify=raw.y
    )
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    pre = _preprocessor(raw).fit(raw.X[train_idx])
    return Split(
        X_train=np.ascontiguousarray(pre.transform(raw.X[train_idx]), dtype=np.float32),
        y_train=raw.y[train_idx],
        X_test=np.ascontiguousarray(pre.transform(raw.X[test_idx]), dtype=np.float32),
        y_test=raw.y[test_idx],
        test_index=test_idx,
        n_classes=raw.n_classes,
    )
