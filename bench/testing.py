"""Seed-robust assertions for tests of ML code: a property over several seeds, at a stated confidence.

`assert model_accuracy(seed=0) > 0.6` tests one draw of a random quantity, flaky exactly when the
threshold is near what the model typically reaches. Here a test states the property about the
distribution over seeds and the error rate it accepts (1 - confidence):

    assert_over_seeds(accuracy, at_least=0.6)                          # the mean over seeds
    assert_over_seeds(lambda s: accuracy(s) > 0.6, at_least=0.8, quantity="fraction")

The rule (a group-sequential test with a Bonferroni split; docs/testing.md has it in full):
- Fail only on evidence that the property is false: for `at_least=t`, when the one-sided upper
  bound of the mean (fraction) lies below t; for `at_most=t`, when the lower bound lies above t.
  A property that holds, even exactly at the threshold, fails at most 1 - confidence of the time.
- Seeds come in looks (by default 4, 7, 10); the test stops at the first look that decides it:
  failed as above, or passed because the other bound clears the threshold. Each look's bounds are
  at level 1 - alpha / (looks x sides), so a false fail over all looks stays at most alpha.
- A mean fails only from MIN_DISTINCT (3) distinct values on: a tie or two values say too little
  about the spread (seven seeds at 0.9 of a metric that is 1.0 at 30% of seeds) for a t bound to
  prove the mean wrong; such seeds pass if they clear the threshold, else draw more seeds.
- Undecided after the last look: the test passes with an UndecidedWarning that says about how many
  seeds would decide (`undecided="fail"` turns it into a failure, `"pass"` silences it).

Bounds: the mean by Student's t (values close to normal, as accuracies over seeds usually are;
state skewed values such as run times as a fraction), or `method="bootstrap"` (BCa, for 20+
seeds a look); a fraction by Clopper-Pearson, exact whatever the distribution. Deterministic given
`fn`; a failure is a plain AssertionError, so it works in any test runner.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal, TypeVar

import numpy as np
from scipy import stats

Quantity = Literal["mean", "fraction"]
Method = Literal["t", "bootstrap", "exact"]
Side = Literal["lower", "upper"]
Outcome = Literal["pass", "fail", "undecided"]

SEEDS = range(10)
LOOKS = 3
CONFIDENCE = 0.95
MAX_NEEDED = 100_000  # "seeds needed" beyond this is reported as more than this
MIN_DISTINCT = 3  # distinct values a mean's seeds need before its bound may fail the property
SEED_SOURCES = ("split", "order", "init")  # a TrialSpec's seeds that reseeded() moves
S = TypeVar("S")


class UndecidedWarning(UserWarning):
    """The seeds drawn fit both "the property holds" and "it fails": more seeds would decide."""


@dataclass(frozen=True)
class SeedSample:
    """One value per seed (a 0/1 value for a `fraction`), and its bounds."""

    seeds: tuple[int, ...]
    values: tuple[float, ...]
    quantity: Quantity = "mean"
    method: Method = "t"

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def estimate(self) -> float:
        """The mean of the values: the mean, or the fraction of seeds where the property held."""
        return float(np.mean(self.values))

    mean = estimate

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else math.nan

    @property
    def distinct(self) -> int:
        """Distinct values, ones closer than 1e-9 of the largest magnitude counted as one (float
        noise, e.g. a metric summed in another order, is no spread)."""
        x = np.sort(np.asarray(self.values, dtype=float))
        return 1 + int(np.count_nonzero(np.diff(x) > 1e-9 * np.abs(x).max())) if self.n else 0

    @property
    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.values, strict=True))

    def bound(self, side: Side, confidence: float = CONFIDENCE) -> float:
        """The one-sided `side` bound of the mean (fraction) at `confidence`."""
        x = np.asarray(self.values, dtype=float)
        if self.quantity == "fraction":
            low, high = _clopper_pearson(int(x.sum()), self.n, 2 * confidence - 1)
            return low if side == "lower" else high
        if self.n < 2:
            return -math.inf if side == "lower" else math.inf
        if self.distinct == 1:  # a tie (whose std may come out 1e-16, not 0): no spread to bound
            return float(np.median(x))  # by (check_over_seeds never fails a mean on it)
        if self.method == "bootstrap":
            from bench.analysis.bootstrap import ci, mean

            low, high = ci(x, mean, confidence=2 * confidence - 1)
            return low if side == "lower" else high
        sem = float(np.std(x, ddof=1)) / math.sqrt(self.n)  # scipy.stats.sem, without its
        # argument handling, which costs more than the rest of a look
        half = _t_quantile(confidence, self.n - 1) * sem
        return float(x.mean() - half) if side == "lower" else float(x.mean() + half)

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float]:
        """Two-sided interval at `confidence` (each side at (1 + confidence) / 2)."""
        one_sided = (1 + confidence) / 2
        return self.bound("lower", one_sided), self.bound("upper", one_sided)

    def describe(self) -> str:
        """Every seed's value (1 or 0 for a fraction), for a failure message."""
        if self.quantity == "fraction":
            return ", ".join(f"{s}: {int(v)}" for s, v in self.by_seed.items())
        return ", ".join(f"{s}: {v:.6g}" for s, v in self.by_seed.items())


