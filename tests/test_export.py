"""`python -m bench export mlflow RUN` (issue 18, point 6): one MLflow run per trial, against a real
local tracking store (sqlite, as MLflow recommends).

The run folder holds real rows (scikit-learn trials trained in this process, written by bench's
PartWriter, plus a driver's error row) without starting Ray; one tracking database serves the
module, since creating its tables is most of an export's time here. Each test exports into its
own experiment.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from bench import export

mlflow = pytest.importorskip("mlflow")
RUN_ID = "r1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """results/smoke/r1: three trained scikit-learn MLPs (5 epochs: a loss curve each) and one
    error row."""
    from bench import rows, runner, store, trial
    from bench.config import compose
    from bench.sweep import expand

    specs = expand(compose(["+sweep=smoke", "libraries=[sklearn]", "model=mlp", "seeds.n=2"]))
    run = tmp_path_factory.mktemp("results") / "smoke" / RUN_ID
    files = store.run_files(run)
    run.mkdir(parents=True)
    files.meta.mkdir(parents=True)
    writer = store.PartWriter(run, staging=files.meta)
    for spec in specs[:3]:
        writer.add_batch(runner.with_run_id(trial.run_batch(spec), RUN_ID))
    writer.add_batch(rows.to_batch([runner.driver_row(specs[3], "worker died", RUN_ID, None)]))
    writer.close()
    return run


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(uri: str):
    return mlflow.MlflowClient(tracking_uri=uri)


def _export(capsys, *args: str) -> tuple[int, str, str]:
    code = export.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def test_one_run_per_trial_with_the_rows_values_and_a_second_export_adds_nothing(
    run_dir: Path, uri: str, client, capsys
) -> None:
    from bench.analysis import load

    code, out, err = _export(capsys, "mlflow", str(run_dir), "--tracking-uri", uri)
    assert (code, err) == (0, "")  # MLflow's INFO lines (creating the tables) are silenced
    assert out == f"exported 4 trials of {run_dir} to {uri}, experiment bench/smoke\n"
    df = load(run_dir)
    runs = _runs(client, "bench/smoke")
    assert len(runs) == len(df) == 4
    assert sorted(r.data.tags["bench.trial_key"] for r in runs) == sorted(df["trial_key"])

    row = df[df["status"] == "ok"].iloc[0]
    (run,) = [r for r in runs if r.data.tags["bench.trial_key"] == row["trial_key"]]
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    for seed in ("seed_split", "seed_order", "seed_init", "repeat"):
        assert params[seed] == str(int(row[seed]))
    assert "seed_cv" not in params  # null: no grid search
    assert (params["library"], params["model"], params["mode"]) == ("sklearn", "mlp", "aligned")
    hparams = json.loads(row["hparams"])
    assert {k[len("hparams.") :]: v for k, v in params.items() if k.startswith("hparams.")} == {
        k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in hparams.items()
    }
    assert params["hparams.lr"] == str(hparams["lr"]) and params["dataset.test_size"] == "0.2"
    assert metrics["accuracy"] == row["accuracy"] and metrics["f1"] == row["f1"]
    history = client.get_metric_history(run.info.run_id, "train_loss")  # one step an epoch
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == list(row["train_loss"])
    assert len(history) == 5 and metrics["train_loss"] == row["train_loss"][-1]
    assert tags["bench.run_id"] == RUN_ID and tags["bench.sweep"] == "smoke"
    assert tags["bench.weights_sha256"] == row["weights_sha256"]
    assert tags["bench.status"] == "ok" and run.info.status == "FINISHED"
    assert run.info.run_name == f"sklearn-mlp-{row['varied']}-{row['trial_key'][:8]}"
    assert run.info.start_time == int(row["started_at"].timestamp() * 1000)

    (failed,) = [r for r in runs if r.data.tags["bench.status"] == "error"]
    assert failed.info.status == "FAILED" and failed.data.tags["bench.error"] == "worker died"
    assert failed.data.metrics == {} and failed.data.params["library"] == "sklearn"

    code, out, err = _export(capsys, "mlflow", str(run_dir), "--tracking-uri", uri)
    assert (code, err) == (0, "")
    assert out.endswith("experiment bench/smoke (4 already there)\n")
    assert out.startswith("exported 0 trials")
    assert len(_runs(client, "bench/smoke")) == 4


def test_train_loss_is_logged_per_epoch_and_an_interrupted_export_is_redone(
    run_dir: Path, uri: str, client, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows with the per-epoch `train_loss` list column (1500 epochs: more than one log_batch
    holds), and a trial an earlier export left RUNNING: it is deleted and logged again."""
    df = export.read_rows(run_dir).head(2).copy()
    epochs = 1500
    df["train_loss"] = [[1.0 / (e + 1) for e in range(epochs)], None]
    monkeypatch.setattr(export, "read_rows", lambda _: df)
    experiment = "bench/losses"
    experiment_id = client.create_experiment(experiment)
    stale = client.create_run(
        experiment_id, tags={"bench.run_id": RUN_ID, "bench.trial_key": df["trial_key"][1]}
    )
    code, out, _ = _export(
        capsys, "mlflow", str(run_dir), "--tracking-uri", uri, "--experiment", experiment
    )
    assert code == 0 and out.startswith("exported 2 trials")
    runs = {r.data.tags["bench.trial_key"]: r for r in _runs(client, experiment)}
    assert len(runs) == 2 and stale.info.run_id not in {r.info.run_id for r in runs.values()}
    history = client.get_metric_history(runs[df["trial_key"][0]].info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(e, 1.0 / (e + 1)) for e in range(epochs)]
    assert "train_loss" not in runs[df["trial_key"][1]].data.metrics  # null: no epochs


