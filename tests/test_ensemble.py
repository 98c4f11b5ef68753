"""Seed ensembles (issue 20, point 2): known answers on synthetic members, one real run end to end
with its summary line and report section, and the one-line refusals of a bad `ensemble.size`."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import analysis as ba
from bench.analysis.ensemble import stops_paying
from bench.config import ConfigError, compose

ROWS = 200  # test rows: accuracy is known to 1/ROWS


def _members(shifts: np.ndarray, varied: str = "init", rows: int = ROWS) -> pd.DataFrame:
    """Members whose accuracy is exactly linear in a per-member shift s: every label is 1, row r
    has P(class 1) = (r + 0.5) / rows + s, so the share predicted 1 is 0.5 + s (to 1/rows), and
    an ensemble's averaged probabilities give 0.5 + mean(s) of its members."""
    q = (np.arange(rows) + 0.5) / rows
    out = []
    for i, s in enumerate(shifts):
        p = np.clip(q + s, 0.0, 1.0)
        out.append({
            "status": "ok", "library": "sklearn", "model": "mlp", "dataset": "synthetic",
            "varied": varied, "seed_split": 7, "seed_order": 7, "seed_init": 1000 + i,
            "trial_key": f"k{i:05d}", "test_index": np.arange(rows), "y_true": np.ones(rows, int),
            "y_pred": (p > 0.5).astype(int), "y_proba": np.stack([1 - p, p], axis=1),
        })  # fmt: skip
    return pd.DataFrame(out)


def test_ensemble_accuracy_is_the_member_mean_and_its_variance_shrinks_as_one_over_k() -> None:
    rng = np.random.default_rng(20)
    shifts = rng.normal(0.0, 0.05, 600)
    table = ba.ensembles(_members(shifts), sizes=(2, 5, 10))
    assert table["k"].tolist() == [1, 2, 5, 10]
    for r in table.itertuples():
        assert r.n_ensembles == 600 // r.k
        # every member is in every partition (600 = 0 mod k): the mean is the members' mean
        assert abs(r.ensemble_mean - (0.5 + shifts.mean())) <= 1.0 / ROWS
        assert r.member_mean == pytest.approx(0.5 + shifts.mean(), abs=1.0 / ROWS)
        # independent members: Var(ensemble) = Var(member) / k; the sample variance of >= 60
        # normal ensembles, averaged over partitions, is within 35% of it (seeded draw)
        assert r.variance_ratio == pytest.approx(1.0 / r.k, rel=0.35)
        assert r.ensemble_sd_ci_low < r.ensemble_sd < r.ensemble_sd_ci_high
    assert table["member_churn"].nunique() == 1 and (table["ensemble_churn"].diff()[1:] < 0).all()


def test_identical_members_have_no_spread_and_stop_paying_at_once() -> None:
    table = ba.ensembles(_members(np.zeros(6), varied="none"), sizes=(2, 3))
    assert (table["ensemble_sd"] == 0).all() and (table["ensemble_churn"] == 0).all()
    assert (table["stops_paying"] == 1).all()
    assert "agree exactly" in table["note"].iloc[0]


def test_members_left_over_by_k_count_like_the_rest_and_ensemble_mean_uses_all() -> None:
    shifts = np.array([0.0] * 6 + [0.3])  # 7 members: one left over at k=2, two at k=5
    table = ba.ensembles(_members(shifts), sizes=(2, 5)).set_index("k")
    want = 0.5 + shifts.mean()  # 0.543; the first 6 members alone would give 0.5
    assert table.loc[1, "member_mean"] == pytest.approx(want, abs=1.0 / ROWS)
    assert table.loc[2, "ensemble_mean"] == pytest.approx(want, abs=0.01)
    assert table.loc[5, "n_ensembles"] == 1 and np.isnan(table.loc[5, "ensemble_sd"])


