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


def sd_floor(n_test: int | None) -> float:
    """The least sd the sequence uses for a metric computed on `n_test` test rows: half a row.

    Accuracy moves in steps of 1/n_test, so seeds whose true sd is below about one row often
    tie, and a first wave of ties has a sample sd of 0: an interval [v, v] that stops at once and
    misses the mean (simulated, 114 rows, width 0.01: true sd 0.002 covered 65%, 0.004 89%).
    With the floor the same cases cover 99.9-100% at the same median seeds. The other bounded
    metrics get the same floor: balanced accuracy and F1 also move by about 1/n_test when one
    test row flips, and ROC AUC moves in smaller steps, where the floor only widens the interval
    (a floor never costs coverage, only seeds). `varied=none` whose values are all identical
    is exempt (bench.waves): repeats of the same bits have a spread of exactly 0."""
    return 0.0 if not n_test else 0.5 / n_test


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
    t: np.ndarray | int, sd: np.ndarray | float, alpha: float, t_star: float, floor: float = 0.0
) -> np.ndarray:
    """Half-width of the (1 - alpha) confidence sequence after t values with sample sd `sd`
    (at least `floor`: `sd_floor`), with the small-sample factor (module docstring). Vectorised
    over t and sd."""
    t = np.asarray(t, dtype=float)
    sd = np.maximum(sd, floor)
    r2 = rho(t_star, alpha) ** 2
    core = np.sqrt(2.0 * (t * r2 + 1.0) / (t * t * r2) * np.log(np.sqrt(t * r2 + 1.0) / alpha))
    small = stats.t.ppf(1 - alpha / 2, np.maximum(t - 1, 1)) / stats.norm.ppf(1 - alpha / 2)
    return np.asarray(sd) * core * small


def t_radius(t: np.ndarray | int, sd: np.ndarray | float, alpha: float) -> np.ndarray:
    """Half-width of the fixed-sample t interval: valid for one look, not for optional stopping."""
    t = np.asarray(t, dtype=float)
    return stats.t.ppf(1 - alpha / 2, np.maximum(t - 1, 1)) * np.asarray(sd) / np.sqrt(t)


def clipped(n, mean, radius, bounds: tuple[float, float] = (0.0, 1.0)) -> Interval:
    """mean +- radius clipped to `bounds` (scalars, or arrays: the simulations use the same
    interval, hence the same width, as the runs' decisions)."""
    low, high = np.maximum(bounds[0], mean - radius), np.minimum(bounds[1], mean + radius)
    if np.ndim(low) == 0:
        return Interval(int(n), float(mean), float(low), float(high))
    return Interval(n, mean, low, high)


def narrow_enough(interval: Interval, target: float | None):
    """The width rule: the (clipped) interval is narrower than `target` (None: no target, so
    the width question is answered at once). Scalar or vectorised, like `clipped`."""
    return True if target is None else interval.width < target


def _interval(values: Sequence[float], radius: float, bounds: tuple[float, float]) -> Interval:
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else float("nan")
    return clipped(len(x), mean, radius, bounds)


def _sd(x: np.ndarray) -> float:
    return float(x.std(ddof=1)) if len(x) > 1 else float("inf")


def confidence_sequence(
    values: Sequence[float],
    confidence: float,
    t_star: float,
    bounds: tuple[float, float] = (0.0, 1.0),
    floor: float = 0.0,
) -> Interval:
    """The confidence sequence's interval after `values` (in any order: it uses mean and sd
    only), with the sd at least `floor` (`sd_floor`). Clipping to `bounds` keeps it valid: the
    true mean lies inside them. One value gives an infinite sd, so an interval as wide as the
    bounds."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return _interval(x, math.inf, bounds)
    radius = float(cs_radius(len(x), _sd(x), 1 - confidence, t_star, floor))
    return _interval(x, radius, bounds)


def t_interval(
    values: Sequence[float], confidence: float, bounds: tuple[float, float] = (0.0, 1.0)
) -> Interval:
    """The naive interval: a t interval at whatever number of values the rule stopped at."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return _interval(x, math.inf, bounds)
    return _interval(x, float(t_radius(len(x), _sd(x), 1 - confidence)), bounds)


