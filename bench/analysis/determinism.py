"""Determinism: does the same spec give the same bits, and what does deterministic mode cost?

A *repeated setup* is a set of trials equal on every setup column (library, model, data, device,
deterministic flag, threads, modes, hyperparameters and all three seeds; see
`bench.analysis.common.SETUP_COLUMNS`). The sweep's `varied=none` trials are such repeats by design,
and the index-0 trials of the other sources repeat that same setup too. For each repeated setup,
`repeat_groups` counts distinct final-weight hashes and test-prediction hashes: 1 and 1 means
bitwise repeatable; more weight hashes but one prediction hash means the bits move but not the
predictions. `determinism_summary` aggregates those per group of `by`.

`determinism_cost` compares run time with deterministic mode on and off: the ratio of the median
times (robust to a slow first trial in a worker) and a bootstrap CI of that same ratio of medians,
so the interval printed belongs to the estimate printed beside it. The CI is the percentile
interval: BCa's acceleration comes from the jackknife, which is unreliable for a median (a
non-smooth statistic). With 5 trials per mode the bootstrap distribution of a median is lumpy; when
the interval would be a single point the CI is NaN (see `bench.analysis.bootstrap`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bench.analysis import bootstrap
from bench.analysis.common import SETUP_COLUMNS, as_list, groups, key_columns, ok_rows, present

WEIGHTS, PREDICTIONS = "weights_sha256", "predictions_sha256"


def repeat_groups(
    df: pd.DataFrame, metric: str = "accuracy", setup: Iterable[str] = SETUP_COLUMNS
) -> pd.DataFrame:
    """One row per setup run at least twice: n_runs, distinct weight and prediction hashes,
    distinct metric values, the metric's range, and `bitwise_repeatable`.

    Stacked rows (`batched`) count once per stack: members of one stack with the same seeds were
    trained side by side, equal by construction, not repeated. A stack's size is part of its
    setup (`group_size`), since a member's last bits may depend on it: fixed-seed repeats get
    stacks of their own (bench.units), and are compared with each other only."""
    data = ok_rows(df)
    columns = present(data, setup)
    if {"batched", "group_key", "group_size"} <= set(data.columns):
        stacked = data["batched"].fillna(False).astype(bool) & data["group_key"].notna()
        once = data[stacked].drop_duplicates([*columns, "group_key"])
        data = pd.concat([data[~stacked], once]).sort_index()
        columns = [*columns, "group_size"]
    rows = []
    for key, sub in groups(data, columns):
        if len(sub) < 2:
            continue
        rows.append(
            {
                **key_columns(columns, key),
                "n_runs": len(sub),
                "distinct_weights": int(sub[WEIGHTS].nunique()) if WEIGHTS in sub else np.nan,
                "distinct_predictions": int(sub[PREDICTIONS].nunique())
                if PREDICTIONS in sub
                else np.nan,
                "distinct_metric": int(sub[metric].nunique()),
                "metric_range": float(sub[metric].max() - sub[metric].min()),
            }
        )
    out = pd.DataFrame(
        rows,
        columns=[
            *columns,
            "n_runs",
            "distinct_weights",
            "distinct_predictions",
            "distinct_metric",
            "metric_range",
        ],
    )
    out["bitwise_repeatable"] = out["distinct_weights"] == 1
    return out


def determinism_summary(
    df: pd.DataFrame,
    by: str | Iterable[str] | None = ("library", "device", "deterministic"),
    metric: str = "accuracy",
    setup: Iterable[str] = SETUP_COLUMNS,
) -> pd.DataFrame:
    """Per group of `by`: repeated setups, their runs, how many were bitwise repeatable, and the
    largest number of distinct weight/prediction hashes and metric range within one setup."""
    by = present(df, as_list(by))
    repeats = repeat_groups(df, metric=metric, setup=setup)
    rows = []
    for key, sub in groups(repeats, by):
        rows.append(
            {
                **key_columns(by, key),
                "n_setups": len(sub),
                "n_runs": int(sub["n_runs"].sum()),
                "setups_repeatable": int(sub["bitwise_repeatable"].sum()),
                "max_distinct_weights": int(sub["distinct_weights"].max()),
                "max_distinct_predictions": int(sub["distinct_predictions"].max()),
                "max_metric_range": float(sub["metric_range"].max()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            *by,
            "n_setups",
            "n_runs",
            "setups_repeatable",
            "max_distinct_weights",
            "max_distinct_predictions",
            "max_metric_range",
        ],
    )


def determinism_cost(
    df: pd.DataFrame,
    by: str | Iterable[str] | None = ("library", "device"),
    time: str = "fit_seconds",
    *,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int | None = bootstrap.SEED,
) -> pd.DataFrame:
    """Per group of `by` holding both deterministic and non-deterministic trials: their counts,
    median times, `ratio_median` (median deterministic / median non-deterministic) and its
    bootstrap CI (`ratio_median_ci_low/high`). Groups with only one mode are left out."""
    by = present(df, as_list(by))
    data = ok_rows(df, time)
    rows = []
    for key, sub in groups(data, by):
        on = sub.loc[sub["deterministic"].astype(bool), time].to_numpy(float)
        off = sub.loc[~sub["deterministic"].astype(bool), time].to_numpy(float)
        if len(on) == 0 or len(off) == 0:
            continue
        low, high = bootstrap.ci(
            [on, off],
            bootstrap.median_ratio,
            confidence=confidence,
            n_resamples=n_resamples,
            method="percentile",
            seed=seed,
        )
        rows.append(
            {
                **key_columns(by, key),
                "n_deterministic": len(on),
                "n_nondeterministic": len(off),
                "median_deterministic": float(np.median(on)),
                "median_nondeterministic": float(np.median(off)),
                "ratio_median": float(np.median(on) / np.median(off)),
                "ratio_median_ci_low": low,
                "ratio_median_ci_high": high,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            *by,
            "n_deterministic",
            "n_nondeterministic",
            "median_deterministic",
            "median_nondeterministic",
            "ratio_median",
            "ratio_median_ci_low",
            "ratio_median_ci_high",
        ],
    )
