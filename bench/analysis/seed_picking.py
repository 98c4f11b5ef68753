"""The cost of picking a seed: train n seeds, keep the one that scores best on validation data,
report its score. How much does that overstate what the picked model really does?

**Design, without a new data split.** Each trial's stored test rows are cut into two fixed
halves by the dataset row number (`test_index`): a row is in half A when the top bit of
(test_index * 2654435761) mod 2^32 is 0 (Knuth's multiplicative hash), else in half B. The
partition is a property of the row, never of a trial, so trials with other split seeds use the
same rule, and it does not follow the dataset's own row order (a file sorted by class would make
a parity rule pick classes). The metric is computed on each half of each seed's rows.

**Picking.** For a subset of n seeds drawn uniformly without replacement from the N seeds of a
setup, the seed-picker keeps the seed with the highest half-A score (ties: one of the tied seeds
at random) and reports that half-A score; half B is what the picked model really does on rows it
was not picked on. The expectation over all C(N, n) subsets is exact, not resampled: sort the
seeds by their half-A score; the seed at rank r (1 = lowest) is the maximum of a random n-subset
with probability C(r - 1, n - 1) / C(N, n); tied seeds share the mean of their ranks'
probabilities (random tie-breaking). So E[reported] = sum_i w_i A_i and E[picked, held out] =
sum_i w_i B_i. Every quantity is computed both ways (pick on A and hold out B, pick on B and hold
out A) and averaged, so the halves' difference in difficulty cancels: at n = 1 everything is 0.

**Columns** (one row per setup and n, in metric units; `points` in the sentence are x100):
- `reported`: E[score of the best of n on the half it was picked on] (what a seed-picker writes);
- `picked_heldout`: E[that seed's score on the other half] (what it really gets);
- `honest`: the mean score of all seeds on a half (a random seed: the honest estimate);
- `inflation` = reported - picked_heldout: how much picking and reporting on the same data
  overstates the picked model, with a 95% bootstrap interval;
- `heldout_gain` = picked_heldout - honest: whether picking found a better model at all (about 0
  when seeds differ by luck only), with its interval;
- `same_half_inflation` = reported - honest: picking on the test rows and reporting them,
  against the honest estimate of a random seed.
Intervals: percentile bootstrap over seeds (`bench.analysis.bootstrap.ci`, paired: a seed keeps
both halves; seeded, so reproducible); an interval says how well N seeds pin the expectation.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from scipy.special import gammaln
from scipy.stats import rankdata

from bench.analysis import bootstrap
from bench.analysis.common import ok_rows, present, varying
from bench.analysis.ensemble import LABELS, setup_columns

SIZES: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
QUOTE_N = 20  # the n the quotable sentence names when the setup has that many seeds
MIN_SEEDS = 5
_HASH = 2654435761
COLUMNS = (
    "n", "n_seeds", "reported", "picked_heldout", "honest", "inflation", "inflation_ci_low",
    "inflation_ci_high", "heldout_gain", "heldout_gain_ci_low", "heldout_gain_ci_high",
    "same_half_inflation", "same_half_ci_low", "same_half_ci_high",
)  # fmt: skip


def half_a(test_index: np.ndarray) -> np.ndarray:
    """True for the rows in the validation half A (module docstring)."""
    h = (np.asarray(test_index, dtype=np.uint64) * np.uint64(_HASH)) & np.uint64(0xFFFFFFFF)
    return (h >> np.uint64(31)) == 0


def half_scores(sub: pd.DataFrame, metric: str = "accuracy") -> np.ndarray:
    """Seeds x 2: each trial's metric on half A and on half B of its test rows."""
    out = np.empty((len(sub), 2))
    for i, (index, y_true, y_pred) in enumerate(
        zip(sub["test_index"], sub["y_true"], sub["y_pred"], strict=True)
    ):
        a = half_a(index)
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        for j, rows in enumerate((a, ~a)):
            out[i, j] = _score(y_true[rows], y_pred[rows], metric)
    return out


def _score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    if metric == "accuracy":
        return float(np.mean(y_true == y_pred)) if len(y_true) else np.nan
    if metric == "balanced_accuracy":
        from sklearn.metrics import balanced_accuracy_score

        return float(balanced_accuracy_score(y_true, y_pred))
    raise ValueError(f"metric {metric!r}: seed picking computes accuracy or balanced_accuracy")


def max_weights(v: np.ndarray, n: int) -> np.ndarray:
    """P(seed i is the pick of a random n-subset), ties broken at random, along the last axis.

    Rank r (1-based, ascending) is the subset's maximum with probability C(r-1, n-1) / C(N, n);
    a tie group spanning ranks lo..hi shares the mean of those probabilities."""
    size = v.shape[-1]
    if not 1 <= n <= size:
        return np.full(v.shape, np.nan)
    r = np.arange(1, size + 1, dtype=float)
    log_p = np.full(size, -np.inf)
    ok = r >= n
    log_p[ok] = (
        gammaln(r[ok]) - gammaln(n) - gammaln(r[ok] - n + 1)
        - (gammaln(size + 1) - gammaln(n + 1) - gammaln(size - n + 1))
    )  # fmt: skip
    cumulative = np.concatenate([[0.0], np.cumsum(np.exp(log_p))])
    lo = rankdata(v, method="min", axis=-1).astype(int)
    hi = rankdata(v, method="max", axis=-1).astype(int)
    return (cumulative[hi] - cumulative[lo - 1]) / (hi - lo + 1)


