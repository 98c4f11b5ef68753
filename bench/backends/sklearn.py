"""scikit-learn backend: MLPClassifier driven one epoch at a time so that init and order separate.

scikit-learn's MLP takes one `random_state` for both the initial weights and the shuffling, and
re-seeds it on every `partial_fit`. bench therefore gives it `random_state=seed_init` (for the
weights), turns its shuffling off, and feeds each epoch through `partial_fit` in an order drawn
from `seed_order` (numpy's RandomState, the generator scikit-learn itself shuffles with).
"""

from __future__ import annotations

import numpy as np
from sklearn.neural_network import MLPClassifier

from bench.backends.base import NeuralClassifier


class _LoadableMLP(MLPClassifier):
    """MLPClassifier that can start from given weights (shared init mode)."""

    def _init_coef(self, fan_in, fan_out, dtype):
        pending = getattr(self, "_bench_init", None)
        if not pending:
            return super()._init_coef(fan_in, fan_out, dtype)
        coef, intercept = pending.pop(0), pending.pop(0)
        assert coef.shape == (fan_in, fan_out), (coef.shape, fan_in, fan_out)
        return coef.astype(dtype, copy=True), intercept.astype(dtype, copy=True)


class SklearnNeuralClassifier(NeuralClassifier):
    library = "sklearn"

    def _fit(self, X, y, init, orders):
        if self.device != "cpu":
            raise ValueError(f"device: scikit-learn trains on the CPU only, got {self.device!r}")
        mlp = _LoadableMLP(
            hidden_layer_sizes=tuple(self.hidden_sizes),
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
        self.mlp_ = mlp

    def _forward_proba(self, X):
        proba = self.mlp_.predict_proba(X)
        return proba[:, 1:] if self.net_.n_outputs == 1 else proba

    def _weights(self):
        return [
            w for pair in zip(self.mlp_.coefs_, self.mlp_.intercepts_, strict=True) for w in pair
        ]
