"""The cost of picking a seed (issue 20, point 3): exact expectations against brute force, the
fixed halves, known answers, and `+experiment=seed_picking` shrunk, end to end on breast_cancer
and the heart data."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import analysis as ba
from bench.analysis.seed_picking import expectations, half_a, max_weights, sentence
from bench.config import ConfigError, compose


def _brute_force(a: np.ndarray, b: np.ndarray, n: int) -> tuple[float, float]:
    """Every n-subset, both directions, the pick uniform among the subset's tied best."""
    reported, heldout, subsets = 0.0, 0.0, 0
    for subset in itertools.combinations(range(len(a)), n):
        s = np.asarray(subset)
        for pick_on, other in ((a, b), (b, a)):
            best = s[pick_on[s] == pick_on[s].max()]
            reported += pick_on[s].max() / 2
            heldout += other[best].mean() / 2
        subsets += 1
    return reported / subsets, heldout / subsets


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_exact_expectations_match_brute_force_enumeration_with_ties(n: int) -> None:
    rng = np.random.default_rng(n)
    a, b = rng.integers(0, 5, 8) / 4, rng.integers(0, 5, 8) / 4  # few values: many ties
    reported, heldout, honest = expectations(a, b, n)
    want_reported, want_heldout = _brute_force(a, b, n)
    assert reported == pytest.approx(want_reported, abs=1e-12)
    assert heldout == pytest.approx(want_heldout, abs=1e-12)
    assert honest == pytest.approx((a.mean() + b.mean()) / 2)
    assert max_weights(a, n).sum() == pytest.approx(1.0)


def test_the_halves_are_a_fixed_partition_of_dataset_rows() -> None:
    rows = np.arange(10_000)
    a = half_a(rows)
    assert 0.48 < a.mean() < 0.52  # about half
    assert np.array_equal(half_a(rows[::7]), a[::7])  # a row's half never depends on the trial
    assert not np.array_equal(a, rows % 2 == 0)  # a hash, not parity: sorted files stay mixed


def _rows(a_correct: np.ndarray, b_correct: np.ndarray, rows: int = 40) -> pd.DataFrame:
    """Seeds whose half-A and half-B accuracy are given: y_true all 0, y_pred wrong on the rest."""
    index = np.arange(rows * 4)
    in_a = half_a(index)
    a_rows, b_rows = index[in_a][:rows], index[~in_a][:rows]
    test_index = np.sort(np.concatenate([a_rows, b_rows]))
    out = []
    for i, (ca, cb) in enumerate(zip(a_correct, b_correct, strict=True)):
        right = set(a_rows[: int(round(ca * rows))]) | set(b_rows[: int(round(cb * rows))])
        y_pred = np.array([0 if r in right else 1 for r in test_index])
        out.append({"status": "ok", "library": "sklearn", "model": "logreg",
                    "dataset": "synthetic", "varied": "all", "trial_key": f"t{i:03d}",
                    "test_index": test_index, "y_true": np.zeros(len(test_index), int),
                    "y_pred": y_pred})  # fmt: skip
    return pd.DataFrame(out)