@dataclass(frozen=True)
class Verdict:
    """What check_over_seeds decided, from which seeds, with which bounds."""

    outcome: Outcome
    sample: SeedSample
    at_least: float | None
    at_most: float | None
    confidence: float
    looks: tuple[int, ...]  # the planned looks (cumulative seed counts)
    level: float  # each bound's one-sided confidence: 1 - alpha / (looks x sides)
    lower: float  # the bounds at `level` after the last look taken
    upper: float
    name: str = "fn"

    @property
    def passed(self) -> bool:
        return self.outcome != "fail"

    @property
    def needed(self) -> int | None:
        """About how many seeds decide at this estimate and spread (None: a tie, or more than
        MAX_NEEDED): for an undecided verdict, how many to draw; for a decided one, how clear."""
        counts = [
            _needed(self.sample, t, self.level) for t in (self.at_least, self.at_most)
            if t is not None
        ]  # fmt: skip
        return None if None in counts else max(counts)

    def message(self) -> str:
        s = self.sample
        what = "fraction of seeds where" if s.quantity == "fraction" else "mean of"
        wanted = " and ".join(
            f"{k}={v:g}" for k, v in (("at_least", self.at_least), ("at_most", self.at_most))
            if v is not None
        )  # fmt: skip
        how = "Clopper-Pearson" if s.quantity == "fraction" else {
            "t": "Student t", "bootstrap": "BCa bootstrap"}[s.method]  # fmt: skip
        subject, spread = (
            (f"{self.name} holds", f"({int(sum(s.values))} of {s.n} seeds)")
            if s.quantity == "fraction"
            else (self.name, f"over {s.n} seeds (std {s.std:.3g})")
        )
        lines = [
            f"{self.outcome}: {what} {subject} = {s.estimate:.6g} {spread}; wanted {wanted} "
            f"with {self.confidence:.0%} confidence",
            f"  one-sided bounds {self.lower:.6g} .. {self.upper:.6g} ({how}, "
            f"{self.level:.4%} at each of {len(self.looks)} looks {list(self.looks)}, Bonferroni)",
        ]
        if broken := self._broken():
            lines.append(f"  the property fails: {broken}" if self.outcome == "fail" else
                         f"  {broken}, but from {s.distinct} distinct value(s): a mean fails only "
                         f"from {MIN_DISTINCT} on (few say little about its spread)")  # fmt: skip
        needed = f"more than {MAX_NEEDED}" if self.needed is None else f"about {self.needed}"
        lines.append(
            "  seeds that take other values decide"
            if broken and s.quantity == "mean" and s.distinct < MIN_DISTINCT
            else f"  {needed} seeds decide at this estimate and spread"
        )
        lines.append(f"  values by seed: {s.describe()}")
        return "\n".join(lines)

    def _broken(self) -> str:
        parts = []
        if self.at_least is not None and self.upper < self.at_least:
            parts.append(f"upper bound {self.upper:.6g} < at_least={self.at_least:g}")
        if self.at_most is not None and self.lower > self.at_most:
            parts.append(f"lower bound {self.lower:.6g} > at_most={self.at_most:g}")
        return "; ".join(parts)


