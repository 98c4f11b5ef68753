"""Churn between the levels of one axis, as a matrix for a heatmap (bench.analysis.plots).

Kept apart from `bench.analysis.churn` because a heatmap cell is a different quantity from a
table's mean: only pairs of trials that predicted the same test rows count, and each cell says how
many pairs it averages.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.analysis.churn import INDEX, PRED, _pairs_churn, matched_pairs
from bench.analysis.common import SEED_COLUMNS, SETUP_COLUMNS, ok_rows, present


def churn_between_levels(
    df: pd.DataFrame,
    column: str = "library",
    match: Sequence[str] | None = None,
    *,
    counts: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Level-by-level matrix of mean churn, for a heatmap; with `counts=True`, also the matrix of
    how many pairs of trials each cell averages (0 where a cell has none: its churn is NaN).

    Only pairs of trials that predicted the same test rows count: two trials with other split
    seeds share only part of their test sets, and a churn over a few shared rows is another, much
    noisier quantity (it read 0.0% where all-varied trials barely overlapped). Off the diagonal:
    mean churn of matched pairs (same seeds and settings, the two levels of `column`) that share
    their whole test set. On the diagonal: mean churn over pairs of trials of one level that share
    their whole test set and differ in at least one seed (other order or init seeds on the same
    split), the seed-induced churn to compare the off-diagonal cells with; repeats of one setup
    (same seeds) are not between seeds and are left out. On the trials of one varied source
    (`varied == "init"`, say) a diagonal cell equals `pairwise_churn`'s `churn_mean` for them.
    """
    data = ok_rows(df, PRED)
    if "trial_key" not in data.columns:
        data = data.assign(trial_key=[f"row{i}" for i in range(len(data))])
    levels = sorted(data[column].dropna().unique().tolist(), key=str)
    matrix = pd.DataFrame(np.nan, index=levels, columns=levels, dtype=float)
    n_pairs = pd.DataFrame(0, index=levels, columns=levels, dtype=int)
    for level in levels:
        churns = _between_seeds_same_rows(data[data[column] == level])
        n_pairs.loc[level, level] = len(churns)
        matrix.loc[level, level] = float(churns.mean()) if len(churns) else np.nan
    size = dict(zip(data["trial_key"], map(len, _test_rows(data)), strict=True))
    for x, y in itertools.combinations(levels, 2):
        pairs = matched_pairs(data, column, x, y, match=match)
        if len(pairs):
            whole = (pairs["n_common"] == pairs["trial_key_a"].map(size)) & (
                pairs["n_common"] == pairs["trial_key_b"].map(size)
            )
            c = pairs.loc[whole, "churn"].dropna()
        else:
            c = pd.Series(dtype=float)
        n_pairs.loc[x, y] = n_pairs.loc[y, x] = len(c)
        matrix.loc[x, y] = matrix.loc[y, x] = float(c.mean()) if len(c) else np.nan
    matrix.index.name = n_pairs.index.name = column
    return (matrix, n_pairs) if counts else matrix


def _test_rows(data: pd.DataFrame) -> list[np.ndarray]:
    """Each row's test row numbers (`test_index`), or positions 0..n-1 where there are none."""
    if INDEX not in data.columns:
        return [np.arange(len(p)) for p in data[PRED]]
    return [
        np.arange(len(p)) if i is None else np.asarray(i)
        for i, p in zip(data[INDEX], data[PRED], strict=True)
    ]


def _between_seeds_same_rows(sub: pd.DataFrame) -> np.ndarray:
    """Churn of every pair of rows of `sub` that predicted the same test rows and differ in a seed.

    Rows are grouped by data set and their set of test rows (`test_index`; without it, the split
    seed and the length), so pairs with only part of their test rows in common never form."""
    # the same setup (everything but the seeds), so a cell never pairs two models' trials
    data = present(sub, [c for c in SETUP_COLUMNS if c not in (*SEED_COLUMNS, "seed_cv")])
    if INDEX in sub.columns:
        rows = [np.sort(i).astype(np.int64).tobytes() for i in _test_rows(sub)]
    else:
        data += present(sub, ("seed_split",))
        rows = [len(p) for p in sub[PRED]]
    names = [tuple(r) for r in sub[data].astype(str).itertuples(index=False)]
    keys = list(zip(names, rows, strict=True))
    seeds = present(sub, (*SEED_COLUMNS, "seed_cv"))
    positions: dict[object, list[int]] = {}
    for position, key in enumerate(keys):
        positions.setdefault(key, []).append(position)
    out = []
    for rows in positions.values():
        if len(rows) < 2:
            continue
        same = sub.iloc[rows]
        churns, _ = _pairs_churn(same, PRED)
        if seeds:
            ids = [tuple(r) for r in same[seeds].astype(str).itertuples(index=False)]
            other = [ids[i] != ids[j] for i, j in itertools.combinations(range(len(ids)), 2)]
            churns = churns[np.asarray(other, dtype=bool)]
        out.append(churns[np.isfinite(churns)])
    return np.concatenate(out) if out else np.zeros(0)
