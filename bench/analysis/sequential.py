"""Intervals that stay valid when the data decide when to stop (`seeds.until`, bench.waves).

Adding seeds until "the interval is narrow enough" and then reporting a 95% t interval is optional
stopping: the rule stops more often when the seeds happen to agree, so the reported interval
covers less than it says (measured in docs/repeat-until.md, and in tests/test_sequential.py). An
*anytime-valid* confidence sequence covers the true mean at every number of seeds at once, so
stopping on it costs nothing. bench uses the asymptotic confidence sequence of Waudby-Smith,
Arbour, Sinha, Kennedy and Ramdas ("Time-uniform central limit theory and asymptotic confidence
sequences", Ann. Statist. 2024):

    mean_t +- sd_t * sqrt(2 (t rho^2 + 1) / (t^2 rho^2) * log(sqrt(t rho^2 + 1) / alpha))

with rho tuned so that the sequence is narrowest at a planned t* (`rho`). Why this and not a
group-sequential design: it needs no plan of the looks (a resumed run, a wave cut short by
`max`, error rows that shrink a wave all leave it valid), and its boundary is one formula. A
Pocock boundary over the planned waves was narrower in simulation (median 70-75 seeds instead of
90 for a width of 0.01; docs/repeat-until.md), but only for the looks it was computed for.

It is asymptotic: with the few seeds of a first wave the sample sd is noisy, and the published
form covered only 83% (two seeds) to 94% (three) in our simulations. bench multiplies the radius
by t_{t-1}(1-alpha/2) / z(1-alpha/2), the same small-sample correction as a t interval's (it
tends to 1, so the asymptotic guarantee is untouched), and asks for a first wave of at least
`MIN_FIRST` seeds, where the simulated coverage is at or above the stated level.

Pure numpy/scipy, no I/O. The naive rule (`t_interval`) sits beside it for the tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_FIRST = 5  # seeds in the first wave; below it the corrected sequence under-covers (docs)


@dataclass(frozen=True)
class Interval:
    """An interval for a mean after `n` values; `low`/`high` are clipped to the metric's range."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def width(self) -> float:
        return self.high - self.low


def rho(t_star: float, alpha: float) -> float:
    """The mixing parameter that makes the sequence narrowest near t* values (the paper's
    approximate optimum)."""
    lam = -2.0 * math.log(alpha)
    return math.sqrt((lam + math.log(lam + 1.0)) / t_star)


def planned_t(first: int, most: int) -> float:
    """The t* bench tunes for: the geometric middle of the first wave and `max`. Where the stop
    will come is unknown in advance (it depends on the spread); the width near either end is
    then within a few percent of the width tuned for that end (simulated: the median number of
    seeds moved by under 10% between t* = 20 and t* = 200)."""
    return math.sqrt(first * most)


def cs_radius(
    t: np.ndarray | int, sd: np.ndarray | float, alpha: float, t_star: float
) -> np.ndarray:
    """Half-width of the (1 - alpha) confidence sequence after t values with sample sd `sd`,
    with the small-sample factor (module docstring). Vectorised over t and sd."""
    t = np.asarray(t, dtype=float)
    r2 = rho(t_star, alpha) ** 2
    core = np.sqrt(2.0 * (t * r2 + 1.0) / (t * t * r2) * np.log(np.sqrt(t * r2 + 1.0) / alpha))
    small = stats.t.ppf(1 - alpha / 2, np.maximum(t - 1, 1)) / stats.norm.ppf(1 - alpha / 2)
    return np.asarray(sd) * core * small


def t_radius(t: np.ndarray | int, sd: np.ndarray | float, alpha: float) -> np.ndarray:
    """Half-width of the fixed-sample t interval: valid for one look, not for optional stopping."""
    t = np.asarray(t, dtype=float)
    return stats.t.ppf(1 - alpha / 2, np.maximum(t - 1, 1)) * np.asarray(sd) / np.sqrt(t)


def _interval(values: Sequence[float], radius: float, bounds: tuple[float, float]) -> Interval:
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else float("nan")
    low, high = max(bounds[0], mean - radius), min(bounds[1], mean + radius)
    return Interval(len(x), mean, low, high)


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else float("inf")


def confidence_sequence(
    values: Sequence[float],
    confidence: float,
    t_star: float,
    bounds: tuple[float, float] = (0.0, 1.0),
) -> Interval:
    """The confidence sequence's interval after `values` (in any order: it uses mean and sd
    only). Clipping to `bounds` keeps it valid: the true mean lies inside them. One value gives
    an infinite sd, so an interval as wide as the bounds."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return _interval(x, math.inf, bounds)
    return _interval(x, float(cs_radius(len(x), _sd(x), 1 - confidence, t_star)), bounds)


def t_interval(
    values: Sequence[float], confidence: float, bounds: tuple[float, float] = (0.0, 1.0)
) -> Interval:
    """The naive interval: a t interval at whatever number of values the rule stopped at."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return _interval(x, math.inf, bounds)
    return _interval(x, float(t_radius(len(x), _sd(x), 1 - confidence)), bounds)


