"""Churn: how many individual predictions change when only a seed, a library or a device changes.

Two trials can have the same accuracy and still disagree on many test rows. The churn of two
trials is the fraction of the test rows both predicted whose predicted class differs:

    churn(a, b) = mean over rows i in test(a) & test(b) of [y_pred_a(i) != y_pred_b(i)]

Rows are matched by `test_index` (the dataset row number), so trials with different split seeds are
compared on the rows their test sets share (`n_common` says how many); two trials with no common
test row have no churn (NaN, left out of summaries).

- `pairwise_churn`: every pair of trials within a group (e.g. one library, one varied source):
  mean, max and min churn.
- `matched_pairs` / `matched_churn`: pairs that agree on every setup column except one (same seeds,
  torch vs tensorflow; same seeds, cpu vs cuda; deterministic on vs off).
- `unpaired_reason`: why no pairs form, when none do.

Elsewhere: `bench.analysis.levels.churn_between_levels` (a level-by-level matrix for heatmaps) and
`bench.analysis.per_class` (accuracy of each true class per trial, and its spread).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from bench.analysis.common import (
    EXECUTION_COLUMNS,
    SETUP_COLUMNS,
    as_list,
    groups,
    key_columns,
    ok_rows,
    present,
)

PRED, INDEX, WEIGHTS = "y_pred", "test_index", "weights"


def churn(
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    index_a: Sequence[int] | np.ndarray | None = None,
    index_b: Sequence[int] | np.ndarray | None = None,
) -> tuple[float, int]:
    """(fraction of common test rows predicted differently, number of common rows).

    Without indices the two vectors must describe the same rows in the same order.
    """
    a, b = np.asarray(pred_a), np.asarray(pred_b)
    if index_a is not None and index_b is not None:
        _, ia, ib = np.intersect1d(
            np.asarray(index_a), np.asarray(index_b), assume_unique=True, return_indices=True
        )
        a, b = a[ia], b[ib]
    elif len(a) != len(b):
        raise ValueError(f"prediction vectors differ in length ({len(a)} vs {len(b)}) and no index")
    n = len(a)
    return (float(np.mean(a != b)) if n else float("nan")), n


def _pairs_churn(sub: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Churn and common-row count for every unordered pair of rows of `sub` (upper triangle)."""
    preds = [np.asarray(p) for p in sub[column]]
    has_index = INDEX in sub.columns
    indices = [np.asarray(i) for i in sub[INDEX]] if has_index else None
    k = len(preds)
    same_rows = all(len(p) == len(preds[0]) for p in preds) and (
        not has_index or all(np.array_equal(i, indices[0]) for i in indices)
    )
    if same_rows and k > 1:  # one test set: a vectorised row-by-row comparison
        matrix = np.vstack(preds)
        churns = [np.mean(matrix[i + 1 :] != matrix[i], axis=1) for i in range(k - 1)]
        values = np.concatenate(churns)
        return values, np.full(len(values), matrix.shape[1])
    values, common = [], []
    for i, j in itertools.combinations(range(k), 2):
        c, n = churn(
            preds[i],
            preds[j],
            indices[i] if has_index else None,
            indices[j] if has_index else None,
        )
        values.append(c)
        common.append(n)
    return np.asarray(values, dtype=float), np.asarray(common, dtype=int)


def _summary(churns: np.ndarray, common: np.ndarray) -> dict[str, float]:
    usable = np.isfinite(churns)
    c = churns[usable]
    nan = float("nan")
    return {
        "n_pairs": int(usable.sum()),
        "churn_mean": float(c.mean()) if len(c) else nan,
        "churn_max": float(c.max()) if len(c) else nan,
        "churn_min": float(c.min()) if len(c) else nan,
        "identical_share": float(np.mean(c == 0)) if len(c) else nan,
        "n_common_mean": float(common[usable].mean()) if len(c) else nan,
    }


def pairwise_churn(
    df: pd.DataFrame, by: str | Iterable[str] | None = ("library", "varied"), column: str = PRED
) -> pd.DataFrame:
    """Per group: trials, pairs, mean/max/min churn over all pairs of trials, share of identical
    prediction vectors and the mean number of common test rows."""
    by = as_list(by)
    rows = []
    for key, sub in groups(ok_rows(df, column), by):
        churns, common = _pairs_churn(sub, column)
        rows.append({**key_columns(by, key), "n_trials": len(sub), **_summary(churns, common)})
    return pd.DataFrame(
        rows,
        columns=[
            *by,
            "n_trials",
            "n_pairs",
            "churn_mean",
            "churn_max",
            "churn_min",
            "identical_share",
            "n_common_mean",
        ],
    )


