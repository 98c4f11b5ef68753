"""Monitoring statistics: is a new batch beyond the seed-noise band of a baseline run?

A baseline run trained M seed models (the same data and model, other seeds). On a new batch of
n rows, bench.monitor asks one of two questions:

- **labelled batch: error.** The seed models' error rate on the batch, pooled over the models,
  against the same rate on the baseline's own test rows (each model on the rows held out from its
  training).
- **unlabelled batch: disagreement.** The rate at which two seed models predict different classes,
  pooled over the pairs of models, against the same rate on reference rows held out from both
  models of a pair (their common test rows; all of them when the seeds share a split). The seed
  models were fitted to the same kind of data and agree where it was dense; rows unlike it fall
  where their decision boundaries part, so disagreement rises under a distribution shift, and
  needs no label to be seen.

**Units and rows.** Both are rates over *units* (seed models, or pairs of them), each with a 0/1
outcome per row it saw (wrong; the two disagree). The reference pools every (unit, held-out row):
a unit counts in proportion to its reference rows, and the batch weights the units the same way,
so both sides estimate the same average over the same units (pairs whose test sets overlap more
also trained on more of the same rows, and disagree less).

**Why seed noise does not widen the band twice.** Both sides average over the same fitted models,
so the seed-to-seed spread of their errors (the band shown beside each statistic: the units'
own rates) is common to both and cancels from the difference. What remains is the sampling of
rows: the batch's n rows and the reference's held-out rows, each an independent draw from its
distribution. Units that see the same row are correlated (seed models are wrong on the same hard
rows), so a rate's variance treats rows as clusters (`Rate.variance`), never (unit, row) pairs as
independent.

**The test** (`exceeds`): one-sided, H0 "the batch comes from the reference's distribution",
z = (batch - reference) / sd, the variance taken under H0 at the two sides' pooled rate p0:

    var = p0 (1 - p0) (kappa_batch / n_batch + kappa_ref / n_ref),   p = 1 - Phi(z)

n is each side's rows' worth (`Rate.n_eff`) and kappa its design factor: the row-clustered
variance over the binomial one, 1 when all units agree on every row. Both factors are estimated on
the batch, which every unit saw whole: kappa_batch directly, kappa_ref by computing, on the batch's
rows, the variance the reference's rate has with the reference's pattern of which seed models
held out which row (`Batch.kappa_reference`). Why not the reference's own rows: they hold too
few disagreements to estimate a variance good in the tail. In a simulation of 8 linear seed
models (600-row table, batches of 400) that version alarmed at 0.004 where the level was 0.0025;
this one at the level within sampling error, with z's standard deviation 1.00 for errors and
disagreement, and the same with 4 models sharing a split and 16 models with their own splits.
A constant kappa_ref = 1 (its bound) made disagreement's z's standard deviation 0.8: valid but
blunt. Pooling under H0 keeps the test sane at a boundary (a reference without a single
disagreement still has a variance).
`Test.threshold` is the batch value at which the test alarms (scipy's brentq; the gap is convex).

**The alarm rule over a sequence** (`levels`): each batch is tested at its own level, and the
false-alarm rate over the sequence (the probability of any alarm when no batch is shifted) is at
most the sum of the levels by the union bound, whatever the dependence between the tests (they
share the reference):
- `bonferroni`: alpha / N for each of N batches: at most alpha over these N batches;
- `spending`: alpha / (k (k + 1)) for the k-th batch, summing to alpha over an unending stream:
  a batch's decision never changes when more batches arrive, at the cost of power late on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import optimize, special

RULES = ("bonferroni", "spending")
_BLOCK = 2048  # reference patterns at a time against the batch's rows (memory: _BLOCK x n)


@dataclass(frozen=True)
class Rate:
    """A rate pooled over units and rows. Written as a sum over rows, value = sum_i Z_i with row
    weights omega_i (summing to 1): `variance` = R / (R - 1) sum_i (Z_i - value omega_i)^2 over
    the R rows (rows as independent clusters), `n_eff` = 1 / sum_i omega_i^2 (n for a batch)."""

    value: float
    variance: float
    n_eff: float
    n_rows: int
    unit_rates: np.ndarray  # each unit's own rate (NaN: a unit without rows)

    @property
    def kappa(self) -> float:
        """The design factor: variance over the binomial value (1 - value) / n_eff; NaN at 0 or 1."""
        return _kappa(self.variance, self.value, self.n_eff)

    @property
    def band(self) -> tuple[float, float]:
        """The seed-noise band: min and max of the units' own rates."""
        rates = self.unit_rates[np.isfinite(self.unit_rates)]
        return (float(rates.min()), float(rates.max())) if len(rates) else (np.nan, np.nan)


def _kappa(variance: float, value: float, n_eff: float) -> float:
    bound = value * (1 - value) / n_eff if n_eff else 0.0
    return float(variance / bound) if bound > 0 else float("nan")


