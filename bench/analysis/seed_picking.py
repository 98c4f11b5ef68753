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
- `half_rows`: the mean number of test rows in one half (the validation size);
- `note`: why a row has no interval.
Intervals: percentile bootstrap over seeds (paired: a seed keeps both halves; seeded, so
reproducible; the three statistics from one set of resamples); an interval says how well N seeds
pin the expectation. **Only for n <= N/4**: the expectation of a best-of-n leans on the top
n/N of the seeds, and a percentile bootstrap of a statistic near the sample maximum undercovers
(simulated: 78-85% at N = 20 for n = 2..20, 87% at N = 200, n = 100); beyond N/4 the row keeps
its point estimates and says "no interval: n > N/4". Run at least 4n seeds for an interval at n.
With the rule the intervals are closer, not exact: simulated 92.5% at N = 20, n = 5 and 90% at
N = 40, n = 10 (docs/ensembles-and-seed-picking.md).

**Left out, with the reason** (`attrs["left_out"]`): setups without stored predictions, setups
whose seeds do not vary (`varied=none`: every pick is the same model), seeds whose half scores
are not finite (a half with no test rows), and setups with fewer than `min_seeds` seeds left.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import gammaln
from scipy.stats import rankdata

from bench.analysis.common import SEED_COLUMNS, ok_rows, present, varying
from bench.analysis.ensemble import LABELS, setup_columns

SIZES: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100)
QUOTE_N = 20  # the n the quotable sentence names when the setup has an interval there
MIN_SEEDS = 5
INTERVAL_SHARE = 4  # intervals only for n <= N / INTERVAL_SHARE (module docstring)
NO_INTERVAL = f"no interval: n > N/{INTERVAL_SHARE}"
_HASH = 2654435761
COLUMNS = (
    "n", "n_seeds", "reported", "picked_heldout", "honest", "inflation", "inflation_ci_low",
    "inflation_ci_high", "heldout_gain", "heldout_gain_ci_low", "heldout_gain_ci_high",
    "same_half_inflation", "same_half_ci_low", "same_half_ci_high", "half_rows", "note",
)  # fmt: skip


def half_a(test_index: np.ndarray) -> np.ndarray:
    """True for the rows in the validation half A (module docstring)."""
    h = (np.asarray(test_index, dtype=np.uint64) * np.uint64(_HASH)) & np.uint64(0xFFFFFFFF)
    return (h >> np.uint64(31)) == 0


def half_scores(sub: pd.DataFrame, metric: str = "accuracy") -> np.ndarray:
    """Seeds x 2: each trial's metric on half A and on half B of its test rows (NaN for a half
    without rows)."""
    out = np.empty((len(sub), 2))
    for i, (index, y_true, y_pred) in enumerate(
        zip(sub["test_index"], sub["y_true"], sub["y_pred"], strict=True)
    ):
        a = half_a(index)
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        for j, rows in enumerate((a, ~a)):
            out[i, j] = _score(y_true[rows], y_pred[rows], metric)
    return out


def half_rows(sub: pd.DataFrame) -> float:
    """The mean number of test rows in one half (half of each seed's test rows, averaged)."""
    return float(np.mean([len(i) for i in sub["test_index"]]) / 2)


def _score(y_true: np.ndarray, y_pred: np.ndarray, metric: str) -> float:
    if metric not in ("accuracy", "balanced_accuracy"):
        raise ValueError(f"metric {metric!r}: seed picking computes accuracy or balanced_accuracy")
    if not len(y_true):
        return float("nan")
    if metric == "accuracy":
        return float(np.mean(y_true == y_pred))
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


def _statistic(n: int) -> Callable[..., np.ndarray]:
    """(inflation, heldout_gain, same_half) stacked on the first axis: one vector statistic, so
    the bootstrap computes the expectations once per resample."""

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        reported, heldout, honest = expectations(a, b, n, axis)
        return np.stack([reported - heldout, heldout - honest, reported - honest])

    return stat


def _intervals(a: np.ndarray, b: np.ndarray, n: int, n_resamples: int, seed: int) -> np.ndarray:
    """3 x (low, high): paired percentile bootstrap over seeds of `_statistic(n)`, the pairs in a
    canonical order first (the result never depends on the order of the rows)."""
    order = np.lexsort((b, a))
    a, b = a[order], b[order]
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        point = _statistic(n)(a, b)
        return np.stack([point, point], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            (a, b), _statistic(n), n_resamples=n_resamples, vectorized=True, paired=True,
            confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed),
        )  # fmt: skip
    ci = result.confidence_interval
    return np.stack([np.asarray(ci.low, float), np.asarray(ci.high, float)], axis=1)


