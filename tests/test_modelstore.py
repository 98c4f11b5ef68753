"""Model history (issue 19, point 4): `save_models=true` keeps every trial's fitted model in a
portable format, once per distinct model, and `python -m bench score` re-scores them on new data
without retraining; a tampered or missing file is refused by name with nothing written.

One real sweep (scikit-learn, PyTorch one by one and stacked, Keras; split-varied seeds and
fixed-seed repeats, whose identical models must be stored once) serves every test; the session's
smoke sweep (conftest.py, without save_models) is the run that has no stored models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

from bench import modelstore
from bench.spec import TrialSpec
from bench.store import run_files

pytestmark = pytest.mark.slow


def _run(results: Path) -> Path:
    (run,) = [p for p in (results).glob("*/*") if not p.name.startswith(".")]
    return run


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """breast_cancer as a user's CSV, with a text column (categorical: skops preprocessing)."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.iloc[:, :6].copy()
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    frame["target"] = np.where(data.target == 1, "benign", "malignant")
    path = tmp_path_factory.mktemp("table") / "patients.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, run_at_once, table, smoke_run) -> tuple[Path, Path, Path]:
    """(breast_cancer run with all three libraries, torch-stacked table run with a categorical
    column, a run without stored models): two sweeps started at once, and the session's smoke
    sweep."""
    import sys

    root = tmp_path_factory.mktemp("models")
    bench = [sys.executable, "-m", "bench", "+sweep=smoke", "progress=false", "model.epochs=3"]
    done = run_at_once(
        [[*bench, "save_models=true", "libraries=[sklearn,torch,tensorflow]",
          f"results_dir={root}/bc"],
         [*bench, "save_models=true", "libraries=[torch]", "batching.enabled=true",
          "dataset=table", f"dataset.path={table}", "dataset.target=target",
          f"results_dir={root}/table"]],
        600, cwd=root,
    )  # fmt: skip
    assert not any(a.startswith("save_models") for a in smoke_run.args)
    done.append(smoke_run.proc)
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-3000:]
    bc = _run(root / "bc")
    use = modelstore.storage(bc, pd.read_parquet(bc))
    assert (  # the sweep's last words: what its stored models weigh, and what sharing saved
        f"models: 12 trials in {int(use['files'])} files, {use['bytes_on_disk'] / 1e6:.2f} MB "
        f"stored ({use['bytes_without_dedup'] / 1e6:.2f} MB as one file per trial;"
    ) in " ".join(done[0].stderr.split())
    assert "models:" not in done[2].stderr  # a run without save_models says nothing of them
    return bc, _run(root / "table"), smoke_run.run_dir


@pytest.fixture(scope="module")
def saved(runs) -> tuple[Path, Path]:
    return runs[0], runs[1]


def test_each_distinct_model_is_stored_once_in_a_portable_format(saved) -> None:
    run, stacked = saved
    df = pd.read_parquet(run)  # the model files stay out of Parquet readers' way
    assert (df["status"] == "ok").all() and df["model_file"].notna().all()
    models = run_files(run).models
    files = {p.name for p in models.iterdir()}
    # identical weights (fixed-seed repeats) share a file; every distinct model has its own
    assert {Path(f).name for f in df["model_file"]} == {
        f for f in files if not f.startswith(("prep-", "dataset"))
    }
    assert df.groupby("weights_sha256")["model_file"].nunique().eq(1).all()
    assert df["model_file"].nunique() == df["weights_sha256"].nunique() < len(df)
    by_library = df.groupby("library")["model_file"].first().str.rsplit(".", n=1).str[-1]
    assert by_library.to_dict() == {
        "sklearn": "skops", "torch": "safetensors", "tensorflow": "safetensors",
    }  # fmt: skip
    for row in df.itertuples():  # the sizes and hashes the rows give are the files'
        path = models.parent / row.model_file
        assert path.stat().st_size == row.model_bytes
        assert modelstore.sha256_file(path) == row.model_sha256
    assert not any(p.suffix in (".pkl", ".pickle", ".joblib") for p in models.iterdir())
    use = modelstore.storage(run, df)
    assert use["bytes_without_dedup"] > use["bytes_on_disk"] > 0
    assert use["dedup_ratio"] > 1
    s = pd.read_parquet(stacked)
    assert s["batched"].all() and s["model_file"].notna().all()


