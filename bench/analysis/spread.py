"""Spread of a metric per group: a distribution, not a single mean.

For each group (any grouping columns) of finished trials:
- `n`, `mean`, `std` (sample standard deviation, ddof=1), `min`, `max`, `range` (max - min);
- `p05`, `p95`: 5th and 95th percentiles with linear interpolation between order statistics
  (numpy's and pandas' default), i.e. the interval that holds the central 90% of the trials;
- `mean_ci_low/high`, `std_ci_low/high`: two-sided bootstrap confidence intervals (BCa, see
  `bench.analysis.bootstrap`) for the mean and the standard deviation. The interval for the mean
  says how well the seeds run pin down the expected metric; the one for `std` says how well they pin
  down the seed-to-seed spread itself, which at 10 seeds is wide (the reason to show it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from bench.analysis import bootstrap
from bench.analysis.common import as_list, groups, key_columns, ok_rows, values

SPREAD_COLUMNS = (
    "n",
    "mean",
    "std",
    "min",
    "max",
    "range",
    "p05",
    "p95",
    "mean_ci_low",
    "mean_ci_high",
    "std_ci_low",
    "std_ci_high",
)


def describe(
    x: np.ndarray,
    *,
    ci: bool = True,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int | None = bootstrap.SEED,
) -> dict[str, float]:
    """The spread statistics of one sample (NaNs dropped) as a dict of SPREAD_COLUMNS."""
    x = np.asarray(x, dtype=float)
    x = np.sort(x[np.isfinite(x)])  # sorted: the last bit of a mean must not follow row order
    n = len(x)
    nan = float("nan")
    out: dict[str, float] = dict.fromkeys(SPREAD_COLUMNS, nan)
    out["n"] = n
    if n == 0:
        return out
    out.update(
        mean=float(np.mean(x)),
        std=(0.0 if np.ptp(x) == 0 else float(np.std(x, ddof=1))) if n > 1 else nan,
        min=float(np.min(x)),
        max=float(np.max(x)),
        range=float(np.ptp(x)),
        p05=float(np.percentile(x, 5)),
        p95=float(np.percentile(x, 95)),
    )
    if ci:
        kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
        out["mean_ci_low"], out["mean_ci_high"] = bootstrap.ci(x, bootstrap.mean, **kw)
        out["std_ci_low"], out["std_ci_high"] = bootstrap.ci(x, bootstrap.std, **kw)
    return out


def spread(
    df: pd.DataFrame,
    by: str | Iterable[str] | None = ("library", "varied"),
    metric: str = "accuracy",
    *,
    ci: bool = True,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int | None = bootstrap.SEED,
) -> pd.DataFrame:
    """One row per group of `by`: n, mean, std, min, max, range, p05, p95 and bootstrap CIs.

    Only finished trials (status `ok`) with a value for `metric` count. `ci=False` skips the
    bootstrap (fast, CI columns NaN).
    """
    by = as_list(by)
    rows = []
    for key, sub in groups(ok_rows(df, metric), by):
        stats = describe(
            values(sub, metric), ci=ci, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        rows.append({**key_columns(by, key), "metric": metric, **stats})
    out = pd.DataFrame(rows, columns=[*by, "metric", *SPREAD_COLUMNS])
    out["n"] = out["n"].astype(int)
    return out
