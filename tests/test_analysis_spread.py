"""Spread per group and the bootstrap behind its confidence intervals: known answers, numpy/scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import analysis as ba
from bench.analysis import bootstrap


def _table(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"library": lib, "varied": "all", "status": "ok", "accuracy": v}
        for lib, vs in values.items()
        for v in vs
    ]
    return pd.DataFrame(rows)


def test_spread_matches_numpy_and_pandas() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.8, 0.02, 25), rng.normal(0.7, 0.05, 30)
    df = _table({"torch": a.tolist(), "sklearn": b.tolist()})
    df.loc[len(df)] = {"library": "torch", "varied": "all", "status": "error", "accuracy": np.nan}
    table = ba.spread(df, "library", n_resamples=500).set_index("library")
    for lib, x in (("torch", a), ("sklearn", b)):
        row = table.loc[lib]
        assert row["n"] == len(x)  # the error row is left out
        assert row["mean"] == pytest.approx(x.mean())
        assert row["std"] == pytest.approx(pd.Series(x).std())  # ddof=1, as pandas
        assert row["min"] == x.min() and row["max"] == x.max()
        assert row["range"] == pytest.approx(x.max() - x.min())
        assert row["p05"] == pytest.approx(np.percentile(x, 5))
        assert row["p95"] == pytest.approx(np.percentile(x, 95))
        assert row["mean_ci_low"] < row["mean"] < row["mean_ci_high"]
        assert row["std_ci_low"] < row["std"] < row["std_ci_high"]


def test_ci_equals_scipy_bootstrap_with_the_same_seed() -> None:
    x = np.random.default_rng(2).normal(size=40)
    low, high = bootstrap.ci(x, bootstrap.mean, n_resamples=999, seed=7)
    ref = stats.bootstrap(
        (x,), np.mean, n_resamples=999, method="BCa", rng=np.random.default_rng(7)
    ).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))


def test_constant_and_tiny_samples() -> None:
    row = ba.describe(np.full(5, 0.9))
    assert row["std"] == 0
    assert (row["mean_ci_low"], row["mean_ci_high"]) == (0.9, 0.9)
    assert (row["std_ci_low"], row["std_ci_high"]) == (0.0, 0.0)
    one = ba.describe(np.array([0.5]))
    assert one["n"] == 1 and one["mean"] == 0.5
    assert np.isnan(one["std"]) and np.isnan(one["mean_ci_low"])


def test_groups_by_any_columns_including_ones_absent_in_older_runs() -> None:
    df = _table({"torch": [0.8, 0.9, 0.85], "sklearn": [0.7, 0.75]})
    df["mode"] = ["aligned", "aligned", "defaults", "aligned", "defaults"]
    table = ba.spread(df, ["library", "mode"], ci=False)
    assert len(table) == 4
    assert table["mean_ci_low"].isna().all()


@pytest.mark.slow
def test_bootstrap_ci_covers_the_true_mean_at_least_90_percent() -> None:
    rng = np.random.default_rng(12345)
    true_mean, reps, n = 0.8, 200, 30
    covered = 0
    for _ in range(reps):
        x = rng.normal(true_mean, 0.03, n)
        low, high = bootstrap.ci(x, bootstrap.mean, n_resamples=500, seed=int(rng.integers(1e9)))
        covered += low <= true_mean <= high
    assert covered / reps >= 0.90