@pytest.mark.parametrize("which", [0, 1])
def test_score_on_the_training_data_reproduces_each_trials_test_predictions(
    saved, bench_cli, tmp_path, which, table
) -> None:
    """Scored on the data it was trained on, every stored model gives, on its test rows, the
    predictions its row recorded: the model and its preprocessing came back whole."""
    run = saved[which]
    extra = ["--dataset", str(table)] if which else ["dataset.data_seed=0"]
    done = bench_cli(["score", str(run), *extra, "--out", str(tmp_path), "--no-progress"],
                     cwd=tmp_path, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_parquet(_run(tmp_path))
    original = pd.read_parquet(run).set_index("trial_key")
    assert len(scored) == len(original) and (scored["sweep"] == "score").all()
    assert scored["scored_trial_key"].isin(original.index).all()
    for row in scored.itertuples():
        before = original.loc[row.scored_trial_key]
        test = np.asarray(before["test_index"])
        assert np.array_equal(np.asarray(row.y_pred)[test], np.asarray(before["y_pred"]))
        assert np.array_equal(np.asarray(row.y_true)[test], np.asarray(before["y_true"]))
        got = np.stack(np.asarray(row.y_proba)[test])
        np.testing.assert_allclose(got, np.stack(before["y_proba"]), rtol=0, atol=1e-6)
        assert row.weights_sha256 == before["weights_sha256"]


def test_score_an_unlabelled_file_keeps_predictions_and_leaves_metrics_null(
    saved, bench_cli, tmp_path, table
) -> None:
    run = saved[1]
    frame = pd.read_csv(table).drop(columns=["target"]).iloc[::4]
    frame.loc[frame.index[0], "site"] = "east"  # a category training never saw: missing
    new = tmp_path / "new.csv"
    frame.to_csv(new, index=False)
    done = bench_cli(["score", str(run), "--dataset", str(new), "--out", str(tmp_path / "r"),
                      "--no-progress"], cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    scored = pd.read_parquet(_run(tmp_path / "r"))
    assert scored["accuracy"].isna().all() and scored["y_true"].isna().all()
    assert scored["y_pred"].map(len).eq(len(frame)).all()
    assert scored["dataset_sha256"].nunique() == 1


def test_a_tampered_or_missing_model_is_refused_by_name_with_nothing_written(
    saved, bench_cli, tmp_path
) -> None:
    copy = tmp_path / "smoke" / saved[0].name
    shutil.copytree(saved[0], copy)
    shutil.copytree(run_files(saved[0]).meta, run_files(copy).meta)
    df = pd.read_parquet(copy)
    victim = run_files(copy).models.parent / df["model_file"].iloc[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    out = tmp_path / "out"
    done = bench_cli(["score", str(copy), "--out", str(out), "--no-progress"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"bench score: error: {victim}: checksum mismatch (model file altered or corrupt)"
    )
    victim.unlink()
    done = bench_cli(["score", str(copy), "--out", str(out), "--no-progress"], cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().endswith(f"{victim}: model file missing")
    assert not out.exists()


def test_score_bad_input_is_one_line_before_any_work(
    runs, saved, bench_cli_at_once, tmp_path, table
) -> None:
    cases = {
        (str(runs[2]),): "no stored models (run the sweep with save_models=true)",
        (str(saved[1]), "--dataset", str(tmp_path / "nope.csv")): "--dataset: file not found",
        (str(saved[0]), "dataset.nope"): "dataset.nope: expected dataset.KEY=VALUE",
        (str(tmp_path / "missing"),): "no results at",
    }
    bad = tmp_path / "bad.csv"
    pd.read_csv(table).drop(columns=["site"]).to_csv(bad, index=False)
    cases[(str(saved[1]), "--dataset", str(bad))] = "lacks the training columns ['site']"
    done_all = bench_cli_at_once(  # each a fresh interpreter, all at once
        [["score", *args, "--out", str(tmp_path / "o"), "--no-progress"] for args in cases],
        cwd=tmp_path,
    )
    for (args, message), done in zip(cases.items(), done_all, strict=True):
        assert done.returncode == 2, (args, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bench score: error: "), lines
        assert message in lines[0], (message, lines[0])
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------- what a model file may load
def _spec(**changes) -> TrialSpec:
    hp = {"hidden_sizes": [16], "activation": "relu", "lr": 1e-2, "beta1": 0.9, "beta2": 0.999,
          "eps": 1e-8, "alpha": 0.0, "batch_size": 32, "epochs": 3}  # fmt: skip
    fields = dict(sweep="x", library="torch", model="mlp", dataset="breast_cancer", device="cpu",
                  varied="all", seed_split=1, seed_order=1, seed_init=1, repeat=0,
                  deterministic=True, threads=1, init_mode="shared", order_mode="shared",
                  hparams=json.dumps(hp), dataset_params=json.dumps({"test_size": 0.2}))  # fmt: skip
    return TrialSpec(**{**fields, **changes})


def test_a_crafted_skops_file_is_refused_before_it_can_call_anything(tmp_path) -> None:
    """A pipeline of function transformers (numpy's and builtins' functions: `exec` at the end)
    passes a trust-by-package check; bench trusts exact types only, and names the others."""
    import builtins

    import skops.io as sio
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    marker = tmp_path / "ran"
    pipe = Pipeline([
        ("a", FunctionTransformer(np.full_like, kw_args={"fill_value": f"open({str(marker)!r}, 'w')",
                                                         "dtype": "O"})),
        ("b", FunctionTransformer(np.ravel)), ("c", FunctionTransformer(builtins.min)),
        ("d", FunctionTransformer(builtins.exec)),
    ])  # fmt: skip
    path = tmp_path / "prep-evil.skops"
    path.write_bytes(sio.dumps(pipe))
    with pytest.raises(modelstore.ModelFileError, match="refusing to load types bench did not "
                       "write: builtins.exec, builtins.min, numpy.full_like, numpy.ravel"):  # fmt: skip
        modelstore.load_preprocessing(path)
    with pytest.raises(modelstore.ModelFileError, match="refusing"):
        modelstore.load_model(path, _spec(library="sklearn"))
    assert not marker.exists()


def test_a_users_network_is_built_only_when_named(tmp_path) -> None:
    """A row (or file) naming `os.system` as the network's class runs nothing: bench imports the
    user's code only when the command line names it (`--trust`)."""
    hp = {"_target_": "os.system", "params": {"command": f"touch {tmp_path / 'ran'}"}, "lr": 1e-3,
          "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "alpha": 0.0, "batch_size": 32, "epochs": 1}  # fmt: skip
    spec = _spec(model="torch_module", hparams=json.dumps(hp), init_mode="library",
                 order_mode="library")  # fmt: skip
    path = tmp_path / "net.safetensors"
    path.write_bytes(modelstore.network_bytes(spec, [np.zeros(1, np.float32)], np.arange(2), 2))
    with pytest.raises(modelstore.ModelFileError, match="--trust os.system"):
        modelstore.load_model(path, spec)
    assert not (tmp_path / "ran").exists()


def test_a_grid_searched_network_comes_back_with_its_best_settings(tmp_path) -> None:
    """A grid search refits the best settings (here tanh where the config says relu) on the
    estimator it stores: the stored file carries them, and the model reloads exactly."""
    from sklearn.preprocessing import StandardScaler

    from bench.trial import make_estimator

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    spec = _spec()
    est = make_estimator(spec).set_params(activation="tanh").fit(X, y)  # as the refit does
    run = tmp_path / "sweep" / "run"
    entry = modelstore.save_estimator(run, spec, est, "a" * 64)
    loaded = modelstore.load_model(run_files(run).models.parent / entry["model_file"], spec)
    assert loaded.activation == "tanh"
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
