"""Variance by source (one-at-a-time design) and ANOVA variance components (factorial design)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import analysis as ba

SEEDS = {"split": "seed_split", "order": "seed_order", "init": "seed_init"}


def _seeds_sweep(values: dict[str, list[float]], library: str = "torch") -> pd.DataFrame:
    """Rows of a seeds sweep: source s varied alone takes seed i in its column, 0 elsewhere."""
    rows = []
    for varied, accs in values.items():
        for i, acc in enumerate(accs):
            seeds = {c: 0 for c in SEEDS.values()}
            if varied in SEEDS:
                seeds[SEEDS[varied]] = i
            elif varied == "all":
                seeds = dict.fromkeys(SEEDS.values(), i)
            rows.append(
                {"library": library, "status": "ok", "varied": varied, "accuracy": acc, **seeds}
            )
    return pd.DataFrame(rows)


def test_shares_against_all_varied_with_known_variances() -> None:
    split, order, init, total = [0.7, 0.8, 0.9], [0.8, 0.8, 0.8], [0.75, 0.8, 0.85], [0.6, 0.8, 1.0]
    df = _seeds_sweep(
        {"split": split, "order": order, "init": init, "all": total, "none": [0.8] * 3}
    )
    table = ba.variance_by_source(df, "library", n_resamples=200).set_index("source")
    var = {k: np.var(v, ddof=1) for k, v in (("split", split), ("init", init), ("all", total))}
    assert table.loc["split", "variance"] == pytest.approx(var["split"])
    assert table.loc["split", "share_of_all"] == pytest.approx(var["split"] / var["all"])  # 0.25
    assert table.loc["init", "share_of_all"] == pytest.approx(var["init"] / var["all"])
    assert table.loc["order", "share_of_all"] == 0.0
    assert table.loc["sum_of_sources", "share_of_all"] == pytest.approx(
        (var["split"] + var["init"]) / var["all"]
    )
    assert table.loc["all", "share_of_all"] == 1.0
    assert table.loc["none", "variance"] == 0.0
    assert table["identifiable"].all()


def test_missing_or_frozen_sources_are_flagged_not_identifiable() -> None:
    df = _seeds_sweep({"split": [0.7, 0.8, 0.9], "init": [0.8], "all": [0.8, 0.8]})
    df.loc[df["varied"] == "split", "seed_split"] = 5  # the sweep claims split varied, it did not
    table = ba.variance_by_source(df, "library", ci=False).set_index("source")
    assert not table.loc["split", "identifiable"]
    assert "seed_split takes one value" in table.loc["split", "note"]
    assert not table.loc["init", "identifiable"] and "1 trial" in table.loc["init", "note"]
    assert not table.loc["order", "identifiable"] and "0 trial" in table.loc["order", "note"]
    assert not table.loc["sum_of_sources", "identifiable"]
    assert np.isnan(table.loc["all", "share_of_all"])
    assert "all-varied variance is 0" in table.loc["all", "note"]


def _factorial(
    levels: dict[str, int], sd: dict[str, float], noise: float, seed: int
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    effects = {f: rng.normal(0, sd[f], n) for f, n in levels.items()}
    rows = []
    for combo in itertools.product(*(range(n) for n in levels.values())):
        y = 0.8 + sum(effects[f][i] for f, i in zip(levels, combo, strict=True))
        rows.append({"library": "torch", "status": "ok", **dict(zip(levels, combo, strict=True)),
                     "accuracy": y + rng.normal(0, noise)})  # fmt: skip
    return pd.DataFrame(rows)


def test_one_factor_anova_matches_scipy_f_oneway() -> None:
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {"library": "torch", "status": "ok", "seed_split": np.repeat(np.arange(5), 4),
         "accuracy": rng.normal(0.8, 0.02, 20) + np.repeat(rng.normal(0, 0.03, 5), 4)}
    )  # fmt: skip
    table = ba.variance_components(df, ["seed_split"], by="library").set_index("component")
    ref = stats.f_oneway(*[g["accuracy"].to_numpy() for _, g in df.groupby("seed_split")])
    assert table.loc["seed_split", "F"] == pytest.approx(ref.statistic)
    assert table.loc["seed_split", "p_value"] == pytest.approx(ref.pvalue)
    ms = table["mean_sq"]
    assert table.loc["seed_split", "variance"] == pytest.approx(
        max((ms["seed_split"] - ms["residual"]) / 4, 0)
    )


def test_variance_components_recover_known_components() -> None:
    levels = {"seed_split": 40, "seed_order": 40, "seed_init": 3}
    sd = {"seed_split": 0.04, "seed_order": 0.01, "seed_init": 0.0}
    df = _factorial(levels, sd, noise=0.02, seed=4)
    table = ba.variance_components(df, list(levels), by=None).set_index("component")
    assert table.loc["seed_split", "variance"] == pytest.approx(0.04**2, rel=0.35)
    assert table.loc["seed_order", "variance"] == pytest.approx(0.01**2, rel=0.6)
    assert table.loc["residual", "variance"] == pytest.approx(0.02**2, rel=0.1)
    assert table.loc["seed_init", "variance"] < 2e-5
    identifiable = table.drop("total")
    assert identifiable["share"].sum() == pytest.approx(1.0)
    assert table.loc["total", "sum_sq"] == pytest.approx(
        ((df["accuracy"] - df["accuracy"].mean()) ** 2).sum()
    )


def test_non_factorial_designs_say_why() -> None:
    df = _seeds_sweep({"split": [0.7, 0.8, 0.9], "order": [0.8, 0.8, 0.81], "all": [0.7, 0.9, 0.8]})
    ok, why = ba.factorial_check(df, ["seed_split", "seed_order", "seed_init"])
    assert not ok and "not a full factorial" in why
    table = ba.variance_components(df, by="library")
    assert not table["identifiable"].any()
    assert table["note"].str.contains("variance_by_source").all()
    one_level = _factorial(
        {"seed_split": 4, "seed_order": 1}, {"seed_split": 0.1, "seed_order": 0}, 0.01, 5
    )
    t = ba.variance_components(one_level, ["seed_split", "seed_order"], by=None).set_index(
        "component"
    )
    assert not t.loc["seed_order", "identifiable"] and "one level" in t.loc["seed_order", "note"]
    assert "no residual" in t.loc["seed_split", "note"]  # one row per cell, one factor: df_res = 0
