"""`python -m bench stream OUT_DIR`: a synthetic stream whose batches drift away from train.csv.

The models here are scikit-learn's, fitted on train.csv directly (no sweep, no Ray): what the test
needs to see is that the stream's shift shows in a trained model's error and in how much models
of different seeds disagree, the two things a monitor watches.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.data import load
from bench.data.stream import batch_shifts, write_stream


@pytest.fixture(scope="module")
def stream(tmp_path_factory) -> list[Path]:
    return write_stream(tmp_path_factory.mktemp("stream") / "out")


def _xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    frame = pd.read_csv(path)
    return frame.drop(columns="target").to_numpy(), frame["target"].to_numpy()


def test_layout_columns_and_manifest(stream: list[Path]) -> None:
    out = stream[0].parent
    assert stream[0] == out / "train.csv"
    assert [p.name for p in stream[1:]] == [f"batch-{i:03d}.csv" for i in range(10)]
    assert sorted(p.name for p in (out / "batches").iterdir()) == [p.name for p in stream[1:]]
    train = pd.read_csv(stream[0])
    assert list(train.columns) == [*(f"x{i}" for i in range(8)), "target"]
    assert len(train) == 1000 and set(train["target"]) == {0, 1}
    for path in stream[1:]:
        batch = pd.read_csv(path)
        assert list(batch.columns) == list(train.columns) and len(batch) == 200
    manifest = json.loads((out / "stream.json").read_text())
    assert manifest["batch_shift"] == batch_shifts(10, 3, 1.0)
    assert manifest["files"] == [p.relative_to(out).as_posix() for p in stream]
    raw = load({"name": "table", "path": str(stream[0]), "target": "target"})  # dataset=table
    assert raw.X.shape == (1000, 8) and raw.n_classes == 2 and not raw.categorical


def test_the_shift_is_flat_then_grows_linearly() -> None:
    assert batch_shifts(10, 3, 1.0) == pytest.approx([0, 0, 0, *np.arange(1, 8) / 7])
    assert batch_shifts(4, 0, 2.0) == [0.5, 1.0, 1.5, 2.0]
    assert batch_shifts(3, 3, 1.0) == [0.0, 0.0, 0.0]


def test_a_models_error_and_seed_disagreement_rise_with_the_shift(stream: list[Path]) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _xy(stream[0])
    model = LogisticRegression().fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        seeds = [
            make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=200, random_state=s))
            .fit(X, y) for s in range(3)
        ]  # fmt: skip
    error, disagreement = [], []
    for path in stream[1:]:
        Xb, yb = _xy(path)
        error.append(np.mean(model.predict(Xb) != yb))
        votes = np.array([m.predict(Xb) for m in seeds])
        disagreement.append(np.mean([np.mean(votes[i] != votes[j]) for i, j in
                                     ((0, 1), (0, 2), (1, 2))]))  # fmt: skip
    unshifted = error[:3]
    assert max(unshifted) < 0.15  # the reference: Bayes error 10.6%
    assert error[-1] > max(unshifted) + 0.1  # about 26% at shift 1
    assert disagreement[-1] > 2 * max(disagreement[:3])


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path, stream: list[Path]) -> None:
    again = write_stream(tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in stream]
    other = write_stream(tmp_path / "other", seed=1, batches=2, start=1)
    assert other[0].read_bytes() != stream[0].read_bytes()
    # train.csv and an unshifted batch do not depend on the rest of the stream
    fewer = write_stream(tmp_path / "fewer", batches=2, start=1, shift=3.0)
    assert fewer[0].read_bytes() == stream[0].read_bytes()
    assert fewer[1].read_bytes() == stream[1].read_bytes()


def test_unlabelled_batches_have_no_target(tmp_path: Path, capsys) -> None:
    out = tmp_path / "unlabelled"
    assert main(["stream", str(out), "--unlabelled", "--batches", "3", "--rows", "5",
                 "--start", "1", "--seed", "4"]) == 0  # fmt: skip
    assert "target" in pd.read_csv(out / "train.csv").columns
    labelled = write_stream(tmp_path / "labelled", batches=3, rows=5, start=1, seed=4)
    for path, twin in zip(sorted((out / "batches").iterdir()), labelled[1:], strict=True):
        batch = pd.read_csv(path)
        assert list(batch.columns) == [f"x{i}" for i in range(8)] and len(batch) == 5
        pd.testing.assert_frame_equal(batch, pd.read_csv(twin).drop(columns="target"))
    assert "dataset.path=" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--batches", "0"], "--batches"),
        (["--rows", "0"], "--rows"),
        (["--start", "11"], "--start"),
        (["--shift", "-0.5"], "--shift"),
        (["--rows", "many"], "--rows"),
    ],
)
def test_bad_input_is_one_line_naming_the_option(tmp_path: Path, capsys, args, option) -> None:
    out = tmp_path / "out"
    assert main(["stream", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench stream: error: ") and option in err and err.count("\n") == 1
    assert not out.exists()  # refused before anything is written


def test_a_non_empty_folder_needs_force(tmp_path: Path, bench_cli) -> None:
    """As a user runs it: a fresh interpreter; --force replaces the stream's own files only."""
    out = tmp_path / "out"
    (out / "batches").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    command = ["stream", str(out), "--batches", "2", "--start", "0"]
    refused = bench_cli(command, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "not empty; --force" in refused.stderr and not (out / "train.csv").exists()
    write_stream(out, batches=5, force=True)
    done = bench_cli([*command, "--force"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (out / "batches").iterdir()) == ["batch-000.csv", "batch-001.csv"]
    assert (out / "notes.txt").read_text() == "mine"
