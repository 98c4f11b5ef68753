"""Comparison of two groups against seed noise: clear cases, scipy agreement, pairing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import analysis as ba


def _groups(a: np.ndarray, b: np.ndarray, paired_seeds: bool = False) -> pd.DataFrame:
    rows = []
    for lib, values in (("A", a), ("B", b)):
        for i, v in enumerate(values):
            seed = i if paired_seeds else hash((lib, i)) % 10**6
            rows.append({"trial_key": f"{lib}{i}", "status": "ok", "library": lib,
                         "seed_split": seed, "seed_order": seed, "seed_init": seed,
                         "accuracy": float(v)})  # fmt: skip
    return pd.DataFrame(rows)


def test_clearly_separated_groups_exceed_seed_noise() -> None:
    rng = np.random.default_rng(0)
    df = _groups(rng.normal(0.90, 0.01, 20), rng.normal(0.80, 0.01, 20))
    row = ba.compare(df, "library", "A", "B", n_resamples=1000).iloc[0]
    assert row["prob_a_better"] == 1.0 and row["prob_tie"] == 0.0
    assert row["verdict"] == ba.EXCEEDS
    # measured 0.0930 to 0.1021 (true difference 0.1): about 0.003 of margin on each side
    assert row["diff_ci_low"] > 0.09 and row["diff_ci_high"] < 0.105
    assert not row["paired"]
    assert "+0.1" in row["reason"] and "CI excludes 0" in row["reason"]
    reverse = ba.compare(df, "library", "B", "A", n_resamples=1000).iloc[0]
    assert reverse["prob_a_better"] == 0.0 and reverse["verdict"] == ba.EXCEEDS


def test_two_samples_of_one_distribution_are_within_seed_noise() -> None:
    rng = np.random.default_rng(2024)
    for _ in range(10):  # robust: every draw, not one lucky one
        df = _groups(rng.normal(0.85, 0.02, 20), rng.normal(0.85, 0.02, 20))
        row = ba.compare(df, "library", "A", "B", n_resamples=500).iloc[0]
        assert row["verdict"] == ba.WITHIN
        assert 0.25 < row["prob_a_better"] < 0.75  # measured 0.295 to 0.645 over the 10 draws
        assert abs(row["diff"]) < row["noise_std"]


def test_resolved_but_small_difference_is_within_noise_and_says_why() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(0.85, 0.02, 400)
    df = _groups(a + 0.01, a, paired_seeds=True)
    row = ba.compare(df, "library", "A", "B", n_resamples=500).iloc[0]
    assert row["paired"] and row["n_pairs"] == 400
    assert row["diff"] == pytest.approx(0.01)
    assert row["diff_ci_low"] > 0  # resolved: every pair differs by exactly +0.01 ...
    assert row["prob_a_better"] == 1.0
    assert row["verdict"] == ba.WITHIN  # ... but smaller than the seed-to-seed std of 0.02
    assert "<= 1 std" in row["reason"]


def test_unpaired_probability_matches_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    a = np.round(rng.normal(0.8, 0.03, 15), 2)  # rounded: ties happen, as with accuracy
    b = np.round(rng.normal(0.79, 0.03, 12), 2)
    p = ba.compare_samples(a, b, n_resamples=200)["prob_a_better"]
    u = stats.mannwhitneyu(a, b).statistic / (len(a) * len(b))
    tie = np.mean(a[:, None] == b[None, :])
    assert p + tie / 2 == pytest.approx(u)
    assert p == pytest.approx(np.mean(a[:, None] > b[None, :]))


def test_difference_ci_matches_scipy_two_sample_bootstrap() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.8, 0.03, 20), rng.normal(0.78, 0.03, 25)
    row = ba.compare_samples(a, b, n_resamples=999, seed=11)

    def diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return x.mean(axis=axis) - y.mean(axis=axis)

    # bench resamples the sorted values, so that row order never moves an interval
    ref = stats.bootstrap(
        (np.sort(a), np.sort(b)), diff, n_resamples=999, rng=np.random.default_rng(11)
    )
    ci = ref.confidence_interval
    assert (row["diff_ci_low"], row["diff_ci_high"]) == pytest.approx((ci.low, ci.high))


def test_auto_pairs_matched_seeds_and_compare_levels_covers_every_pair() -> None:
    rng = np.random.default_rng(6)
    base = rng.normal(0.8, 0.03, 10)
    df = _groups(base + 0.001, base, paired_seeds=True)
    df = pd.concat([df, _groups(base, base, True).query("library == 'A'").assign(library="C")])
    df["trial_key"] = [f"k{i}" for i in range(len(df))]
    table = ba.compare_levels(df, "library", n_resamples=200)
    assert [(r.a, r.b) for r in table.itertuples()] == [("A", "B"), ("A", "C"), ("B", "C")]
    assert table["paired"].all()
    with pytest.raises(ValueError, match="one-to-one"):
        ba.compare(df.iloc[1:], "library", "A", "B", paired=True)
    unpaired = ba.compare(df, "library", "A", "B", paired=False, n_resamples=200).iloc[0]
    assert not unpaired["paired"] and unpaired["n_pairs"] == 0


def test_too_few_trials_get_no_verdict_on_noise() -> None:
    df = _groups(np.array([0.9]), np.array([0.8, 0.81]))
    row = ba.compare(df, "library", "A", "B").iloc[0]
    assert row["verdict"] == "too few trials"