def over_seeds(
    fn: Callable[[int], float | bool],
    seeds: Iterable[int] = SEEDS,
    *,
    quantity: Quantity = "mean",
    method: Method | None = None,
) -> SeedSample:
    """fn(seed) for every seed, as a SeedSample (estimate, std, bounds, interval, by_seed)."""
    seeds = tuple(int(s) for s in seeds)
    method = _method(quantity, method)
    return SeedSample(seeds, tuple(_value(fn, s, quantity) for s in seeds), quantity, method)


def check_over_seeds(
    fn: Callable[[int], float | bool],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    seeds: Iterable[int] = SEEDS,
    looks: int | Sequence[int] = LOOKS,
    confidence: float = CONFIDENCE,
    quantity: Quantity = "mean",
    method: Method | None = None,
) -> Verdict:
    """Decide the property by the module's sequential rule, calling fn(seed) only as needed.

    `fn(seed)` returns the value (a float for `quantity="mean"`, a bool for `"fraction"`);
    `seeds` are the seeds in the order they are drawn; `looks` is the number of looks (spread
    evenly over the seeds) or their cumulative seed counts, e.g. (2, 4, 8).
    """
    if at_least is None and at_most is None:
        raise ValueError("check_over_seeds needs at_least, at_most or both")
    if at_least is not None and at_most is not None and at_least > at_most:
        raise ValueError(f"at_least={at_least} is above at_most={at_most}: nothing can pass")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    seeds = tuple(int(s) for s in seeds)
    method = _method(quantity, method)
    plan = _looks(looks, len(seeds), 1 if quantity == "fraction" else 2)
    sides = (at_least is not None) + (at_most is not None)
    level = 1 - (1 - confidence) / (len(plan) * sides)
    values: list[float] = []
    outcome: Outcome = "undecided"
    for size in plan:
        values += [_value(fn, s, quantity) for s in seeds[len(values) : size]]
        sample = SeedSample(seeds[:size], tuple(values), quantity, method)
        lower, upper = sample.bound("lower", level), sample.bound("upper", level)
        failed = (at_least is not None and upper < at_least) or (
            at_most is not None and lower > at_most
        )  # but not a mean from a tie or two values: too little on its spread to prove it wrong
        failed = failed and (quantity == "fraction" or sample.distinct >= MIN_DISTINCT)
        holds = (at_least is None or lower >= at_least) and (at_most is None or upper <= at_most)
        if failed or holds:
            outcome = "fail" if failed else "pass"
            break
    name = getattr(fn, "__name__", "fn")
    return Verdict(
        outcome, sample, at_least, at_most, confidence, plan, level, lower, upper,
        "fn" if name == "<lambda>" else name,
    )  # fmt: skip


def assert_over_seeds(
    fn: Callable[[int], float | bool],
    *,
    at_least: float | None = None,
    at_most: float | None = None,
    seeds: Iterable[int] = SEEDS,
    looks: int | Sequence[int] = LOOKS,
    confidence: float = CONFIDENCE,
    quantity: Quantity = "mean",
    method: Method | None = None,
    undecided: Literal["warn", "pass", "fail"] = "warn",
) -> SeedSample:
    """Assert the property over seeds (check_over_seeds's rule); return the seeds' sample.

    Raises AssertionError on evidence that the property fails, listing every seed's value, the
    bounds, the confidence and about how many seeds would decide. Undecided after the last look:
    `undecided="warn"` passes with an UndecidedWarning, `"fail"` raises, `"pass"` passes quietly.
    """
    verdict = check_over_seeds(
        fn, at_least=at_least, at_most=at_most, seeds=seeds, looks=looks,
        confidence=confidence, quantity=quantity, method=method,
    )  # fmt: skip
    if verdict.outcome == "fail" or (verdict.outcome == "undecided" and undecided == "fail"):
        raise AssertionError(verdict.message())
    if verdict.outcome == "undecided" and undecided == "warn":
        warnings.warn(verdict.message(), UndecidedWarning, stacklevel=2)
    return verdict.sample


def reseeded(spec: S, index: int, base: int = 0) -> S:
    """A bench TrialSpec with every seed source (split, order, init) at `index` of a sweep rooted
    at `base`, as `seeds.base=base sweep.varied=[all]` draws them: the same trial under another
    seed, for over_seeds. Index 0 of base 0 is the trial a one-seed sweep (`seeds.n=1`) runs."""
    from bench.seeds import derive

    return replace(spec, **{f"seed_{src}": derive(base, src, index) for src in SEED_SOURCES})


