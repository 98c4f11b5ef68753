"""`+experiment=heart`: grid search with cross-validation in every trial, and its report section.

Real data (the UCI file from ../shared/data/heart or BENCH_HEART_DIR), the real conf/, the real
libraries; the end-to-end run starts a real embedded Ray through `python -m bench`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from bench import seeds, store, trial
from bench.config import ConfigError, compose, to_container
from bench.data import load, split
from bench.experiments import heart_report
from bench.sweep import expand

pytestmark = pytest.mark.usefixtures("single_threaded")


def heart(heart_dir: Path, *overrides: str) -> list[str]:
    return ["+experiment=heart", f"dataset.path={heart_dir}", *overrides]


# --- the config -----------------------------------------------------------------------------------


def test_experiment_composes_with_at_least_100_split_seeds(heart_dir: Path) -> None:
    cfg = compose(heart(heart_dir))
    assert cfg.sweep.name == "heart" and cfg.dataset.name.value == "heart"
    assert cfg.search.enabled and cfg.search.folds == 5 and cfg.report
    specs = expand(cfg)
    count = Counter((s.model, s.library, s.varied) for s in specs)
    for model in ("svm_rbf", "decision_tree", "logreg", "mlp"):
        assert count[(model, "sklearn", "split")] >= 100, model
    assert count[("mlp", "torch", "split")] >= 100
    assert count[("mlp", "tensorflow", "split")] >= 1
    # scikit-learn-only models run in scikit-learn only; the MLP in all three libraries
    assert {s.library for s in specs if s.model != "mlp"} == {"sklearn"}
    assert {s.library for s in specs if s.model == "mlp"} == {"sklearn", "torch", "tensorflow"}
    svm = [s for s in specs if s.model == "svm_rbf"]
    by_source = {v: [s for s in svm if s.varied == v] for v in ("split", "cv", "init")}
    assert by_source["split"] and by_source["cv"], "the experiment varies split and cv alone"
    # The RBF SVM draws nothing (no Platt scaling): its init trials are left out
    # (bench.backends.seed_use); the tree's random_state is seed_init, so it keeps them.
    assert not by_source["init"]
    assert count[("decision_tree", "sklearn", "init")] == 20
    assert len({s.seed_split for s in by_source["split"]}) == len(by_source["split"])
    assert {s.seed_cv for s in by_source["split"]} == {seeds.derive(0, "cv", 0)}
    assert len({s.seed_cv for s in by_source["cv"]}) == len(by_source["cv"])
    assert {s.seed_split for s in by_source["cv"]} == {seeds.derive(0, "split", 0)}
    assert all(s.search is not None and s.seed_cv is not None for s in specs)
    assert json.loads(svm[0].search)["grid"] == {
        "C": [0.1, 1, 10, 100],
        "gamma": ["scale", 0.001, 0.01, 0.1],
    }
    assert len({s.trial_key for s in specs}) == len(specs)


def test_cv_seed_source_moves_no_other_seed() -> None:
    assert "cv" in seeds.SOURCES
    cv = [seeds.derive(0, "cv", i) for i in range(5)]
    assert len(set(cv)) == 5
    assert set(cv).isdisjoint(seeds.derive(0, s, i) for s in ("split", "order", "init")
                              for i in range(5))  # fmt: skip


def test_trials_without_search_keep_their_trial_keys() -> None:
    """seed_cv and search are left out of a spec's JSON when no search runs: old keys stay."""
    spec = expand(compose(["+sweep=smoke", "libraries=[torch]"]))[0]
    assert spec.seed_cv is None and spec.search is None
    assert "seed_cv" not in spec.to_json() and "search" not in spec.to_json()


