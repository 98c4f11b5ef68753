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
    table = ba.variance_by_source(df, "library").set_index("source")
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
    # measured (this seed): split +15%, order -3.3%, residual -1.1% of the true value, init 7e-8
    # (true 0); the bounds leave about 2-3x those deviations, not the 35-60% they used to
    assert table.loc["seed_split", "variance"] == pytest.approx(0.04**2, rel=0.25)
    assert table.loc["seed_order", "variance"] == pytest.approx(0.01**2, rel=0.1)
    assert table.loc["residual", "variance"] == pytest.approx(0.02**2, rel=0.03)
    assert table.loc["seed_init", "variance"] < 1e-6  # 1% of the order component
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


def _chi2_interval(x: list[float], confidence: float = 0.95) -> tuple[float, float]:
    n, s2 = len(x), np.var(x, ddof=1)
    alpha = 1 - confidence
    return (
        (n - 1) * s2 / stats.chi2.ppf(1 - alpha / 2, n - 1),
        (n - 1) * s2 / stats.chi2.ppf(alpha / 2, n - 1),
    )


@pytest.mark.parametrize(
    "accs",
    [
        [0.7, 0.8],  # n = 2
        [0.7, 0.8, 0.8],  # n = 3: the bootstrap gave (0.00333, 0.00333), a point
        [0.75, 0.75, 0.85],
        list(np.round(np.random.default_rng(8).normal(0.8, 0.02, 40), 3)),  # n = 40
    ],
)
def test_variance_ci_is_a_real_interval_at_any_n(accs: list[float]) -> None:
    df = _seeds_sweep({"init": accs, "all": [0.6, 0.8, 1.0]})
    row = ba.variance_by_source(df, "library").set_index("source").loc["init"]
    low, high = row["variance_ci_low"], row["variance_ci_high"]
    assert low < row["variance"] < high  # wider than a point, around the estimate
    assert (low, high) == pytest.approx(_chi2_interval(accs))
    # the same interval, by way of scipy's Bayesian (Jeffreys prior) posterior for the variance,
    # whose equal-tailed interval is the chi-square interval
    ref = stats.bayes_mvs(accs, alpha=0.95)[1].minmax
    assert (low, high) == pytest.approx(ref, rel=1e-9)
    assert ba.variance_ci(np.asarray(accs)) == (low, high)


def test_variance_ci_is_nan_not_a_point_when_undefined() -> None:
    df = _seeds_sweep({"init": [0.8] * 4, "order": [0.8], "all": [0.6, 0.8, 1.0]})
    table = ba.variance_by_source(df, "library").set_index("source")
    assert table.loc["init", "variance"] == 0.0  # every trial gave the same value
    assert np.isnan(table.loc["init", "variance_ci_low"])
    assert np.isnan(table.loc["init", "variance_ci_high"])
    assert "no CI" in table.loc["init", "note"]
    assert np.isnan(table.loc["order", "variance_ci_low"])  # one trial
    assert all(np.isnan(ba.variance_ci(np.array(x))).all() for x in ([0.8], [], [0.8, 0.8]))


def test_the_chi_square_interval_covers_95_percent_of_normal_samples_at_n_3() -> None:
    rng = np.random.default_rng(9)
    hits = 0
    for _ in range(2000):
        low, high = ba.variance_ci(rng.normal(0.8, 0.02, 3))
        hits += low <= 0.02**2 <= high
    assert 0.935 <= hits / 2000 <= 0.965  # binomial sd 0.5%: measured 0.95


def test_seed_groups_parses_seed_sources() -> None:
    assert ba.parse_seed_sources("split,order,init") == [("split",), ("order",), ("init",)]
    assert ba.parse_seed_sources("split,order+init") == [("split",), ("order", "init")]
    assert ba.parse_seed_sources("split") == [("split",)]
    assert ba.parse_seed_sources("split,init") == [("split",), ("init",)]
    assert ba.parse_seed_sources("split,init,cv") == [("split",), ("init",), ("cv",)]
    assert ba.parse_seed_sources("") == []
    every = [("split",), ("order",), ("init",)]
    assert (
        ba.parse_seed_sources(None)
        == ba.parse_seed_sources(float("nan"))
        == ba.parse_seed_sources(pd.NA)
        == every
    )
    for bad in ("split,dropout", "split,order+", "split,split", 3):
        with pytest.raises(ValueError):
            ba.parse_seed_sources(bad)


