"""The three backends: they learn, they repeat bit for bit, seeds matter, sklearn's tools work.

Specs come from the composed config (what a sweep would run), threads=1 throughout: bitwise
comparisons are only promised for a fixed thread count on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bench import trial
from bench.backends import LIBRARIES, estimator_class
from bench.config import compose
from bench.data import load, split
from bench.fingerprint import weights_sha256
from bench.models import NetSpec, shared_init
from bench.seeds import derive
from bench.spec import TrialSpec
from bench.sweep import expand
from bench.testing import TrialMetric, assert_over_seeds

pytestmark = pytest.mark.usefixtures("single_threaded")


def first_spec(overrides: list[str], library: str) -> TrialSpec:
    """The sweep's trial with every seed at index 0 for `library` (its `none` group, repeat 0)."""
    specs = expand(compose([*overrides, "sweep.varied=[none]", "seeds.n=1", "threads=1"]))
    (spec,) = [s for s in specs if s.library == library]
    return spec


@pytest.fixture(scope="module")
def data():
    raw = load({"name": "breast_cancer"})
    return split(raw, derive(0, "split", 0), 0.2)


FRESH = (
    "import json, sys\n"
    "from bench import trial\n"
    "from bench.spec import TrialSpec\n"
    "rows = [trial.run(TrialSpec.from_dict(json.loads(s))) for s in json.load(sys.stdin)]\n"
    "print(json.dumps([[r['status'], r['weights_sha256'], r['predictions_sha256']]"
    " for r in rows]))\n"
)


@pytest.fixture(scope="module")
def fresh_process(tmp_path_factory) -> Iterator[Callable[[], subprocess.CompletedProcess[str]]]:
    """A new interpreter running each library's logistic regression (FRESH), started before the
    in-process runs it is compared with (logreg_rows requests it first), so that the two overlap:
    most of it is importing torch and TensorFlow. Gives a function that waits for it."""
    folder = tmp_path_factory.mktemp("fresh")
    specs = [first_spec(["+sweep=seeds"], lib).to_json() for lib in LIBRARIES]
    (folder / "specs.json").write_text(json.dumps(specs))
    with (
        open(folder / "specs.json") as stdin,
        open(folder / "out", "w+") as out,
        open(folder / "err", "w+") as err,
    ):
        proc = subprocess.Popen(
            [sys.executable, "-c", FRESH], stdin=stdin, stdout=out, stderr=err, text=True
        )

        def done() -> subprocess.CompletedProcess[str]:
            proc.wait(timeout=180)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

        try:
            yield done
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def logreg_rows(fresh_process) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each library's default logistic regression (30 epochs, breast_cancer), run twice in-process."""
    rows = {}
    for library in LIBRARIES:
        spec = first_spec(["+sweep=seeds"], library)
        rows[library] = (trial.run(spec), trial.run(spec))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_logreg_reaches_90_percent(logreg_rows, library: str) -> None:
    """Over seeds (bench.testing), starting from the fixture's row as the first seed."""
    row, _ = logreg_rows[library]
    assert row["status"] == "ok", row["error"]
    assert row["library"] == library and row["model"] == "logreg" and row["threads"] == 1
    accuracy = TrialMetric(first_spec(["+sweep=seeds"], library), rows={0: row})
    assert_over_seeds(accuracy, at_least=0.9, seeds=range(6), looks=(3, 6))
    auc = TrialMetric(accuracy.spec, "roc_auc", rows=accuracy.rows)
    assert_over_seeds(auc, at_least=0.9, seeds=range(6), looks=(3, 6))


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_same_spec_twice_gives_the_same_bits(logreg_rows, library: str) -> None:
    first, second = logreg_rows[library]
    assert first["status"] == second["status"] == "ok"
    assert first["weights_sha256"] == second["weights_sha256"]
    assert first["predictions_sha256"] == second["predictions_sha256"]
    assert first["y_score"] == second["y_score"]