def test_the_run_of_a_row_keeps_what_mlflow_takes() -> None:
    """DataFrame level, no MLflow: nulls and non-finite values left out, integers read as floats
    written as integers, nested hyperparameters flattened, long values cut, batches in limits."""
    row = {
        "trial_key": "abcdef0123456789", "run_id": "r", "status": "ok", "library": "torch",
        "model": "mlp", "varied": "init", "seed_split": 7.0, "seed_cv": float("nan"),
        "deterministic": True, "hparams": json.dumps({"lr": 0.01, "opt": {"eps": 1e-8},
        "hidden_sizes": [64, 64], "note": None, "long": "x" * 7000}),
        "dataset_params": None, "accuracy": 0.5, "log_loss": math.inf, "f1": None,
        "started_at": pd.Timestamp("2026-01-01", tz="UTC"), "total_seconds": 1.5,
        "train_loss": [0.7, math.nan, 0.5], "error": None,
    }  # fmt: skip
    run = export.trial_run(row)
    assert run.name == "torch-mlp-init-abcdef01" and run.status == "FINISHED"
    assert run.params["seed_split"] == "7" and "seed_cv" not in run.params
    assert run.params["deterministic"] == "true" and run.params["hparams.opt.eps"] == "1e-08"
    assert run.params["hparams.hidden_sizes"] == "[64,64]" and "hparams.note" not in run.params
    assert len(run.params["hparams.long"]) == export.MAX_PARAM_LENGTH
    assert not any(k.startswith("dataset.") for k in run.params)
    assert run.metrics == [
        ("accuracy", 0.5, 0), ("total_seconds", 1.5, 0), ("train_loss", 0.7, 0),
        ("train_loss", 0.5, 2),
    ]  # fmt: skip
    assert run.end_ms - run.start_ms == 1500 and "bench.error" not in run.tags
    assert export.trial_run({**row, "status": "error"}).status == "FAILED"

    wide = export.TrialRun(
        "k", "r", "n", "FINISHED", None, None,
        params={f"p{i}": "v" for i in range(250)},
        metrics=[("m", 0.0, s) for s in range(1500)],
    )  # fmt: skip
    batches = list(export.log_batches(wide))
    assert all(len(p) <= 100 and len(p) + len(m) <= 1000 for p, m in batches)
    assert sum(len(p) for p, _ in batches) == 250 and sum(len(m) for _, m in batches) == 1500


def test_without_mlflow_it_names_the_extra_before_any_work(
    run_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` fails, as uninstalled
    db = tmp_path / "mlflow.db"
    code, out, err = _export(capsys, "mlflow", str(run_dir), "--tracking-uri", f"sqlite:///{db}")
    assert code == 2 and out == "" and not db.exists()
    assert err.count("\n") == 1 and "mlflow is not installed" in err
    assert "pip install 'seedbench[mlflow]'" in err


def test_bad_input_is_one_line_and_logs_nothing(tmp_path: Path, capsys, run_dir: Path) -> None:
    from bench.cli import main

    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    (tmp_path / "empty").mkdir()
    for args, says in [
        (["mlflow", str(tmp_path / "nowhere")], "no results at"),
        (["mlflow", str(tmp_path / "empty")], "no part-*.parquet files"),
        (["wandb", str(run_dir)], "only mlflow is supported"),
    ]:
        code, out, err = _export(capsys, *args, "--tracking-uri", uri)
        assert (code, out, err.count("\n")) == (2, "", 1), err
        assert err.startswith("bench export: error: ") and says in err
    assert not db.exists()
    assert main(["export", "wandb", str(run_dir)]) == 2  # through the CLI's dispatch
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == [
        "bench export: error: unknown exporter 'wandb'; only mlflow is supported "
        "(python -m bench export mlflow RUN_DIR)"
    ]
