"""The label-free gate: does an update move predictions more than retraining with new seeds?

Without labels (rows with `y_true` null and NaN metrics, as `bench score` writes for an
unlabelled input file; or `--unlabelled` on ordinary runs) there is no accuracy to compare, but
there are predictions on the same inputs. Retraining the *old* version with other seeds already
changes some of them (the seed-noise churn band, `bench.analysis.churn`); an update that is
harmless should change them no more than that.

With churn(i, j) the fraction of input rows on which trials i and j predict different classes:

- within = mean churn over every pair of baseline trials (retraining the old version);
- cross = mean churn over every (baseline trial, candidate trial) pair (old vs new version);
- excess = cross - within (> 0: the update moves predictions more than seed noise does).

The alarm is a one-sided permutation test of excess (`scipy.stats.permutation_test`,
alternative "greater"): if the candidate's trials were just more retrains of the baseline, the
labels "baseline" and "candidate" would be exchangeable, so relabelling the trials at random
gives the excess's distribution under no change. Unpaired, every relabelling of the pooled trials
(`permutation_type="independent"`); paired (the same seeds, `bench.analysis.pairing.pair_trials`),
swaps within pairs only (`"samples"`), which keeps what the pairs share. `worse` (alarm) when
p < alpha/2 (alpha = 1 - confidence: 2.5% at the default 0.95, the same one-sided level as the
labelled gate's `worse`), which is then its false-alarm rate under a no-op update. Exact
enumeration when the relabellings are few, else `n_resamples` random ones (p = (k + 1) /
(n + 1), still valid).

`not worse` otherwise, unless the runs are too small for any relabelling to reach alpha/2 (the
smallest p a permutation test can give is 1 / the number of relabellings): then `inconclusive`
with the seeds per run that would make an alarm possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from bench.analysis.churn import INDEX, PRED
from bench.analysis.gate import (
    CONFIDENCE,
    INCONCLUSIVE,
    NOT_WORSE,
    WORSE,
    Answer,
    seeds_to_reach,
    smallest_p,
)
from bench.analysis.pairing import Pairing

N_RESAMPLES = 9999
SEED = 0  # the random relabellings are drawn from a fixed seed: the same runs, the same answer


@dataclass(frozen=True)
class ChurnGate(Answer):
    """The label-free gate's answer."""

    n_rows: int  # input rows every trial predicted
    confidence: float
    within: float  # mean churn between baseline trials (the seed-noise band's centre)
    within_low: float  # 5th and 95th percentile of the baseline pairs' churn
    within_high: float
    cross: float  # mean churn between a baseline and a candidate trial
    candidate_within: float  # mean churn between candidate trials (NaN with fewer than 2)
    matched: float  # paired: mean churn of matched pairs (NaN unpaired)
    excess: float
    p_value: float
    min_p: float  # the smallest p these run sizes allow
    seeds_needed: int | None = None
    mode: str = "label-free"


def prediction_matrix(df: pd.DataFrame, what: str = "run") -> tuple[np.ndarray, np.ndarray]:
    """(input rows, trials x rows predicted classes) of rows that all predicted the same input
    rows in the same order; ValueError saying which differ otherwise."""
    if df[PRED].isna().any():
        raise ValueError(f"the {what} has trials without per-row predictions (predictions=none)")
    indices = [np.asarray(i) for i in df[INDEX]]
    first = indices[0]
    if not all(np.array_equal(i, first) for i in indices[1:]):
        raise ValueError(
            f"the {what}'s trials predicted different input rows (test_index differs, e.g. "
            "split seeds that vary); label-free comparison needs the same inputs for every trial"
        )
    return first, np.vstack([np.asarray(p) for p in df[PRED]])


def churn_distances(predictions: np.ndarray) -> np.ndarray:
    """Square matrix of churn between every two trials (rows of `predictions`)."""
    return np.vstack([np.mean(predictions != row, axis=1) for row in predictions])


def _upper_mean(d: np.ndarray) -> float:
    upper = d[np.triu_indices(len(d), 1)]
    return float(upper.mean()) if len(upper) else float("nan")


