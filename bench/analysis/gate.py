"""The regression gate: is a candidate run worse than its baseline, beyond seed noise?

A retrained model differs from the deployed one by seed noise even when nothing is wrong, so a
single-number comparison either raises false alarms or misses regressions. The gate compares two
runs *over their seeds*: each run is several trials of one setup with different seeds, and the
question is about the difference of their means, Delta = mean(candidate) - mean(baseline).

**Intervals.** Per metric (accuracy, balanced accuracy, ...) and per class (the recall of every
true class, from each trial's `y_true` / `y_pred`), the gate gives Delta and a two-sided interval
at `confidence` (default 0.95; alpha = 1 - confidence):

- *paired* when the two runs used the same seeds and splits (trials matched one-to-one on
  `seed_split`, `seed_order`, `seed_init` with identical `test_index`; `pair_trials`): Student's
  t interval of the per-pair differences (`scipy.stats.ttest_1samp`). The split, which moves both
  versions alike, cancels out, so far fewer seeds decide.
- *unpaired* otherwise: Welch's t interval of the difference of means
  (`scipy.stats.ttest_ind(equal_var=False)`).

**p of no drop.** Each item also gets a one-sided p-value of "no drop" (H0: Delta >= 0 against
Delta < 0): the larger of the t test's (the same test as the interval) and an exact permutation
test's (`permutation_p`). If the update changes nothing, a pair's two trials are exchangeable
(paired: each difference is as likely negative as positive) and so are all trials of both runs
(unpaired), so relabelling them gives the statistic's distribution under no change, whatever the
metric's distribution. The t test alone is not enough: metrics and above all the recall of a rare
class move in coarse steps (one test row of 61 is 0.016), and a few pairs that all moved by the
same step, or nearly, give a t interval of almost no width and a t p-value of almost 0, where the
chance of n pairs all dropping is 0.5^n. The maximum of two p-values of which one is valid is
valid; the permutation test also sets the floor: with n pairs no p is below 0.5^n, unpaired none
below 1 / C(n_b + n_c, n_b) (`smallest_p`).

**Verdict rule**, per item, with `margin` m >= 0 (default 0.01: one point of accuracy, the drop
the team tolerates), [L, U] the interval, first match wins:

1. `better`: L > 0.
2. `not worse`: L > -m (non-inferior: a drop larger than the margin is ruled out).
3. `worse`: the Holm-adjusted `p_drop` < alpha/2. Holm's step-down runs over the *family* of
   every metric and every class, so that the chance of any `worse` when the update changes
   nothing (every Delta = 0) is at most alpha/2 (2.5% at the default), however many metrics and
   classes are checked. With one item this is U < 0 and the permutation p < alpha/2.
4. `inconclusive`: otherwise; `more_seeds` says roughly how many seeds per run would decide it.

A drop that is resolved but ruled out to exceed the margin is `not worse`: the margin is what the
gate forgives. The run's verdict: `worse` if any metric or any class is `worse` (a class whose
recall drops beyond seed noise fails the gate even when accuracy holds); else `better` if every
metric is; else `not worse` if every metric is better or not worse (each at its own one-sided
alpha/2: an intersection-union test, no correction needed); else `inconclusive`. Exit codes:
`EXIT_CODES` (0 pass, 1 worse, 3 inconclusive; 2 is bad input, before any statistics).

**Too few seeds, constant differences.** When the runs are too small for any relabelling to reach
alpha/2 (`smallest_p` >= alpha/2; at the default 0.95: fewer than 6 pairs, or unpaired 3 + 3
seeds or fewer), no interval is claimed: it is (-inf, inf), and the item is `inconclusive` however its
values fell. Larger runs where every difference is the same (paired, e.g. a candidate identical
to the baseline), or both runs have a constant value, get the interval of that difference alone:
the exact sign-flip (paired) or relabelling (unpaired) test, inverted, excludes every other
Delta, and its p of no drop is 0.5^n (paired) or 1 / C(n_b + n_c, n_b) (unpaired) for a constant
drop.

**More seeds.** For an inconclusive metric, from its observed difference d and per-seed spread s
(paired: the SD of the differences; unpaired: sqrt(s_b^2 + s_c^2), seeds split evenly), the
smallest n per run whose interval half-width t * s / sqrt(n) would clear the nearest boundary
that decides it: d + m (then `not worse`) or -d (then `worse`, at Holm's strictest level,
alpha / (2 * family size)), and at which a permutation test could reach that level at all
(`seeds_to_reach`). It assumes d and s stay as observed: an estimate, not a promise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from math import ceil, comb, isfinite, sqrt

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.churn import INDEX, PRED
from bench.analysis.common import EXECUTION_COLUMNS, SEED_COLUMNS, ok_rows
from bench.analysis.pairing import Pairing, pair_trials
from bench.analysis.per_class import per_class_accuracy

BETTER, NOT_WORSE, WORSE, INCONCLUSIVE = "better", "not worse", "worse", "inconclusive"
VERDICTS = (BETTER, NOT_WORSE, WORSE, INCONCLUSIVE)
# What a CI pipeline reads: 0 pass, 1 fail, 3 undecided. 2 is bad input (the command's own
# refusals, as for every bench command), given before any statistics.
EXIT_CODES = {BETTER: 0, NOT_WORSE: 0, WORSE: 1, INCONCLUSIVE: 3}
BAD_INPUT = 2
METRICS = ("accuracy", "balanced_accuracy")  # the default; any higher-is-better column works
MARGIN = 0.01
CONFIDENCE = 0.95
MAX_SEEDS = 10_000_000  # beyond this the estimate says "more than"
_TINY = 1e-12  # a mean difference this small is 0 (sums of the same values in another order)
_DECIMALS = 12
_TIES = 1e-9  # relabelled sums this close to the observed one are ties (counted as extreme)
EXACT_HALF = 14  # permutation tests enumerate every relabelling up to 2 x 14 trials (pairs)
N_RESAMPLES = 9999  # beyond that, this many random relabellings: p = (k + 1) / (9999 + 1)
SEED = 0  # drawn from a fixed seed: the same runs, the same answer


@dataclass(frozen=True)
class Difference:
    """One metric's or class's comparison: Delta = candidate - baseline and its interval."""

    name: str  # the metric, or "class <k>"
    n_baseline: int
    n_candidate: int
    mean_baseline: float
    mean_candidate: float
    diff: float
    low: float
    high: float
    p_drop: float  # one-sided p-value of H0: Delta >= 0 (no drop): t and permutation tests'
    spread: float  # per-seed SD behind the interval (see the module docstring), NaN if unknown
    paired: bool
    p_adjusted: float = float("nan")  # Holm over the family of metrics and classes
    verdict: str = INCONCLUSIVE
    seeds_needed: int | None = None  # per run, to decide an inconclusive item
    rows: float = float("nan")  # classes: test rows of the class per trial (mean)


@dataclass(frozen=True)
class Answer:
    """The fields both gates' answers (labelled: GateResult; label-free: gate_churn.ChurnGate)
    begin with, and what they offer from them and their `seeds_needed`."""

    verdict: str
    paired: bool
    pairing: str
    n_baseline: int
    n_candidate: int
    n_pairs: int

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def more_seeds(self) -> int | None:
        """Seeds to add to each run (to the smaller one, unpaired) to decide."""
        if self.seeds_needed is None:
            return None
        now = self.n_pairs if self.paired else min(self.n_baseline, self.n_candidate)
        return max(1, self.seeds_needed - now)


@dataclass(frozen=True)
class GateResult(Answer):
    """The gate's answer for two runs."""

    confidence: float
    margin: float
    metrics: list[Difference]
    classes: list[Difference] = field(default_factory=list)
    seeds_needed: int | None = None  # per run, to decide every inconclusive metric
    mode: str = "labelled"

    @property
    def flagged(self) -> list[Difference]:
        """Classes whose recall drops beyond seed noise."""
        return [c for c in self.classes if c.verdict == WORSE]