def test_a_merged_seed_group_is_one_source_counted_once() -> None:
    split, order, init, total = [0.7, 0.8, 0.9], [0.75, 0.8, 0.85], [0.6, 0.8, 0.9], [0.6, 0.8, 1.0]
    # MLPClassifier in defaults mode: one random state from both seeds; the sweep ran order only
    df = _seeds_sweep({"split": split, "order": order, "all": total, "none": [0.8] * 2})
    df["seed_sources"] = "split,order+init"
    table = ba.variance_by_source(df, "library").set_index("source")
    assert table.index.tolist() == ["split", "order+init", "sum_of_sources", "all", "none"]
    assert table.loc["order+init", "variance"] == pytest.approx(np.var(order, ddof=1))
    assert table.loc["order+init", "n"] == 3
    assert "varied=order" in table.loc["order+init", "note"]
    assert table.loc["sum_of_sources", "variance"] == pytest.approx(
        np.var(split, ddof=1) + np.var(order, ddof=1)
    )
    # both members' trials there (an older sweep): still one source, from the first member only
    both = pd.concat([df, _seeds_sweep({"init": init}).assign(seed_sources="split,order+init")])
    again = ba.variance_by_source(both, "library").set_index("source")
    assert "init" not in again.index and "order" not in again.index
    assert again.loc["order+init", "variance"] == table.loc["order+init", "variance"]
    assert again.loc["sum_of_sources", "variance"] == table.loc["sum_of_sources", "variance"]


def test_a_source_without_effect_is_marked_not_a_zero_variance_source() -> None:
    # LogisticRegression (lbfgs) in defaults mode: only the split reaches the training; an older
    # sweep still ran order and init trials, which repeat one model
    df = _seeds_sweep({"split": [0.7, 0.8, 0.9], "order": [0.8] * 3, "init": [0.8] * 3,
                       "all": [0.6, 0.8, 1.0]})  # fmt: skip
    df["seed_sources"] = "split"
    table = ba.variance_by_source(df, "library").set_index("source")
    for source in ("order", "init"):
        row = table.loc[source]
        assert row["note"].startswith("no effect") and not row["identifiable"]
        assert np.isnan(row["variance"]) and np.isnan(row["share_of_all"])
    assert table.loc["sum_of_sources", "identifiable"]
    assert table.loc["sum_of_sources", "variance"] == pytest.approx(0.01)  # split alone
    tree = df[df["varied"] != "order"].assign(seed_sources="split,init")  # decision tree
    t = ba.variance_by_source(tree, "library").set_index("source")
    assert t.index.tolist() == ["split", "order", "init", "sum_of_sources", "all", "none"]
    assert t.loc["order", "note"].startswith("no effect") and t.loc["init", "identifiable"]


def test_null_seed_sources_keep_old_runs_as_they_were_and_disagreement_is_flagged() -> None:
    values = {"split": [0.7, 0.8, 0.9], "order": [0.78, 0.8, 0.82], "init": [0.75, 0.8, 0.85],
              "all": [0.6, 0.8, 1.0]}  # fmt: skip
    old = ba.variance_by_source(_seeds_sweep(values), "library")
    null = ba.variance_by_source(_seeds_sweep(values).assign(seed_sources=None), "library")
    pd.testing.assert_frame_equal(old, null)
    assert old["source"].tolist()[:3] == ["split", "order", "init"]
    mixed = _seeds_sweep(values).assign(seed_sources="split,order,init")
    mixed.loc[mixed["varied"] == "init", "seed_sources"] = "split,order+init"
    table = ba.variance_by_source(mixed, "library").set_index("source")
    assert not table.loc["split", "identifiable"]
    assert "disagree on seed_sources" in table.loc["split", "note"]


def test_variance_components_merge_one_random_state_and_drop_sources_without_effect() -> None:
    levels = {"seed_split": 4, "seed_order": 3, "seed_init": 3}
    df = _factorial(levels, {"seed_split": 0.03, "seed_order": 0.01, "seed_init": 0.01}, 0.01, 6)
    merged = ba.variance_components(df.assign(seed_sources="split,order+init"), list(levels),
                                    by=None).set_index("component")  # fmt: skip
    assert merged.index.tolist() == ["seed_split", "seed_order+seed_init", "residual", "total"]
    assert merged.loc["seed_order+seed_init", "df"] == 8  # 9 joint random states
    joint = df.assign(state=df["seed_order"] * 3 + df["seed_init"])
    ref = ba.variance_components(joint, ["seed_split", "state"], by=None).set_index("component")
    assert merged.loc["seed_order+seed_init", "variance"] == pytest.approx(
        ref.loc["state", "variance"]
    )
    tree = ba.variance_components(df.assign(seed_sources="split,init"), list(levels),
                                  by=None).set_index("component")  # fmt: skip
    assert tree.loc["seed_order", "note"].startswith("no effect")
    assert not tree.loc["seed_order", "identifiable"]
    assert tree.loc["seed_split", "identifiable"] and tree.loc["seed_init", "identifiable"]
    plain = ba.variance_components(df, list(levels), by=None)
    pd.testing.assert_frame_equal(
        plain, ba.variance_components(df.assign(seed_sources=None), list(levels), by=None)
    )
