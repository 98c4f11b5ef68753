"""A user's own network (a PyTorch module class or a Keras model builder, by import path) as a
scikit-learn classifier, trained by bench's loop so that the seed sources stay bench's to set.

`model=torch_module model._target_=mypkg.nets.Net +model.width=64` (or `model=keras_model` with
the import path of a function that returns an uncompiled Keras model): the network is built under
`seed_init` (its initial weights), trained for `epochs` on minibatches of `batch_size` whose order
is drawn from `seed_order` (the library's own generator, or bench's with `order_mode=shared`), by
Adam with (`lr`, `beta1`, `beta2`, `eps`) on softmax cross-entropy plus the L2 term bench's own
models use (`alpha`/2 * ||W||^2 / batch rows, on weights of two or more dimensions). Nothing else
draws random numbers in bench's loop, so a trial's seeds say all there is to say about its
randomness, except what the user's own code draws (dropout: its generator is seeded by
`seed_order` in PyTorch, by `seed_init` in Keras, and the rows say which sources reach it).

The network outputs one logit per class, shape (batch, n_classes), as `nn.CrossEntropyLoss`
expects; a Keras model may end in a softmax instead (bench.backends.user_keras recognises it and
does not apply it twice). The arguments come from `model.params` plus `n_features`,
`n_classes`, `image_shape` for whichever the callable names (bench.backends.user_code).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bench.backends.user_code import call
from bench.data.order import epoch_orders


class UserNeuralClassifier(ClassifierMixin, BaseEstimator):
    library: ClassVar[str] = ""

    def __init__(
        self,
        target: str | None = None,
        params: dict[str, Any] | None = None,
        lr: float = 1e-3,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        alpha: float = 1e-4,
        batch_size: int = 32,
        epochs: int = 30,
        seed_init: int = 0,
        seed_order: int = 0,
        order_mode: str = "library",
        device: str = "cpu",
        image_shape: tuple[int, ...] | None = None,
    ) -> None:
        self.target = target
        self.params = params
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.alpha = alpha
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed_init = seed_init
        self.seed_order = seed_order
        self.order_mode = order_mode
        self.device = device
        self.image_shape = image_shape

    def fit(self, X, y) -> UserNeuralClassifier:
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        if not self.target:
            raise ValueError("model._target_: the network's import path is not set")
        if self.order_mode not in ("library", "shared"):
            raise ValueError(f"order_mode: expected 'library' or 'shared', got {self.order_mode!r}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{self.target} needs samples of at least 2 classes; y has 1")
        n = len(X)
        orders = (
            epoch_orders(n, self.seed_order, self.epochs)
            if self.order_mode == "shared"
            else self.library_orders(n)
        )
        self._fit(np.array(X, dtype=np.float32, order="C"), y_idx.astype(np.int64), orders)
        return self

    def shapes(self, n_features: int) -> dict[str, Any]:
        """What the user's callable may ask for by name (bench.backends.user_code)."""
        image = tuple(int(s) for s in self.image_shape) if self.image_shape else None
        return {"n_features": n_features, "n_classes": len(self.classes_), "image_shape": image}

    def build(self, n_features: int) -> Any:
        """The user's network, constructed by its callable (seeding is the subclass's)."""
        return call(self.target or "", dict(self.params or {}), self.shapes(n_features))

    def check_output(self, shape: tuple[int, ...], rows: int) -> None:
        want = (rows, len(self.classes_))
        if tuple(shape) != want:
            raise ValueError(
                f"{self.target} returned shape {tuple(shape)}; bench expects one output per "
                f"class, {want}"
            )

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return np.asarray(self._proba(np.array(X, dtype=np.float32, order="C")), np.float32)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def get_weights(self) -> list[np.ndarray]:
        """The fitted network's state (parameters and buffers), in the library's own order."""
        check_is_fitted(self)
        return self._weights()

    # --- what a library implements ---------------------------------------------------------------
    def library_orders(self, n: int) -> list[np.ndarray]:
        """The library's own batch order: one permutation per epoch drawn from `seed_order`."""
        raise NotImplementedError

    def _fit(self, X: np.ndarray, y: np.ndarray, orders: list[np.ndarray]) -> None:
        """Build under `seed_init` and train on exactly these epoch orders (float32 X, class
        indices y)."""
        raise NotImplementedError

    def _proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _weights(self) -> list[np.ndarray]:
        raise NotImplementedError
