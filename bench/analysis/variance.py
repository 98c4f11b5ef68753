"""How much of the spread each source of randomness causes.

Two designs, two estimators:

`variance_by_source` is for the one-at-a-time design of the `seeds` sweep: for each source s in
(split, order, init) the trials with `varied == s` change only that seed, the `all` trials change
all three together, and the `none` trials change nothing (repeats of one fixed-seed spec). For each
source it reports the sample variance (ddof=1) of the metric and

    share_of_all(s) = Var(metric | only s varied) / Var(metric | all varied).

If the sources act additively and independently, the shares sum to about 1; a sum well below 1
points to interactions between sources, and any sum is noisy: a sample variance from n seeds has a
relative standard error of about sqrt(2 / (n - 1)) (47% at n = 10), which is why each variance
carries a CI. The `none` row is the implementation noise that every other row contains as well (0
when runs are bitwise repeatable).

The variance CI is the chi-square interval of a normal sample's variance,

    [(n - 1) s^2 / chi2_{1 - a/2, n - 1},  (n - 1) s^2 / chi2_{a/2, n - 1}]   (scipy.stats.chi2),

valid from n = 2 (where it is very wide, as it should be). A bootstrap interval is no substitute at
small n: resampling 3 values gives a handful of possible variances and the BCa interval can
collapse onto one of them (a zero-width "interval"). When every trial gave the same value (s^2 = 0)
the chi-square interval is the point 0, which no finite sample can establish, so the CI is NaN and
the `note` says why. The interval assumes normally distributed values; accuracy on a small test set
is discrete, so read it as approximate.

Which sources exist comes from the rows' `seed_sources` (`bench.analysis.common.parse_seed_sources`): a
group of sources merged into one random state (scikit-learn's MLPClassifier in defaults mode draws
initial weights and shuffling from one random_state fed by both seeds: `order+init`) is one source,
reported once under its joint name from the trials of its first member that the sweep ran (varying
the second member too would count the same random state twice); a source the row does not name had
no effect and is reported as "no effect", never as a zero-variance source. A null `seed_sources`
(runs before the column existed) means every source separate.

`variance_components` is for factorial data (every combination of the factors' levels present the
same number of times). It uses the classical ANOVA (method-of-moments) estimator of a random-effects
model with main effects only: with N rows, factor f at a_f levels and every level seen N / a_f
times,

    E[MS_f] = sigma2_residual + (N / a_f) * sigma2_f   =>   sigma2_f = (MS_f - MS_res) / (N / a_f)

truncated at 0 (a negative estimate means "indistinguishable from 0"). Interactions between factors
are pooled into the residual. F = MS_f / MS_res and its p-value come from the F distribution
(scipy). Seed columns of a merged group become one factor (their combination, named e.g.
`seed_order+seed_init`); a seed column whose source had no effect is left out of the model and
reported as "no effect". Both functions say in a `note` column when the data cannot identify a
component.

Why not statsmodels for the components: it is not a dependency of bench (not installed, not in
pyproject.toml), and its variance-component fits (`MixedLM`) are REML/ML estimates, not this
balanced-design ANOVA estimator with its exact F test; adding a large dependency to compute a
different estimator was not worth it. The closed form above is a few lines, tested against
`scipy.stats.f_oneway`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.common import (
    SEED_COLUMNS,
    SEED_SOURCE_NAMES,
    SOURCES,
    as_list,
    groups,
    key_columns,
    ok_rows,
    parse_seed_sources,
    values,
)

CONFIDENCE = 0.95
SOURCE_ROWS = (*SOURCES, "sum_of_sources", "all", "none")  # rows when every source is separate
_SEED_OF = {**dict(zip(SOURCES, SEED_COLUMNS, strict=True)), "cv": "seed_cv"}
_SOURCE_OF = {column: source for source, column in _SEED_OF.items()}
NO_EFFECT = "no effect"


def variance_ci(x: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Chi-square interval for the variance of a normal sample (NaNs dropped).

    (NaN, NaN) with fewer than 2 values, or when every value is the same (s^2 = 0: the interval
    would be the single point 0)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2 or np.ptp(x) == 0:
        return float("nan"), float("nan")
    dof = n - 1
    s2 = float(np.var(x, ddof=1))
    alpha = 1.0 - confidence
    low = dof * s2 / stats.chi2.ppf(1 - alpha / 2, dof)
    high = dof * s2 / stats.chi2.ppf(alpha / 2, dof)
    return float(low), float(high)


def source_plan(sub: pd.DataFrame) -> tuple[list[tuple[str, ...]] | None, str]:
    """(groups of seed sources that reached these trials' training, "") from their `seed_sources`;
    (None, "") when the column is missing or null everywhere (every source separate, nothing
    known to have no effect); (None, why) when the trials disagree."""
    if "seed_sources" not in sub.columns or sub["seed_sources"].isna().all():
        return None, ""
    parsed = {tuple(parse_seed_sources(v)) for v in sub["seed_sources"].drop_duplicates()}
    if len(parsed) > 1:
        shown = sorted(",".join("+".join(g) for g in p) for p in parsed)
        return None, (
            f"not identifiable: the trials disagree on seed_sources ({' | '.join(shown)}); "
            "group by the column that separates them (model, mode, search)"
        )
    return list(parsed.pop()), ""


def _note(row: dict, text: str) -> None:
    row["note"] = f"{row['note']}; {text}" if row["note"] else text


def variance_by_source(
    df: pd.DataFrame,
    by: str | Iterable[str] | None = ("library",),
    metric: str = "accuracy",
    *,
    ci: bool = True,
    confidence: float = CONFIDENCE,
    n_resamples: int | None = None,  # noqa: ARG001 - accepted and ignored since 0.6.0: the CI
    seed: int | None = None,  # noqa: ARG001 - is the chi-square interval, not a bootstrap
) -> pd.DataFrame:
    """Per group and source: n, variance (with a chi-square CI), std, share of the all-varied
    variance.

    Rows per group: one per seed source varied alone (`split`, `order`, `init`; a merged group
    once under its joint name such as `order+init`; `cv` when the trials run a grid search and
    name it), `sum_of_sources` (their sum), `all` (varied together) and `none` (fixed seeds,
    repeated). A source the rows' `seed_sources` does not name keeps its row with no variance and
    the note "no effect". `identifiable` is False, and `note` says why, when a row cannot be
    estimated from the data (fewer than 2 trials, a seed column that never changes, no `all`
    trials to compare against, an all-varied variance of 0, or trials that disagree on
    `seed_sources`). The CI is NaN with fewer than 2 trials or when every trial gave the same
    value.
    """
    by = as_list(by)
    rows: list[dict] = []
    data = ok_rows(df, metric)
    if "varied" not in data.columns:
        raise KeyError("variance_by_source needs a 'varied' column (a seeds sweep)")
    for key, sub in groups(data, by):
        keys = key_columns(by, key)
        plan, problem = source_plan(sub)
        entries = _source_entries(plan)
        est: dict[str, dict] = {}
        for name, members in entries:
            if members is None:  # named nowhere in seed_sources: had no effect
                part = sub[sub["varied"] == name]
                est[name] = {"source": name, "n": len(part), "variance": np.nan,
                             "identifiable": False,
                             "note": f"{NO_EFFECT}: seed_{name} does not reach the training "
                                     "(seed_sources)"}  # fmt: skip
                continue
            # a merged group: the trials of its first member the sweep ran, and only those
            member = next((m for m in members if (sub["varied"] == m).any()), members[0])
            est[name] = _estimate(sub, name, member, metric, ci, confidence)
            if len(members) > 1 and est[name]["identifiable"]:
                _note(
                    est[name],
                    f"one random state from {' and '.join(members)}: the varied={member} trials",
                )
        for source in ("all", "none"):
            est[source] = _estimate(sub, source, source, metric, ci, confidence)
        effective = [est[name] for name, members in entries if members is not None]
        known = bool(effective) and all(r["identifiable"] for r in effective)
        est["sum_of_sources"] = {
            "source": "sum_of_sources",
            "n": sum(r["n"] for r in effective),
            "variance": sum(r["variance"] for r in effective) if known else np.nan,
            "identifiable": known,
            "note": "" if known else "not identifiable: a source is missing",
        }
        if problem:
            for row in est.values():
                if row["source"] not in ("all", "none"):
                    row.update(variance=np.nan, identifiable=False, note=problem)
                    row.pop("variance_ci_low", None)
                    row.pop("variance_ci_high", None)
        denominator = est["all"]
        order = [name for name, _ in entries] + ["sum_of_sources", "all", "none"]
        for source in order:
            row = est[source]
            share = np.nan
            if source != "none" and row["identifiable"]:
                if not denominator["identifiable"]:
                    _note(row, "share not identifiable: no all-varied variance")
                elif denominator["variance"] == 0:
                    _note(row, "share undefined: the all-varied variance is 0")
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


def _source_entries(
    plan: list[tuple[str, ...]] | None,
) -> list[tuple[str, tuple[str, ...] | None]]:
    """(row name, member sources) per source row, in the order split, order, init, cv; members
    None for a source of SOURCES that `plan` does not name (no effect)."""
    if plan is None:
        return [(s, (s,)) for s in SOURCES]
    named = {m for g in plan for m in g}
    entries = [("+".join(g), g) for g in plan]
    entries += [(s, None) for s in SOURCES if s not in named]
    rank = {s: i for i, s in enumerate(SEED_SOURCE_NAMES)}
    return sorted(entries, key=lambda e: rank[e[1][0] if e[1] else e[0]])


def _estimate(
    sub: pd.DataFrame, name: str, varied: str, metric: str, ci: bool, confidence: float
) -> dict:
    """The variance row of the trials with `varied == varied`, reported as `name`."""
    part = sub[sub["varied"] == varied]
    x = np.sort(values(part, metric))  # sorted: the last bit must not follow row order
    n = len(x)
    row = {"source": name, "n": n, "variance": np.nan, "identifiable": True, "note": ""}
    seed_column = _SEED_OF.get(varied)
    if n < 2:
        row.update(identifiable=False, note=f"not identifiable: {n} trial(s) (need 2)")
    elif seed_column is not None and (
        seed_column not in part.columns or part[seed_column].nunique() < 2
    ):
        row.update(
            identifiable=False,
            note=f"not identifiable: {seed_column} takes one value in these trials",
        )
    else:
        # constant values (bitwise repeatable runs) give exactly 0, not rounding residue
        row["variance"] = 0.0 if np.ptp(x) == 0 else float(np.var(x, ddof=1))
        if ci:
            row["variance_ci_low"], row["variance_ci_high"] = variance_ci(x, confidence)
            if row["variance"] == 0 and varied != "none":
                row["note"] = "no CI: every trial gave the same value"
    return row


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
        plan, problem = source_plan(sub)
        if problem:
            rows.extend(
                {**keys, "component": f, "identifiable": False, "note": problem} for f in factors
            )
            continue
        sub, used, skipped = _seed_factors(sub, factors, plan)
        rows.extend({**keys, **r} for r in skipped)
        rows.extend({**keys, **r} for r in _components(sub, used, metric))
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


def _seed_factors(
    sub: pd.DataFrame, factors: list[str], plan: list[tuple[str, ...]] | None
) -> tuple[pd.DataFrame, list[str], list[dict]]:
    """The factors as the training saw them: seed columns of one merged group become one factor
    (their combination, named like `seed_order+seed_init`), a seed column whose source had no
    effect is left out (a "no effect" row instead). Other factors, and every factor when `plan`
    is None (no seed_sources), stay as they are."""
    if plan is None:
        return sub, factors, []
    group_of = {m: g for g in plan for m in g}
    used: list[str] = []
    skipped: list[dict] = []
    done: set[str] = set()
    for f in factors:
        source = _SOURCE_OF.get(f)
        if source is None:
            used.append(f)
            continue
        if source not in group_of:
            skipped.append(
                {
                    "component": f,
                    "identifiable": False,
                    "note": f"{NO_EFFECT}: {f} does not reach the training (seed_sources)",
                }
            )
            continue
        members = [_SEED_OF[m] for m in group_of[source] if _SEED_OF[m] in factors]
        if f in done:
            continue
        done.update(members)
        if len(members) == 1:
            used.append(f)
            continue
        joint = "+".join(members)
        combined = sub[members].astype(str).agg("|".join, axis=1)
        sub = sub.assign(**{joint: combined})
        used.append(joint)
    return sub, used, skipped


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