def _rate(z: np.ndarray, omega: np.ndarray, unit_rates: np.ndarray) -> Rate:
    """The rate from its rows' terms; rows no unit counts on (a reference row held out by one
    model, for disagreement) are left out."""
    z, omega = z[omega > 0], omega[omega > 0]
    rows = len(z)
    if rows == 0:
        return Rate(np.nan, np.nan, 0.0, 0, unit_rates)
    value = float(z.sum())
    variance = float(rows / (rows - 1) * np.sum((z - value * omega) ** 2)) if rows > 1 else 0.0
    return Rate(value, variance, float(1 / np.sum(omega**2)), rows, unit_rates)


def _pairs_of(count: np.ndarray) -> np.ndarray:
    return count * (count - 1) / 2


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(len(matrix), 1)]


@dataclass(frozen=True)
class Reference:
    """The baseline's held-out rows: which seed model held out which row, what it predicted."""

    held_out: np.ndarray  # (M, R) bool
    y_pred: np.ndarray  # (M, R) class index, -1 where not held out
    y_true: np.ndarray  # (R,) class index
    n_classes: int

    @classmethod
    def from_test_sets(
        cls,
        index: Sequence[np.ndarray],
        y_true: Sequence[np.ndarray],
        y_pred: Sequence[np.ndarray],
        n_classes: int,
    ) -> Reference:
        """From each seed model's test rows (`test_index`, `y_true`, `y_pred` of its row)."""
        rows, where = np.unique(np.concatenate([np.asarray(i) for i in index]), return_inverse=True)
        held = np.zeros((len(index), len(rows)), dtype=bool)
        pred = np.full((len(index), len(rows)), -1, dtype=np.int64)
        truth = np.zeros(len(rows), dtype=np.int64)
        start = 0
        for m, (i, t, p) in enumerate(zip(index, y_true, y_pred, strict=True)):
            at = where[start : start + len(i)]
            start += len(i)
            held[m, at], pred[m, at], truth[at] = True, p, t
        return cls(held, pred, truth, n_classes)

    @property
    def n_models(self) -> int:
        return len(self.held_out)

    @cached_property
    def patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct sets of seed models that held out a row, as 0/1 rows, and how many rows
        each: rows held out by the same models add the same to a rate."""
        unique, counts = np.unique(self.held_out.T, axis=0, return_counts=True)
        return unique.astype(float), counts.astype(float)

    def _agree(self) -> np.ndarray:
        """(M, M): rows both held out on which the two predicted the same class."""
        one_hot = [(self.y_pred == k).astype(float) for k in range(self.n_classes)]
        return sum(a @ a.T for a in one_hot)

    @cached_property
    def model_weights(self) -> np.ndarray:
        return self.held_out.sum(axis=1).astype(float)

    @cached_property
    def pair_weights(self) -> np.ndarray:
        """Each pair's common held-out rows, in np.triu_indices order."""
        held = self.held_out.astype(float)
        return _upper(held @ held.T)

    @cached_property
    def errors(self) -> Rate:
        """Reference error: every seed model on its own test rows, pooled."""
        wrong = self.held_out & (self.y_pred != self.y_true[None, :])
        counts = self.model_weights
        total = counts.sum()
        rates = np.where(counts > 0, wrong.sum(axis=1) / np.maximum(counts, 1), np.nan)
        return _rate(wrong.sum(axis=0) / total, self.held_out.sum(axis=0) / total, rates)

    @cached_property
    def disagreement(self) -> Rate:
        """Reference disagreement: every pair of seed models on their common test rows, pooled."""
        count = self.held_out.sum(axis=0).astype(float)
        same = sum(_pairs_of((self.y_pred == k).sum(axis=0)) for k in range(self.n_classes))
        pairs = _pairs_of(count)
        total = pairs.sum()
        common = self.pair_weights
        differ = common - _upper(self._agree())
        rates = np.where(common > 0, differ / np.maximum(common, 1), np.nan)
        if total == 0:
            return Rate(np.nan, np.nan, 0.0, 0, rates)
        return _rate((pairs - same) / total, pairs / total, rates)


@dataclass(frozen=True)
class Batch:
    """A batch's rate, and the reference's design factor as the batch's rows predict it."""

    rate: Rate
    kappa_reference: float


def _spread(reference: Reference, values) -> float:
    """The variance the reference's rate would have if its rows were like the batch's: over the
    reference's rows, of the variance over the batch's rows of what that row would add up to
    (`values(patterns)`: one row per set of seed models that held out a reference row)."""
    patterns, counts = reference.patterns
    total = 0.0
    for start in range(0, len(patterns), _BLOCK):
        block = values(patterns[start : start + _BLOCK])
        if block.shape[1] > 1:
            total += float(counts[start : start + _BLOCK] @ np.var(block, axis=1, ddof=1))
    return total


