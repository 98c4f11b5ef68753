"""How much of the spread each source of randomness causes.

Two designs, two estimators:

`variance_by_source` is for the one-at-a-time design of the `seeds` sweep: for each source s in
(split, order, init) the trials with `varied == s` change only that seed, the `all` trials change
all three together, and the `none` trials change nothing (repeats of one fixed-seed spec). For each
source it reports the sample variance (ddof=1) of the metric and

    share_of_all(s) = Var(metric | only s varied) / Var(metric | all varied).

If the sources act additively and independently, the three shares sum to about 1; a sum well below
1 points to interactions between sources, and any sum is noisy: a sample variance from n seeds has a
relative standard error of about sqrt(2 / (n - 1)) (47% at n = 10), which is why each variance
carries a bootstrap CI. The `none` row is the implementation noise that every other row contains
as well (0 when runs are bitwise repeatable).

`variance_components` is for factorial data (every combination of the factors' levels present the
same number of times). It uses the classical ANOVA (method-of-moments) estimator of a random-effects
model with main effects only: with N rows, factor f at a_f levels and every level seen N / a_f
times,

    E[MS_f] = sigma2_residual + (N / a_f) * sigma2_f   =>   sigma2_f = (MS_f - MS_res) / (N / a_f)

truncated at 0 (a negative estimate means "indistinguishable from 0"). Interactions between factors
are pooled into the residual. F = MS_f / MS_res and its p-value come from the F distribution
(scipy). Both functions say in a `note` column when the data cannot identify a component.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis import bootstrap
from bench.analysis.common import (
    SEED_COLUMNS,
    SOURCES,
    as_list,
    groups,
    key_columns,
    ok_rows,
    values,
)

SOURCE_ROWS = (*SOURCES, "sum_of_sources", "all", "none")
_SEED_OF = dict(zip(SOURCES, SEED_COLUMNS, strict=True))


def variance_by_source(
    df: pd.DataFrame,
    by: str | Iterable[str] | None = ("library",),
    metric: str = "accuracy",
    *,
    ci: bool = True,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    seed: int | None = bootstrap.SEED,
) -> pd.DataFrame:
    """Per group and source: n, variance (with bootstrap CI), std, share of the all-varied variance.

    Rows per group: `split`, `order`, `init` (each varied alone), `sum_of_sources` (their sum),
    `all` (varied together) and `none` (fixed seeds, repeated). `identifiable` is False, and `note`
    says why, when a row cannot be estimated from the data (fewer than 2 trials, a seed column that
    never changes, no `all` trials to compare against, or an all-varied variance of 0).
    """
    by = as_list(by)
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    rows: list[dict] = []
    data = ok_rows(df, metric)
    if "varied" not in data.columns:
        raise KeyError("variance_by_source needs a 'varied' column (a seeds sweep)")
    for key, sub in groups(data, by):
        keys = key_columns(by, key)
        est: dict[str, dict] = {}
        for source in (*SOURCES, "all", "none"):
            part = sub[sub["varied"] == source]
            x = values(part, metric)
            n = len(x)
            row = {"source": source, "n": n, "variance": np.nan, "identifiable": True, "note": ""}
            if n < 2:
                row.update(identifiable=False, note=f"not identifiable: {n} trial(s) (need 2)")
            elif source in _SEED_OF and part[_SEED_OF[source]].nunique() < 2:
                row.update(
                    identifiable=False,
                    note=f"not identifiable: {_SEED_OF[source]} takes one value in these trials",
                )
            else:
                # constant values (bitwise repeatable runs) give exactly 0, not rounding residue
                row["variance"] = 0.0 if np.ptp(x) == 0 else float(np.var(x, ddof=1))
                if ci:
                    row["variance_ci_low"], row["variance_ci_high"] = bootstrap.ci(
                        x, bootstrap.variance, **kw
                    )
            est[source] = row
        alone = [est[s] for s in SOURCES]
        total = {
            "source": "sum_of_sources",
            "n": sum(r["n"] for r in alone),
            "variance": sum(r["variance"] for r in alone) if all(r["identifiable"] for r in alone)
            else np.nan,
            "identifiable": all(r["identifiable"] for r in alone),
            "note": "" if all(r["identifiable"] for r in alone)
            else "not identifiable: a source is missing",
        }  # fmt: skip
        est["sum_of_sources"] = total
        denominator = est["all"]
        for source in SOURCE_ROWS:
            row = est[source]
            share = np.nan
            if source != "none" and row["identifiable"]:
                if not denominator["identifiable"]:
                    row["note"] = "share not identifiable: no all-varied variance"
                elif denominator["variance"] == 0:
                    row["note"] = "share undefined: the all-varied variance is 0"
                else:
                    share = row["variance"] / denominator["variance"]
            if source == "none" and row["identifiable"] and row["variance"] == 0:
                row["note"] = "bitwise repeatable metric: no implementation noise"
            row["share_of_all"] = share
            row["std"] = np.sqrt(row["variance"]) if np.isfinite(row["variance"]) else np.nan
            rows.append({**keys, "metric": metric, **row})
    columns = [
        *by,
        "metric",
        "source",
        "n",
        "variance",
        "variance_ci_low",
        "variance_ci_high",
        "std",
        "share_of_all",
        "identifiable",
        "note",
    ]
    out = pd.DataFrame(rows).reindex(columns=columns)
    out["n"] = out["n"].astype(int)
    out["identifiable"] = out["identifiable"].astype(bool)
    return out


def factorial_check(df: pd.DataFrame, factors: Sequence[str]) -> tuple[bool, str]:
    """(True, "") when `factors` form a balanced full factorial in `df`, else (False, why)."""
    factors = list(factors)
    missing = [f for f in factors if f not in df.columns]
    if missing:
        return False, f"columns missing: {missing}"
    if len(df) == 0:
        return False, "no rows"
    levels = [df[f].nunique(dropna=False) for f in factors]
    cells = df.groupby(factors, dropna=False, observed=True).size()
    expected = int(np.prod(levels))
    if len(cells) != expected:
        return False, (
            f"not a full factorial: {len(cells)} of {expected} level combinations present "
            "(one-at-a-time seeds sweeps: use variance_by_source)"
        )
    if cells.nunique() != 1:
        return False, f"unbalanced: {cells.min()} to {cells.max()} rows per combination"
    return True, ""


def variance_components(
    df: pd.DataFrame,
    factors: Sequence[str] = SEED_COLUMNS,
    metric: str = "accuracy",
    by: str | Iterable[str] | None = ("library",),
) -> pd.DataFrame:
    """Random-effects ANOVA variance components of `metric` for crossed `factors`, per group.

    One row per factor plus `residual` (interactions and repeat noise) and `total`: degrees of
    freedom, sum of squares, mean square, F, p-value, estimated variance component (>= 0) and its
    share of the total estimated variance. A factor with one level, a design that is not a balanced
    full factorial, or no residual degrees of freedom gives `identifiable=False` with a `note`.
    """
    by = as_list(by)
    factors = list(factors)
    rows: list[dict] = []
    for key, sub in groups(ok_rows(df, metric), by):
        keys = {**key_columns(by, key), "metric": metric}
        rows.extend({**keys, **r} for r in _components(sub, factors, metric))
    columns = [
        *by,
        "metric",
        "component",
        "df",
        "sum_sq",
        "mean_sq",
        "F",
        "p_value",
        "variance",
        "share",
        "identifiable",
        "note",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)


def _components(sub: pd.DataFrame, factors: list[str], metric: str) -> list[dict]:
    ok, why = factorial_check(sub, factors)
    if not ok:
        return [{"component": f, "identifiable": False, "note": why} for f in factors]
    y = values(sub, metric)
    n_rows = len(y)
    grand = y.mean()
    ss_total = float(((y - grand) ** 2).sum())
    rows = []
    ss_used, df_used = 0.0, 0
    for f in factors:
        level_means = sub.groupby(f, dropna=False, observed=True)[metric].mean()
        a = len(level_means)
        per_level = n_rows / a
        ss = float(per_level * ((level_means.to_numpy() - grand) ** 2).sum())
        ss_used += ss
        df_used += a - 1
        rows.append({"component": f, "df": a - 1, "sum_sq": ss, "_per_level": per_level})
    df_res = n_rows - 1 - df_used
    ss_res = max(ss_total - ss_used, 0.0)
    ms_res = ss_res / df_res if df_res > 0 else np.nan
    for r in rows:
        per_level = r.pop("_per_level")
        if r["df"] == 0:
            r.update(identifiable=False, note="not identifiable: one level")
            continue
        r["mean_sq"] = r["sum_sq"] / r["df"]
        if df_res <= 0:
            r.update(identifiable=False, note="not identifiable: no residual degrees of freedom")
            continue
        r["variance"] = max((r["mean_sq"] - ms_res) / per_level, 0.0)
        if ms_res > 0:
            r["F"] = r["mean_sq"] / ms_res
            r["p_value"] = float(stats.f.sf(r["F"], r["df"], df_res))
        r.update(identifiable=True, note="")
    residual = {
        "component": "residual",
        "df": df_res,
        "sum_sq": ss_res,
        "mean_sq": ms_res,
        "variance": ms_res,
        "identifiable": df_res > 0,
        "note": "" if df_res > 0 else "not identifiable: no residual degrees of freedom",
    }
    rows.append(residual)
    estimable = [r["variance"] for r in rows if r.get("identifiable")]
    total_var = float(np.sum(estimable)) if estimable else np.nan
    for r in rows:
        if r.get("identifiable") and total_var > 0:
            r["share"] = r["variance"] / total_var
    rows.append(
        {
            "component": "total",
            "df": n_rows - 1,
            "sum_sq": ss_total,
            "mean_sq": ss_total / (n_rows - 1) if n_rows > 1 else np.nan,
            "variance": total_var,
            "share": 1.0 if total_var > 0 else np.nan,
            "identifiable": bool(np.isfinite(total_var)),
            "note": "sum of the estimated components",
        }
    )
    return rows