def _sorted(x: Sequence[float]) -> np.ndarray:
    """One canonical order: no mean depends on the order in which trials finished."""
    return np.sort(np.asarray(x, dtype=float))


def smallest_p(n_baseline: int, n_candidate: int, paired: bool) -> float:
    """1 / the number of distinct relabellings: the least p a permutation test can give (paired:
    `n_baseline` pairs, each swapped or not)."""
    count = 2**n_baseline if paired else comb(n_baseline + n_candidate, n_baseline)
    return 1.0 / count


def seeds_to_reach(level: float, paired: bool) -> int:
    """Seeds per run (equal runs; pairs) from which a permutation test can give p < `level`."""
    n = 2
    while smallest_p(n, n, paired) >= level:
        n += 1
    return n


@lru_cache(maxsize=32)
def _subsets(size: int) -> np.ndarray:
    """Every subset of `size` items as rows of 0/1 (2^size x size)."""
    return ((np.arange(2**size)[:, None] >> np.arange(size)) & 1).astype(float)


def _count_at_most(a: np.ndarray, b: np.ndarray, bound: float) -> int:
    """How many (x, y) with x in `a`, y in `b` have x + y <= bound."""
    return int(np.searchsorted(np.sort(b), bound - a, side="right").sum())


def permutation_p(baseline: Sequence[float], candidate: Sequence[float], *, paired: bool) -> float:
    """One-sided p of no drop by an exact permutation test: the share of relabellings whose
    candidate-minus-baseline statistic is at most the observed one (ties count, so the p errs
    high). Paired: every difference's sign flipped or not (the statistic: the sum of the
    differences); unpaired: every choice of which pooled trials are the candidate's (the sum of
    the candidate's, which orders the difference of means alike). Every relabelling is counted
    up to 2 x EXACT_HALF trials (pairs), by halves (meet in the middle); beyond, N_RESAMPLES
    random ones from SEED (p = (k + 1) / (N_RESAMPLES + 1), still valid)."""
    b = np.asarray(baseline, dtype=float)
    c = np.asarray(candidate, dtype=float)
    k = len(c)
    # In one canonical order (random relabellings are drawn by position).
    values = _sorted(c - b) if paired else np.concatenate([_sorted(c), _sorted(b)])
    observed = float(values.sum() if paired else values[:k].sum())
    bound = observed + _TIES
    n = len(values)
    half = n // 2
    if n - half <= EXACT_HALF:
        lo, hi = values[:half], values[half:]
        bits_lo, bits_hi = _subsets(half), _subsets(n - half)
        if paired:  # a sign per difference: +x where the bit is 0, -x where it is 1
            count = _count_at_most((1 - 2 * bits_lo) @ lo, (1 - 2 * bits_hi) @ hi, bound)
            return count / 2**n
        size_lo, size_hi = bits_lo.sum(axis=1), bits_hi.sum(axis=1)
        sums_lo, sums_hi = bits_lo @ lo, bits_hi @ hi
        count = 0
        for j in range(max(0, k - (n - half)), min(k, half) + 1):
            count += _count_at_most(sums_lo[size_lo == j], sums_hi[size_hi == k - j], bound)
        return count / comb(n, k)
    rng = np.random.default_rng(SEED)
    if paired:
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(N_RESAMPLES, n))
        sums = signs @ values
    else:
        shuffled = rng.permuted(np.broadcast_to(values, (N_RESAMPLES, n)), axis=1)
        sums = shuffled[:, :k].sum(axis=1)
    return (int(np.count_nonzero(sums <= bound)) + 1) / (N_RESAMPLES + 1)


