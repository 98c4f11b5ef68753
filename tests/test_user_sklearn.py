"""`model=sklearn_estimator`: any scikit-learn classifier by import path (issue 17, point 3)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import store
from bench.config import ConfigError, compose
from bench.sweep import expand, iter_specs, left_out
from bench.trial import run_batch

ROOT = Path(__file__).resolve().parents[1]
FOREST = "sklearn.ensemble.RandomForestClassifier"


def _cfg(*extra: str):
    return compose(["+sweep=seeds", "model=sklearn_estimator", "seeds.n=2", *extra])


def test_hydras_habit_for_arguments_and_the_seed_the_class_takes() -> None:
    specs = expand(_cfg(f"model._target_={FOREST}", "+model.n_estimators=7"))
    assert {s.library for s in specs} == {"sklearn"}
    assert specs[0].hparams_dict() == {"_target_": FOREST, "n_estimators": 7}
    assert specs[0].seed_sources == "split,init"  # random_state receives seed_init
    assert {s.varied for s in specs} == {"split", "init", "all", "none"}  # no seed_order
    knn = _cfg("model._target_=sklearn.neighbors.KNeighborsClassifier")
    assert {s.varied for s in iter_specs(knn)} == {"split", "all", "none"}
    assert {e["varied"] for e in left_out(knn)} == {"order", "init"}


def test_the_seed_reaches_the_forest_and_the_rows_record_it() -> None:
    spec = expand(_cfg(f"model._target_={FOREST}", "+model.n_estimators=5"))[0]
    first = run_batch(spec).to_pylist()[0]
    again = run_batch(spec).to_pylist()[0]
    other = run_batch(dataclasses.replace(spec, seed_init=spec.seed_init + 1)).to_pylist()[0]
    assert first["status"] == "ok", first["error"]
    assert first["seed_sources"] == "split,init" and first["hparams"].startswith('{"_target_"')
    assert first["weights_sha256"] == again["weights_sha256"]  # the same seed, the same forest
    assert first["weights_sha256"] != other["weights_sha256"]
    knn = expand(_cfg("model._target_=sklearn.neighbors.KNeighborsClassifier"))
    by_split = {run_batch(s).to_pylist()[0]["weights_sha256"] for s in knn if s.varied == "split"}
    assert len(by_split) == 2  # k-NN's fitted state is its training rows: another split, another


@pytest.mark.parametrize(
    ("args", "key", "needle"),
    [
        ([], "model._target_", "import path"),
        (["model._target_=sklearn.ensemble.NopeForest"], "model._target_", "NopeForest"),
        (["model._target_=sklearn.preprocessing.StandardScaler"], "model._target_", "classifier"),
        ([f"model._target_={FOREST}", "+model.n_trees=3"], "model.params", "n_trees"),
        (
            [f"model._target_={FOREST}", "model.libraries=[torch]"],
            "model.libraries",
            "scikit-learn only",
        ),
    ],
)
def test_bad_estimators_are_refused_at_compose_time(args, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        _cfg(*args)
    assert str(info.value).startswith(key) and needle in str(info.value), str(info.value)


def test_grid_search_over_the_estimators_own_arguments() -> None:
    cfg = _cfg(f"model._target_={FOREST}", "search.enabled=true", "seeds.n=1",
               "+search.grid.sklearn_estimator.n_estimators=[3,6]", "sweep.varied=[split]")  # fmt: skip
    (spec,) = expand(cfg)
    row = run_batch(spec).to_pylist()[0]
    assert row["status"] == "ok", row["error"]
    assert row["seed_sources"] == "split,init,cv" and row["best_params"] in (
        '{"n_estimators": 3}', '{"n_estimators": 6}'
    )  # fmt: skip
    with pytest.raises(ConfigError, match="search.grid.sklearn_estimator.n_trees"):
        _cfg(f"model._target_={FOREST}", "+search.grid.sklearn_estimator.n_trees=[3]")


@pytest.mark.slow
def test_a_users_own_classifier_from_a_folder_outside_bench(tmp_path: Path) -> None:
    """The user's module on PYTHONPATH (the embedded Ray's workers inherit it), a seed sweep and
    the report, as README's worked example runs them."""
    package = tmp_path / "mymodels"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import numpy as np\n"
        "from sklearn.base import BaseEstimator, ClassifierMixin\n\n\n"
        "class NearestMean(ClassifierMixin, BaseEstimator):\n"
        "    def __init__(self, shrink=0.0, random_state=None):\n"
        "        self.shrink, self.random_state = shrink, random_state\n\n"
        "    def fit(self, X, y):\n"
        "        rng = np.random.default_rng(self.random_state)\n"
        "        self.classes_ = np.unique(y)\n"
        "        noise = rng.normal(0, 1e-3, (len(self.classes_), X.shape[1]))\n"
        "        self.means_ = np.stack([X[y == c].mean(0) for c in self.classes_]) + noise\n"
        "        return self\n\n"
        "    def predict(self, X):\n"
        "        d = ((X[:, None, :] - self.means_[None]) ** 2).sum(-1)\n"
        "        return self.classes_[d.argmin(1)]\n"
    )
    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "+sweep=seeds", "model=sklearn_estimator",
         "model._target_=mymodels.NearestMean", "+model.shrink=0.5", "seeds.n=2",
         f"results_dir={results}", "progress=false", "cluster.num_cpus=1", "report=true"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = store.run_dirs(results / "seeds")
    rows = pd.read_parquet(run)
    assert (rows["status"] == "ok").all() and len(rows) == 8  # split, init, all, none x 2
    assert set(rows["seed_sources"]) == {"split,init"}
    init = rows[rows["varied"] == "init"]
    assert init["weights_sha256"].nunique() == 2  # seed_init reached the user's random_state
    assert (store.run_files(run).report / "report.md").is_file()