def test_identical_seeds_inflate_nothing_and_a_lucky_half_inflates_by_its_maximum() -> None:
    same = ba.seed_picking(_rows(np.full(6, 0.75), np.full(6, 0.75)), n_resamples=200)
    assert np.abs(same[["inflation", "heldout_gain", "same_half_inflation"]]).max().max() < 1e-12
    # half B constant: picking on A finds nothing real; picking on B is a random pick
    a = np.array([0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    table = ba.seed_picking(_rows(a, np.full(6, 0.75)), sizes=[6], n_resamples=200)
    r = table.iloc[0]
    assert r["reported"] == pytest.approx((1.0 + 0.75) / 2)
    assert r["picked_heldout"] == pytest.approx((0.75 + a.mean()) / 2)
    assert r["inflation"] == pytest.approx(r["reported"] - r["picked_heldout"])
    text = sentence(table)  # n = 6 of 6 seeds: beyond N/4, no interval
    assert text.startswith("Picking the best of 6 seeds on 40 validation rows")
    assert "no interval: n > N/4" in text and r["note"] == "no interval: n > N/4"
    assert np.isnan(r["inflation_ci_low"])


def test_intervals_only_where_n_is_at_most_a_quarter_of_the_seeds() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.integers(20, 40, 12) / 40, rng.integers(20, 40, 12) / 40
    table = ba.seed_picking(_rows(a, b), sizes=[1, 2, 3, 4, 12], n_resamples=200).set_index("n")
    assert table["inflation_ci_low"].notna().tolist() == [True, True, True, False, False]
    assert (table.loc[[2, 3], "inflation_ci_low"] <= table.loc[[2, 3], "inflation"]).all()
    assert sentence(table.reset_index()).startswith("Picking the best of 3 seeds on 40 validation")


def test_a_seed_with_an_empty_half_is_left_out_not_a_crash() -> None:
    rows = _rows(np.linspace(0.5, 1.0, 7), np.full(7, 0.75))
    in_a = half_a(rows["test_index"].iloc[0])
    for column in ("test_index", "y_true", "y_pred"):  # seed 0 kept only half-A rows
        rows.at[0, column] = np.asarray(rows.at[0, column])[in_a]
    table = ba.seed_picking(rows, n_resamples=200)
    assert set(table["n_seeds"]) == {6}
    assert "1 of 7 seeds left out: a half score is not finite" in table.attrs["left_out"][0]
    rows.loc[1:, ["test_index", "y_true", "y_pred"]] = rows.loc[
        [0] * 6, ["test_index", "y_true", "y_pred"]
    ].values
    table = ba.seed_picking(rows, n_resamples=200)
    assert table.empty and "0 seeds, fewer than 5" in table.attrs["left_out"][-1]


def test_setups_whose_seeds_do_not_vary_are_left_out() -> None:
    rows = _rows(np.full(6, 0.75), np.full(6, 0.75)).assign(varied="none")
    table = ba.seed_picking(rows)
    assert table.empty and "seeds do not vary" in table.attrs["left_out"][0]


def test_a_failing_section_says_what_failed_instead_of_sinking_the_report() -> None:
    from bench.report_seed_use import guarded

    def broken(ctx: object) -> None:
        raise IndexError("index 7 is out of bounds\nfor axis 0")

    section = guarded(broken, None)
    (block,) = section.blocks
    assert "failed: IndexError: index 7 is out of bounds for axis 0" in block.text


def test_too_few_seeds_are_left_out_with_the_reason() -> None:
    table = ba.seed_picking(_rows(np.full(3, 0.5), np.full(3, 0.5)))
    assert table.empty and "3 seeds, fewer than 5" in table.attrs["left_out"][0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["seed_picking.datasets=[nope]"], "seed_picking.datasets: unknown dataset 'nope'"),
        (["seed_picking.sizes=[0,2]"], "seed_picking.sizes: every n must be >= 1"),
        (["seed_picking.n_resamples=five"], "seed_picking.n_resamples: Value 'five'"),
    ],
)
def test_bad_experiment_settings_are_refused_naming_the_key(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        compose(["+experiment=seed_picking", *args])


def test_experiment_shrunk_runs_both_datasets_and_writes_the_quotable_sentence(
    tmp_path: Path, bench_cli, heart_dir: Path
) -> None:
    done = bench_cli(
        ["+experiment=seed_picking", "seeds.n=6", f"seed_picking.heart_path={heart_dir}",
         "seed_picking.sizes=[1,2,5]", "seed_picking.n_resamples=200", "progress=false",
         f"results_dir={tmp_path / 'results'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (root,) = (tmp_path / "results" / "seed_picking").iterdir()
    md = (root / "report.md").read_text()
    for dataset in ("breast_cancer", "heart"):
        said = next(x for x in done.stdout.splitlines() if x.startswith(f"{dataset}: "))
        assert "Picking the best of 5 seeds on " in said and "validation rows" in said
        assert "no interval: n > N/4" in said and "points" in said
        assert said.split(": ", 1)[1] in md and f"## {dataset}" in md
        rows = ba.load(next((root / "runs" / dataset).glob("[!.]*")))
        assert len(rows) == 6 and set(rows["dataset"]) == {dataset}
        table = ba.seed_picking(rows, sizes=[1, 2, 5], n_resamples=200)
        assert table["n"].tolist() == [1, 2, 5] and (table["reported"].diff()[1:] >= 0).all()
    assert len(list(root.glob("seed_picking_*.png"))) == 2 and (root / "report.html").is_file()
    assert not any(p.name == "processed.cleveland.data" for p in root.rglob("*"))