def test_error_and_skipped_rows_inside_a_setup_are_not_members() -> None:
    members = _members(np.random.default_rng(3).normal(0.0, 0.05, 8))
    broken = members.iloc[:2].assign(status=["error", "skipped"], y_proba=None, y_pred=None)
    broken["trial_key"] = ["bad0", "bad1"]
    table = ba.ensembles(pd.concat([members, broken], ignore_index=True), sizes=(2,))
    assert table["n_members"].tolist() == [8, 8] and not table.attrs["left_out"]
    assert ba.seed_picking(pd.concat([members, broken], ignore_index=True)).shape[0] > 0


def test_ties_of_an_even_ensemble_go_to_a_random_class_not_class_0() -> None:
    ones = _members(np.zeros(2), rows=400)
    ones["y_proba"] = [np.tile([1.0, 0.0], (400, 1)), np.tile([0.0, 1.0], (400, 1))]
    table = ba.ensembles(ones, sizes=(2,)).set_index("k")
    # every row ties 0.5 / 0.5; argmax alone would predict 0 everywhere (accuracy 0)
    assert table.loc[2, "ensemble_mean"] == pytest.approx(0.5, abs=0.1)


def test_members_that_score_the_same_but_predict_differently_do_not_stop_at_once() -> None:
    members = _members(np.zeros(6), rows=60)
    probas = []
    for i in range(6):  # each wrong on its own 6 rows: accuracy 0.9 for all, churn > 0
        p = np.full(60, 0.9)
        p[i * 6 : i * 6 + 6] = 0.1
        probas.append(np.stack([1 - p, p], axis=1))
    members["y_proba"] = probas
    table = ba.ensembles(members, sizes=(2,))
    assert table["member_sd"].iloc[0] == 0 and table["member_churn"].iloc[0] > 0
    assert table["stops_paying"].isna().all() and "predict differently" in table["note"].iloc[0]


def test_y_score_is_rebuilt_only_for_a_verifiably_binary_run() -> None:
    binary = _members(np.random.default_rng(4).normal(0.0, 0.05, 4), varied="order", rows=50)
    binary["y_score"] = [p[:, 1] for p in binary["y_proba"]]
    binary["y_proba"] = None
    # three classes, the test rows hold only 0 and 1: y_score is the top probability and y_pred
    # is not its [1 - s, s] argmax
    multi = binary.assign(model="logreg")
    multi["y_pred"] = [np.where(s > 0.5, 2, 0) for s in multi["y_score"]]
    table = ba.ensembles(pd.concat([binary, multi]), sizes=(2,))
    assert set(table["model"]) == {"mlp"}
    assert "model=logreg" in table.attrs["left_out"][0]
    assert "not verifiably binary" in table.attrs["left_out"][0]


def test_setups_whose_members_predict_other_rows_are_left_out_with_the_reason() -> None:
    split = _members(np.zeros(4), varied="split", rows=50)
    split["test_index"] = [np.arange(i, i + 50) for i in range(4)]
    multi = _members(np.zeros(4), varied="order", rows=50).assign(model="logreg")
    multi["y_true"] = [np.full(50, 2)] * 4
    multi["y_score"] = [np.full(50, 0.5)] * 4
    multi["y_proba"] = None
    table = ba.ensembles(pd.concat([split, multi, _members(np.zeros(4), rows=50)]))
    assert set(table["varied"]) == {"init"}
    reasons = " | ".join(table.attrs["left_out"])
    assert "varied=split: members predict different test rows" in reasons
    assert "varied=order: only y_score" in reasons


