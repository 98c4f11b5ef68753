"""Bootstrap confidence intervals through `scipy.stats.bootstrap`, with the edge cases decided once.

Why the bootstrap: the quantities bench reports (a mean accuracy over 10 seeds, a standard deviation,
a difference of means, a ratio of run times) have no trustworthy closed-form interval at such small
n and with bounded, discrete metrics. The bias-corrected and accelerated (BCa) bootstrap needs no
normality assumption and is second-order accurate; scipy implements it.

Edge cases, decided here so every caller behaves the same:
- fewer than 2 observations in any sample: the interval is undefined (NaN, NaN);
- every sample constant: the bootstrap distribution is a single point, so the interval is that
  point (scipy would warn and return NaN for BCa);
- BCa undefined for the resamples drawn (scipy returns NaN, e.g. when almost every resample equals
  the observed statistic): the percentile interval of the same resamples is used instead;
- an interval of zero width from samples that are not all constant (BCa at n = 3 can put both
  ends on one atom of the discrete bootstrap distribution): the percentile interval is used
  instead, and when that has zero width too, the interval is undefined (NaN, NaN). A point is
  never reported as an interval for data that vary.
Resampling uses a fixed seed by default, so a report is reproducible, and it does not depend on
the order of the values: each sample is sorted (paired samples: their pairs, jointly) before the
seeded generator draws from it, so the same trials in another row order (Ray returns them in
completion order) give the same interval, bit for bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 0

Statistic = Callable[..., np.ndarray]


def mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def std(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sample standard deviation (ddof=1), the estimator pandas' `std` uses."""
    return np.std(x, ddof=1, axis=axis)


def variance(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.var(x, ddof=1, axis=axis)


def mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def mean_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) / np.mean(y, axis=axis)


def median_ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis) / np.median(y, axis=axis)


def ci(
    samples: Sequence[np.ndarray] | np.ndarray,
    statistic: Statistic,
    *,
    paired: bool = False,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    method: str = "BCa",
    seed: int | None = SEED,
) -> tuple[float, float]:
    """(low, high) of a two-sided bootstrap interval for `statistic` of one or more samples.

    `samples` is one 1-d array or a sequence of them; `statistic(*samples, axis=-1)` must be
    vectorised over the last axis (the helpers in this module are). `paired=True` resamples the
    samples jointly (they must have equal length), as for matched seeds. The result does not
    depend on the order of the values (see the module docstring).
    """
    if isinstance(samples, np.ndarray) and samples.ndim == 1:
        samples = [samples]
    data = [np.asarray(s, dtype=float) for s in samples]
    if paired:
        order = np.lexsort(data[::-1])  # the pairs in one canonical order, the first sample first
        data = [s[order] for s in data]
    else:
        data = [np.sort(s[np.isfinite(s)]) for s in data]
    if any(len(s) < 2 for s in data):
        return float("nan"), float("nan")
    if all(np.ptp(s) == 0 for s in data):
        point = float(statistic(*data, axis=-1))
        return point, point
    interval = _scipy_ci(data, statistic, paired, confidence, n_resamples, method, seed)
    if not _usable(interval) and method != "percentile":
        interval = _scipy_ci(data, statistic, paired, confidence, n_resamples, "percentile", seed)
    if not _usable(interval):
        return float("nan"), float("nan")
    return float(interval[0]), float(interval[1])


def _usable(interval: tuple[float, float]) -> bool:
    """Finite, and wider than rounding (the data vary, so a single point is no interval)."""
    low, high = interval
    return bool(np.isfinite(low) and np.isfinite(high)) and not np.isclose(
        low, high, rtol=1e-12, atol=0.0
    )


def _scipy_ci(
    data: list[np.ndarray],
    statistic: Statistic,
    paired: bool,
    confidence: float,
    n_resamples: int,
    method: str,
    seed: int | None,
) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.bootstrap(
            tuple(data),
            statistic,
            n_resamples=n_resamples,
            vectorized=True,
            paired=paired,
            confidence_level=confidence,
            method=method,
            rng=np.random.default_rng(seed),
        )
    low, high = result.confidence_interval
    return float(low), float(high)