def test_svm_rbf_with_torch_is_refused_at_compose_time(heart_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        compose(["+sweep=smoke", "model=svm_rbf", "libraries=[torch]"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("libraries:") and "svm_rbf" in message and "scikit-learn" in message
    with pytest.raises(ConfigError, match=r"^model_zoo\.svm_rbf\.libraries: svm_rbf exists"):
        compose(heart(heart_dir, "model_zoo.svm_rbf.libraries=[sklearn,torch]"))


def test_svm_rbf_with_torch_is_refused_by_the_cli(bench_cli, tmp_path: Path) -> None:
    out = bench_cli(["+sweep=smoke", "model=svm_rbf", "libraries=[torch]"], cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "libraries" in lines[0] and "svm_rbf" in lines[0]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["+sweep=seeds", "sweep.varied=[cv]"], "sweep.varied"),
        (["search.folds=1"], "search.folds"),
        (["search.grid.svm_rbf.depth=[1]"], "search.grid.svm_rbf.depth"),
        (["search.scoring=best"], "search.scoring"),
        (["+seeds.n_by_source.dropout=3"], "seeds.n_by_source"),
        (["+model_zoo.decision_tree.params.depth=3"], "model_zoo.decision_tree.params"),
        (["batching.enabled=true"], "batching.enabled"),
    ],
)
def test_bad_search_settings_name_the_key(heart_dir: Path, overrides: list[str], key: str) -> None:
    base = heart(heart_dir) if overrides[0] != "+sweep=seeds" else []
    with pytest.raises(ConfigError) as info:
        compose([*base, *overrides])
    assert str(info.value).startswith(f"{key}:"), str(info.value)


def test_kaggle_heart_csv_is_refused_with_one_line(tmp_path: Path, bench_cli) -> None:
    kaggle = tmp_path / "heart.csv"
    kaggle.write_text(
        "age,sex,cp,trestbps,chol,fbs,restecg,thalach,exang,oldpeak,slope,ca,thal,target\n"
        "63,1,3,145,233,1,0,150,0,2.3,0,0,1,1\n"
        "37,1,2,130,250,0,1,187,0,3.5,0,0,2,1\n"
        "41,0,1,130,204,0,0,172,0,1.4,2,0,2,1\n"
    )
    with pytest.raises(ConfigError) as info:
        load({"name": "heart", "path": str(kaggle)})
    message = str(info.value)
    assert "\n" not in message and message.startswith("dataset.path:")
    assert "Kaggle" in message and "different" in message
    out = bench_cli(["+experiment=heart", f"dataset.path={kaggle}"], cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Kaggle" in lines[0], out.stderr


# --- one trial with a grid search -----------------------------------------------------------------


# A grid of 2 x 2 rather than the experiment's 5 x 3: every fold's fits are counted and checked
# below, and the tests here run eleven searches.
TREE_GRID = {"max_depth": [3, None], "min_samples_split": [2, 10]}


@pytest.fixture(scope="module")
def tree_spec(heart_dir: Path):
    grid = [f"search.grid.decision_tree.{k}={json.dumps(v)}" for k, v in TREE_GRID.items()]
    cfg = compose(heart(heart_dir, "models=[decision_tree]", "seeds.n=1", *grid))
    spec = next(s for s in expand(cfg) if s.varied == "split")
    assert spec.search_dict()["grid"] == TREE_GRID
    return spec, load(to_container(cfg.dataset))


def test_trial_records_best_params_and_cv_score(tree_spec) -> None:
    spec, raw = tree_spec
    row = trial.run(spec, raw=raw)
    assert row["status"] == "ok", row["error"]
    best = json.loads(row["best_params"])
    assert set(best) == {"max_depth", "min_samples_split"}
    assert best["max_depth"] in (3, None) and best["min_samples_split"] in (2, 10)
    assert 0.5 < row["cv_score"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert row["seed_cv"] == spec.seed_cv and row["n_test"] == 61 and row["n_train"] == 242


def test_the_cv_seed_picks_the_folds(tree_spec) -> None:
    """Same seed_cv: identical search and model; another seed_cv: other folds, another CV score,
    the same split and test rows."""
    from sklearn.model_selection import StratifiedKFold

    spec, raw = tree_spec
    again = [trial.run(spec, raw=raw) for _ in range(2)]
    for column in ("cv_score", "best_params", "weights_sha256", "predictions_sha256"):
        assert again[0][column] == again[1][column], column
    others = [replace(spec, seed_cv=seeds.derive(0, "cv", i)) for i in (1, 2, 3)]
    rows = [again[0], *(trial.run(s, raw=raw) for s in others)]
    assert all(r["status"] == "ok" for r in rows)
    assert len({r["cv_score"] for r in rows}) > 1, "fold seeds never changed the CV score"
    assert len({tuple(r["test_index"]) for r in rows}) == 1, "the split must not move"
    data = split(raw, spec.seed_split, 0.2)
    folds = [
        [tuple(test) for _, test in StratifiedKFold(5, shuffle=True, random_state=s.seed_cv)
         .split(data.X_train, data.y_train)]
        for s in (spec, *others)
    ]  # fmt: skip
    assert len({tuple(f) for f in folds}) == len(folds)


def test_svm_and_tree_rows(heart_dir: Path) -> None:
    """svm_rbf (margins squashed, no log loss) and its hyperparameters from the config's grid."""
    cfg = compose(
        heart(heart_dir, "models=[svm_rbf]", "seeds.n=1", "search.grid.svm_rbf.C=[1,10]",
              "search.grid.svm_rbf.gamma=[scale]")
    )  # fmt: skip
    spec = next(s for s in expand(cfg) if s.varied == "split")
    row = trial.run(spec, raw=load(to_container(cfg.dataset)))
    assert row["status"] == "ok", row["error"]
    assert json.loads(row["best_params"])["gamma"] == "scale"
    assert np.isnan(row["log_loss"]) and 0.0 <= row["roc_auc"] <= 1.0
    assert row["weights_sha256"] and row["n_params"] > 0


class _SeesX(DecisionTreeClassifier):
    """A decision tree that keeps every X it is fitted on (a class attribute: GridSearchCV fits
    clones)."""

    seen: ClassVar[list[np.ndarray]] = []

    def fit(self, X, y, sample_weight=None, check_input=True):
        type(self).seen.append(np.array(X, copy=True))
        return super().fit(X, y, sample_weight=sample_weight, check_input=check_input)


def _raw_train(raw, data) -> np.ndarray:
    """The raw rows of a split's training part, in X_train's order (every row not in its test)."""
    return np.setdiff1d(np.arange(len(raw.y)), data.test_index)


def _fold_features(raw, rows: np.ndarray) -> np.ndarray:
    """The preprocessing fitted on `rows` alone, applied to them (as a Split's float32 arrays)."""
    from bench.data.split import _preprocessor

    pre = _preprocessor(raw).fit(raw.X[rows])
    return np.ascontiguousarray(pre.transform(raw.X[rows]), dtype=np.float32)


def test_search_fits_the_preprocessing_inside_each_fold(tree_spec, monkeypatch) -> None:
    """Each CV fold's model sees features preprocessed by an imputer, scaler and encoder fitted
    on that fold's training rows only (its scaled columns have mean 0 and std 1 over exactly
    those rows), never the whole training part's preprocessing cut into folds; the refit sees
    the split's own arrays."""
    from sklearn.model_selection import StratifiedKFold

    spec, raw = tree_spec
    monkeypatch.setattr(_SeesX, "seen", [])
    monkeypatch.setattr(trial, "make_estimator", lambda s: _SeesX(random_state=s.seed_init))
    row = trial.run(spec, raw=raw)
    assert row["status"] == "ok", row["error"]
    search = spec.search_dict()
    candidates = int(np.prod([len(v) for v in search["grid"].values()]))
    seen = _SeesX.seen
    assert len(seen) == search["folds"] * candidates + 1
    data = split(raw, spec.seed_split, 0.2)
    train = _raw_train(raw, data)
    assert np.array_equal(raw.y[train], data.y_train)
    assert np.array_equal(seen[-1], data.X_train), "the refit must see the split's arrays"
    numeric = [i for i in range(raw.X.shape[1]) if i not in raw.categorical]
    folds = StratifiedKFold(search["folds"], shuffle=True, random_state=spec.seed_cv)
    for fit_rows, _ in folds.split(raw.X[train], data.y_train):
        own = _fold_features(raw, train[fit_rows])
        scaled = own[:, : len(numeric)].astype(np.float64)  # the ColumnTransformer's "num" first
        assert np.abs(scaled.mean(axis=0)).max() < 1e-6
        assert np.abs(scaled.std(axis=0) - 1).max() < 1e-5
        leaked = data.X_train[fit_rows]  # the whole training part's preprocessing, cut to the fold
        assert np.abs(leaked[:, : len(numeric)].mean(axis=0)).max() > 1e-3
        # every candidate fitted on this fold saw its own preprocessing, none the leaked one
        assert sum(np.array_equal(X, own) for X in seen) == candidates
        assert not any(np.array_equal(X, leaked) for X in seen)


def _plain_fit(spec, best: dict, data):
    """A trial's estimator with `best` set, fitted on the split's arrays as a trial without
    search fits it: (weights sha256, predictions sha256)."""
    from bench import fingerprint

    estimator = trial.make_estimator(spec).set_params(**best).fit(data.X_train, data.y_train)
    proba, _ = trial.test_scores(estimator, data.X_test)
    y_pred = estimator.classes_[np.argmax(proba, axis=1)]
    return (
        fingerprint.weights_sha256(trial.fitted_weights(estimator)),
        fingerprint.predictions_sha256(y_pred, proba),
    )


def test_cv_score_is_a_pipeline_search_and_the_refit_is_the_plain_model(heart_dir: Path) -> None:
    """The row's cv_score and best_params are those of a hand-built GridSearchCV over
    Pipeline([preprocessing, SVC]) on the raw training rows with the trial's folds; the refit
    model is the one a trial without search fits on the split's arrays with those parameters."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.svm import SVC

    from bench.data.split import _preprocessor

    cfg = compose(heart(heart_dir, "models=[svm_rbf]", "seeds.n=3"))
    raw = load(to_container(cfg.dataset))
    # the third split seed: one where the leaked preprocessing gave another cv_score
    spec = [s for s in expand(cfg) if s.varied == "split"][2]
    row = trial.run(spec, raw=raw)
    assert row["status"] == "ok", row["error"]
    search = spec.search_dict()
    data = split(raw, spec.seed_split, 0.2)
    train = _raw_train(raw, data)
    cast = FunctionTransformer(lambda X: np.ascontiguousarray(X, dtype=np.float32))
    reference = GridSearchCV(
        make_pipeline(_preprocessor(raw), cast, SVC(kernel="rbf")),
        {f"svc__{k}": v for k, v in search["grid"].items()},
        scoring=search["scoring"],
        cv=StratifiedKFold(search["folds"], shuffle=True, random_state=spec.seed_cv),
    ).fit(raw.X[train], data.y_train)
    assert row["cv_score"] == pytest.approx(reference.best_score_, abs=1e-12)
    best = {k.removeprefix("svc__"): v for k, v in reference.best_params_.items()}
    assert json.loads(row["best_params"]) == best, "no pipeline prefix in the row"
    assert (row["weights_sha256"], row["predictions_sha256"]) == _plain_fit(spec, best, data)


def test_torch_mlp_searches_inside_the_pipeline(heart_dir: Path) -> None:
    """A neural backend's estimator works as the pipeline's last step; its refit is the model a
    trial without search trains on the split's arrays."""
    cfg = compose(
        heart(heart_dir, "models=[mlp]", "libraries=[torch]", "seeds.n=1",
              "model_zoo.mlp.epochs=2", "search.folds=3")
    )  # fmt: skip
    spec = next(s for s in expand(cfg) if s.varied == "split")
    row = trial.run(spec, raw=load(to_container(cfg.dataset)))
    assert row["status"] == "ok", row["error"]
    best = json.loads(row["best_params"])
    assert set(best) == {"alpha"} and best["alpha"] in (1e-4, 0.1)
    assert 0.5 < row["cv_score"] <= 1.0
    data = split(load(to_container(cfg.dataset)), spec.seed_split, 0.2)
    assert (row["weights_sha256"], row["predictions_sha256"]) == _plain_fit(spec, best, data)


def test_verdict_follows_the_threshold() -> None:
    """`report --threshold 0.9`: the verdict names 90%, nowhere 80%."""
    acc = np.linspace(0.86, 0.98, 20)  # mean 0.92 >= 0.9, p05 < 0.9: "typical, not guaranteed"
    rows = pd.DataFrame(
        {"model": "svm_rbf", "library": "sklearn", "varied": "split", "accuracy": acc,
         "cv_score": acc + 0.01, "seed_split": range(20)}
    )  # fmt: skip
    dist = heart_report.distribution(rows, 0.9, 200)
    text = heart_report.conclusion(
        dist,
        heart_report.variance_shares(rows, 200),
        pd.DataFrame(),
        heart_report.optimism(rows, 200),
        0.9,
        61,
    )
    verdict = text[1]
    assert verdict.startswith("90% is typical of the method but not guaranteed"), verdict
    assert "one split's 90% says little" in verdict
    assert not any("80%" in t for t in text), text
    spread = next(t for t in text if t.startswith("Where the spread comes from"))
    assert "nan" not in spread and "not measured across CV fold seeds" in spread, spread


# --- end to end on Ray, and the report --------------------------------------------------------------

SMALL = [
    "seeds.n=3",
    "seeds.n_by_source={cv:2,init:2}",
    "models=[svm_rbf,decision_tree,mlp]",
    "libraries=[sklearn,torch]",
    "model_zoo.mlp.epochs=3",
    "search.grid.svm_rbf.C=[1,10]",
    "search.grid.svm_rbf.gamma=[scale,0.01]",
    "search.grid.decision_tree.max_depth=[3,null]",
    "search.grid.decision_tree.min_samples_split=[2,10]",
    "search.folds=3",
    "cluster.num_cpus=2",
    "progress=false",
    "run_id=small",
]


@pytest.fixture(scope="module", autouse=True)
def small_run_started(start_bench, request, heart_dir: Path, tmp_path_factory):
    """small_run's sweep, started with this module's first test: it runs on Ray beside the
    in-process tests above, none of which times anything."""
    where = tmp_path_factory.mktemp("heart")
    args = [*heart(heart_dir), *SMALL, f"results_dir={where}"]
    started = start_bench(request, "small_run", args, cwd=where, timeout=300)
    yield started, where
    if started is not None:
        started.stop()


@pytest.fixture(scope="module")
def small_run(small_run_started) -> tuple[Path, pd.DataFrame, str]:
    started, where = small_run_started
    out = started.result()
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = where / "heart" / "small"
    return run_dir, pd.read_parquet(run_dir), out.stdout


@pytest.mark.slow
def test_small_run_end_to_end(small_run) -> None:
    run_dir, df, stdout = small_run
    assert (df["status"] == "ok").all()
    # 3 split + 2 cv + 2 init seeds, for svm, tree, mlp in sklearn and mlp in torch, less the
    # SVM's init seeds (seed_init does not reach an RBF SVM: left out, bench.backends.seed_use)
    assert len(df) == 4 * (3 + 2 + 2) - 2
    assert not ((df["model"] == "svm_rbf") & (df["varied"] == "init")).any()
    assert df["cv_score"].between(0, 1).all() and df["seed_cv"].notna().all()
    assert all(isinstance(json.loads(p), dict) for p in df["best_params"])
    svm_params = df.loc[df["model"] == "svm_rbf", "best_params"]
    assert all(set(json.loads(p)) == {"C", "gamma"} for p in svm_params)
    report = (store.run_files(run_dir).report / "report.md").read_text()
    assert "## Grid search with cross-validation: does 80% hold?" in report
    assert "80% is reached in" in report and "of splits" in report
    assert "SVM vs decision tree" in report
    assert (store.run_files(run_dir).report / "tuned_accuracy.png").stat().st_size > 1000
    assert "report:" in stdout


@pytest.mark.slow
def test_svm_vs_tree_is_paired_by_split_seed(small_run) -> None:
    _, df, _ = small_run
    split_rows = df[df["varied"] == "split"]
    result = heart_report.svm_vs_tree(split_rows.sample(frac=1.0, random_state=1), 200)
    assert len(result) == 1
    r = result.iloc[0]
    assert bool(r["paired"]) and r["n_pairs"] == 3
    svm = split_rows[split_rows["model"] == "svm_rbf"].set_index("seed_split")["accuracy"]
    tree = split_rows[split_rows["model"] == "decision_tree"].set_index("seed_split")["accuracy"]
    per_seed = (svm - tree.reindex(svm.index)).to_numpy()
    assert r["diff"] == pytest.approx(per_seed.mean())
    assert r["prob_a_better"] == pytest.approx(np.mean(per_seed > 0))


@pytest.mark.slow
def test_conclusion_is_generated_from_the_numbers(small_run) -> None:
    _, df, _ = small_run
    split_rows = df[df["varied"] == "split"]
    dist = heart_report.distribution(split_rows, 0.8, 200)
    svm = dist[dist["model"] == "svm_rbf"].iloc[0]
    k = int((split_rows.loc[split_rows["model"] == "svm_rbf", "accuracy"] >= 0.8).sum())
    assert svm["k_reach"] == k and svm["n"] == 3
    text = heart_report.conclusion(
        dist,
        heart_report.variance_shares(df, 200),
        heart_report.svm_vs_tree(split_rows, 200),
        heart_report.optimism(split_rows, 200),
        0.8,
        61,
    )
    assert text[0].startswith(f"**80% is reached in {100 * k / 3:.0f}% of splits**")
    assert any("SVM vs decision tree" in t for t in text)
    assert any("cross-validation" in t.lower() for t in text)