def one_setup(
    scores: np.ndarray,
    sizes: Iterable[int] = SIZES,
    n_resamples: int = 2000,
    seed: int = 0,
    rows_per_half: float = float("nan"),
) -> list[dict]:
    """Rows for one setup's seeds x 2 half scores (module docstring); intervals for n <= N/4."""
    a, b = scores[:, 0], scores[:, 1]
    rows = []
    for n in sorted({int(s) for s in sizes if 1 <= int(s) <= len(a)}):
        reported, heldout, honest = (float(x) for x in expectations(a, b, n))
        if n == 1:  # a random seed, by definition: exact zeros, not float residue
            reported = heldout = honest
        row = {"n": n, "n_seeds": len(a), "reported": reported, "picked_heldout": heldout,
               "honest": honest, "inflation": reported - heldout,
               "heldout_gain": heldout - honest, "same_half_inflation": reported - honest,
               "half_rows": rows_per_half, "note": ""}  # fmt: skip
        if n == 1:  # exactly 0 by construction: no interval needed
            bounds = np.zeros((3, 2))
        elif n * INTERVAL_SHARE > len(a):
            bounds, row["note"] = np.full((3, 2), np.nan), NO_INTERVAL
        else:
            bounds = _intervals(a, b, n, n_resamples, seed)
        for prefix, (low, high) in zip(
            ("inflation", "heldout_gain", "same_half"), bounds, strict=True
        ):
            row[f"{prefix}_ci_low"], row[f"{prefix}_ci_high"] = float(low), float(high)
        rows.append(row)
    return rows


def seed_picking(
    df: pd.DataFrame,
    sizes: Iterable[int] = SIZES,
    metric: str = "accuracy",
    n_resamples: int = 2000,
    min_seeds: int = MIN_SEEDS,
) -> pd.DataFrame:
    """Inflation of best-of-n seed picking per setup and n (module docstring). What is left out
    (setups without predictions or with seeds that do not vary, seeds with a non-finite half
    score, setups with fewer than `min_seeds` seeds) is listed in `attrs["left_out"]`."""
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
        if not _seeds_vary(sub, where):
            left_out.append(f"{label}: the seeds do not vary (varied=none): nothing to pick from")
            continue
        sub = sub.sort_values(present(sub, ("trial_key",)))
        scores = half_scores(sub, metric)
        finite = np.isfinite(scores).all(axis=1)
        if not finite.all():
            left_out.append(
                f"{label}: {int((~finite).sum())} of {len(sub)} seeds left out: a half score is "
                "not finite (a half without test rows)"
            )
            sub, scores = sub[finite], scores[finite]
        if len(sub) < min_seeds:
            left_out.append(f"{label}: {len(sub)} seeds, fewer than {min_seeds}")
            continue
        for row in one_setup(scores, sizes, n_resamples, rows_per_half=half_rows(sub)):
            rows.append({**{c: where[c] for c in shown}, **row})
    out = pd.DataFrame(rows, columns=[*shown, *COLUMNS])
    out.attrs["left_out"] = left_out
    return out


def _seeds_vary(sub: pd.DataFrame, where: dict) -> bool:
    """False for `varied=none`, or when every row has the same seeds."""
    if str(where.get("varied", "")) == "none":
        return False
    seeds = present(sub, (*SEED_COLUMNS, "seed_cv"))
    return not seeds or len(sub[seeds].drop_duplicates()) > 1


def sentence(table: pd.DataFrame, metric: str = "accuracy", n: int = QUOTE_N) -> str:
    """The finding in one quotable sentence, for one setup's rows: the largest n <= `n` (n >= 2)
    with an interval, else the largest n <= `n` (its point estimates, said to have none)."""
    rows = table[table["n"] <= n]
    with_ci = rows[(rows["n"] >= 2) & (rows["note"] != NO_INTERVAL)] if "note" in rows else rows
    r = (with_ci if len(with_ci) else rows).sort_values("n").iloc[-1]
    pts = 100.0

    def ci(prefix: str) -> str:
        if r.get("note") == NO_INTERVAL:
            return NO_INTERVAL
        return f"95% CI {pts * r[prefix + '_ci_low']:.1f} to {pts * r[prefix + '_ci_high']:.1f}"

    gain = pts * r["heldout_gain"]
    size = r.get("half_rows", float("nan"))
    on = f"{size:.0f} validation rows" if np.isfinite(size) else "validation data"
    return (
        f"Picking the best of {int(r['n'])} seeds on {on} and reporting its validation "
        f"score overstates {metric.replace('_', ' ')} by {pts * r['inflation']:.1f} points "
        f"({ci('inflation')}); on held-out data the picked seed scores {abs(gain):.1f} points "
        f"{'above' if gain >= 0 else 'below'} a random seed ({ci('heldout_gain')})."
    )