def churn_matrix(df: pd.DataFrame, label: str = "trial_key", column: str = PRED) -> pd.DataFrame:
    """Square matrix of churn between every two rows of `df`, indexed by `label` (0 on the diagonal)."""
    data = ok_rows(df, column)
    churns, _ = _pairs_churn(data, column)
    k = len(data)
    matrix = np.zeros((k, k))
    upper = np.triu_indices(k, 1)
    matrix[upper] = churns
    matrix[(upper[1], upper[0])] = churns
    labels = data[label].astype(str).tolist()
    return pd.DataFrame(matrix, index=labels, columns=labels)


# Columns that describe a level of another column rather than the setup: comparing stacked with
# one-by-one training (`batched`) compares a stack's kernels too.
PART_OF = {"batched": ("batch_fused_adam", "batch_compiled")}


def default_match(df: pd.DataFrame, column: str) -> list[str]:
    """Setup columns (plus the sweep's `varied` and `repeat`) in `df`, other than `column` and
    what describes its levels (PART_OF). How trials were executed (common.EXECUTION_COLUMNS) is
    not among them unless `column` is one: `matched_pairs` prefers pairs executed alike and
    falls back, trial by trial, to pairs executed differently (a stacked torch MLP pairs with
    scikit-learn's one-by-one MLP when no one-by-one torch MLP exists)."""
    skip = {column, *PART_OF.get(column, ())}
    if column not in EXECUTION_COLUMNS:
        skip |= set(EXECUTION_COLUMNS)
    return [c for c in present(df, (*SETUP_COLUMNS, "varied", "repeat")) if c not in skip]


def _like_with_like(pairs: pd.DataFrame, execution: list[str]) -> pd.DataFrame:
    """Of the candidate pairs (equal on the match columns), keep those executed alike; a trial
    with no such partner, whose partner has none either, keeps its pairs executed otherwise."""
    if not execution or pairs.empty:
        return pairs
    same = np.logical_and.reduce(
        [
            (pairs[f"{c}_a"] == pairs[f"{c}_b"]) | (pairs[f"{c}_a"].isna() & pairs[f"{c}_b"].isna())
            for c in execution
        ]
    )
    same = pd.Series(np.asarray(same, dtype=bool), index=pairs.index)
    has_a = same.groupby(pairs["_row_a"]).transform("any")
    has_b = same.groupby(pairs["_row_b"]).transform("any")
    return pairs[same | (~has_a & ~has_b)]


def unpaired_reason(
    df: pd.DataFrame, column: str, a: object, b: object, match: Sequence[str] | None = None
) -> str | None:
    """Why no `a` row pairs with a `b` row (None when some do): the match columns whose values
    the two sides never share, or, when each column is shared somewhere, that no row agrees on
    all of them at once."""
    data = ok_rows(df)
    match = list(match) if match is not None else default_match(data, column)
    side_a, side_b = data[data[column] == a], data[data[column] == b]
    if side_a.empty or side_b.empty:
        return f"no ok rows with {column}={b if side_b.empty else a}"
    if len(side_a[match].merge(side_b[match].drop_duplicates(), on=match)):
        return None
    disjoint = [
        c
        for c in match
        if not set(map(str, side_a[c].unique())) & set(map(str, side_b[c].unique()))
    ]
    if disjoint:
        shown = "; ".join(
            f"{c}: {sorted(map(str, side_a[c].unique()))[:3]} vs "
            f"{sorted(map(str, side_b[c].unique()))[:3]}"
            for c in disjoint
        )
        return f"{column}={a} and {column}={b} rows never agree on {shown}"
    return f"{column}={a} and {column}={b} rows agree on each setup column, never on all at once"


