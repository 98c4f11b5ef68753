"""`python -m bench monitor` (issue 19, point 5): new batches against a baseline's seed-noise band.

One real baseline for the module: a seeds sweep of 8 scikit-learn logistic regressions
(`save_models=true`, all seeds varied) on a table written here, run as a user runs it. The batches
come from a tiny generator below (two Gaussian classes; a covariate shift moves the means), the
training table's distribution, so its unshifted batches are the null and its shifted ones the
alternative. The false-alarm rate of the rule is checked by simulation on the baseline's real
models, scored once on a pool of fresh rows: no training in the loop.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import monitor as command
from bench.analysis import monitor as stats
from bench.score import new_data, predict

FEATURES = ("x0", "x1", "x2", "x3")
# Class 1 sits higher on x0 and x1; x2 and x3 are noise, which the seed models weigh a little,
# each differently. The shift slides every row along x0 (across the boundary: errors) and x2
# (where the seed models' boundaries part: disagreement).
SEPARATION = np.array([1.2, 0.8, 0.0, 0.0])
SHIFT = np.array([0.4, 0.0, 2.0, 0.0])
STRONG = 5.0  # a shift the monitor sees in one batch of BATCH_ROWS (p < 0.002 in 30 of 30 tried)
BATCH_ROWS = 300


def rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> pd.DataFrame:
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, len(FEATURES))) + np.outer(y, SEPARATION) + shift * SHIFT
    frame = pd.DataFrame(X, columns=list(FEATURES))
    frame["target"] = np.where(y == 1, "yes", "no")
    return frame


def write_batches(folder: Path, shifts: list[float], seed: int, labelled: bool = True) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, shift in enumerate(shifts):
        frame = rows(rng, BATCH_ROWS, shift)
        frame = frame if labelled else frame.drop(columns="target")
        frame.to_csv(folder / f"batch-{k:03d}.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stream")
    rows(np.random.default_rng(0), 2000).to_csv(root / "train.csv", index=False)
    shifted = [0.0] * 4 + [STRONG] * 4
    write_batches(root / "shifted", shifted, seed=1)
    write_batches(root / "shifted_unlabelled", shifted, seed=2, labelled=False)
    write_batches(root / "calm", [0.0] * 6, seed=4)
    return root


@pytest.fixture(scope="module")
def baseline(data: Path, bench_cli: Callable[..., subprocess.CompletedProcess]) -> Path:
    """The sweep a user runs: 8 seeds, every seed source varied, the models stored."""
    done = bench_cli(
        ["+sweep=seeds", "dataset=table", f"dataset.path={data / 'train.csv'}",
         "dataset.target=target", "libraries=[sklearn]", "model=logreg", "seeds.n=8",
         "sweep.varied=[all]", "save_models=true", f"results_dir={data / 'results'}",
         "progress=false"],
        cwd=data, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = (data / "results" / "seeds").glob("[!.]*")
    return run


def _monitor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = command.main([*map(str, args), "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def _alarms(out: str) -> list[str]:
    return re.findall(r"^(batch-\d+\.csv) .* ALARM$", out, re.M)


@pytest.mark.slow
def test_a_shift_alarms_at_the_first_shifted_batch(
    data: Path, baseline: Path, bench_cli: Callable[..., subprocess.CompletedProcess]
) -> None:
    """Labelled batches, through the command line as a user runs it: errors rise with the
    shift; the four unshifted batches pass, the four shifted ones alarm, exit status 1."""
    markdown = data / "report" / "monitor.md"
    done = bench_cli(
        ["monitor", str(baseline), str(data / "shifted"), "--markdown", str(markdown),
         "--no-progress"],
        cwd=data,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert _alarms(out) == [f"batch-{k:03d}.csv" for k in range(4, 8)]
    assert "first alarm: batch-004.csv (error" in out
    assert "false-alarm rate over these 8 batches at most 5%" in out
    assert "8 distinct seed models" in out and "reference error" in out
    text = markdown.read_text()
    assert "| batch | rows | labels | statistic |" in text and "**first alarm: batch-004" in text


@pytest.mark.slow
def test_unlabelled_batches_alarm_on_disagreement(
    data: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _monitor(capsys, baseline, data / "shifted_unlabelled")
    assert code == 1 and "disagreement" in out and "reference disagreement" in out
    assert _alarms(out) == [f"batch-{k:03d}.csv" for k in range(4, 8)]
    # the same labelled batches, judged without their labels
    code, out, _ = _monitor(capsys, baseline, data / "shifted", "--unlabelled")
    assert code == 1 and _alarms(out)[0] == "batch-004.csv"


@pytest.mark.slow
def test_no_alarm_without_a_shift(
    data: Path, baseline: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ((), ("--unlabelled",), ("--rule", "spending")):
        code, out, _ = _monitor(capsys, baseline, data / "calm", *extra)
        assert code == 0 and out.rstrip().endswith("no alarm") and not _alarms(out), out
    assert "and any that follow, at most 5%" in out


@pytest.mark.slow
def test_the_reference_is_what_the_stored_models_predict(data: Path, baseline: Path) -> None:
    """The reference comes from each trial's stored test predictions, the batches from the
    stored models: on the training table's held-out rows the two agree exactly."""
    base = command.load_baseline(baseline)
    table = new_data(baseline, str(data / "train.csv"), [])
    scores = predict(baseline, base.rows, table.X)
    for row, s in zip(base.rows.itertuples(), scores, strict=True):
        np.testing.assert_array_equal(np.argmax(s, axis=1)[row.test_index], row.y_pred)