def difference(
    baseline: Sequence[float],
    candidate: Sequence[float],
    *,
    paired: bool,
    confidence: float = CONFIDENCE,
    name: str = "",
) -> Difference:
    """Delta = mean(candidate) - mean(baseline) with its two-sided interval and one-sided p-value
    of no drop (module docstring); `paired`: baseline[i] pairs with candidate[i]."""
    # Rounded to 12 decimals: metrics are ratios of counts, and 0.97 - 0.96 and 0.96 - 0.95
    # differ in their last bits; unrounded, equal differences would look like a tiny spread.
    b = np.round(np.asarray(baseline, dtype=float), _DECIMALS)
    c = np.round(np.asarray(candidate, dtype=float), _DECIMALS)
    inf, nan = float("inf"), float("nan")
    if paired:
        d = _sorted(np.round(c - b, _DECIMALS))
        n_b = n_c = len(d)
        diff = float(d.mean()) if len(d) else nan
        spread = float(d.std(ddof=1)) if len(d) > 1 else nan
        constant = len(d) > 1 and np.ptp(d) == 0
        mean_b, mean_c = float(_sorted(b).mean()), float(_sorted(c).mean())
    else:
        b, c = _sorted(b), _sorted(c)
        n_b, n_c = len(b), len(c)
        mean_b = float(b.mean()) if n_b else nan
        mean_c = float(c.mean()) if n_c else nan
        diff = mean_c - mean_b
        var = (b.var(ddof=1) if n_b > 1 else nan) + (c.var(ddof=1) if n_c > 1 else nan)
        spread = float(np.sqrt(var))
        constant = n_b > 1 and n_c > 1 and np.ptp(b) == 0 and np.ptp(c) == 0
    if abs(diff) < _TINY:
        diff = 0.0
    if min(n_b, n_c) < 2:  # no spread to judge by
        return Difference(name, n_b, n_c, mean_b, mean_c, diff, -inf, inf, 1.0, spread, paired)
    if constant:  # t has nothing to say; the exact test excludes every other difference
        spread = 0.0  # (not the last bits of a mean of equal values)
        low = high = diff
        p_t = 0.0 if diff < 0 else 1.0
    else:
        # scipy warns of "catastrophic cancellation" when one run's values are all equal (a
        # class every seed gets right): Welch's interval then rests on the other run's spread,
        # which is what it should do.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            test = stats.ttest_1samp(d, 0.0) if paired else stats.ttest_ind(c, b, equal_var=False)
            low, high = test.confidence_interval(confidence)
            p_t = stats.t.cdf(test.statistic, test.df)  # one-sided, alternative "less"
    if smallest_p(n_b, n_c, paired) >= (1 - confidence) / 2:
        low, high = -inf, inf  # no relabelling test could exclude anything: claim no interval
    p = max(float(p_t), permutation_p(b, c, paired=paired) if p_t < 1 else 1.0)
    return Difference(
        name=name, n_baseline=n_b, n_candidate=n_c, mean_baseline=mean_b, mean_candidate=mean_c,
        diff=diff, low=float(low), high=float(high), p_drop=p, spread=spread, paired=paired,
    )  # fmt: skip


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control under any dependence):
    the i-th smallest p times (m - i + 1), made monotone, capped at 1. scipy.stats has only the
    false-discovery-rate corrections (`false_discovery_control`)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out = np.empty(m)
    out[order] = scaled
    return out