def test_stops_paying_is_the_first_size_no_larger_size_improves_on_by_the_threshold() -> None:
    def rows(sds: list[float], n: list[int]) -> list[dict]:
        return [{"k": k, "ensemble_sd": sd, "member_sd": sds[0], "n_ensembles": e}
                for k, sd, e in zip([1, 2, 5, 10], sds, n, strict=False)]  # fmt: skip

    assert stops_paying(rows([1.0, 0.7, 0.45, 0.4], [40, 20, 8, 4]))[0] == 5  # 0.05 < 0.1
    # a noisy step up (k=2) does not end the search: k=5 still gains 0.52 member sds
    assert stops_paying(rows([1.0, 1.02, 0.5, 0.48], [40, 20, 8, 4]))[0] == 5
    assert stops_paying(rows([1.0, 0.95, 0.93, 0.92], [40, 20, 8, 4]))[0] == 1
    k, note = stops_paying(rows([1.0, 0.7, 0.45, 0.2], [40, 20, 8, 2]))  # k=10: 2 ensembles
    assert np.isnan(k) and "still paying at k=5" in note
    # with its uncertainty: a gain of 0.05 +- 0.2 might be 0.25, so k=5 is not a verdict
    noisy = rows([1.0, 0.7, 0.45, 0.4], [40, 20, 8, 4])
    for r, gain, se in zip(noisy, [0.6, 0.3, 0.05], [0.05, 0.05, 0.12], strict=False):
        r["gain"], r["gain_se"] = gain, se
    k, note = stops_paying(noisy)
    assert np.isnan(k) and "undecided at k=5" in note
    noisy[2]["gain_se"] = 0.01  # 0.05 + 1.645 * 0.01 < 0.1: a verdict
    assert stops_paying(noisy)[0] == 5


def test_a_real_run_prints_the_ensemble_line_and_its_report_has_both_sections(
    tmp_path: Path, bench_cli
) -> None:
    done = bench_cli(
        ["+sweep=seeds", "libraries=[sklearn]", "model=logreg", "sweep.varied=[init]",
         "seeds.n=6", "ensemble.size=2", "report=true", "progress=false",
         f"results_dir={tmp_path / 'results'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("ensemble of 2"))
    assert "3 ensembles" in line and "vs members" in line
    (run,) = (tmp_path / "results" / "seeds").glob("[!.]*")
    report = tmp_path / "results" / "seeds" / f".{run.name}" / "report"
    md = (report / "report.md").read_text()
    section = md.split("## Seed ensembles: averaging seeds")[1].split("\n## ")[0]
    assert "ensemble.size=2" in section and "ensemble_sd.png" in section
    table = ba.ensembles(ba.load(run), sizes=(2,))
    assert table.loc[table["k"] == 2, "n_ensembles"].tolist() == [3]
    assert "## The cost of picking a seed" in md and "Picking the best of 5 seeds" in md
    assert (report / "ensemble_sd.png").is_file() and list(report.glob("seed_picking_*.png"))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["ensemble.size=1"], "ensemble.size: an ensemble needs at least 2"),
        (["ensemble.size=abc"], "ensemble.size: Value 'abc'"),
        (["ensemble.size=2.5"], "ensemble.size: Value '2.5'"),
        (["ensemble.size=11"], "ensemble.size: 11 is more than the 10 members"),
        (["ensemble.size=2", "sweep.varied=[split,all]"], "ensemble.size: the sweep varies only"),
        (
            ["ensemble.size=2", "predictions=compact"],
            "ensemble.size: .* predictions=full .*compact",
        ),
        (["ensemble.size=2", "predictions=none"], "ensemble.size: .* got predictions=none"),
        (
            ["ensemble.size=5", "seeds.n_by_source={init:3}"],
            "varied=init .seeds.n_by_source.init.$",
        ),
    ],
)
def test_bad_ensemble_sizes_are_refused_at_compose_time(args: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")) as info:
        compose(["+sweep=seeds", "libraries=[sklearn]", "seeds.n=10", *args])
    assert "\n" not in str(info.value)


def test_the_cli_refuses_a_bad_ensemble_size_in_one_line_before_any_work(
    tmp_path: Path, run_at_once
) -> None:
    cases = {"ensemble.size=1": "at least 2", "ensemble.size=x": "'x'", "ensemble.size=50": "50"}
    commands = [
        [sys.executable, "-m", "bench", "+sweep=smoke", f"results_dir={tmp_path / 'r'}", case]
        for case in cases
    ]
    for proc, needle in zip(run_at_once(commands, 60, cwd=tmp_path), cases.values(), strict=True):
        lines = [x for x in proc.stderr.splitlines() if x.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("bench: error: ensemble.size: ") and needle in lines[0]
    assert not (tmp_path / "r").exists()
