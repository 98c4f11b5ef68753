"""Train/test split from the split seed, then preprocessing fitted on the training rows only.

Two paths that give identical arrays (tests compare them on every dataset bench knows):
- `split_sklearn`: scikit-learn's `train_test_split(stratify=y)` and a `ColumnTransformer`
  (median imputation and standard scaling, one-hot encoding for categorical columns). It is the
  definition, and the path for data with missing values or categorical columns.
- `split_many`: the same splits for many seeds at once. The stratified draw replays
  `StratifiedShuffleSplit`'s calls on the seed's `RandomState` (its class-count rounding is worked
  out once per dataset: only the random draws depend on the seed), and standard scaling runs over
  all members as one array operation with scikit-learn's own formulas. scikit-learn's validation
  layers made the split 19 ms a trial, more than a stacked MLP's training; this is tens of
  microseconds. Trials that share a split seed share one split.

Both paths end with the same optional training-label flip (`LabelFlip`, `dataset.flip_class` /
`dataset.flip_fraction`): a harmful update made from config, for measuring whether
`bench gate` catches one. It changes training labels only, after the split, so the test rows and
their labels are those of the unflipped trial with the same split seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from math import ceil
from typing import Any

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


# A stream of its own beside the split's RandomState: the flip never moves which rows are drawn.
_FLIP_STREAM = 0x666C6970  # "flip"


@dataclass(frozen=True)
class LabelFlip:
    """`fraction` of class `cls`'s training rows relabelled to another class (uniformly among
    the others), the rows and new labels drawn from the split seed."""

    cls: int
    fraction: float

    @classmethod
    def of(cls, dataset: Mapping[str, Any]) -> LabelFlip | None:
        """The flip a dataset config (or a trial's `dataset_params`) asks for; None when off."""
        fraction = float(dataset.get("flip_fraction") or 0.0)
        if fraction <= 0:
            return None
        return cls(int(dataset["flip_class"]), fraction)

    def check(self, n_classes: int) -> None:
        """ValueError naming the key when the class or fraction cannot be flipped."""
        if not 0 <= self.cls < n_classes:
            raise ValueError(
                f"dataset.flip_class: the data has classes 0..{n_classes - 1}, got {self.cls}"
            )
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"dataset.flip_fraction: must be in [0, 1], got {self.fraction}")

    def apply(self, data: Split, seed_split: int) -> Split:
        """`data` with round(fraction * rows of the class) of its training labels flipped."""
        self.check(data.n_classes)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed_split), _FLIP_STREAM]))
        rows = np.flatnonzero(data.y_train == self.cls)
        chosen = rng.choice(rows, size=int(self.fraction * len(rows) + 0.5), replace=False)
        others = np.delete(np.arange(data.n_classes), self.cls)
        y = data.y_train.copy()
        y[chosen] = rng.choice(others, size=len(chosen))
        return replace(data, y_train=y)


