"""`dataset=table`: the user's own CSV or Parquet file (issue 17, point 1).

Files are written by the tests into a temporary folder, as a user's would be: numeric and text
columns, missing values, a text target, a row without a target.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import store
from bench.config import ConfigError
from bench.data import load, split
from bench.data.split import split_sklearn

ROOT = Path(__file__).resolve().parents[1]


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.normal(50, 10, n).round(1),
            "chol": rng.normal(200, 30, n),
            "sex": rng.choice(["m", "f"], n),
            "smoker": rng.choice(["yes", "no"], n),
            "grade": rng.integers(1, 4, n),  # numeric codes: a category only if named
            "outcome": rng.choice(["sick", "healthy"], n),
        }
    )
    frame.loc[3, "age"] = np.nan
    frame.loc[4, "smoker"] = None
    frame.loc[5, "outcome"] = None
    return frame


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "patients.csv"
    _frame().to_csv(path, index=False)
    return path


def _load(path: Path, **extra) -> object:
    return load({"name": "table", "path": str(path), "target": "outcome", "test_size": 0.2,
                 **extra})  # fmt: skip


def test_a_csv_and_its_parquet_give_the_same_arrays(csv: Path, tmp_path: Path) -> None:
    parquet = tmp_path / "patients.parquet"
    pd.read_csv(csv).to_parquet(parquet)
    a, b = _load(csv), _load(parquet)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert a.classes == ("healthy", "sick") and a.dropped == 1 and len(a.y) == 119
    assert a.feature_names == ("age", "chol", "sex", "smoker", "grade")
    assert a.categorical == (2, 3)  # text columns; `grade` is numeric
    assert np.isnan(a.X[3, 0]) and np.isnan(a.X[4, 3])  # missing values stay missing
    assert a.sha256 == hashlib.sha256(csv.read_bytes()).hexdigest()


def test_named_categories_and_a_checked_sha256(csv: Path) -> None:
    raw = _load(csv, categorical=["grade"], sha256=hashlib.sha256(csv.read_bytes()).hexdigest())
    assert raw.categorical == (2, 3, 4)


def test_preprocessing_is_fitted_on_the_training_rows_only(csv: Path) -> None:
    raw = _load(csv)
    data = split(raw, 11, 0.2)
    reference = split_sklearn(raw, 11, 0.2)
    np.testing.assert_array_equal(data.X_train, reference.X_train)
    train = np.setdiff1d(np.arange(len(raw.y)), data.test_index)
    age = raw.X[train, 0]
    filled = np.where(np.isnan(age), np.nanmedian(age), age)
    scaled = (filled - filled.mean()) / filled.std()
    np.testing.assert_allclose(data.X_train[:, 0], scaled.astype(np.float32), rtol=1e-6)
    # one-hot: sex (2), smoker (2, the missing one imputed), so 3 numeric + 4 columns
    assert data.X_train.shape[1] == 3 + 4
    assert np.bincount(data.y_test, minlength=2).min() > 0  # stratified


@pytest.mark.parametrize(
    ("change", "key", "needle"),
    [
        ({"path": "/nonexistent/file.csv"}, "dataset.path", "/nonexistent/file.csv"),
        ({"target": "nope"}, "dataset.target", "nope"),
        ({"target": "sex", "categorical": ["nope"]}, "dataset.categorical", "nope"),
        ({"sha256": "0" * 64}, "dataset.sha256", "mismatch"),
        ({"path": "empty"}, "dataset.path", "empty"),
        ({"path": "one_class"}, "dataset.target", "1 class"),
        ({"path": "ids"}, "dataset.categorical", "'id'"),
        ({"path": "notes.xlsx"}, "dataset.path", ".xlsx"),
    ],
)
def test_bad_tables_are_refused_in_one_line_naming_the_key(
    csv: Path, tmp_path: Path, change: dict, key: str, needle: str
) -> None:
    files = {"empty": tmp_path / "empty.csv", "one_class": tmp_path / "one.csv",
             "ids": tmp_path / "ids.csv", "notes.xlsx": tmp_path / "notes.xlsx"}  # fmt: skip
    files["empty"].write_text("")
    _frame().assign(outcome="sick").to_csv(files["one_class"], index=False)
    _frame().assign(id=[f"user{i}" for i in range(120)]).to_csv(files["ids"], index=False)
    files["notes.xlsx"].write_text("x")
    cfg = {"name": "table", "path": str(csv), "target": "outcome", "test_size": 0.2, **change}
    cfg["path"] = str(files.get(cfg["path"], cfg["path"]))
    with pytest.raises(ConfigError) as info:
        load(cfg)
    message = str(info.value)
    assert message.startswith(key) and needle in message and "\n" not in message


@pytest.mark.slow
def test_a_seed_sweep_on_a_users_csv(csv: Path, tmp_path: Path) -> None:
    """As a user runs it: the rows carry the file's digest; a missing file is one line, exit 2."""
    results = tmp_path / "results"
    args = [sys.executable, "-m", "bench", "+sweep=seeds", "dataset=table", f"dataset.path={csv}",
            "dataset.target=outcome", "libraries=[sklearn]", "seeds.n=2",
            "sweep.varied=[split]", "model.epochs=3", f"results_dir={results}", "progress=false",
            "cluster.num_cpus=1"]  # fmt: skip
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 row(s) without a target left out" in done.stderr
    (run,) = store.run_dirs(results / "seeds")
    rows = pd.read_parquet(run)
    assert len(rows) == 2 and (rows["status"] == "ok").all() and set(rows["dataset"]) == {"table"}
    assert set(rows["dataset_sha256"]) == {hashlib.sha256(csv.read_bytes()).hexdigest()}
    assert set(rows["n_train"] + rows["n_test"]) == {119}
    missing = subprocess.run(
        [*args[:5], f"dataset.path={tmp_path / 'gone.csv'}", *args[6:]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0, missing.stderr
    assert "dataset.path" in missing.stderr and "gone.csv" in missing.stderr