@pytest.mark.slow
def test_same_spec_in_a_fresh_process_gives_the_same_bits(logreg_rows, fresh_process) -> None:
    """Repeatability across processes, not only within one: a new interpreter for the three
    libraries (fresh_process), against this one's rows."""
    out = fresh_process()
    assert out.returncode == 0, out.stderr[-2000:]
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    for library, (status, weights, predictions) in zip(LIBRARIES, fresh, strict=True):
        row, _ = logreg_rows[library]
        assert status == "ok"
        assert weights == row["weights_sha256"], library
        assert predictions == row["predictions_sha256"], library


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("source", ["init", "order"])
def test_another_seed_gives_other_weights(library: str, source: str) -> None:
    """Each seed reaches the library: changing the init or the order seed changes the weights."""
    spec = first_spec(["+sweep=smoke"], library)
    field = f"seed_{source}"
    other = replace(spec, **{field: derive(0, source, 1)})
    a, b = trial.run(spec), trial.run(other)
    assert a["status"] == b["status"] == "ok", (a["error"], b["error"])
    assert a["weights_sha256"] != b["weights_sha256"]


def test_shared_init_loads_the_same_weights_in_every_library(data) -> None:
    """init_mode=shared: every library starts from numpy's weights, bit for bit.

    A learning rate of 1e-30 makes one epoch of Adam move no float32 weight, so the fitted weights
    are the initial ones, read back through each backend's public `get_weights`.
    """
    X, y = data.X_train[:64], data.y_train[:64]
    expected = shared_init(NetSpec(X.shape[1], (8,), 2), seed_init=42)
    hashes = set()
    for library in LIBRARIES:
        est = estimator_class(library)(
            hidden_sizes=(8,), lr=1e-30, alpha=0.0, epochs=1, init_mode="shared", seed_init=42
        ).fit(X, y)
        weights = est.get_weights()
        assert [w.shape for w in weights] == [w.shape for w in expected], library
        for got, want in zip(weights, expected, strict=True):
            assert np.array_equal(got, want), library
        hashes.add(weights_sha256(weights))
    assert len(hashes) == 1


def test_sklearn_own_init_equals_shared_init(data) -> None:
    """bench.models.shared_init claims to draw exactly as scikit-learn does for the same seed."""
    X, y = data.X_train[:64], data.y_train[:64]
    est = estimator_class("sklearn")(
        hidden_sizes=(8,), lr=1e-30, alpha=0.0, epochs=1, init_mode="library", seed_init=7
    ).fit(X, y)
    expected = shared_init(NetSpec(X.shape[1], (8,), 2), seed_init=7)
    for got, want in zip(est.get_weights(), expected, strict=True):
        assert np.array_equal(got, want)


def test_keras_library_order_is_tensorflows_shuffle_an_epoch_per_call(data, monkeypatch) -> None:
    """Keras outside `defaults` mode: `library` order means TensorFlow's stateless shuffle keyed by
    (seed_order, epoch), and running an epoch's steps per call into TensorFlow gives exactly the
    weights of one step per call. Reference: the same trial fed those orders as `shared` orders,
    one step per call."""
    from bench.backends import base
    from bench.backends.keras import KerasNeuralClassifier, tf_orders

    X, y = data.X_train[:200], data.y_train[:200]  # 7 batches of 32 a epoch, the last one of 8
    params = {"hidden_sizes": (16,), "epochs": 3, "seed_init": 5, "seed_order": 11}
    fast = KerasNeuralClassifier(**params).fit(X, y)
    monkeypatch.setattr(base, "epoch_orders", tf_orders)
    reference = KerasNeuralClassifier(**params, order_mode="shared")
    reference._steps_per_execution = 1
    reference.fit(X, y)
    other_seed = KerasNeuralClassifier(**{**params, "seed_order": 12}).fit(X, y)
    assert weights_sha256(fast.get_weights()) == weights_sha256(reference.get_weights())
    assert weights_sha256(fast.get_weights()) != weights_sha256(other_seed.get_weights())
    orders = tf_orders(len(X), 11, 3)
    assert all(sorted(o) == list(range(len(X))) for o in orders)
    assert not np.array_equal(orders[0], orders[1])


