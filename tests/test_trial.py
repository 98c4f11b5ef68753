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
from bench.testing import TrialMetric, assert_over_seeds

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
    accuracy = TrialMetric(expand(cfg)[0], dataset_cfg=to_container(cfg.dataset))
    assert_over_seeds(accuracy, at_least=0.7, seeds=range(6), looks=(3, 6))  # 61 test rows
    row = accuracy.rows[0]
    assert (row["n_train"], row["n_test"]) == (242, 61)
    assert sum(row["y_true"]) in (27, 28)  # 139/303 of 61, stratified


def test_multiclass_trial_scores_the_top_class() -> None:
    accuracy = TrialMetric(smoke_spec("torch", "dataset=digits", "model=mlp", "seeds.n=1"))
    assert_over_seeds(accuracy, at_least=0.8, seeds=range(6), looks=(3, 6))  # chance: 0.1
    row = accuracy.rows[0]
    proba = np.asarray(row["y_proba"])
    assert proba.shape == (360, 10)
    np.testing.assert_allclose(row["y_score"], proba.max(axis=1), rtol=1e-6)
    assert not np.isnan(row["roc_auc"])


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


# --- Checks that need a fresh process, as a Ray worker starts ---------------------------------------


def _first_fit(deterministic: bool) -> str:
    overrides = ["+sweep=smoke", "libraries=[torch]", "model=mlp", f"deterministic={deterministic}"]
    return f"""
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


CUDA_VERSION = """
import json, sys
from bench import trial
from bench.config import compose
from bench.sweep import expand
spec = lambda lib: expand(compose(["+sweep=smoke", f"libraries=[{lib}]", "seeds.n=1"]))[0]
before = trial.run(spec("sklearn"))
assert "torch" not in sys.modules
import torch
torch.version.cuda = "12.4"  # as a CUDA build says it
torch_row = trial.run(spec("torch"))
after = trial.run(spec("sklearn"))
print(json.dumps([r["cuda_version"] for r in (before, torch_row, after)]))
"""

TF_ONEDNN = """
import json, os
from bench import determinism
from bench.config import compose
from bench.sweep import expand
spec = expand(compose(["+sweep=smoke", "libraries=[tensorflow]", "seeds.n=1"]))[0]
first = determinism.apply(spec)["tf_onednn"]
from tensorflow.python.util import _pywrap_util_port
truth = "on" if _pywrap_util_port.IsMklEnabled() else "off"
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0" if truth == "on" else "1"  # too late to matter
second = determinism.apply(spec)["tf_onednn"]
print(json.dumps([first, second, truth]))
"""


@pytest.fixture(scope="module")
def fresh(run_at_once) -> dict[tuple, Any]:
    """Each check below that needs a fresh interpreter (what it imports, what a library reads
    once it loads): its own process, all started at once, since most of each is importing torch
    or TensorFlow. By (check, parameter), the process."""
    import os
    import sys

    without = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    runs = {
        ("first_fit", False): (_first_fit(False), dict(os.environ)),
        ("first_fit", True): (_first_fit(True), dict(os.environ)),
        ("cuda_version", None): (CUDA_VERSION, dict(os.environ)),
        ("tf_onednn", None): (TF_ONEDNN, without),
        ("tf_onednn", "1"): (TF_ONEDNN, {**without, "TF_ENABLE_ONEDNN_OPTS": "1"}),
    }
    done = run_at_once(
        [[sys.executable, "-c", code] for code, _ in runs.values()],
        600,
        each=[{"env": env} for _, env in runs.values()],
    )
    return dict(zip(runs, done, strict=True))


def _stdout(fresh: dict[tuple, Any], key: tuple) -> str:
    out = fresh[key]
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.parametrize("deterministic", [False, True])
def test_a_fresh_workers_first_fit_imports_nothing(deterministic: bool, fresh) -> None:
    """A trial's fit_seconds must be training only. PyTorch's first optimizer imports
    torch._dynamo (1-3 s); had the first trial of each worker paid it, a worker's first trial
    (always non-deterministic, before the sweep interleaved the modes) made deterministic mode look
    30x cheaper. Checked in a fresh process, as a Ray worker starts, for both modes."""
    out = _stdout(fresh, ("first_fit", deterministic))
    assert out.strip() == "[]", out


# --- Settings read back, not written (issue 16) ---------------------------------------------------


def test_warn_only_is_recorded_and_a_kernel_without_determinism_voids_deterministic_in_force(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """PyTorch's warn-only mode lets a kernel without a deterministic implementation run: the
    row says warn-only was on, names the kernel, and does not claim determinism was in force.
    `put_` (accumulate=False) is such a kernel on the CPU too."""
    import torch

    from bench.backends.torch import TorchNeuralClassifier

    clean = trial.run(smoke_spec("torch", "deterministic=true", "seeds.n=1"))
    assert clean["status"] == "ok", clean["error"]
    assert clean["deterministic_warn_only"] is True and clean["deterministic_in_force"] is True
    assert clean["nondeterministic_ops"] is None

    fit = TorchNeuralClassifier._fit

    def fit_with_put(self, *args, **kwargs):
        fit(self, *args, **kwargs)
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))

    monkeypatch.setattr(TorchNeuralClassifier, "_fit", fit_with_put)
    row = trial.run(smoke_spec("torch", "deterministic=true", "seeds.n=1"))
    assert row["status"] == "ok", row["error"]
    assert row["nondeterministic_ops"] == "put_"
    assert row["deterministic_warn_only"] is True
    assert row["deterministic_in_force"] is False
    monkeypatch.undo()
    off = trial.run(smoke_spec("torch", "seeds.n=1"))  # after a warn-only trial in this process
    assert off["deterministic_in_force"] is False and off["deterministic_warn_only"] is False


def test_cuda_version_of_a_sklearn_row_does_not_depend_on_an_earlier_torch_trial(fresh) -> None:
    """A worker's scikit-learn rows said torch's CUDA version once it had run a torch trial and
    None before. Checked in a fresh process as a Ray worker starts, with torch made to look like
    a CUDA build once imported (this machine's is a CPU build, whose None hid the difference)."""
    out = _stdout(fresh, ("cuda_version", None))  # CUDA_VERSION
    before, _, after = json.loads(out.strip().splitlines()[-1])
    assert before == after is None


def test_cuda_version_of_a_torch_row_is_torchs_build() -> None:
    import torch

    row = trial.run(smoke_spec("torch", "seeds.n=1"))
    assert row["cuda_version"] == torch.version.cuda


@pytest.mark.parametrize("variable", [None, "1"])
def test_tf_onednn_is_what_tensorflow_runs_not_the_variable(variable: str | None, fresh) -> None:
    """`tf_onednn` is TensorFlow's own answer (IsMklEnabled), read once the library is loaded:
    not the variable's text, not a default written down ("on for x86 CPUs" is false on a CPU
    without AVX-512 VNNI/AMX), and not a value set after TensorFlow read it. TF_ONEDNN, with
    TF_ENABLE_ONEDNN_OPTS unset or set to `variable`."""
    out = _stdout(fresh, ("tf_onednn", variable))
    first, second, truth = json.loads(out.strip().splitlines()[-1])
    assert first == second == truth
    if variable == "1":
        assert truth == "on"


def _old_predictions_sha256(y_pred: np.ndarray, proba: np.ndarray) -> str:
    """predictions_sha256 as bench 0.5.0 computed it: every score cast to float32."""
    import hashlib

    h = hashlib.sha256()
    h.update(np.ascontiguousarray(y_pred, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(proba, dtype="<f4").tobytes())
    return h.hexdigest()


def test_predictions_hash_of_float32_scores_is_unchanged() -> None:
    from bench import fingerprint

    proba = np.array([[0.25, 0.75], [0.9, 0.1], [0.5, 0.5]], dtype=np.float32)
    y_pred = np.array([1, 0, 0])
    got = fingerprint.predictions_sha256(y_pred, proba)
    assert got == _old_predictions_sha256(y_pred, proba)
    assert got == "c8f8dae5456d09b7b18bd2d58b975e10073031721901f5bf288821d064e3d18f"
    assert fingerprint.predictions_sha256_as_float32(y_pred, proba) == got


def test_predictions_hash_of_float64_scores_covers_their_own_bits() -> None:
    """Two float64 outputs that round to the same float32 values hashed alike before."""
    from bench import fingerprint

    a = np.array([[0.25, 0.75], [0.9, 0.1]])
    b = a + np.array([[1e-12, -1e-12], [0.0, 0.0]])
    assert np.array_equal(a.astype(np.float32), b.astype(np.float32))
    y_pred = np.array([1, 0])
    assert fingerprint.predictions_sha256(y_pred, a) != fingerprint.predictions_sha256(y_pred, b)
    assert fingerprint.predictions_sha256(y_pred, a) != _old_predictions_sha256(y_pred, a)
    assert fingerprint.predictions_sha256_as_float32(y_pred, a) == _old_predictions_sha256(
        y_pred, a
    )


@pytest.mark.parametrize(("library", "dtype"), [("torch", "float32"), ("sklearn", "float64")])
def test_row_names_the_dtype_its_predictions_hash_covers(library: str, dtype: str) -> None:
    """linear_svm's scores are squashed margins, float64 in every library; scikit-learn's come
    straight from its own float64 arithmetic. A float32 row keeps its old hash."""
    from bench import fingerprint

    model = "logreg" if library == "torch" else "linear_svm"
    row = trial.run(smoke_spec(library, f"model={model}", "seeds.n=1"))
    assert row["status"] == "ok", row["error"]
    assert row["predictions_dtype"] == dtype
    y_pred, stored = np.asarray(row["y_pred"]), np.asarray(row["y_proba"], dtype=np.float32)
    as_before = fingerprint.predictions_sha256_as_float32(y_pred, stored)
    assert as_before == _old_predictions_sha256(y_pred, stored)
    assert (row["predictions_sha256"] == as_before) == (dtype == "float32")
