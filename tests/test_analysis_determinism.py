"""Determinism summary from hashes, the deterministic/non-deterministic time ratio, and P(metric >= t)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import analysis as ba


def _run(library: str, det: bool, weights: list[str], preds: list[str], seconds: list[float]):
    return [
        {
            "trial_key": f"{library}{det}{i}",
            "status": "ok",
            "library": library,
            "device": "cpu",
            "deterministic": det,
            "seed_split": 1,
            "seed_order": 2,
            "seed_init": 3,
            "repeat": i,
            "weights_sha256": w,
            "predictions_sha256": p,
            "accuracy": 0.9 if p == "p0" else 0.8,
            "fit_seconds": s,
        }  # fmt: skip
        for i, (w, p, s) in enumerate(zip(weights, preds, seconds, strict=True))
    ]


def _table() -> pd.DataFrame:
    rows = (
        _run("torch", True, ["w0"] * 3, ["p0"] * 3, [2.0, 2.0, 2.0])
        + _run("torch", False, ["w0", "w1", "w2"], ["p0", "p0", "p1"], [1.0, 1.0, 1.0])
        + _run("sklearn", False, ["w9"] * 2, ["p0"] * 2, [0.1, 0.1])
    )
    return pd.DataFrame(rows)


def test_distinct_hashes_per_repeated_setup() -> None:
    df = _table()
    groups = ba.repeat_groups(df).set_index(["library", "deterministic"])
    assert groups.loc[("torch", True), "distinct_weights"] == 1
    assert groups.loc[("torch", False), "distinct_weights"] == 3
    assert groups.loc[("torch", False), "distinct_predictions"] == 2
    assert groups.loc[("torch", False), "metric_range"] == pytest.approx(0.1)
    assert groups["bitwise_repeatable"].to_dict() == {
        ("sklearn", False): True,
        ("torch", False): False,
        ("torch", True): True,
    }
    summary = ba.determinism_summary(df).set_index(["library", "deterministic"])
    assert summary.loc[("torch", False), "setups_repeatable"] == 0
    assert summary.loc[("torch", True), "setups_repeatable"] == 1
    assert summary.loc[("torch", False), "max_distinct_weights"] == 3
    single = df.iloc[[0]]
    assert ba.determinism_summary(single).empty  # one run of a setup: nothing to say


def test_time_ratio_deterministic_over_nondeterministic() -> None:
    cost = ba.determinism_cost(_table(), n_resamples=200)
    assert cost["library"].tolist() == ["torch"]  # sklearn has only one mode
    row = cost.iloc[0]
    assert row["ratio_median"] == 2.0
    assert row["ratio_median_ci_low"] == row["ratio_median_ci_high"] == 2.0  # constant times


def test_the_time_ratio_ci_is_the_ci_of_the_ratio_printed_beside_it() -> None:
    """The ratio shown is the ratio of medians, so its interval is a bootstrap CI of the ratio of
    medians (it used to be the CI of the ratio of means, another estimator, printed beside it)."""
    on = [2.0, 2.1, 1.9, 2.2, 9.0]  # a slow first trial: mean ratio 3.4, median ratio 2.1
    off = [1.0, 1.05, 0.95, 1.1, 1.0]
    df = pd.DataFrame(_run("torch", True, ["w"] * 5, ["p0"] * 5, on)
                      + _run("torch", False, ["w"] * 5, ["p0"] * 5, off))  # fmt: skip
    row = ba.determinism_cost(df, n_resamples=999).iloc[0]
    assert row["ratio_median"] == pytest.approx(2.1)
    ci_columns = [c for c in row.index if c.endswith(("_ci_low", "_ci_high"))]
    assert ci_columns == ["ratio_median_ci_low", "ratio_median_ci_high"]  # nothing else
    ref = stats.bootstrap(
        (np.sort(on), np.sort(off)),
        lambda x, y, axis: np.median(x, axis=axis) / np.median(y, axis=axis),
        n_resamples=999,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert (row["ratio_median_ci_low"], row["ratio_median_ci_high"]) == pytest.approx(
        (ref.low, ref.high)
    )
    assert row["ratio_median_ci_low"] < row["ratio_median"] < row["ratio_median_ci_high"]


def test_every_interval_the_sweep_summary_prints_sits_beside_its_own_estimate() -> None:
    from bench.summary import _SHORT

    intervals = [c for c in _SHORT if c.endswith(("_ci_low", "_ci_high"))]
    assert intervals  # the fit-time ratio's CI is printed
    for column in intervals:
        assert column.rsplit("_ci_", 1)[0] in _SHORT, f"{column} printed without its estimate"


def test_threshold_probability_with_wilson_and_exact_intervals() -> None:
    df = pd.DataFrame({"library": "torch", "status": "ok",
                       "accuracy": [0.75, 0.79, 0.80, 0.81, 0.85, 0.9, 0.7, 0.82, 0.95, 0.8]})  # fmt: skip
    row = ba.threshold_probability(df, 0.8).iloc[0]
    assert (row["k"], row["n"], row["probability"]) == (7, 10, 0.7)
    ref = stats.binomtest(7, 10).proportion_ci(0.95, method="wilson")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ref.low, ref.high))
    z = stats.norm.ppf(0.975)  # Wilson's score interval, by its formula
    centre = (0.7 + z**2 / 20) / (1 + z**2 / 10)
    half = z / (1 + z**2 / 10) * math.sqrt(0.7 * 0.3 / 10 + z**2 / 400)
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((centre - half, centre + half))
    exact = ba.threshold_probability(df, [0.8, 0.99], method="exact").set_index("threshold")
    assert exact.loc[0.99, "probability"] == 0 and exact.loc[0.99, "ci_low"] == 0
    assert exact.loc[0.99, "ci_high"] == pytest.approx(1 - 0.025 ** (1 / 10))  # Clopper-Pearson
    assert np.isnan(ba.proportion_ci(0, 0)[0])
