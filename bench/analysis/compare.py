"""Is the gap between two groups (libraries, devices, model versions) bigger than seed noise?

For groups A and B of trials (rows where `column == a` and `column == b`), per group of `by`:

- `diff` = mean(A) - mean(B), with a two-sided bootstrap CI (`bench.analysis.bootstrap`). When the
  two groups pair up one-to-one on their seeds and settings (`paired`; the default `"auto"` pairs
  when that is possible), the CI resamples the matched pairs together, which removes the variation
  the two share (the same split makes both easier or harder).
- `prob_a_better` = P(A > B) on a random draw of seeds: paired, the fraction of matched seeds where
  A scored strictly higher; unpaired, the fraction of all (A, B) combinations where A scored higher,
  i.e. the common-language effect size, computed from the Mann-Whitney U statistic of
  `scipy.stats.mannwhitneyu` (U / (n_A n_B) counts ties as one half; the tie share is taken out).
  `prob_tie` is the chance of an exact tie (frequent for accuracy on a small test set).
- `noise_std` = sqrt((var(A) + var(B)) / 2): the seed-to-seed standard deviation of one run, pooled
  over the two groups (ddof=1).
- `verdict`: "exceeds seed noise" when the CI of `diff` excludes 0 *and* |diff| is larger than
  `noise_multiple` (default 1) times `noise_std`; otherwise "within seed noise". The first condition
  says the difference of means is resolved by the seeds run, the second that it is larger than the
  change one retrain with another seed typically makes, so a single run of each would usually show
  it. `reason` gives the numbers behind the verdict.

Pass rows whose seeds vary (the `varied == "all"` trials of a seeds sweep, or one varied source at
a time with `by="varied"`): on fixed-seed repeats the spread is implementation noise, not seed noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis import bootstrap
from bench.analysis.churn import default_match, matched_pairs, unpaired_reason
from bench.analysis.common import as_list, groups, key_columns, ok_rows, values

EXCEEDS = "exceeds seed noise"
WITHIN = "within seed noise"
TOO_FEW = "too few trials"

COMPARE_COLUMNS = (
    "n_a",
    "n_b",
    "mean_a",
    "mean_b",
    "std_a",
    "std_b",
    "diff",
    "diff_ci_low",
    "diff_ci_high",
    "paired",
    "n_pairs",
    "prob_a_better",
    "prob_tie",
    "noise_std",
    "verdict",
    "reason",
)


def prob_greater(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(P(X > Y), P(X = Y)) for independent draws X from `x` and Y from `y` (all combinations)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0 or len(y) == 0:
        return float("nan"), float("nan")
    u = stats.mannwhitneyu(x, y, alternative="two-sided").statistic  # #(x > y) + #(x == y) / 2
    tie = float(np.mean(x[:, None] == y[None, :]))
    return float(u / (len(x) * len(y)) - tie / 2), tie


def compare_samples(
    a: np.ndarray,
    b: np.ndarray,
    *,
    paired: bool = False,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    noise_multiple: float = 1.0,
    seed: int | None = bootstrap.SEED,
) -> dict[str, object]:
    """The comparison of two samples of a metric (a[i] pairs with b[i] when `paired`)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    # one canonical order (pairs jointly), so that no number, down to the last bit of a mean,
    # depends on the order in which the trials finished
    if paired:
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
    else:
        a, b = np.sort(a), np.sort(b)
    n_a, n_b = len(a), len(b)
    nan = float("nan")
    out: dict[str, object] = {
        "n_a": n_a,
        "n_b": n_b,
        "mean_a": float(a.mean()) if n_a else nan,
        "mean_b": float(b.mean()) if n_b else nan,
        "std_a": float(a.std(ddof=1)) if n_a > 1 else nan,
        "std_b": float(b.std(ddof=1)) if n_b > 1 else nan,
        "paired": paired,
        "n_pairs": n_a if paired else 0,
    }
    out["diff"] = out["mean_a"] - out["mean_b"]
    kw = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed}
    if paired:
        d = a - b
        low, high = bootstrap.ci(d, bootstrap.mean, **kw)
        p_better, p_tie = float(np.mean(d > 0)), float(np.mean(d == 0))
    else:
        low, high = bootstrap.ci([a, b], bootstrap.mean_difference, **kw)
        p_better, p_tie = prob_greater(a, b)
    noise = float(np.sqrt((out["std_a"] ** 2 + out["std_b"] ** 2) / 2))
    out.update(
        diff_ci_low=low, diff_ci_high=high, prob_a_better=p_better, prob_tie=p_tie, noise_std=noise
    )
    out["verdict"], out["reason"] = _verdict(out, confidence, noise_multiple)
    return out


