"""`model=keras_model`: a user's own Keras model builder, trained by bench's loop (issue 17, point 5).

The user's module is a real file on `sys.path`; the estimator trains it on breast_cancer for a few
epochs. Bit comparisons are within this process, on TensorFlow's single thread (`single_threaded`).
"""

from __future__ import annotations

import pickle
import sys
import textwrap

import numpy as np
import pytest
from sklearn.base import clone

from bench.backends import user_code
from bench.backends.keras import tf_orders
from bench.backends.user_keras import UserKerasClassifier
from bench.data import epoch_orders, load, split
from bench.testing import assert_over_seeds

pytestmark = pytest.mark.usefixtures("single_threaded")

PACKAGE = "bench_test_keras_nets"  # a name no other test's module shares
NETS = f"{PACKAGE}.nets"
SOURCE = """
import keras


def build(n_features, n_classes, units=16):
    return keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Dense(units, activation="relu"),
        keras.layers.Dropout(0.1),
        keras.layers.Dense(n_classes),
    ])


def build_softmax(n_features, n_classes, units=16):
    inputs = keras.Input((n_features,))
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(n_classes, activation="softmax")(hidden))


def deferred(n_classes):
    return keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(n_classes)])


def too_wide(n_classes):
    return keras.Sequential([keras.layers.Dense(n_classes + 1)])  # no Input: built when called


def activation_layer(n_features, n_classes):  # Sequential, softmax as a layer of its own
    return keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(n_classes),
                             keras.layers.Activation("softmax")])


def ops_softmax(n_features, n_classes):  # functional, keras.ops on the output
    inputs = keras.Input((n_features,))
    return keras.Model(inputs, keras.ops.softmax(keras.layers.Dense(n_classes)(inputs)))


def nested(n_features, n_classes):  # functional around a Sequential that ends in Softmax()
    inner = keras.Sequential([keras.Input((n_features,)), keras.layers.Dense(n_classes),
                              keras.layers.Softmax()])
    inputs = keras.Input((n_features,))
    return keras.Model(inputs, inner(inputs))


def side_softmax(n_features, n_classes):  # a softmax layer that is not the output
    inputs = keras.Input((n_features,))
    side = keras.layers.Dense(n_classes, activation="softmax")(inputs)
    logits = keras.layers.Dense(n_classes)(inputs)
    return keras.Model(inputs, logits + 0.0 * side)


class Subclassed(keras.Model):
    def __init__(self, n_classes, softmax, bias=0.0):
        super().__init__()
        self.out = keras.layers.Dense(n_classes, activation="softmax" if softmax else None,
                                      bias_initializer=keras.initializers.Constant(bias))
        self.hidden = keras.layers.Dense(8, activation="relu")  # registered last, runs first

    def call(self, x):
        return self.out(self.hidden(x))


def subclassed(n_classes, softmax, bias=0.0):
    return Subclassed(n_classes, softmax, bias)


def not_a_model(n_features):
    return {"n_features": n_features}
"""
EPOCHS = 4


def _forget() -> None:
    user_code.forget()
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_keras")
    (root / PACKAGE).mkdir()
    (root / PACKAGE / "__init__.py").write_text("")
    (root / PACKAGE / "nets.py").write_text(textwrap.dedent(SOURCE))
    with pytest.MonkeyPatch.context() as mp:
        _forget()
        mp.syspath_prepend(str(root))
        yield NETS
        _forget()


@pytest.fixture(scope="module")
def data():
    return split(load({"name": "breast_cancer"}), 0, 0.2)


def _est(function: str = "build", **kw) -> UserKerasClassifier:
    kw = {"params": {"units": 16}, "epochs": EPOCHS, "lr": 3e-3, **kw}
    return UserKerasClassifier(target=f"{NETS}.{function}", **kw)