def _float32(X: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(X, dtype=np.float32)


def preprocessing(raw: RawDataset):
    """The preprocessing as one unfitted transformer: raw rows in, the float32 features a Split
    holds out (`_preprocessor`, then the cast). Fitted on a split's training rows it gives that
    Split's arrays bitwise. A grid search puts it in a `Pipeline` before the estimator, so each
    CV fold fits it on that fold's training rows only (bench.trial.grid_search)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    return make_pipeline(_preprocessor(raw), FunctionTransformer(_float32))


def train_index(raw: RawDataset, data: Split) -> np.ndarray:
    """The raw rows of `data`'s training part, ascending (the order of `data.X_train`): every
    row not in its test part (the split uses every row)."""
    rows = np.ones(len(raw.y), dtype=bool)
    rows[data.test_index] = False
    return np.flatnonzero(rows)


def split_sklearn(raw: RawDataset, seed_split: int, test_size: float) -> Split:
    """The split as scikit-learn defines it: the reference for `split_many`."""
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


class StratifiedPlan:
    """`train_test_split(stratify=y, test_size=t, random_state=seed)`'s row sets for any seed.

    scikit-learn's `_approximate_mode` rounds each class's share of the draws down, then hands the
    remaining draws to the classes with the largest remainders, breaking ties with `rng.choice`.
    Everything but those choices depends on the class counts alone, so it is computed here once;
    `indices(seed)` then makes exactly the calls scikit-learn makes on `RandomState(seed)`, in
    its order (the final shuffles of the two sets are skipped: bench sorts both)."""

    def __init__(self, y: np.ndarray, test_size: float) -> None:
        n = len(y)
        n_test = ceil(test_size * n)
        n_train = n - n_test
        if n_train <= 0 or n_test <= 0:
            raise ValueError(f"dataset.test_size: {test_size} leaves an empty train or test set")
        classes, y_indices, self.counts = np.unique(y, return_inverse=True, return_counts=True)
        if self.counts.min() < 2 or min(n_train, n_test) < len(classes):
            raise ValueError(
                f"dataset.test_size: cannot stratify {n} rows of {len(classes)} classes "
                f"(smallest class {self.counts.min()}) with test_size={test_size}"
            )
        self.by_class = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(self.counts)[:-1])
        self.n_train, self.n_test = n_train, n_test
        self._train_plan = self._plan(self.counts, n_train)
        # Reseeded per call: RandomState(seed) first seeds itself from the OS's entropy (0.1 ms),
        # `seed(seed)` is the same legacy seeding alone.
        self._rng = np.random.RandomState(0)

    @staticmethod
    def _plan(counts: np.ndarray, n_draws: int) -> tuple[np.ndarray, list[tuple[np.ndarray, int]]]:
        continuous = counts / counts.sum() * n_draws
        floored = np.floor(continuous)
        need = int(n_draws - floored.sum())
        steps: list[tuple[np.ndarray, int]] = []
        if need > 0:
            remainder = continuous - floored
            for value in np.sort(np.unique(remainder))[::-1]:
                (inds,) = np.where(remainder == value)
                now = min(len(inds), need)
                steps.append((inds, now))
                need -= now
                if need == 0:
                    break
        return floored, steps

    @staticmethod
    def _draw(plan, rng: np.random.RandomState) -> np.ndarray:
        floored, steps = plan
        out = floored.astype(np.int64)
        for inds, now in steps:  # rng.choice(inds, now, replace=False), without its validation
            out[inds[rng.permutation(len(inds))[:now]]] += 1
        return out

    def indices(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, test rows), each ascending."""
        rng = self._rng
        rng.seed(seed)
        n_i = self._draw(self._train_plan, rng)
        t_i = self._draw(self._plan(self.counts - n_i, self.n_test), rng)
        train, test = [], []
        for rows, count, a, b in zip(self.by_class, self.counts, n_i, t_i, strict=True):
            drawn = rows.take(rng.permutation(count), mode="clip")
            train.append(drawn[:a])
            test.append(drawn[a : a + b])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _standard_scale(
    X: np.ndarray, train: np.ndarray, test: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """StandardScaler fitted on each member's training rows (`train` (N, m) row numbers), applied
    to its training and test rows, float32 out; scikit-learn's formulas (the corrected two-pass
    variance of `_incremental_mean_and_var`, near-constant features left unscaled) summed in the
    same order: inside the ColumnTransformer the scaler gets each column contiguous in memory, so
    numpy sums it pairwise, and so does this (a row-major sum differed in the last bit for about
    one seed in fifty)."""
    columns = np.ascontiguousarray(X[train].transpose(0, 2, 1))  # (N, d, m): a column per row
    m = float(train.shape[1])
    total = columns.sum(axis=2)
    mean = total / m
    columns -= mean[:, :, None]  # x - mean, as the scaler's transform computes it
    correction = columns.sum(axis=2)
    var = (np.square(columns).sum(axis=2) - correction**2 / m) / m
    eps = np.finfo(np.float64).eps
    constant = var <= m * eps * var + (m * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    columns /= scale[:, :, None]
    Xtr = columns.transpose(0, 2, 1).astype(np.float32, order="C")
    Xte = X[test]
    Xte -= mean[:, None, :]
    Xte /= scale[:, None, :]
    return Xtr, Xte.astype(np.float32)


# Members scaled per array operation. Larger chunks were slower here: their float64 copies
# (5 MB a member for digits) are fresh memory each time, and the page faults cost more than the
# arithmetic.
_CHUNK = 8


def takes_sklearn_path(raw: RawDataset) -> bool:
    """Whether `split_many` splits `raw` through scikit-learn: categorical columns and missing
    values need its imputers and encoder."""
    return bool(raw.categorical) or bool(np.isnan(raw.X).any())


def split_many(
    raw: RawDataset, seeds: list[int], test_size: float, flip: LabelFlip | None = None
) -> dict[int, Split]:
    """Every distinct seed's split, equal to `split_sklearn(raw, seed, test_size)`, its training
    labels then flipped by `flip` (None: untouched)."""
    out = _split_many(raw, seeds, test_size)
    if flip is None:
        return out
    return {seed: flip.apply(data, seed) for seed, data in out.items()}


def _split_many(raw: RawDataset, seeds: list[int], test_size: float) -> dict[int, Split]:
    unique = list(dict.fromkeys(int(s) for s in seeds))
    if takes_sklearn_path(raw):
        return {s: split_sklearn(raw, s, test_size) for s in unique}
    plan = StratifiedPlan(raw.y, test_size)
    rows = [plan.indices(s) for s in unique]
    out: dict[int, Split] = {}
    for start in range(0, len(unique), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        train = np.stack([r[0] for r in rows[chunk]])
        test = np.stack([r[1] for r in rows[chunk]])
        Xtr, Xte = _standard_scale(raw.X, train, test)
        for i, seed in enumerate(unique[chunk]):
            out[seed] = Split(
                Xtr[i], raw.y[train[i]], Xte[i], raw.y[test[i]], test[i], raw.n_classes
            )
    return out


def split(
    raw: RawDataset, seed_split: int, test_size: float, flip: LabelFlip | None = None
) -> Split:
    """One trial's split (`split_many` for one seed)."""
    return split_many(raw, [seed_split], test_size, flip)[int(seed_split)]