def seeds_for_alarm(confidence: float, paired: bool) -> int:
    """Seeds per run (equal runs) from which a permutation test can reach alpha/2 at all
    (`bench.analysis.gate.smallest_p`, the least p it can give)."""
    return seeds_to_reach((1 - confidence) / 2, paired)


def churn_gate(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    pairing: Pairing | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> ChurnGate:
    """The label-free gate on two runs' rows (status `ok`, each with `y_pred` and the same
    `test_index`). `pairing`: from `bench.analysis.pairing.pair_trials`; None is unpaired."""
    pairing = pairing or Pairing(False, "unpaired as asked")
    runs = (len(baseline), len(candidate))  # trials of each run, before pairing leaves some out
    if pairing.paired:  # pairs in order: baseline i and candidate i
        base_keys = pd.Index(baseline["trial_key"])
        cand_keys = pd.Index(candidate["trial_key"])
        baseline = baseline.iloc[base_keys.get_indexer(pairing.pairs["trial_key_a"])]
        candidate = candidate.iloc[cand_keys.get_indexer(pairing.pairs["trial_key_b"])]
    rows_b, pred_b = prediction_matrix(baseline, "baseline")
    rows_c, pred_c = prediction_matrix(candidate, "candidate")
    if not np.array_equal(rows_b, rows_c):
        raise ValueError(
            "the runs predicted different input rows (test_index differs); label-free "
            "comparison needs both versions to predict the same inputs"
        )
    n_b, n_c = len(pred_b), len(pred_c)
    d = churn_distances(np.vstack([pred_b, pred_c]))
    base = np.arange(n_b)
    cand = np.arange(n_b, n_b + n_c)

    def excess(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        """cross - within for trials `x` (as baseline) and `y`, over any leading batch axes
        (scipy hands relabellings over in batches): the diagonal of `d` is 0, so the mean of
        its upper triangle over x is the sum over x x x divided by k (k - 1)."""
        x = np.moveaxis(np.asarray(x), axis, -1).astype(int)
        y = np.moveaxis(np.asarray(y), axis, -1).astype(int)
        k = x.shape[-1]
        cross = d[x[..., :, None], y[..., None, :]].mean(axis=(-2, -1))
        within = d[x[..., :, None], x[..., None, :]].sum(axis=(-2, -1)) / (k * (k - 1))
        return cross - within

    nan = float("nan")
    within_pairs = d[np.ix_(base, base)][np.triu_indices(n_b, 1)]
    observed = float(excess(base, cand)) if n_b >= 2 and n_c >= 1 else nan
    least = smallest_p(n_b, n_c, pairing.paired) if n_b >= 2 and n_c >= 1 else 1.0
    alpha = (1 - confidence) / 2
    if np.isfinite(observed) and least < alpha:
        result = stats.permutation_test(
            (base, cand),
            excess,
            permutation_type="samples" if pairing.paired else "independent",
            alternative="greater",
            vectorized=True,
            n_resamples=n_resamples,
            batch=max(1, 4_000_000 // (n_b * max(n_b, n_c))),  # index arrays of ~32 MB
            rng=np.random.default_rng(seed),
        )
        p = float(result.pvalue)
    else:
        p = 1.0
    if least >= alpha:
        verdict, needed = INCONCLUSIVE, seeds_for_alarm(confidence, pairing.paired)
    else:
        verdict, needed = (WORSE if p < alpha else NOT_WORSE), None
    matched = float(np.mean(d[base, cand])) if pairing.paired else nan
    return ChurnGate(
        verdict=verdict, paired=pairing.paired, pairing=pairing.reason, n_baseline=runs[0],
        n_candidate=runs[1], n_pairs=n_b if pairing.paired else 0, n_rows=len(rows_b),
        confidence=confidence, within=_upper_mean(d[np.ix_(base, base)]),
        within_low=float(np.percentile(within_pairs, 5)) if len(within_pairs) else nan,
        within_high=float(np.percentile(within_pairs, 95)) if len(within_pairs) else nan,
        cross=float(d[np.ix_(base, cand)].mean()) if n_c else nan,
        candidate_within=_upper_mean(d[np.ix_(cand, cand)]), matched=matched,
        excess=observed, p_value=p, min_p=least, seeds_needed=needed,
    )  # fmt: skip