def verdict(interval: Interval, margin: float) -> str | None:
    """For an interval of differences first - second: "first" (better: the interval is above
    0), "second", "equivalent" (inside +-margin), or None (not known yet). A difference that is
    both signed and smaller than the margin is reported by its sign: both claims hold, the sign
    says more. Every verdict is a claim about the true difference, so one made while the
    sequence covers it is right: false verdicts are at most 1 - confidence."""
    if interval.low > 0:
        return "first"
    if interval.high < 0:
        return "second"
    if -margin < interval.low and interval.high < margin:
        return "equivalent"
    return None


def looks(first: int, wave: int, most: int) -> np.ndarray:
    """Seeds after each wave: first, first + wave, ..., up to and including `most`."""
    out = list(range(first, most + 1, wave))
    if not out or out[-1] != most:
        out.append(most)
    return np.asarray(out)


# ------------------------------------------------------------------------------- simulation


def _cumulative(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd of the first t columns of every row, at each t."""
    s1, s2 = np.cumsum(x, axis=1)[:, t - 1], np.cumsum(x * x, axis=1)[:, t - 1]
    mean = s1 / t
    var = np.maximum(s2 - t * mean * mean, 0.0) / (t - 1)
    return mean, np.sqrt(var)


def _first(hit: np.ndarray) -> np.ndarray:
    """Index of the first look where `hit` holds, per study; the last look where it never does."""
    stop = np.argmax(hit, axis=1)
    stop[~hit.any(axis=1)] = hit.shape[1] - 1
    return stop


def simulate_width_rule(
    draw, truth: float, first: int, wave: int, most: int, target: float,
    confidence: float = 0.95, studies: int = 20000, seed: int = 0,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Many studies that add seeds until the interval is narrower than `target` (or `most`):
    per rule ("sequence", "naive"), the share whose final interval holds `truth`, its standard
    error, and the median seeds used. `draw(rng, shape)` gives the metric of simulated seeds."""
    x = draw(np.random.default_rng(seed), (studies, most))
    t = looks(first, wave, most)
    mean, sd = _cumulative(x, t)
    alpha = 1 - confidence
    out = {}
    rows = np.arange(studies)
    for name, radius in (
        ("sequence", cs_radius(t, sd, alpha, planned_t(first, most))),
        ("naive", t_radius(t, sd, alpha)),
    ):
        stop = _first(2 * radius < target)
        covered = np.abs(mean[rows, stop] - truth) <= radius[rows, stop]
        out[name] = _rate(covered, np.median(t[stop]))
    return out


def simulate_null_compare(
    draw, first: int, wave: int, most: int, margin: float,
    confidence: float = 0.95, studies: int = 20000, seed: int = 0,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Many comparisons of two equal setups (paired differences with mean 0 from `draw`) that
    stop at the first verdict: per rule, the share that ended with a false verdict (one setup
    better), its standard error, and the median seeds used. The naive rule stops once a t
    interval excludes 0 (or sits inside the margin)."""
    d = draw(np.random.default_rng(seed), (studies, most))
    t = looks(first, wave, most)
    mean, sd = _cumulative(d, t)
    alpha = 1 - confidence
    rows = np.arange(studies)
    out = {}
    for name, radius in (
        ("sequence", cs_radius(t, sd, alpha, planned_t(first, most))),
        ("naive", t_radius(t, sd, alpha)),
    ):
        low, high = mean - radius, mean + radius
        signed = (low > 0) | (high < 0)
        stop = _first(signed | ((low > -margin) & (high < margin)))
        out[name] = _rate(signed[rows, stop], np.median(t[stop]))
    return out


def _rate(hits: np.ndarray, median_seeds: float) -> dict[str, float]:
    p = float(hits.mean())
    return {
        "rate": p,
        "se": math.sqrt(p * (1 - p) / len(hits)),
        "median_seeds": float(median_seeds),
    }


def rounded_normal(mean: float, sd: float, n_test: int):
    """A `draw` for the simulations: normal accuracies rounded to a test set of `n_test` rows
    (accuracy moves in steps of 1/n_test), clipped to [0, 1]."""

    def draw(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        return np.clip(np.round(rng.normal(mean, sd, shape) * n_test) / n_test, 0.0, 1.0)

    return draw


def rounded_mean(mean: float, sd: float, n_test: int) -> float:
    """The true mean of `rounded_normal` (rounding and clipping move it), by numeric sum."""
    k = np.arange(n_test + 1)
    edges = (
        np.concatenate([[-np.inf], (k[:-1] + 0.5)]) / n_test,
        np.append((k[:-1] + 0.5) / n_test, np.inf),
    )
    p = stats.norm.cdf(edges[1], mean, sd) - stats.norm.cdf(edges[0], mean, sd)
    return float(np.sum(p * k / n_test))
