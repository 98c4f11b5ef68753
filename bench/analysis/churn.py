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
- `churn_between_levels`: a level-by-level matrix for heatmaps.
- `per_class_accuracy` / `per_class_spread`: accuracy (recall) of each true class per trial, and
  its spread over trials: an aggregate can hide one class moving a lot.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from bench.analysis.common import (
    SETUP_COLUMNS,
    as_list,
    groups,
    key_columns,
    ok_rows,
    present,
)
from bench.analysis.spread import spread

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
    what describes its levels (PART_OF)."""
    skip = {column, *PART_OF.get(column, ())}
    return [c for c in present(df, (*SETUP_COLUMNS, "varied", "repeat")) if c not in skip]


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
    match = list(match) if match is not None else default_match(df, column)
    data = ok_rows(df)
    keep = [
        c
        for c in dict.fromkeys(
            [
                *match,
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
    left = data.loc[data[column] == a, keep]
    right = data.loc[data[column] == b, keep]
    pairs = left.merge(right, on=match, suffixes=("_a", "_b"))
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
    for col in ("trial_key", metric):
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


def churn_between_levels(
    df: pd.DataFrame, column: str = "library", match: Sequence[str] | None = None
) -> pd.DataFrame:
    """Level-by-level matrix of mean churn, for a heatmap.

    Off the diagonal: mean churn of matched pairs (same seeds and settings, the two levels of
    `column`). On the diagonal: mean pairwise churn between the trials of one level (different
    seeds, same level), the seed-induced churn to compare the off-diagonal cells with.
    """
    data = ok_rows(df, PRED)
    levels = sorted(data[column].dropna().unique().tolist(), key=str)
    matrix = pd.DataFrame(np.nan, index=levels, columns=levels, dtype=float)
    for level in levels:
        churns, _ = _pairs_churn(data[data[column] == level], PRED)
        finite = churns[np.isfinite(churns)]
        matrix.loc[level, level] = float(finite.mean()) if len(finite) else np.nan
    for x, y in itertools.combinations(levels, 2):
        c = matched_pairs(data, column, x, y, match=match)["churn"]
        value = float(c.mean()) if c.notna().any() else np.nan
        matrix.loc[x, y] = matrix.loc[y, x] = value
    matrix.index.name = column
    return matrix


def per_class_accuracy(df: pd.DataFrame, by: str | Iterable[str] | None = None) -> pd.DataFrame:
    """Long table: one row per trial and true class with `n` test rows of that class and the
    `accuracy` on them (the class's recall), plus `trial_key` and the `by` columns."""
    by = as_list(by)
    data = ok_rows(df, PRED)
    data = data[data["y_true"].notna()]
    rows = []
    ids = list(dict.fromkeys([*by, "trial_key"]))
    for values, truth, pred in zip(
        data[ids].to_dict("records"), data["y_true"], data[PRED], strict=True
    ):
        y_true, y_pred = np.asarray(truth), np.asarray(pred)
        for cls in np.unique(y_true):
            mask = y_true == cls
            rows.append(
                {
                    **values,
                    "class": int(cls),
                    "n": int(mask.sum()),
                    "accuracy": float(np.mean(y_pred[mask] == cls)),
                }
            )
    return pd.DataFrame(rows, columns=[*ids, "class", "n", "accuracy"])


def per_class_spread(
    df: pd.DataFrame, by: str | Iterable[str] | None = ("library", "varied")
) -> pd.DataFrame:
    """Spread (n, mean, std, min, max, range, percentiles) of each class's accuracy per group."""
    by = as_list(by)
    long = per_class_accuracy(df, by)
    table = spread(long, [*by, "class"], metric="accuracy", ci=False)
    return table.drop(columns=[c for c in table.columns if c.endswith(("_ci_low", "_ci_high"))])