def matched_pairs(
    df: pd.DataFrame,
    column: str,
    a: object,
    b: object,
    match: Sequence[str] | None = None,
    metric: str = "accuracy",
) -> pd.DataFrame:
    """Rows with `column == a` joined to rows with `column == b` that agree on every `match` column.

    One row per pair: the match columns, `trial_key_a/b`, `<metric>_a/b`, their difference `diff`
    (a - b), `churn`, `n_common`, `same_weights` / `same_predictions` (hash equality) where the
    hash columns exist, and `max_weight_diff` (largest absolute difference of one weight) where
    both rows kept their weights (`keep_weights=true`), else NaN. `match` defaults to every setup
    column except `column`, so for libraries it pairs trials with the same seeds, model, data,
    device and settings.
    """
    data = ok_rows(df)
    match = list(match) if match is not None else default_match(data, column)
    # execution columns left out of the match travel with each side (`batched_a`, `batched_b`)
    unmatched = [c for c in present(data, EXECUTION_COLUMNS) if c not in match and c != column]
    keep = [
        c
        for c in dict.fromkeys(
            [
                *match,
                *unmatched,
                "trial_key",
                metric,
                PRED,
                INDEX,
                WEIGHTS,
                "weights_sha256",
                "predictions_sha256",
            ]  # fmt: skip
        )
        if c in data.columns
    ]
    left = data.loc[data[column] == a, keep].assign(_row=lambda x: range(len(x)))
    right = data.loc[data[column] == b, keep].assign(_row=lambda x: range(len(x)))
    pairs = left.merge(right, on=match, suffixes=("_a", "_b"))
    pairs = _like_with_like(pairs, unmatched).reset_index(drop=True)
    churns, common = [], []
    none = [None] * len(pairs)
    columns = [f"{c}_{s}" for c in (PRED, INDEX) for s in "ab"]
    pa_, pb_, ia_, ib_ = (pairs[c] if c in pairs.columns else none for c in columns)
    for pa, pb, ia, ib in zip(pa_, pb_, ia_, ib_, strict=True):
        if pa is None or pb is None:
            churns.append(np.nan)
            common.append(0)
            continue
        c, n = churn(pa, pb, ia, ib)
        churns.append(c)
        common.append(n)
    out = pairs[[*match]].copy()
    for col in ("trial_key", metric, *unmatched):
        if f"{col}_a" in pairs.columns:
            out[f"{col}_a"], out[f"{col}_b"] = pairs[f"{col}_a"], pairs[f"{col}_b"]
    out["diff"] = out[f"{metric}_a"] - out[f"{metric}_b"]
    out["churn"] = np.asarray(churns, dtype=float)
    out["n_common"] = np.asarray(common, dtype=int)
    for h, name in (("weights_sha256", "same_weights"), ("predictions_sha256", "same_predictions")):
        if f"{h}_a" in pairs.columns:
            out[name] = (pairs[f"{h}_a"] == pairs[f"{h}_b"]).to_numpy(dtype=bool)
    wa, wb = (pairs[c] if c in pairs.columns else none for c in (f"{WEIGHTS}_a", f"{WEIGHTS}_b"))
    out["max_weight_diff"] = np.asarray(
        [largest_difference(a, b) for a, b in zip(wa, wb, strict=True)], dtype=float
    )
    out.insert(0, column + "_b", b)
    out.insert(0, column + "_a", a)
    return out.reset_index(drop=True)


def largest_difference(a: Sequence[float] | None, b: Sequence[float] | None) -> float:
    """max |a - b| over two weight vectors; NaN when either is missing or they differ in shape
    (not the same model)."""
    if a is None or b is None:
        return np.nan
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        return np.nan
    return float(np.max(np.abs(a - b))) if len(a) else 0.0


def matched_churn(
    df: pd.DataFrame,
    column: str,
    a: object,
    b: object,
    by: str | Iterable[str] | None = None,
    match: Sequence[str] | None = None,
    metric: str = "accuracy",
) -> pd.DataFrame:
    """Summary of `matched_pairs` per group of `by` (which must be among the match columns): pairs,
    mean/max/min churn, share of pairs with identical predictions and weights, the largest weight
    difference of any pair (NaN without kept weights), mean metric a - b."""
    by = as_list(by)
    pairs = matched_pairs(df, column, a, b, match=match, metric=metric)
    # An execution column left out of the match groups by both sides' values (stacked torch vs
    # one-by-one scikit-learn is its own line); the caller's `by` may still name it.
    for c in [c for c in by if c not in pairs.columns and f"{c}_a" in pairs.columns]:
        pairs[c] = pairs[f"{c}_a"].where(pairs[f"{c}_a"] == pairs[f"{c}_b"])
    execution = [
        f"{c}_{side}"
        for c in EXECUTION_COLUMNS
        for side in "ab"
        if f"{c}_{side}" in pairs.columns and c not in by
    ]
    execution = [c for c in execution if pairs[c].nunique(dropna=False) > 1] if len(pairs) else []
    by = [*by, *execution]
    rows = []
    for key, sub in groups(pairs, by):
        row = {column + "_a": a, column + "_b": b, **key_columns(by, key)}
        row.update(_summary(sub["churn"].to_numpy(float), sub["n_common"].to_numpy(int)))
        row["same_weights_share"] = (
            float(sub["same_weights"].mean()) if "same_weights" in sub and len(sub) else np.nan
        )
        differences = sub["max_weight_diff"].to_numpy(float)
        row["max_weight_diff"] = (
            float(np.nanmax(differences)) if np.isfinite(differences).any() else np.nan
        )
        row["diff_mean"] = float(sub["diff"].mean()) if len(sub) else np.nan
        rows.append(row)
    columns = [
        column + "_a",
        column + "_b",
        *by,
        "n_pairs",
        "churn_mean",
        "churn_max",
        "churn_min",
        "identical_share",
        "same_weights_share",
        "max_weight_diff",
        "n_common_mean",
        "diff_mean",
    ]
    return pd.DataFrame(rows, columns=columns)