@pytest.mark.parametrize("library", LIBRARIES)
def test_estimator_follows_the_sklearn_api(library: str, data) -> None:
    cls = estimator_class(library)
    est = cls(hidden_sizes=(4,), epochs=2, lr=0.01, seed_init=3, seed_order=4)
    params = est.get_params()
    assert params["hidden_sizes"] == (4,) and params["epochs"] == 2 and params["seed_init"] == 3
    assert {"lr", "beta1", "beta2", "eps", "alpha", "batch_size", "init_mode"} <= set(params)
    copy = clone(est)
    assert type(copy) is cls and copy.get_params() == params
    copy.set_params(epochs=3)
    assert copy.epochs == 3 and est.epochs == 2
    est.fit(data.X_train, data.y_train)
    assert not hasattr(clone(est), "classes_"), "clone must return an unfitted estimator"
    proba = est.predict_proba(data.X_test)
    assert proba.shape == (len(data.y_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(est.predict(data.X_test), est.classes_[proba.argmax(axis=1)])
    assert 0.0 <= est.score(data.X_test, data.y_test) <= 1.0


@pytest.mark.parametrize("library", LIBRARIES)
def test_labels_come_back_as_given(library: str, data) -> None:
    """Labels that are not 0..k-1 (here -1/+1 and strings) are encoded and decoded by the base."""
    y_pm = np.where(data.y_train == 1, 1, -1)
    est = estimator_class(library)(epochs=2, lr=0.01).fit(data.X_train, y_pm)
    assert est.classes_.tolist() == [-1, 1]
    assert set(est.predict(data.X_test)) <= {-1, 1}
    y_str = np.where(data.y_train == 1, "benign", "malignant")
    est = estimator_class(library)(epochs=2, lr=0.01).fit(data.X_train, y_str)
    assert set(est.predict(data.X_test)) <= {"benign", "malignant"}


@pytest.mark.parametrize("library", LIBRARIES)
def test_multiclass_softmax(library: str) -> None:
    raw = load({"name": "digits"})

    def accuracy(seed: int) -> float:  # seed 0: split, init and order as before
        digits = split(raw, seed, 0.2)
        est = estimator_class(library)(
            hidden_sizes=(16,), epochs=3, lr=0.01, seed_init=seed, seed_order=seed
        ).fit(digits.X_train, digits.y_train)
        if seed == 0:
            proba = est.predict_proba(digits.X_test)
            assert proba.shape == (len(digits.y_test), 10)
            np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
            assert [w.shape for w in est.get_weights()] == [(64, 16), (16,), (16, 10), (10,)]
        return est.score(digits.X_test, digits.y_test)

    # far above 0.5 at every seed: a first look at 2 seeds decides
    assert_over_seeds(accuracy, at_least=0.5, seeds=range(6), looks=(2, 4, 6))


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_works_inside_sklearn_tools(library: str) -> None:
    """Pipelines and cross-validation clone and refit the estimator: the API must hold up."""
    raw = load({"name": "breast_cancer"})
    pipe = make_pipeline(StandardScaler(), estimator_class(library)(epochs=3, lr=0.01))
    scores = cross_val_score(pipe, raw.X.astype(np.float32), raw.y, cv=2)
    assert scores.shape == (2,) and np.all(scores > 0.8)


def test_unknown_library_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="jax"):
        estimator_class("jax")


def test_bad_modes_are_refused(data) -> None:
    with pytest.raises(ValueError, match="init_mode"):
        estimator_class("sklearn")(init_mode="numpy").fit(data.X_train, data.y_train)


def test_driver_imports_no_training_library() -> None:
    """The driver expands, runs and stores without torch or TensorFlow: workers import them."""
    code = (
        "import sys, bench.backends, bench.runner, bench.store, bench.sweep, bench.cli\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
