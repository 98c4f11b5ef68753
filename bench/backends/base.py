"""The estimator contract every backend shares: scikit-learn's classifier API over one NetSpec.

The base class owns everything that must not differ between libraries: input validation, label
encoding, the network's shape, the shared initial weights and the shared batch order. A backend
only builds the network, trains it on the batches it is given (or on its own shuffling in `library`
order mode) and returns probabilities and weights. Hyperparameters are constructor arguments and
fitted state ends in `_`, as scikit-learn requires, so `clone`, `GridSearchCV` and pipelines work.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bench.data.order import epoch_orders
from bench.models import NetSpec, shared_init


class NeuralClassifier(ClassifierMixin, BaseEstimator):
    library: ClassVar[str] = ""

    def __init__(
        self,
        hidden_sizes: tuple[int, ...] = (),
        activation: str = "relu",
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        alpha: float = 1e-4,
        batch_size: int = 32,
        epochs: int = 30,
        seed_init: int = 0,
        seed_order: int = 0,
        init_mode: str = "library",
        order_mode: str = "library",
        device: str = "cpu",
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.activation = activation
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.alpha = alpha
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed_init = seed_init
        self.seed_order = seed_order
        self.init_mode = init_mode
        self.order_mode = order_mode
        self.device = device

    # --- the scikit-learn API, shared ------------------------------------------------------------
    def fit(self, X, y) -> NeuralClassifier:
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes, got {len(self.classes_)}"
            )
        if self.init_mode not in ("library", "shared"):
            raise ValueError(f"init_mode: expected 'library' or 'shared', got {self.init_mode!r}")
        if self.order_mode not in ("library", "shared"):
            raise ValueError(f"order_mode: expected 'library' or 'shared', got {self.order_mode!r}")
        self.net_ = NetSpec(
            X.shape[1], tuple(self.hidden_sizes), len(self.classes_), self.activation
        )
        init = shared_init(self.net_, self.seed_init) if self.init_mode == "shared" else None
        orders = (
            epoch_orders(len(X), self.seed_order, self.epochs)
            if self.order_mode == "shared"
            else None
        )
        self._fit(np.ascontiguousarray(X), y_idx.astype(np.int64), init, orders)
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        out = np.asarray(self._forward_proba(np.ascontiguousarray(X)), dtype=np.float32)
        if self.net_.n_outputs == 1:  # one sigmoid unit -> two class columns, as scikit-learn's MLP
            p = out.reshape(-1)
            out = np.column_stack([1.0 - p, p]).astype(np.float32)
        return out

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def get_weights(self) -> list[np.ndarray]:
        """Fitted weights in the canonical layout [W1, b1, ...], W as (fan_in, fan_out), float32."""
        check_is_fitted(self)
        return [np.asarray(w, dtype=np.float32) for w in self._weights()]

    # --- what a backend implements ---------------------------------------------------------------
    def _fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        init: list[np.ndarray] | None,
        orders: list[np.ndarray] | None,
    ) -> None:
        """Train on float32 X and class indices y. `init`: canonical weights to load, or None for
        the library's own initialiser seeded by `seed_init`. `orders`: one permutation per epoch to
        follow exactly, or None for the library's own shuffling seeded by `seed_order`."""
        raise NotImplementedError

    def _forward_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, 1) sigmoid output for two classes, (n, k) softmax output for k > 2."""
        raise NotImplementedError

    def _weights(self) -> list[np.ndarray]:
        raise NotImplementedError


def minibatches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of one epoch's order; the last batch may be smaller, as in every library."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