def verdict_of(item: Difference, margin: float, confidence: float) -> str:
    """The verdict rule of the module docstring, for one item whose `p_adjusted` is set."""
    if item.low > 0:
        return BETTER
    if item.low > -margin:
        return NOT_WORSE
    if item.p_adjusted < (1 - confidence) / 2:
        return WORSE
    return INCONCLUSIVE


def seeds_needed(item: Difference, margin: float, confidence: float, family: int = 1) -> int | None:
    """Seeds per run whose interval would decide `item` (module docstring), None when its spread
    is unknown, or no number of seeds would (a difference of exactly 0 with margin 0)."""
    s = item.spread
    if not isfinite(s) or not isfinite(item.diff):
        return None
    alpha = 1 - confidence
    targets = []  # (distance the half-width must stay under, t quantile, level p must reach)
    if item.diff + margin > 0:
        targets.append((item.diff + margin, 1 - alpha / 2, alpha / 2))  # L > -m: not worse
    if item.diff < 0:
        level = alpha / (2 * max(1, family))
        targets.append((-item.diff, 1 - level, level))  # U < 0 and p < level: worse
    best = None
    for distance, q, level in targets:
        least = seeds_to_reach(level, item.paired)  # fewer: no interval, or no p that small
        n = max(least, ceil((stats.norm.ppf(q) * s / distance) ** 2))  # t > z: a lower bound
        while n <= MAX_SEEDS:
            df = n - 1 if item.paired else 2 * n - 2
            if stats.t.ppf(q, df) * s / sqrt(n) < distance:
                break
            n = n + 1 if n < 1000 else ceil(n * 1.01)
        if n <= MAX_SEEDS:
            best = n if best is None else min(best, n)
    return best


def _by_key(df: pd.DataFrame, column: str) -> pd.Series:
    return pd.Series(df[column].to_numpy(dtype=float), index=df["trial_key"].to_numpy())


