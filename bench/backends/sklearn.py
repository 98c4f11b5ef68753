"""scikit-learn backend: MLPClassifier driven one epoch at a time so that init and order separate.

`aligned` and `shared` modes: scikit-learn's MLP (no hidden layer for logreg and the linear SVM)
with Adam, the given constants and float32. It takes one `random_state` for both the initial
weights and the shuffling, and re-seeds it on every `partial_fit`; bench therefore gives it
`random_state=seed_init` (for the weights), turns its shuffling off, and feeds each epoch through
`partial_fit` in an order drawn from `seed_order` (numpy's RandomState, the generator scikit-learn
itself shuffles with). The linear SVM is the same MLP with an identity output and the hinge loss
(`_HingeMLP`): scikit-learn has no Adam-trained hinge model, and `SGDClassifier` is plain SGD one
row at a time, so it could not be aligned with the other two libraries.

`defaults` mode: what a typical user writes, in float64 (scikit-learn computes in the input's
dtype; bench's float32 arrays are upcast, so the values are float32-rounded):
`LogisticRegression()`, `LinearSVC()` (squared hinge, C=1, one-vs-rest) and
`MLPClassifier(hidden_layer_sizes, activation, max_iter=epochs)` with every other argument at its
default, `random_state` derived from both seeds (scikit-learn has one random state for init and
shuffling). `epochs` does not apply to LogisticRegression and LinearSVC (their solvers run to
their own tolerance). There is no cnn in scikit-learn.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier

from bench.backends import loss_curve
from bench.backends.base import NeuralClassifier, combined_seed


class _LoadableMLP(MLPClassifier):
    """MLPClassifier that can start from given weights (shared init mode)."""

    def _init_coef(self, fan_in, fan_out, dtype):
        pending = getattr(self, "_bench_init", None)
        if not pending:
            return super()._init_coef(fan_in, fan_out, dtype)
        coef, intercept = pending.pop(0), pending.pop(0)
        assert coef.shape == (fan_in, fan_out), (coef.shape, fan_in, fan_out)
        return coef.astype(dtype, copy=True), intercept.astype(dtype, copy=True)


class _HingeMLP(_LoadableMLP):
    """The MLP with an identity output and the (one-vs-rest) hinge loss: a linear SVM when it has
    no hidden layer. Only `_backprop`'s loss and output delta differ from scikit-learn's; the
    gradients, L2 term (alpha / 2 * ||W||^2 / rows) and Adam are scikit-learn's own."""

    def _initialize(self, y, layer_units, dtype):
        super()._initialize(y, layer_units, dtype)
        self.out_activation_ = "identity"

    def _backprop(self, X, y, sample_weight, activations, deltas, coef_grads, intercept_grads):
        from sklearn.neural_network._base import DERIVATIVES
        from sklearn.utils.extmath import safe_sparse_dot

        if sample_weight is not None:
            raise ValueError("sample_weight: not supported by the hinge MLP")
        n_samples = X.shape[0]
        activations = self._forward_pass(activations)
        margins = activations[-1]
        sign = 2.0 * y.astype(margins.dtype) - 1.0
        slack = 1.0 - sign * margins
        active = slack > 0
        loss = float(np.sum(slack[active])) / n_samples
        values = sum(np.dot(c.ravel(), c.ravel()) for c in self.coefs_)
        loss += (0.5 * self.alpha) * values / n_samples
        last = self.n_layers_ - 2
        deltas[last] = np.where(active, -sign, 0.0).astype(margins.dtype)
        self._compute_loss_grad(last, n_samples, activations, deltas, coef_grads, intercept_grads)
        inplace_derivative = DERIVATIVES[self.activation]
        for i in range(last, 0, -1):
            deltas[i - 1] = safe_sparse_dot(deltas[i], self.coefs_[i].T)
            inplace_derivative(activations[i], deltas[i - 1])
            self._compute_loss_grad(
                i - 1, n_samples, activations, deltas, coef_grads, intercept_grads
            )
        return loss, coef_grads, intercept_grads


class SklearnNeuralClassifier(NeuralClassifier):
    library = "sklearn"
    supports_cnn = False

    def _fit(self, X, y, init, orders):
        if self.device != "cpu":
            raise ValueError(f"device: scikit-learn trains on the CPU only, got {self.device!r}")
        if self.mode == "defaults":
            self._fit_defaults(X, y)
            return
        cls = _HingeMLP if self.net_.loss == "hinge" else _LoadableMLP
        mlp = cls(
            hidden_layer_sizes=tuple(self.net_.hidden_sizes),
            activation=self.activation,
            solver="adam",
            alpha=self.alpha,
            batch_size=self.batch_size,
            learning_rate_init=self.lr,
            beta_1=self.beta1,
            beta_2=self.beta2,
            epsilon=self.eps,
            shuffle=False,
            random_state=self.seed_init,
        )
        mlp._bench_init = [w.copy() for w in init] if init is not None else None
        shuffler = np.random.RandomState(self.seed_order)
        classes = np.arange(len(self.classes_))
        for epoch in range(self.epochs):
            order = orders[epoch] if orders is not None else shuffler.permutation(len(X))
            mlp.partial_fit(X[order], y[order], classes=classes)
        self.estimator_ = mlp
        self.loss_curve_ = loss_curve.of(mlp)

    def _fit_defaults(self, X: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression
        from sklearn.svm import LinearSVC

        seed = combined_seed(self.seed_init, self.seed_order)
        model = self._model_name()
        if model == "logreg":
            est = LogisticRegression(random_state=seed)
        elif model == "linear_svm":
            est = LinearSVC(random_state=seed)
        else:
            est = MLPClassifier(
                hidden_layer_sizes=tuple(self.net_.hidden_sizes),
                activation=self.activation,
                max_iter=self.epochs,
                random_state=seed,
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X.astype(np.float64), y)
        self.estimator_ = est
        self.loss_curve_ = loss_curve.of(est)  # the MLP's; a solver's run has none

    def _forward_output(self, X):
        est = self.estimator_
        if isinstance(est, _HingeMLP):
            return est._forward_pass_fast(X, check_input=False)
        if self.net_.loss == "hinge":  # LinearSVC
            return est.decision_function(X.astype(np.float64)).reshape(len(X), -1)
        proba = est.predict_proba(X if isinstance(est, _LoadableMLP) else X.astype(np.float64))
        return proba[:, 1:] if self.net_.n_outputs == 1 else proba

    def _restore(self, weights):
        est = self.estimator_
        if not isinstance(est, MLPClassifier):
            raise ValueError("weights: only the aligned/shared (MLP) models take given weights")
        est.coefs_ = [w.astype(est.coefs_[0].dtype, copy=True) for w in weights[::2]]
        est.intercepts_ = [b.astype(est.coefs_[0].dtype, copy=True) for b in weights[1::2]]

    def _weights(self):
        est = self.estimator_
        if isinstance(est, MLPClassifier):
            return [w for pair in zip(est.coefs_, est.intercepts_, strict=True) for w in pair]
        return [est.coef_.T, est.intercept_]