class TrialMetric:
    """fn(index) for assert_over_seeds: a bench trial reseeded at `index` (reseeded), run in this
    process, and one metric of its row. Rows are kept by index (`rows`), so that a test checks
    its other columns without training again, and may start from rows it already has.

    `run` takes a spec and returns its row (default: bench.trial.run with `run_kwargs`, e.g.
    `dataset_cfg=`); a row whose status is not ok fails the test with its error."""

    def __init__(
        self,
        spec: Any,
        metric: str = "accuracy",
        *,
        run: Callable[[Any], dict[str, Any]] | None = None,
        rows: dict[int, dict[str, Any]] | None = None,
        **run_kwargs: Any,
    ) -> None:
        self.spec, self.metric, self.rows = spec, metric, dict(rows or {})
        self.__name__ = metric  # the name failure messages give the values
        if run is None:
            from bench.trial import run as trial_run

            def run(spec: Any) -> dict[str, Any]:
                return trial_run(spec, **run_kwargs)

        self._run = run

    def __call__(self, index: int) -> float:
        if index not in self.rows:
            self.rows[index] = self._run(reseeded(self.spec, index))
        row = self.rows[index]
        if row["status"] != "ok":
            raise AssertionError(f"seed index {index}: status {row['status']}: {row['error']}")
        return float(row[self.metric])


def _method(quantity: Quantity, method: Method | None) -> Method:
    if quantity not in ("mean", "fraction"):
        raise ValueError(f"quantity must be 'mean' or 'fraction', got {quantity!r}")
    allowed = ("exact",) if quantity == "fraction" else ("t", "bootstrap")
    method = method or allowed[0]
    if method not in allowed:
        raise ValueError(f"method for quantity={quantity!r}: one of {allowed}, got {method!r}")
    return method


def _value(fn: Callable[[int], float | bool], seed: int, quantity: Quantity) -> float:
    value = fn(seed)
    if quantity == "fraction":
        return float(bool(value))
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"fn({seed}) returned {value}: a mean needs finite values")
    return value


def _looks(looks: int | Sequence[int], n: int, first: int) -> tuple[int, ...]:
    """Cumulative seed counts: `looks` spread evenly over n seeds, or the given counts."""
    if isinstance(looks, int):
        if looks < 1:
            raise ValueError(f"looks must be at least 1, got {looks}")
        plan = tuple(sorted({max(first, math.ceil(n * i / looks)) for i in range(1, looks + 1)}))
    else:
        plan = tuple(int(k) for k in looks)
    if not plan or any(b <= a for a, b in zip(plan, plan[1:], strict=False)) or plan[0] < first:
        raise ValueError(f"looks must increase from at least {first}, got {list(plan)}")
    if plan[-1] != n:
        raise ValueError(f"the last look must use every seed ({n}), got {list(plan)}")
    return plan


@lru_cache(maxsize=4096)
def _t_quantile(confidence: float, df: int) -> float:
    return float(stats.t.ppf(confidence, df))


@lru_cache(maxsize=4096)
def _clopper_pearson(k: int, n: int, confidence: float) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _needed(sample: SeedSample, threshold: float, level: float) -> int | None:
    """Smallest seed count at which a sample with this estimate and spread would put `threshold`
    outside its one-sided bound at `level` (None: not within MAX_NEEDED, e.g. estimate == t).

    The bound's distance from the estimate shrinks as the count grows, so bisection finds it."""
    gap = sample.estimate - threshold
    if gap == 0 or (sample.quantity == "mean" and sample.distinct == 1):
        return None  # (a tie: no spread to extrapolate from)

    def decides(m: int) -> bool:
        if sample.quantity == "mean":
            return bool(stats.t.ppf(level, m - 1) * sample.std / math.sqrt(m) < abs(gap))
        k = sample.estimate * m  # the same fraction at m seeds (a real k: beta takes it)
        if gap > 0:
            return k > 0 and float(stats.beta.ppf(1 - level, k, m - k + 1)) >= threshold
        return k < m and float(stats.beta.ppf(level, k + 1, m - k)) < threshold

    low, high = 2, MAX_NEEDED
    if not decides(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if decides(mid) else (mid + 1, high)
    return low