@pytest.mark.slow
def test_the_false_alarm_rate_is_controlled_over_a_sequence(baseline: Path) -> None:
    """Many no-shift sequences, simulated with the baseline's real models on fresh rows: each
    draws a new reference (the baseline's pattern of which model held out which row) and N new
    batches. Bonferroni keeps the chance of any alarm within alpha plus binomial slack; testing
    every batch at alpha does not."""
    base = command.load_baseline(baseline)
    pattern = base.reference.held_out
    n_ref, sequences, n_batches, n_rows, alpha = pattern.shape[1], 300, 10, 200, 0.1
    pool = rows(np.random.default_rng(11), 30_000)
    y = (pool["target"] == "yes").to_numpy(np.int64)
    X = pool[list(FEATURES)].to_numpy(float)
    pred = np.vstack([np.argmax(s, axis=1) for s in predict(baseline, base.rows, X)])
    rng = np.random.default_rng(12)
    min_p, all_p = {"error": [], "disagreement": []}, {"error": [], "disagreement": []}
    for _ in range(sequences):
        take = rng.choice(len(y), n_ref + n_batches * n_rows, replace=False)
        ref_rows, batch_rows = take[:n_ref], take[n_ref:].reshape(n_batches, n_rows)
        ref = stats.Reference(pattern, np.where(pattern, pred[:, ref_rows], -1), y[ref_rows], 2)
        p = {"error": [], "disagreement": []}
        for b in batch_rows:
            p["error"].append(stats.exceeds(stats.batch_errors(ref, pred[:, b], y[b]),
                                            ref.errors, alpha).p_value)  # fmt: skip
            p["disagreement"].append(
                stats.exceeds(stats.batch_disagreement(ref, pred[:, b]), ref.disagreement, alpha)
                .p_value
            )  # fmt: skip
        for mode in p:
            min_p[mode].append(min(p[mode]))
            all_p[mode] += p[mode]
    slack = 3 * np.sqrt(alpha * (1 - alpha) / sequences)
    level = stats.levels(n_batches, alpha)[0]
    for mode, values in min_p.items():
        values = np.asarray(values)
        assert np.mean(values <= level) <= alpha + slack, mode  # the rule: any alarm
        assert np.mean(values <= alpha) > alpha + slack, mode  # no correction: too many
        # honest p-values: a share alpha of single batches alarms at alpha (batches of one
        # sequence share a reference, so the slack is the sequences', not the batches')
        assert abs(np.mean(np.asarray(all_p[mode]) <= alpha) - alpha) <= slack, mode


@pytest.mark.slow
def test_bad_input_is_refused_in_one_line(
    data: Path, baseline: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    no_models = tmp_path / "results" / "seeds" / "old"
    no_models.mkdir(parents=True)
    frame = pd.read_parquet(baseline)
    frame["model_file"] = None
    frame.to_parquet(no_models / "part-00000.parquet")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a batch")
    lacking = tmp_path / "lacking"
    lacking.mkdir()
    rows(np.random.default_rng(5), 20).drop(columns="x2").to_csv(lacking / "b.csv", index=False)
    cases = {
        "save_models=true": (no_models, data / "calm"),
        "no such folder": (baseline, tmp_path / "missing"),
        "no batch files": (baseline, empty),
        "lacks the training columns ['x2']": (baseline, lacking),
    }
    for expected, (run, batches) in cases.items():
        code, out, err = _monitor(capsys, run, batches)
        assert code == 2 and not out and expected in err, (expected, err)
        assert err.startswith("bench monitor: error: ") and err.count("\n") == 1
    for alpha in ("0", "1.5", "x"):
        code, out, err = _monitor(capsys, baseline, data / "calm", "--alpha", alpha)
        assert code == 2 and not out and "--alpha" in err and err.count("\n") == 1, err


def test_a_batch_rate_is_the_reference_rate_when_every_model_held_out_every_row() -> None:
    """The two ways of pooling agree where they describe the same rows: the reference's
    (each model its own rows) and the batch's (every model every row)."""
    rng = np.random.default_rng(0)
    pred, y = rng.integers(0, 3, (5, 50)), rng.integers(0, 3, 50)
    ref = stats.Reference(np.ones((5, 50), bool), pred, y, 3)
    for batch, reference in ((stats.batch_errors(ref, pred, y), ref.errors),
                             (stats.batch_disagreement(ref, pred), ref.disagreement)):  # fmt: skip
        assert batch.rate.value == pytest.approx(reference.value)
        assert batch.rate.variance == pytest.approx(reference.variance)
        assert batch.rate.n_eff == pytest.approx(reference.n_eff)
        assert batch.kappa_reference == pytest.approx(batch.rate.kappa)
        assert stats.exceeds(batch, reference, 0.05).p_value == pytest.approx(0.5)
    assert stats.levels(10, 0.05).sum() == pytest.approx(0.05)
    assert stats.levels(1000, 0.05, "spending").sum() < 0.05