def _recalls(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Trial key x class table of recalls, and each class's mean test rows."""
    long = per_class_accuracy(df)
    table = long.set_index(["trial_key", "class"])["accuracy"].unstack("class")
    return table, long.groupby("class")["n"].mean()


def _compare(
    name: str,
    base: pd.Series,
    cand: pd.Series,
    pairing: Pairing,
    confidence: float,
) -> Difference:
    """`difference` of one value per trial (indexed by trial key) on each side."""
    if pairing.paired:
        keys_b, keys_c = pairing.pairs["trial_key_a"], pairing.pairs["trial_key_b"]
        b = base.reindex(keys_b).to_numpy()
        c = cand.reindex(keys_c).to_numpy()
        usable = np.isfinite(b) & np.isfinite(c)
        return difference(b[usable], c[usable], paired=True, confidence=confidence, name=name)
    b, c = base.to_numpy(), cand.to_numpy()
    return difference(
        b[np.isfinite(b)], c[np.isfinite(c)], paired=False, confidence=confidence, name=name
    )


def gate(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    metrics: Sequence[str] = METRICS,
    *,
    margin: float = MARGIN,
    confidence: float = CONFIDENCE,
    pairing: str = "auto",
    match: Sequence[str] = SEED_COLUMNS,
    per_class: bool = True,
) -> GateResult:
    """The labelled gate on two runs' rows (each one setup, several seeds; rows of status `ok`
    count). `pairing`: "auto" (paired when `pair_trials` pairs them), or "unpaired".
    `per_class`: recall per class from `y_true` / `y_pred` (rows without them give no classes)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    keep = [*dict.fromkeys(["trial_key", "status", *match, *EXECUTION_COLUMNS, *metrics,
                            INDEX, "y_true", PRED])]  # fmt: skip
    baseline = ok_rows(baseline[[c for c in keep if c in baseline.columns]])
    candidate = ok_rows(candidate[[c for c in keep if c in candidate.columns]])
    if pairing == "unpaired":
        how = Pairing(False, "unpaired as asked")
    else:
        how = pair_trials(baseline, candidate, match, metric=metrics[0])
    items = [
        _compare(m, _by_key(baseline, m), _by_key(candidate, m), how, confidence) for m in metrics
    ]
    classes: list[Difference] = []
    if per_class and "y_pred" in baseline and "y_pred" in candidate:
        table_b, rows_b = _recalls(baseline)
        table_c, rows_c = _recalls(candidate)
        for k in sorted(set(table_b.columns) & set(table_c.columns)):
            item = _compare(f"class {k}", table_b[k], table_c[k], how, confidence)
            classes.append(_with(item, rows=float((rows_b[k] + rows_c[k]) / 2)))
    family = [*items, *classes]
    adjusted = holm([x.p_drop for x in family])
    decided = []
    for x, p in zip(family, adjusted, strict=True):
        x = _with(x, p_adjusted=float(p))
        x = _with(x, verdict=verdict_of(x, margin, confidence))
        if x.verdict == INCONCLUSIVE:
            x = _with(x, seeds_needed=seeds_needed(x, margin, confidence, len(family)))
        decided.append(x)
    items, classes = decided[: len(items)], decided[len(items) :]
    verdict = overall(items, classes)
    needed = [x.seeds_needed for x in items if x.verdict == INCONCLUSIVE]
    return GateResult(
        verdict=verdict,
        paired=how.paired,
        pairing=how.reason,
        n_baseline=len(baseline),
        n_candidate=len(candidate),
        n_pairs=len(how.pairs) if how.paired else 0,
        confidence=confidence,
        margin=margin,
        metrics=items,
        classes=classes,
        seeds_needed=max(needed) if needed and None not in needed else None,
    )


def overall(metrics: Sequence[Difference], classes: Sequence[Difference] = ()) -> str:
    """The run's verdict from its items' (module docstring)."""
    if any(x.verdict == WORSE for x in (*metrics, *classes)):
        return WORSE
    if metrics and all(x.verdict == BETTER for x in metrics):
        return BETTER
    if metrics and all(x.verdict in (BETTER, NOT_WORSE) for x in metrics):
        return NOT_WORSE
    return INCONCLUSIVE


def _with(item: Difference, **changes: object) -> Difference:
    return replace(item, **changes)