def expectations(a: np.ndarray, b: np.ndarray, n: int, axis: int = -1) -> np.ndarray:
    """(reported, picked_heldout, honest) stacked on the first axis, averaged over both ways of
    picking; vectorised over leading axes (the bootstrap's resamples)."""
    a, b = np.moveaxis(np.asarray(a, float), axis, -1), np.moveaxis(np.asarray(b, float), axis, -1)
    wa, wb = max_weights(a, n), max_weights(b, n)
    reported = 0.5 * ((wa * a).sum(-1) + (wb * b).sum(-1))
    heldout = 0.5 * ((wa * b).sum(-1) + (wb * a).sum(-1))
    honest = 0.5 * (a.mean(-1) + b.mean(-1))
    return np.stack([reported, heldout, honest])


def _statistic(n: int, which: str):
    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        reported, heldout, honest = expectations(a, b, n, axis)
        return {"inflation": reported - heldout, "heldout_gain": heldout - honest,
                "same_half": reported - honest}[which]  # fmt: skip

    return stat


def one_setup(
    scores: np.ndarray, sizes: Iterable[int] = SIZES, n_resamples: int = 2000, seed: int = 0
) -> list[dict]:
    """Rows for one setup's seeds x 2 half scores (module docstring)."""
    a, b = scores[:, 0], scores[:, 1]
    rows = []
    for n in sorted({int(s) for s in sizes if 1 <= int(s) <= len(a)}):
        reported, heldout, honest = (float(x) for x in expectations(a, b, n))
        if n == 1:  # a random seed, by definition: exact zeros, not float residue
            reported = heldout = honest
        row = {"n": n, "n_seeds": len(a), "reported": reported, "picked_heldout": heldout,
               "honest": honest, "inflation": reported - heldout,
               "heldout_gain": heldout - honest, "same_half_inflation": reported - honest}  # fmt: skip
        for which, prefix in (("inflation", "inflation"), ("heldout_gain", "heldout_gain"),
                              ("same_half", "same_half")):  # fmt: skip
            if n == 1:  # exactly 0 by construction: no interval needed
                low = high = 0.0
            else:
                low, high = bootstrap.ci([a, b], _statistic(n, which), paired=True,
                                         n_resamples=n_resamples, method="percentile", seed=seed)  # fmt: skip
            row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = low, high
        rows.append(row)
    return rows


def seed_picking(
    df: pd.DataFrame,
    sizes: Iterable[int] = SIZES,
    metric: str = "accuracy",
    n_resamples: int = 2000,
    min_seeds: int = MIN_SEEDS,
) -> pd.DataFrame:
    """Inflation of best-of-n seed picking per setup and n (module docstring). Setups with fewer
    than `min_seeds` seeds, or without stored predictions, are listed in `attrs["left_out"]`."""
    data = ok_rows(df)
    setup = setup_columns(data)
    shown = [c for c in setup if c in LABELS or c in varying(data, setup)]
    rows, left_out = [], []
    needed = {"test_index", "y_true", "y_pred"}
    for key, sub in data.groupby(setup, sort=True, dropna=False) if setup else [((), data)]:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(setup, key, strict=True))
        label = ", ".join(f"{c}={where[c]}" for c in shown)
        if not needed <= set(sub.columns) or sub[list(needed)].isna().any().any():
            left_out.append(f"{label}: no stored test predictions (predictions=none)")
            continue
        if len(sub) < min_seeds:
            left_out.append(f"{label}: {len(sub)} seeds, fewer than {min_seeds}")
            continue
        scores = half_scores(sub.sort_values(present(sub, ("trial_key",))), metric)
        for row in one_setup(scores, sizes, n_resamples):
            rows.append({**{c: where[c] for c in shown}, **row})
    out = pd.DataFrame(rows, columns=[*shown, *COLUMNS])
    out.attrs["left_out"] = left_out
    return out


def sentence(table: pd.DataFrame, metric: str = "accuracy", n: int = QUOTE_N) -> str:
    """The finding in one quotable sentence, for one setup's rows (n = 20, else the largest)."""
    rows = table[table["n"] <= n]
    r = rows.loc[rows["n"].idxmax()]
    pts = 100.0

    def ci(prefix: str) -> str:
        return f"95% CI {pts * r[prefix + '_ci_low']:.1f} to {pts * r[prefix + '_ci_high']:.1f}"

    gain = pts * r["heldout_gain"]
    return (
        f"Picking the best of {int(r['n'])} seeds on validation data and reporting its validation "
        f"score overstates {metric.replace('_', ' ')} by {pts * r['inflation']:.1f} points "
        f"({ci('inflation')}); on held-out data the picked seed scores {abs(gain):.1f} points "
        f"{'above' if gain >= 0 else 'below'} a random seed ({ci('heldout_gain')})."
    )