VERDICTS = ("first", "second", "equivalent", "first within margin", "second within margin")


def verdict(interval: Interval, margin: float):
    """For an interval of differences first - second: "first" (better: the interval is above
    0), "second", "equivalent" (inside +-margin), "first within margin" / "second within margin"
    (both claims hold: better, by less than the margin), or None (not known yet). Every verdict
    is a claim about the true difference, so one made while the sequence covers it is right:
    false verdicts are at most 1 - confidence. Scalar (an `Interval` of floats: a string or
    None) or vectorised (of arrays: an array of strings, "" where none), so that the
    simulations stop on this very function."""
    low, high = np.asarray(interval.low), np.asarray(interval.high)
    first, second = low > 0, high < 0
    within = (-margin < low) & (high < margin)
    out = np.select(
        [first & within, second & within, first, second, within],
        ["first within margin", "second within margin", "first", "second", "equivalent"],
        default="",
    )
    return (str(out) or None) if out.ndim == 0 else out


def wrong(said, truth: float, margin: float):
    """Whether a verdict (`verdict`'s strings, vectorised) claims something `truth` (the true
    difference) contradicts; "" and None claim nothing."""
    said = np.asarray(said, dtype=object).astype(str)
    signed_wrong = (np.char.startswith(said, "first") & (truth <= 0)) | (
        np.char.startswith(said, "second") & (truth >= 0)
    )
    within_wrong = ((said == "equivalent") | np.char.endswith(said, "within margin")) & (
        abs(truth) >= margin
    )
    return signed_wrong | within_wrong


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
    confidence: float = 0.95, studies: int = 20000, seed: int = 0, floor: float = 0.0,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Many studies that add seeds until the interval is narrower than `target` (or `most`):
    per rule ("sequence", "naive"), the share whose final interval holds `truth`, its standard
    error, and the median seeds used. `draw(rng, shape)` gives the metric of simulated seeds;
    `floor` is the sequence's least sd (`sd_floor`: what bench.waves uses). The stop is the
    runs' own rule: `narrow_enough` on the `clipped` interval."""
    x = draw(np.random.default_rng(seed), (studies, most))
    t = looks(first, wave, most)
    mean, sd = _cumulative(x, t)
    alpha = 1 - confidence
    out = {}
    rows = np.arange(studies)
    for name, radius in (
        ("sequence", cs_radius(t, sd, alpha, planned_t(first, most), floor)),
        ("naive", t_radius(t, sd, alpha)),
    ):
        iv = clipped(t, mean, radius)
        stop = _first(narrow_enough(iv, target))
        covered = (iv.low[rows, stop] <= truth) & (truth <= iv.high[rows, stop])
        out[name] = _rate(covered, np.median(t[stop]))
    return out


def simulate_compare(
    draw, truth: float, first: int, wave: int, most: int, margin: float,
    confidence: float = 0.95, studies: int = 20000, seed: int = 0, floor: float = 0.0,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Many comparisons (paired differences with true mean `truth` from `draw`) that stop at the
    first verdict (`verdict`, the runs' own rule): per rule, the share that ended with a wrong
    verdict (`wrong`), its standard error, and the median seeds used. The naive rule stops on a
    t interval the same way."""
    d = draw(np.random.default_rng(seed), (studies, most))
    t = looks(first, wave, most)
    mean, sd = _cumulative(d, t)
    alpha = 1 - confidence
    rows = np.arange(studies)
    out = {}
    for name, radius in (
        ("sequence", cs_radius(t, sd, alpha, planned_t(first, most), floor)),
        ("naive", t_radius(t, sd, alpha)),
    ):
        said = verdict(clipped(t, mean, radius, (-1.0, 1.0)), margin)
        stop = _first(said != "")
        out[name] = _rate(wrong(said[rows, stop], truth, margin), np.median(t[stop]))
    return out


def simulate_null_compare(
    draw, first: int, wave: int, most: int, margin: float,
    confidence: float = 0.95, studies: int = 20000, seed: int = 0, floor: float = 0.0,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """`simulate_compare` of two equal setups (true difference 0): a wrong verdict names a
    winner."""
    return simulate_compare(draw, 0.0, first, wave, most, margin, confidence, studies, seed, floor)


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