def _verdict(r: dict, confidence: float, noise_multiple: float) -> tuple[str, str]:
    if r["n_a"] < 2 or r["n_b"] < 2:
        return TOO_FEW, f"need at least 2 trials per group, have {r['n_a']} and {r['n_b']}"
    diff, low, high, noise = r["diff"], r["diff_ci_low"], r["diff_ci_high"], r["noise_std"]
    level = f"{confidence:.0%}"
    numbers = (
        f"difference {diff:+.4f} ({level} CI {low:+.4f} to {high:+.4f}), "
        f"seed-noise std {noise:.4f}, P(A>B) {r['prob_a_better']:.2f}"
    )
    resolved = low > 0 or high < 0
    larger = abs(diff) > noise_multiple * noise
    if resolved and larger:
        return EXCEEDS, f"{numbers}: the CI excludes 0 and |difference| > {noise_multiple:g} std"
    if not resolved:
        return WITHIN, f"{numbers}: the CI includes 0"
    return WITHIN, f"{numbers}: the CI excludes 0 but |difference| <= {noise_multiple:g} std"


def _one_to_one(pairs: pd.DataFrame, n_a: int, n_b: int) -> bool:
    if "trial_key_a" not in pairs.columns:
        return False
    return (
        len(pairs) == n_a == n_b
        and pairs["trial_key_a"].is_unique
        and pairs["trial_key_b"].is_unique
        and n_a >= 2
    )


def compare(
    df: pd.DataFrame,
    column: str,
    a: object,
    b: object,
    metric: str = "accuracy",
    by: str | Iterable[str] | None = None,
    *,
    paired: bool | str = "auto",
    match: Sequence[str] | None = None,
    confidence: float = bootstrap.CONFIDENCE,
    n_resamples: int = bootstrap.N_RESAMPLES,
    noise_multiple: float = 1.0,
    seed: int | None = bootstrap.SEED,
) -> pd.DataFrame:
    """Compare rows with `column == a` against rows with `column == b`, one result row per group
    of `by`. `paired`: True, False or "auto" (pair when the groups match one-to-one on `match`,
    by default every setup column except `column`)."""
    by = as_list(by)
    data = ok_rows(df, metric)
    rows = []
    for key, sub in groups(data[data[column].isin([a, b])], by):
        xa = sub[sub[column] == a]
        xb = sub[sub[column] == b]
        if xa.empty or xb.empty:
            continue  # this group holds only one side: nothing to compare
        use_pairs = False
        if paired is not False:
            used = match or default_match(sub, column)
            pairs = matched_pairs(sub, column, a, b, match=used, metric=metric)
            use_pairs = _one_to_one(pairs, len(xa), len(xb))
            if paired is True and not use_pairs:
                raise ValueError(
                    f"paired=True but the {a!r} and {b!r} rows do not match one-to-one "
                    f"({len(pairs)} pairs for {len(xa)} and {len(xb)} rows)"
                )
        if use_pairs:
            va, vb = pairs[f"{metric}_a"].to_numpy(float), pairs[f"{metric}_b"].to_numpy(float)
        else:
            va, vb = values(xa, metric), values(xb, metric)
        result = compare_samples(
            va,
            vb,
            paired=use_pairs,
            confidence=confidence,
            n_resamples=n_resamples,
            noise_multiple=noise_multiple,
            seed=seed,
        )
        if paired is not False and not use_pairs:  # say why, never fall back silently
            why = unpaired_reason(sub, column, a, b, used) or (
                f"{len(pairs)} pairs for {len(xa)} and {len(xb)} rows: not one-to-one"
            )
            result["reason"] = f"{result['reason']}; unpaired: {why}"
        rows.append({"a": a, "b": b, **key_columns(by, key), "metric": metric, **result})
    return pd.DataFrame(rows, columns=["a", "b", *by, "metric", *COMPARE_COLUMNS])


def compare_levels(
    df: pd.DataFrame,
    column: str,
    metric: str = "accuracy",
    by: str | Iterable[str] | None = None,
    **kwargs: object,
) -> pd.DataFrame:
    """`compare` for every pair of levels of `column` (in sorted order), concatenated."""
    levels = sorted(ok_rows(df, metric)[column].dropna().unique().tolist(), key=str)
    tables = [
        compare(df, column, a, b, metric=metric, by=by, **kwargs)  # type: ignore[arg-type]
        for a, b in itertools.combinations(levels, 2)
    ]
    tables = [t for t in tables if len(t)]
    if not tables:
        return pd.DataFrame(columns=["a", "b", *as_list(by), "metric", *COMPARE_COLUMNS])
    return pd.concat(tables, ignore_index=True)
