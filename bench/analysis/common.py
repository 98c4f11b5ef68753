"""Shared helpers: loading a run, picking usable rows, and the column vocabulary of a result table.

Every analysis function takes a DataFrame with the columns of `bench.store.SCHEMA` (more columns
are fine, missing optional ones are skipped) and the grouping columns as arguments, so the same
functions work when later sweeps add columns such as `mode` or GPU rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

SEED_COLUMNS: tuple[str, ...] = ("seed_split", "seed_order", "seed_init")
SOURCES: tuple[str, ...] = ("split", "order", "init")

# Columns the report may group by when they take more than one value in the data.
CONTEXT_COLUMNS: tuple[str, ...] = (
    "dataset",
    "model",
    "device",
    "mode",
    "deterministic",
    "threads",
    "cpu_isa",
    "init_mode",
    "order_mode",
)

# Columns that, together, say "the same training setup": two rows equal on all of them (that exist)
# trained the same model on the same data with the same seeds. `varied` and `repeat` are bookkeeping
# of the sweep, not of the training, so they are not part of it.
SETUP_COLUMNS: tuple[str, ...] = (
    "library",
    *CONTEXT_COLUMNS,
    "hparams",
    "dataset_params",
    "search",  # grid search settings (None without one)
    "batched",  # stacked and one-by-one training differ in the last bits
    "batch_fused_adam",  # and so do a stack's kernels (false for one-by-one trials)
    "batch_compiled",
    *SEED_COLUMNS,
    "seed_cv",  # the cross-validation folds' seed (grid search)
)


def load(path: str | Path, columns: Iterable[str] | None = None) -> pd.DataFrame:
    """Read a run folder, a sweep folder of runs, or one Parquet file into the tidy table, one row
    per trial, in this version's schema: pyarrow alone takes the columns of the first file it
    reads, so an older run first in a sweep folder would drop the columns added since.

    `columns` reads only those: a run of a million trials is a few hundred MB without its
    per-row arrays (`bench.rows.LIST_COLUMNS`) and several GB with them; `SCALAR_COLUMNS` names
    everything else."""
    from bench.rows import SCHEMA

    wanted = None if columns is None else list(dict.fromkeys(columns))
    df = pd.read_parquet(path, schema=SCHEMA, columns=wanted)
    if "cpu_isa" in df:
        df["cpu_isa"] = df["cpu_isa"].fillna("native")  # runs before bench 0.4.0 set no level
    return df


def ok_rows(df: pd.DataFrame, metric: str | None = None) -> pd.DataFrame:
    """Rows of finished trials (status `ok`) with a value for `metric` when one is named."""
    out = df[df["status"] == "ok"] if "status" in df.columns else df
    if metric is not None:
        out = out[out[metric].notna()]
    return out


def as_list(columns: str | Iterable[str] | None) -> list[str]:
    if columns is None:
        return []
    if isinstance(columns, str):
        return [columns]
    return list(columns)


def present(df: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns of `columns` that exist in `df`, in the given order."""
    return [c for c in columns if c in df.columns]


def varying(df: pd.DataFrame, columns: Iterable[str]) -> list[str]:
    """The columns of `columns` that exist in `df` and take more than one value there."""
    return [c for c in present(df, columns) if df[c].nunique(dropna=False) > 1]


def groups(df: pd.DataFrame, by: Sequence[str]):
    """(key tuple, sub-frame) for every group of `by`, missing values kept as their own group.

    With no grouping columns the whole frame is one group with the empty key.
    """
    by = list(by)
    if not by:
        yield (), df
        return
    for key, sub in df.groupby(by, sort=True, dropna=False, observed=True):
        yield (key if isinstance(key, tuple) else (key,)), sub


def key_columns(by: Sequence[str], key: tuple) -> dict[str, object]:
    return dict(zip(by, key, strict=True))


def values(sub: pd.DataFrame, metric: str) -> np.ndarray:
    return sub[metric].to_numpy(dtype=float)
