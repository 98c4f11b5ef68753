"""bench.trial.run without Ray: one spec in, one complete row out, errors included.

The row is the contract with analysis and outside tools (DESIGN.md's column names), so these tests
read it the way they do: by column name, checking that values agree with each other and with the
spec, not only that they exist.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import store, trial
from bench.config import compose, to_container
from bench.data import load
from bench.fingerprint import version
from bench.spec import TrialSpec
from bench.sweep import expand

pytestmark = pytest.mark.usefixtures("single_threaded")


def smoke_spec(library: str, *overrides: str) -> TrialSpec:
    specs = expand(compose(["+sweep=smoke", f"libraries=[{library}]", *overrides]))
    return specs[0]


@pytest.fixture(scope="module")
def torch_row() -> tuple[TrialSpec, dict[str, Any]]:
    spec = smoke_spec("torch")
    return spec, trial.run(spec)


def test_row_has_every_design_column(torch_row, design_columns: tuple[str, ...]) -> None:
    _, row = torch_row
    assert row["status"] == "ok", row["error"]
    missing = [
        c for c in design_columns if c not in row and c != "run_id"
    ]  # run_id: added by the runner
    assert not missing
    assert set(row) <= set(store.COLUMNS), sorted(set(row) - set(store.COLUMNS))
    table = store.to_table([{**row, "run_id": "t"}])
    assert table.num_rows == 1


def test_row_repeats_the_spec(torch_row) -> None:
    spec, row = torch_row
    assert row["trial_key"] == spec.trial_key
    for field, value in asdict(spec).items():
        assert row[field] == value, field
    assert json.loads(row["hparams"])["epochs"] == 5


def test_row_predictions_agree_with_the_metrics(torch_row) -> None:
    _, row = torch_row
    raw = load({"name": "breast_cancer"})
    index = np.asarray(row["test_index"])
    assert row["n_test"] == len(index) == len(row["y_true"]) == len(row["y_pred"]) == 114
    assert row["n_train"] + row["n_test"] == 569
    assert np.all(np.diff(index) > 0), "test rows must come in ascending row order"
    assert row["y_true"] == raw.y[index].tolist()
    proba = np.asarray(row["y_proba"])
    assert row["y_pred"] == proba.argmax(axis=1).tolist()
    np.testing.assert_allclose(row["y_score"], proba[:, 1], rtol=1e-6)
    accuracy = np.mean(np.asarray(row["y_pred"]) == np.asarray(row["y_true"]))
    assert row["accuracy"] == pytest.approx(accuracy)
    for metric in ("accuracy", "balanced_accuracy", "f1", "roc_auc"):
        assert 0.0 <= row[metric] <= 1.0, metric
    assert row["log_loss"] > 0
    assert row["n_params"] == 30 + 1
    assert len(row["weights_sha256"]) == len(row["predictions_sha256"]) == 64


def test_row_records_settings_and_environment(torch_row) -> None:
    _, row = torch_row
    assert row["torch_threads"] == 1
    assert row["blas_threads"] == 1
    assert row["deterministic_in_force"] is False
    assert "OMP_NUM_THREADS" in json.loads(row["determinism_env"])
    assert row["library_version"] == version("torch")
    assert row["python_version"].startswith("3.")
    assert row["host"] and row["cpu_model"]
    assert row["ray_node_id"] is None, "run outside Ray"
    assert isinstance(row["started_at"], dt.datetime) and row["started_at"].tzinfo is not None
    assert 0 < row["fit_seconds"] <= row["total_seconds"]


@pytest.mark.parametrize("library", ["torch", "tensorflow"])
def test_deterministic_mode_is_read_back(library: str) -> None:
    """deterministic=true is switched on and reported as in force; the next trial switches it off."""
    on = trial.run(smoke_spec(library, "deterministic=true", "seeds.n=1"))
    assert on["status"] == "ok", on["error"]
    assert on["deterministic_in_force"] is True
    off = trial.run(smoke_spec(library, "seeds.n=1"))
    assert off["deterministic_in_force"] is False
    if library == "tensorflow":
        assert on["tf_intra_threads"] == on["tf_inter_threads"] == 1


def test_heart_trial_uses_the_configured_file(heart_dir: Path) -> None:
    cfg = compose(
        ["+sweep=smoke", "libraries=[sklearn]", "dataset=heart", f"dataset.path={heart_dir}"]
    )
    spec = expand(cfg)[0]
    row = trial.run(spec, dataset_cfg=to_container(cfg.dataset))
    assert row["status"] == "ok", row["error"]
    assert (row["n_train"], row["n_test"]) == (242, 61)
    assert sum(row["y_true"]) in (27, 28)  # 139/303 of 61, stratified
    assert row["accuracy"] >= 0.7


def test_multiclass_trial_scores_the_top_class() -> None:
    row = trial.run(smoke_spec("torch", "dataset=digits", "model=mlp", "seeds.n=1"))
    assert row["status"] == "ok", row["error"]
    proba = np.asarray(row["y_proba"])
    assert proba.shape == (360, 10)
    np.testing.assert_allclose(row["y_score"], proba.max(axis=1), rtol=1e-6)
    assert not np.isnan(row["roc_auc"])
    assert row["accuracy"] > 0.8


@pytest.mark.parametrize(
    ("change", "needle"),
    [({"library": "jax"}, "jax"), ({"dataset": "nope"}, "nope")],
)
def test_a_failing_trial_becomes_an_error_row(change: dict[str, str], needle: str) -> None:
    """A trial never raises: its row says why it failed and still fits the schema."""
    spec = replace(smoke_spec("torch"), **change)
    row = trial.run(spec)
    assert row["status"] == "error"
    assert needle in row["error"]
    assert row["trial_key"] == spec.trial_key
    assert row.get("accuracy") is None and row.get("weights_sha256") is None
    table = store.to_table([{**row, "run_id": "t"}])
    assert table.column("status").to_pylist() == ["error"]


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_fresh_workers_first_fit_imports_nothing(deterministic: bool) -> None:
    """A trial's fit_seconds must be training only. PyTorch's first optimizer imports
    torch._dynamo (1-3 s); had the first trial of each worker paid it, a worker's first trial
    (always non-deterministic, before the sweep interleaved the modes) made deterministic mode look
    30x cheaper. Checked in a fresh process, as a Ray worker starts, for both modes."""
    import subprocess
    import sys

    overrides = ["+sweep=smoke", "libraries=[torch]", "model=mlp", f"deterministic={deterministic}"]
    code = f"""
import sys
from bench import determinism, trial
from bench.config import compose
from bench.data import load, split
from bench.sweep import expand
spec = expand(compose({overrides!r}))[0]
assert spec.deterministic is {deterministic}
determinism.apply(spec)
trial._import_for(spec)
data = split(load({{"name": spec.dataset}}), spec.seed_split, 0.2)
before = set(sys.modules)
trial.make_estimator(spec).fit(data.X_train, data.y_train)
heavy = ("torch._dynamo", "torch._inductor", "torch._functorch")
print(sorted(m for m in set(sys.modules) - before if m.startswith(heavy)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
