"""Accuracy per true class: an aggregate can hide one class moving a lot between seeds."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bench.analysis.churn import PRED
from bench.analysis.common import as_list, ok_rows
from bench.analysis.spread import spread


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