@pytest.fixture(scope="module")
def fitted(nets, data):
    """fitted(**kwargs) -> the estimator trained once per distinct arguments in this module."""
    cache: dict = {}

    def fit(function: str = "build", **kw) -> UserKerasClassifier:
        key = (function, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = _est(function, **kw).fit(data.X_train, data.y_train)
        return cache[key]

    return fit


def _same(a: UserKerasClassifier, b: UserKerasClassifier) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(
        x.dtype == z.dtype and x.tobytes() == z.tobytes() for x, z in zip(wa, wb, strict=True)
    )


def _accuracy(fitted, data, function: str = "build"):
    """accuracy(i) for assert_over_seeds: seed_init=1+i, seed_order=2+i (0: the module's fit)."""

    def accuracy(i: int) -> float:
        return fitted(function, seed_init=1 + i, seed_order=2 + i).score(data.X_test, data.y_test)

    return accuracy


def test_trains_to_good_accuracy_and_the_same_seeds_give_the_same_bits(fitted, data) -> None:
    est = fitted(seed_init=1, seed_order=2)
    # chance is about 0.63
    assert_over_seeds(_accuracy(fitted, data), at_least=0.9, seeds=range(6), looks=(3, 6))
    proba = est.predict_proba(data.X_test)
    assert proba.shape == (len(data.X_test), 2) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert not est.probabilities_  # logits out: softmax is bench's to apply
    # Dropout included: its generator is seeded with the weights, by seed_init.
    again = _est(seed_init=1, seed_order=2).fit(data.X_train, data.y_train)
    assert _same(est, again)
    assert clone(est).get_params() == est.get_params()
    back = pickle.loads(pickle.dumps(est))  # rebuilt by the user's function from the weights
    assert _same(est, back)
    np.testing.assert_array_equal(back.predict_proba(data.X_test), proba)


def test_each_seed_reaches_the_training(fitted, data) -> None:
    base = fitted(seed_init=1, seed_order=2)
    init_a = _initial(1, data)
    init_b = _initial(5, data)
    assert not all(np.array_equal(a, b) for a, b in zip(init_a, init_b, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(init_a, _initial(1, data), strict=True))
    assert not _same(base, fitted(seed_init=5, seed_order=2))  # init alone moves the weights
    assert not _same(base, fitted(seed_init=1, seed_order=7))  # order alone moves them too


def _initial(seed_init: int, data) -> list[np.ndarray]:
    est = _est(seed_init=seed_init)
    est.classes_ = np.unique(data.y_train)
    return [np.asarray(w) for w in est.construct(data.X_train.shape[1]).get_weights()]


class _BenchOrderInLibraryMode(UserKerasClassifier):
    """Library order mode whose 'library' draws bench's epoch_orders: what shared mode must match."""

    def library_orders(self, n):
        return epoch_orders(n, self.seed_order, self.epochs)


def test_shared_order_trains_on_benchs_epoch_orders(fitted, data) -> None:
    n = len(data.X_train)
    assert [o.tolist() for o in _est(seed_order=2).library_orders(n)] == [
        o.tolist() for o in tf_orders(n, 2, EPOCHS)
    ]
    shared = fitted(seed_init=1, seed_order=2, order_mode="shared")
    twin = _BenchOrderInLibraryMode(**_est(seed_init=1, seed_order=2).get_params())
    assert _same(shared, twin.fit(data.X_train, data.y_train))
    assert not _same(shared, fitted(seed_init=1, seed_order=2))  # TensorFlow's own order differs


def test_a_final_softmax_is_recognised_and_not_applied_twice(fitted, data) -> None:
    est = fitted("build_softmax", seed_init=1, seed_order=2)
    assert est.probabilities_
    accuracy = _accuracy(fitted, data, "build_softmax")
    assert_over_seeds(accuracy, at_least=0.9, seeds=range(6), looks=(3, 6))
    proba = est.predict_proba(data.X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # The model's own output is the probability: a second softmax would squash it toward 1/2.
    raw = np.asarray(est.model_(data.X_test, training=False))
    np.testing.assert_array_equal(proba, raw)
    assert proba.max() > 0.99


@pytest.mark.parametrize(
    ("function", "params", "probabilities"),
    [
        ("build", {}, False),
        ("build_softmax", {}, True),
        ("activation_layer", {}, True),
        ("ops_softmax", {}, True),
        ("nested", {}, True),
        ("side_softmax", {}, False),
        ("subclassed", {"softmax": True}, True),
        ("subclassed", {"softmax": False}, False),
        ("subclassed", {"softmax": False, "bias": 0.5}, False),  # logits that sum to 1 on zeros
        ("deferred", {}, False),  # a Sequential without keras.Input: the probe builds it
    ],
)
def test_which_models_output_probabilities(nets, data, function, params, probabilities) -> None:
    est = _est(function, params=params)
    est.classes_ = np.unique(data.y_train)
    est.construct(data.X_train.shape[1])
    assert est.probabilities_ is probabilities


def test_the_l2_term_is_benchs(nets, data) -> None:
    import tensorflow as tf

    est = _est(alpha=0.5)
    est.classes_ = np.unique(data.y_train)
    model = est.construct(data.X_train.shape[1])
    X, y = data.X_train[:8], data.y_train[:8]
    logits = model(X, training=False)
    plain = est._loss_fn(model, from_logits=True)(tf.constant(y), logits).numpy()
    est.alpha = 0.0
    none = est._loss_fn(model, from_logits=True)(tf.constant(y), logits).numpy()
    kernels = [np.asarray(w) for w in model.trainable_weights if len(w.shape) >= 2]
    assert len(kernels) == 2  # two Dense kernels; no biases
    want = 0.5 * 0.5 * sum(float((k.astype(np.float64) ** 2).sum()) for k in kernels) / 8
    np.testing.assert_allclose(plain - none, want, rtol=1e-5)


@pytest.mark.parametrize(
    ("function", "kw", "needle"),
    [
        ("too_wide", {}, f"{NETS}.too_wide returned shape (2, 3); bench expects one output per class, (2, 2)"),
        ("not_a_model", {}, f"{NETS}.not_a_model returned dict, not a keras.Model"),
        ("build", {"device": "cuda"}, "device: the TensorFlow backend runs on the CPU build"),
    ],
)  # fmt: skip
def test_bad_models_are_refused_in_one_line(nets, data, function, kw, needle) -> None:
    with pytest.raises(ValueError) as info:
        _est(function, params={}, **kw).fit(data.X_train, data.y_train)
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_a_sweep_of_the_users_keras_model_makes_rows(nets) -> None:
    """Composed as a user asks for it, through bench.trial: rows with the seeds that reach it."""
    from bench.config import compose
    from bench.sweep import expand
    from bench.trial import run_batch

    specs = expand(
        compose(
            [
                "+sweep=seeds",
                "model=keras_model",
                f"model._target_={NETS}.build",
                "+model.units=8",
                "seeds.n=2",
                "model.epochs=3",
            ]
        )  # fmt: skip
    )
    assert {s.library for s in specs} == {"tensorflow"}
    assert specs[0].hparams_dict()["params"] == {"units": 8}
    rows = [run_batch(s).to_pylist()[0] for s in specs if s.varied == "init"]
    assert all(r["status"] == "ok" for r in rows), rows[0]["error"]
    assert {r["seed_sources"] for r in rows} == {"split,order,init"}
    assert rows[0]["weights_sha256"] != rows[1]["weights_sha256"]
    assert rows[0]["n_params"] == 30 * 8 + 8 + 8 * 2 + 2