def batch_errors(reference: Reference, y_pred: np.ndarray, y: np.ndarray) -> Batch:
    """Batch error: `y_pred` (M, n) predicted classes of the reference's seed models, `y` labels."""
    wrong = (np.asarray(y_pred) != np.asarray(y)[None, :]).astype(float)
    w = reference.model_weights
    total = w.sum()
    n = wrong.shape[1]
    rate = _rate((w @ wrong) / total / n, np.full(n, 1 / n), wrong.mean(axis=1))
    spread = _spread(reference, lambda patterns: patterns @ wrong)
    return Batch(rate, _kappa(spread / total**2, rate.value, reference.errors.n_eff))


def batch_disagreement(reference: Reference, y_pred: np.ndarray) -> Batch:
    """Batch disagreement: `y_pred` (M, n) predicted classes of the reference's seed models."""
    y_pred = np.asarray(y_pred)
    n = y_pred.shape[1]
    w_pairs = reference.pair_weights
    total = w_pairs.sum()
    m = len(y_pred)
    weights = np.zeros((m, m))
    weights[np.triu_indices(m, 1)] = w_pairs
    weights += weights.T
    one_hot = [(y_pred == k).astype(float) for k in range(reference.n_classes)]
    agree = sum(((weights @ o) * o).sum(axis=0) / 2 for o in one_hot)  # weighted agreeing pairs
    per_pair = 1 - _upper(sum(o @ o.T for o in one_hot)) / n
    rate = _rate((total - agree) / total / n, np.full(n, 1 / n), per_pair)

    def differing(patterns: np.ndarray) -> np.ndarray:  # pairs of the set that disagree
        seen = patterns.sum(axis=1)[:, None]
        counts = [patterns @ o for o in one_hot[:-1]]
        counts.append(seen - sum(counts))  # the last class: the rest
        return _pairs_of(seen) - sum(_pairs_of(c) for c in counts)

    spread = _spread(reference, differing)
    return Batch(rate, _kappa(spread / total**2, rate.value, reference.disagreement.n_eff))


@dataclass(frozen=True)
class Test:
    z: float
    p_value: float
    threshold: float  # the batch value at which the test alarms at its level (inf: none can)


def exceeds(batch: Batch, reference: Rate, level: float) -> Test:
    """One-sided test that the batch's rate exceeds the reference's (module docstring). A design
    factor that cannot be estimated (a batch rate of 0 or 1, a batch of one row) is taken as 1,
    its bound: conservative."""
    kb, kr = batch.rate.kappa, batch.kappa_reference
    if batch.rate.n_rows < 2:
        kb = kr = 1.0
    kb, kr = (k if np.isfinite(k) else 1.0 for k in (kb, kr))
    r, nb, nr = reference.value, batch.rate.n_eff, reference.n_eff
    factor = kb / nb + kr / nr

    def sd(x: float) -> float:
        p0 = (nb * x + nr * r) / (nb + nr)
        return float(np.sqrt(max(p0 * (1 - p0), 0.0) * factor))

    b = batch.rate.value
    spread = sd(b)
    z = (b - r) / spread if spread > 0 else (0.0 if b <= r else np.inf)
    critical = float(-special.ndtri(level))  # scipy.stats.norm.isf, without its overhead

    def gap(x: float) -> float:  # convex in x: one crossing above r
        return x - r - critical * sd(x)

    low = min(r + 1e-12, 1.0)
    if gap(1.0) < 0:
        threshold = np.inf
    elif gap(low) >= 0:
        threshold = r
    else:
        threshold = float(optimize.brentq(gap, low, 1.0, xtol=1e-9))
    return Test(float(z), float(special.ndtr(-z)), threshold)  # norm.sf(z)


def levels(n_batches: int, alpha: float, rule: str = "bonferroni") -> np.ndarray:
    """Each batch's test level; their sum, at most alpha, bounds the false-alarm rate."""
    if rule == "bonferroni":
        return np.full(n_batches, alpha / max(n_batches, 1))
    if rule == "spending":
        k = np.arange(1, n_batches + 1, dtype=float)
        return alpha / (k * (k + 1))
    raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")


def rule_text(n_batches: int, alpha: float, rule: str = "bonferroni") -> str:
    """The alarm rule and the false-alarm rate it guarantees, in words."""
    percent = f"{alpha * 100:.3g}%"
    if rule == "bonferroni":
        return (
            f"Bonferroni, each of the {n_batches} batches tested at {alpha:g}/{n_batches} = "
            f"{alpha / n_batches:.3g}: false-alarm rate over these {n_batches} batches at most "
            f"{percent}"
        )
    return (
        f"alpha spending, batch k tested at {alpha:g}/(k(k+1)) (batch 1 at {alpha / 2:.3g}): "
        f"false-alarm rate over these {n_batches} batches, and any that follow, at most {percent}"
    )
