"""Churn of known prediction vectors, within groups, between matched groups, and per class."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import analysis as ba


def _row(key: str, library: str, pred: list[int], seed: int = 0, **extra: object) -> dict:
    n = len(pred)
    return {
        "trial_key": key,
        "status": "ok",
        "library": library,
        "varied": "init",
        "seed_split": 0,
        "seed_order": 0,
        "seed_init": seed,
        "repeat": 0,
        "test_index": np.arange(n),
        "y_true": np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1][:n]),
        "y_pred": np.array(pred),
        "accuracy": float(np.mean(np.array(pred) == np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1][:n]))),
        **extra,
    }


def test_churn_of_known_vectors() -> None:
    assert ba.churn([0, 1, 1, 0], [0, 1, 1, 0]) == (0.0, 4)
    assert ba.churn([0, 1, 1, 0], [1, 1, 0, 0]) == (0.5, 4)
    assert ba.churn([0, 0], [1, 1]) == (1.0, 2)
    # rows matched by test index: common rows 2 and 5 only, one of them differs
    assert ba.churn([1, 0, 1], [1, 1, 0], index_a=[1, 2, 5], index_b=[2, 5, 7]) == (0.5, 2)
    churn, n = ba.churn([1], [1], index_a=[1], index_b=[2])
    assert np.isnan(churn) and n == 0
    with pytest.raises(ValueError):
        ba.churn([0, 1], [0, 1, 1])


def test_pairwise_churn_mean_and_max_within_groups() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    p1 = truth
    p2 = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]  # 1 of 10 differs from p1
    p3 = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1]  # 3 from p1, 2 from p2
    df = pd.DataFrame(
        [_row("a", "torch", p1, 0), _row("b", "torch", p2, 1), _row("c", "torch", p3, 2)]
    )
    row = ba.pairwise_churn(df, "library").iloc[0]
    assert row["n_pairs"] == 3
    assert row["churn_mean"] == pytest.approx((0.1 + 0.3 + 0.2) / 3)
    assert row["churn_max"] == pytest.approx(0.3)
    assert row["churn_min"] == pytest.approx(0.1)
    matrix = ba.churn_matrix(df)
    assert matrix.loc["a", "c"] == matrix.loc["c", "a"] == pytest.approx(0.3)
    assert np.diag(matrix.to_numpy()).tolist() == [0, 0, 0]


def test_pairwise_churn_on_different_test_sets_uses_common_rows() -> None:
    a = _row("a", "torch", [0, 1, 1, 0])
    b = _row("b", "torch", [0, 0, 1, 1])
    b["test_index"] = np.array([2, 3, 4, 5])  # shares rows 2 and 3 with a: a says (1, 0), b (0, 0)
    row = ba.pairwise_churn(pd.DataFrame([a, b]), None).iloc[0]
    assert row["churn_mean"] == pytest.approx(0.5)
    assert row["n_common_mean"] == 2


def test_matched_churn_pairs_same_seeds_across_libraries() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    flip2 = [1, 1, 0, 0, 1, 1, 1, 1, 1, 1]
    rows = [
        _row("t0", "torch", truth, 0, weights_sha256="x"),
        _row("t1", "torch", truth, 1, weights_sha256="y"),
        _row("f0", "tensorflow", truth, 0, weights_sha256="x"),
        _row("f1", "tensorflow", flip2, 1, weights_sha256="z"),
        _row("s9", "tensorflow", truth, 9, weights_sha256="q"),  # no torch partner: unmatched
    ]
    df = pd.DataFrame(rows)
    pairs = ba.matched_pairs(df, "library", "torch", "tensorflow").set_index("seed_init")
    assert len(pairs) == 2
    assert pairs.loc[0, "churn"] == 0 and pairs.loc[1, "churn"] == pytest.approx(0.2)
    assert pairs.loc[1, "diff"] == pytest.approx(0.2)  # torch right on both flipped rows
    assert pairs["same_weights"].tolist() == [True, False]
    summary = ba.matched_churn(df, "library", "torch", "tensorflow").iloc[0]
    assert summary["n_pairs"] == 2
    assert summary["churn_mean"] == pytest.approx(0.1)
    assert summary["churn_max"] == pytest.approx(0.2)
    assert summary["identical_share"] == 0.5 and summary["same_weights_share"] == 0.5
    levels = ba.churn_between_levels(df, "library")
    assert levels.loc["torch", "tensorflow"] == pytest.approx(0.1)
    assert levels.loc["torch", "torch"] == 0.0  # the two torch trials predict the same
    assert levels.loc["tensorflow", "tensorflow"] == pytest.approx(0.2 * 2 / 3)


def test_matched_churn_for_devices_and_deterministic_flag() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    flip = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    rows = [
        _row("c", "torch", truth, device="cpu", deterministic=True),
        _row("g", "torch", flip, device="cuda", deterministic=True),
        _row("g2", "torch", truth, device="cuda", deterministic=False),
    ]
    df = pd.DataFrame(rows)
    dev = ba.matched_churn(df[df["deterministic"]], "device", "cpu", "cuda").iloc[0]
    assert dev["n_pairs"] == 1 and dev["churn_mean"] == pytest.approx(0.1)
    det = ba.matched_churn(df[df["device"] == "cuda"], "deterministic", True, False).iloc[0]
    assert det["churn_mean"] == pytest.approx(0.1)


def test_per_class_accuracy_and_its_spread() -> None:
    #          class 0: 4 rows      class 1: 6 rows
    p1 = [0, 0, 0, 1, 1, 1, 1, 1, 1, 1]  # class 0: 3/4, class 1: 6/6
    p2 = [0, 0, 1, 1, 1, 1, 1, 0, 0, 0]  # class 0: 2/4, class 1: 3/6
    df = pd.DataFrame([_row("a", "torch", p1), _row("b", "torch", p2)])
    long = ba.per_class_accuracy(df, "library").set_index(["trial_key", "class"])
    assert long.loc[("a", 0), "accuracy"] == 0.75 and long.loc[("a", 0), "n"] == 4
    assert long.loc[("b", 1), "accuracy"] == 0.5
    spread = ba.per_class_spread(df, "library").set_index("class")
    assert spread.loc[0, "mean"] == pytest.approx(0.625)
    assert spread.loc[1, "range"] == pytest.approx(0.5)
    assert spread.loc[1, "std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))


def test_stacked_and_one_by_one_trials_pair_whatever_the_stack_kernels() -> None:
    """A stack's kernels (fused Adam, torch.compile) describe the stacked side of a `batched`
    comparison; they are no reason to leave a pair out."""
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    flip = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    kernels = {"batch_fused_adam": True, "batch_compiled": True}
    off = {"batch_fused_adam": False, "batch_compiled": False}
    df = pd.DataFrame(
        [
            _row("s", "torch", flip, batched=True, **kernels),
            _row("o", "torch", truth, batched=False, **off),
            _row("s2", "torch", truth, seed=1, batched=True, **kernels),  # no one-by-one twin
        ]
    )
    pairs = ba.matched_pairs(df, "batched", True, False)
    assert list(pairs["trial_key_a"]) == ["s"] and pairs["churn"].iloc[0] == pytest.approx(0.1)


def test_matched_pairs_give_the_largest_weight_difference_where_rows_kept_weights() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    rows = [
        _row("n0", "torch", truth, 0, cpu_isa="native", weights=[0.5, -1.0, 2.0]),
        _row("b0", "torch", truth, 0, cpu_isa="baseline", weights=[0.5, -1.0 + 3e-8, 2.0]),
        _row("n1", "torch", truth, 1, cpu_isa="native", weights=[1.0, 1.0, 1.0]),
        _row("b1", "torch", truth, 1, cpu_isa="baseline", weights=[1.0, 1.0, 1.0]),
        _row("n2", "torch", truth, 2, cpu_isa="native", weights=None),  # not kept
        _row("b2", "torch", truth, 2, cpu_isa="baseline", weights=[1.0, 1.0, 1.0]),
    ]
    pairs = ba.matched_pairs(pd.DataFrame(rows), "cpu_isa", "native", "baseline")
    largest = pairs.set_index("seed_init")["max_weight_diff"]
    assert largest[0] == pytest.approx(3e-8) and largest[1] == 0.0 and np.isnan(largest[2])
    summary = ba.matched_churn(pd.DataFrame(rows), "cpu_isa", "native", "baseline").iloc[0]
    assert summary["max_weight_diff"] == pytest.approx(3e-8) and summary["n_pairs"] == 3
    from bench.analysis.churn import largest_difference

    assert np.isnan(largest_difference([1.0, 2.0], [1.0]))  # two different models
    assert largest_difference([1.0, -2.0], [1.0, 2.0]) == 4.0


def _varied(key: str, library: str, pred: list[int], varied: str, seed: int, start: int = 0):
    """A trial of `varied` with seed index `seed`; its test rows start at dataset row `start`."""
    seeds = {s: (seed if varied in (s, "all") else 0) for s in ("split", "order", "init")}
    row = _row(key, library, pred, **{f"seed_{s}": v for s, v in seeds.items()})
    row.update(varied=varied, test_index=np.arange(start, start + len(pred)))
    return row


def test_heatmap_diagonal_uses_trials_that_share_their_test_rows() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    init = [  # varied=init: one split, so the same test rows
        _varied("i0", "torch", truth, "init", 0),
        _varied("i1", "torch", [1, 0, 0, 0, 1, 1, 1, 1, 1, 1], "init", 1),
        _varied("i2", "torch", [1, 1, 1, 0, 1, 1, 1, 1, 1, 0], "init", 2),
    ]
    df = pd.DataFrame(init)
    table = ba.pairwise_churn(df, ["library", "varied"]).iloc[0]
    assert table["churn_mean"] == pytest.approx((1 + 4 + 3) / 30)
    assert ba.churn_between_levels(df, "library").loc["torch", "torch"] == table["churn_mean"]
    # all-varied trials: other splits, test sets that overlap in 3 rows or not at all; on the
    # 3 shared rows these disagree completely. They must not move the between-seed cell.
    flipped = [1 - t for t in truth]
    others = pd.DataFrame([
        _varied("a1", "torch", flipped, "all", 1, start=7),  # rows 7-16: shares 7, 8, 9 only
        _varied("a2", "torch", truth, "all", 2, start=100),  # shares nothing
        _varied("a3", "torch", truth, "all", 3, start=200),
    ])  # fmt: skip
    both = pd.concat([df, others], ignore_index=True)
    assert ba.churn_between_levels(both, "library").loc["torch", "torch"] == pytest.approx(
        table["churn_mean"]
    )
    matrix, pairs = ba.churn_between_levels(both, "library", counts=True)
    assert pairs.loc["torch", "torch"] == 3  # the 3 init pairs; the all-varied trials form none
    alone, n = ba.churn_between_levels(others, "library", counts=True)
    assert np.isnan(alone.loc["torch", "torch"]) and n.loc["torch", "torch"] == 0


def test_heatmap_diagonal_leaves_out_repeats_of_one_setup_and_counts_off_diagonal_pairs() -> None:
    truth = [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    flip = [1, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    rows = [  # same seeds, other predictions: implementation noise, not churn between seeds
        _varied("r0", "torch", truth, "none", 0),
        _varied("r1", "torch", flip, "none", 0),
        _varied("s0", "tensorflow", truth, "none", 0),
        _varied("s1", "tensorflow", truth, "none", 0),
    ]
    for r in rows:
        r["repeat"] = int(r["trial_key"][1])
    matrix, pairs = ba.churn_between_levels(pd.DataFrame(rows), "library", counts=True)
    assert np.isnan(matrix.loc["torch", "torch"]) and pairs.loc["torch", "torch"] == 0
    assert pairs.loc["torch", "tensorflow"] == pairs.loc["tensorflow", "torch"] == 2
    assert matrix.loc["torch", "tensorflow"] == pytest.approx(0.05)  # r0-s0 0, r1-s1 0.1


def test_churn_heatmap_shows_the_pairs_behind_each_cell() -> None:
    from bench.analysis import plots

    matrix = pd.DataFrame([[0.029, 0.1], [0.1, np.nan]], index=["a", "b"], columns=["a", "b"])
    counts = pd.DataFrame([[45, 10], [10, 0]], index=["a", "b"], columns=["a", "b"])
    fig = plots.churn_heatmap(matrix, counts=counts)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["2.9%\n45 pairs", "10.0%\n10 pairs", "10.0%\n10 pairs", "n/a\n0 pairs"]
