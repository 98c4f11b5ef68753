"""Proof by full training (issue 3, tiers 4 and 5).

4. breast_cancer, the configured MLP (conf/model/mlp.yaml: 64 ReLU units, Adam 1e-3, batch 32,
   30 epochs): in `shared` mode PyTorch and Keras predict the same class for >= 99% of the test
   rows for every seed tried. Churn (share of test rows two libraries label differently) in the
   `aligned` and `defaults` modes is measured and printed (`pytest -s`); the README reports it.
5. Convex check: L2-penalised logistic regression trained to convergence gives the same
   coefficients (within 1e-3) in all three libraries. Mapping: scikit-learn's LogisticRegression
   minimises C * sum(loss) + ||w||^2 / 2, i.e. mean(loss) + ||w||^2 / (2 C n); bench's aligned
   loss on a full batch of n rows is mean(loss) + alpha * ||w||^2 / (2 n) (scikit-learn's MLP
   convention). So alpha = 1 / C; the intercept is unpenalised in both. (With minibatches of b
   rows the per-epoch objective is mean(loss) + alpha * ||w||^2 / (2 b): C = b / (n alpha).)
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from bench import seeds
from bench.backends import estimator_class
from bench.data import load, split

pytestmark = [pytest.mark.usefixtures("single_threaded"), pytest.mark.slow]

LIBS = ("sklearn", "torch", "tensorflow")
MODES = ("shared", "aligned", "defaults")
N_SEEDS = 3
MLP = {
    "model": "mlp",
    "hidden_sizes": (64,),
    "lr": 1e-3,
    "batch_size": 32,
    "epochs": 30,
    "alpha": 1e-4,
}


@pytest.fixture(scope="module")
def raw():
    return load({"name": "breast_cancer"})


@pytest.fixture(scope="module")
def fits(raw) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """Test-set predictions and the loss per epoch, per (library, mode, seed index); seeds
    derived as the sweep does."""
    out = {}
    for i in range(N_SEEDS):
        data = split(raw, seeds.derive(0, "split", i), 0.2)
        for library, mode in itertools.product(LIBS, MODES):
            est = estimator_class(library)(
                **MLP,
                mode=mode,
                seed_init=seeds.derive(0, "init", i),
                seed_order=seeds.derive(0, "order", i),
            )
            est.fit(data.X_train, data.y_train)
            out[library, mode, i] = est.predict(data.X_test), est.loss_curve_
    return out


@pytest.fixture(scope="module")
def predictions(fits) -> dict[tuple[str, str, int], np.ndarray]:
    return {key: predicted for key, (predicted, _) in fits.items()}


def _churn(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a != b))


def test_shared_mode_torch_and_keras_agree(predictions) -> None:
    for i in range(N_SEEDS):
        agree = 1 - _churn(
            predictions["torch", "shared", i], predictions["tensorflow", "shared", i]
        )
        assert agree >= 0.99, f"seed {i}: torch and Keras agree on {agree:.3f} of test rows"


def test_shared_mode_loss_curves_agree_in_all_three_libraries(fits) -> None:
    """One definition of the training loss (scikit-learn's loss_curve_: the epoch's mean batch
    objective, L2 term included), so in shared mode the curves agree as the weights do (measured
    here: PyTorch within 8e-7 of scikit-learn's, relative; Keras, whose weights drift further,
    within 3e-4)."""
    for i in range(N_SEEDS):
        reference = fits["sklearn", "shared", i][1]
        assert reference.shape == (MLP["epochs"],) and reference[-1] < reference[0] / 5
        np.testing.assert_allclose(fits["torch", "shared", i][1], reference, rtol=1e-5)
        np.testing.assert_allclose(fits["tensorflow", "shared", i][1], reference, rtol=2e-3)


def test_churn_per_mode_reported(predictions) -> None:
    """Mean pairwise churn per mode; printed for the README, and bounded close to what was
    measured (README: 0 in shared, 0.6% aligned, 2.0% defaults, 3 seeds of 114 test rows, so one
    row is 0.9%): the bounds leave about 3 rows' worth for another CPU's kernels, and a real
    regression (another loss, another default) moves several rows in every seed."""
    table = {}
    for mode in MODES:
        for a, b in itertools.combinations(LIBS, 2):
            table[f"{mode}:{a}-{b}"] = float(
                np.mean(
                    [
                        _churn(predictions[a, mode, i], predictions[b, mode, i])
                        for i in range(N_SEEDS)
                    ]
                )
            )
    print("\nchurn (mean over seeds):", json.dumps(table, indent=1))
    mean = {m: np.mean([v for k, v in table.items() if k.startswith(m)]) for m in MODES}
    print("mean pairwise churn per mode:", {m: round(float(v), 4) for m, v in mean.items()})
    assert mean["shared"] <= 0.01
    assert mean["shared"] <= mean["aligned"] <= 0.03
    assert mean["defaults"] <= 0.05


# --- tier 5: convex check ------------------------------------------------------------------------
ALPHA = 1.0  # = 1 / C
# The issue asks for 1e-3 everywhere. Measured: torch 2.1e-6, Keras 4.4e-6, scikit-learn's MLP on
# L-BFGS 1.6e-4 (its scipy L-BFGS-B call keeps the default ftol, which stops that early).
COEF_ATOL = {"torch L-BFGS": 2e-5, "keras Nesterov GD": 2e-5, "sklearn MLP L-BFGS": 1e-3}


@pytest.fixture(scope="module")
def convex_data(raw):
    d = split(raw, seeds.derive(0, "split", 0), 0.2)
    return d.X_train, d.y_train


def _sklearn_logreg(X, y) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=1 / ALPHA, tol=1e-12, max_iter=10_000).fit(X.astype(np.float64), y)
    return np.concatenate([lr.coef_.ravel(), lr.intercept_])


def _bench_model(library: str, X, y):
    """The backend's own model and loss (aligned logreg, alpha as configured), fitted for one
    step only to build it; the tests then minimise that loss on the full batch."""
    est = estimator_class(library)(model="logreg", alpha=ALPHA, epochs=1, batch_size=len(X))
    return est.fit(X, y)


def _torch_lbfgs(X, y) -> np.ndarray:
    """torch's L-BFGS on the backend's model and loss, in float64 (the optimum, not float32's
    rounding of the path to it, is what is compared)."""
    import torch

    est = _bench_model("torch", X, y)
    model = est.model_.double()
    opt = torch.optim.LBFGS(
        model.parameters(),
        lr=1,
        max_iter=1000,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=50,
        line_search_fn="strong_wolfe",
    )
    Xt, yt = torch.from_numpy(X.astype(np.float64)), torch.from_numpy(y)

    def closure():
        opt.zero_grad()
        loss = est._loss(model(Xt), yt)
        loss.backward()
        return loss

    opt.step(closure)
    w, b = est.get_weights()
    return np.concatenate([w.ravel(), b])


def _keras_full_batch(X, y) -> np.ndarray:
    """Keras has no L-BFGS: 1500 steps of full-batch Nesterov gradient descent (a Keras optimizer)
    on the backend's model and loss in float32, inside one tf.function (Keras's `fit` would spend
    most of the time in per-epoch overhead). The L2 term makes the problem strongly convex."""
    import keras
    import tensorflow as tf

    est = _bench_model("tensorflow", X, y)
    model, loss_fn = est.model_, est._loss_fn(est.model_)
    opt = keras.optimizers.SGD(learning_rate=0.5, momentum=0.9, nesterov=True)
    Xc, yc = tf.constant(X), tf.constant(y)

    @tf.function
    def train(steps):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(loss_fn(yc, model(Xc, training=True)))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))

    train(tf.constant(1500))
    w, b = est.get_weights()
    return np.concatenate([w.ravel(), b])


def _sklearn_mlp_lbfgs(X, y) -> np.ndarray:
    """bench's scikit-learn aligned model (MLPClassifier without hidden layers, alpha as bench
    uses it) on its L-BFGS solver, float64."""
    from sklearn.neural_network import MLPClassifier

    mlp = MLPClassifier(
        hidden_layer_sizes=(), alpha=ALPHA, solver="lbfgs", tol=1e-12, max_iter=10_000
    ).fit(X.astype(np.float64), y)
    return np.concatenate([mlp.coefs_[0].ravel(), mlp.intercepts_[0]])


def test_convex_logreg_coefficients_agree(convex_data) -> None:
    X, y = convex_data
    ref = _sklearn_logreg(X, y)
    assert np.abs(ref).max() > 0.1
    results = {
        "torch L-BFGS": _torch_lbfgs(X, y),
        "keras Nesterov GD": _keras_full_batch(X, y),
        "sklearn MLP L-BFGS": _sklearn_mlp_lbfgs(X, y),
    }
    for name, coef in results.items():
        diff = float(np.abs(coef - ref).max())
        print(f"{name}: max |coef - LogisticRegression(C=1/alpha)| = {diff:.2e}")
        assert diff <= COEF_ATOL[name], f"{name}: {diff:.2e}"
