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
    ref = stats.bootstrap(  # bench resamples the sorted values (row order must not matter)
        (np.sort(x),), np.mean, n_resamples=999, method="BCa", rng=np.random.default_rng(7)
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


def test_an_interval_of_values_that_vary_is_never_a_single_point() -> None:
    # BCa on 3 values put both ends on one atom: std CI (0.0577, 0.0577) for the first values,
    # the two ends 2e-17 apart
    def real_or_none(low: float, high: float) -> bool:
        return (np.isnan(low) and np.isnan(high)) or high - low > 1e-9 * abs(high)

    for x in ([0.75, 0.75, 0.85], [0.8, 0.85, 0.85], [0.7, 0.8, 0.8]):
        for statistic in (bootstrap.std, bootstrap.variance, bootstrap.mean):
            low, high = bootstrap.ci(np.array(x), statistic, n_resamples=500)
            assert real_or_none(low, high), (x, statistic, low, high)
        row = ba.describe(np.array(x), n_resamples=500)
        assert real_or_none(row["std_ci_low"], row["std_ci_high"]), x


def _trials(seed: int = 0) -> pd.DataFrame:
    """Two libraries on matched seeds, every varied source, both deterministic settings."""
    rng = np.random.default_rng(seed)
    rows = []
    for library, shift in (("A", 0.0), ("B", 0.01)):
        for varied in ("split", "order", "init", "all", "none"):
            for i in range(8):
                seeds = {f"seed_{s}": (i if varied in (s, "all") else 0)
                         for s in ("split", "order", "init")}  # fmt: skip
                rows.append({"trial_key": f"{library}-{varied}-{i}", "status": "ok",
                             "library": library, "device": "cpu", "varied": varied,
                             "repeat": i if varied == "none" else 0, **seeds,
                             "deterministic": i % 2 == 0, "fit_seconds": rng.uniform(1, 3),
                             "accuracy": round(0.8 + shift + rng.normal(0, 0.02), 3)})  # fmt: skip
    return pd.DataFrame(rows)


def test_every_bootstrap_interval_is_the_same_in_any_row_order() -> None:
    """Ray returns trials in completion order: the same trials in another row order must give the
    same intervals (and estimates), bit for bit, from every public function that returns one."""
    df = _trials()
    allv = df[df["varied"] == "all"]
    calls = {
        "spread": lambda d: ba.spread(d, ["library", "varied"], n_resamples=300),
        "compare paired": lambda d: ba.compare(d[d["varied"] == "all"], "library", "A", "B",
                                               n_resamples=300),
        "compare unpaired": lambda d: ba.compare(d, "library", "A", "B", by="varied",
                                                 paired=False, n_resamples=300),
        "compare_levels": lambda d: ba.compare_levels(d, "library", by="varied", n_resamples=300),
        "determinism_cost": lambda d: ba.determinism_cost(d, n_resamples=300),
        "variance_by_source": lambda d: ba.variance_by_source(d, "library"),
        "threshold_probability": lambda d: ba.threshold_probability(d, [0.8, 0.81]),
    }  # fmt: skip
    for name, call in calls.items():
        want = call(df).reset_index(drop=True)
        assert [c for c in want.columns if c.endswith("ci_low")], name
        for k in range(3):
            got = call(df.sample(frac=1, random_state=k)).reset_index(drop=True)
            pd.testing.assert_frame_equal(got, want, check_exact=True, obj=name)
    x = allv["accuracy"].to_numpy()
    shuffled = np.random.default_rng(1).permutation(x)
    for statistic in (bootstrap.mean, bootstrap.std, bootstrap.variance):
        assert ba.bootstrap_ci(x, statistic) == ba.bootstrap_ci(shuffled, statistic)
    a, b = x[:8], x[8:]
    assert ba.bootstrap_ci([a, b], bootstrap.mean_difference, paired=True) == ba.bootstrap_ci(
        [a[::-1], b[::-1]], bootstrap.mean_difference, paired=True
    )


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
