"""Threshold probability: how often does this setup reach a given score?

P(metric >= t) is estimated by the share of trials (per group) that reach t: k successes out of n
trials, a binomial proportion. Its confidence interval comes from `scipy.stats.binomtest(k, n)
.proportion_ci`: Wilson's score interval by default (good coverage at small n and near 0 or 1,
where the normal approximation fails), or Clopper-Pearson (`method="exact"`, conservative).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.common import as_list, groups, key_columns, ok_rows, values


def proportion_ci(
    k: int, n: int, confidence: float = 0.95, method: str = "wilson"
) -> tuple[float, float]:
    """CI of a binomial proportion k / n (method: "wilson", "wilsoncc" or "exact")."""
    if n == 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method=method)
    return float(ci.low), float(ci.high)


def threshold_probability(
    df: pd.DataFrame,
    threshold: float | Iterable[float],
    by: str | Iterable[str] | None = ("library",),
    metric: str = "accuracy",
    *,
    confidence: float = 0.95,
    method: str = "wilson",
) -> pd.DataFrame:
    """Per group and threshold t: n trials, k reaching t, P(metric >= t) = k / n and its CI."""
    by = as_list(by)
    thresholds = [float(threshold)] if np.isscalar(threshold) else [float(t) for t in threshold]
    rows = []
    for key, sub in groups(ok_rows(df, metric), by):
        x = values(sub, metric)
        for t in thresholds:
            k, n = int(np.sum(x >= t)), len(x)
            low, high = proportion_ci(k, n, confidence, method)
            rows.append(
                {
                    **key_columns(by, key),
                    "metric": metric,
                    "threshold": t,
                    "n": n,
                    "k": k,
                    "probability": k / n if n else np.nan,
                    "ci_low": low,
                    "ci_high": high,
                    "method": method,
                }
            )
    columns = [*by, "metric", "threshold", "n", "k", "probability", "ci_low", "ci_high", "method"]
    return pd.DataFrame(rows, columns=columns)
