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

# How a trial was executed, not what it trained: the same model on the same data with the same
# seeds, stacked or one by one, with fused or compiled kernels, on one thread or four. Pairs
# across another axis (library, device) match on these only where both sides were executed the
# same way somewhere: a stacked torch run has no one-by-one rows, so it pairs with scikit-learn's
# and Keras's rows whatever their execution; comparing execution settings is an axis of its own.
EXECUTION_COLUMNS: tuple[str, ...] = ("batched", "batch_fused_adam", "batch_compiled", "threads")


SEED_SOURCE_NAMES: tuple[str, ...] = (*SOURCES, "cv")


def parse_seed_sources(value: object) -> list[tuple[str, ...]]:
    """The groups of seed sources a row's `seed_sources` names, in its order.

    `seed_sources` (bench.backends.seed_use) joins groups with `,` and the members of a merged
    group (one random state fed from several seeds) with `+`; a source it does not name had no
    effect on the training: `"split,order+init"` -> `[("split",), ("order", "init")]`, `"split"`
    -> `[("split",)]`, `""` -> `[]`. A null value (runs written before the column existed) means
    every source separate: `[("split",), ("order",), ("init",)]`. Unknown or repeated names raise
    ValueError.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return [(s,) for s in SOURCES]
    if not isinstance(value, str):
        raise ValueError(f"seed_sources must be a string or null, not {value!r}")
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        group = tuple(m.strip() for m in part.split("+"))
        for member in group:
            if member not in SEED_SOURCE_NAMES:
                raise ValueError(f"seed_sources {value!r}: unknown source {member!r}")
            if member in seen:
                raise ValueError(f"seed_sources {value!r}: {member!r} named twice")
            seen.add(member)
        out.append(group)
    return out


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
    return _declared_seed_sources(df)


def _declared_seed_sources(df: pd.DataFrame) -> pd.DataFrame:
    """Runs before bench 0.6.0 have no `seed_sources`: the declaration (which depends only on
    library, model, mode and whether a search ran) fills it in, so their seeds without effect and
    merged seeds are analysed as a new run's are."""
    needed = {"seed_sources", "library", "model", "mode"}
    if not needed <= set(df.columns) or not df["seed_sources"].isna().any():
        return df
    from bench.backends.seed_use import seed_sources

    missing = df["seed_sources"].isna()
    searched = df["search"].notna() if "search" in df else pd.Series(False, index=df.index)
    keys = list(zip(df["library"], df["model"], df["mode"], searched, strict=True))
    declared = {k: seed_sources(*k) for k in set(keys)}
    filled = pd.Series([declared[k] for k in keys], index=df.index, dtype=object)
    df["seed_sources"] = df["seed_sources"].where(~missing, filled)
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
