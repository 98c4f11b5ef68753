"""The estimator contract every backend shares: scikit-learn's classifier API over one NetSpec.

The base class owns everything that must not differ between libraries: input validation, label
encoding, the network's shape, the mode, the shared initial weights and the shared batch order. A
backend only builds the network, trains it on the batches it is given (or on its own shuffling in
`library` order mode) and returns outputs and weights. Hyperparameters are constructor arguments
and fitted state ends in `_`, as scikit-learn requires, so `clone`, `GridSearchCV` and pipelines
work.

Modes (`mode=`):
- `defaults`: the library as a typical user writes it. The architecture (model, hidden sizes,
  activation, conv layers) and the training budget (`epochs`) are the experiment's; the optimizer
  and all its constants, L2, batch size, initialiser, shuffling and dtype are the library's own
  (see `bench.backends.defaults` for the table). `lr`, `beta1`, `beta2`, `eps` and `alpha` are
  ignored, and so is `batch_size` except in PyTorch, which has no usable default (DataLoader's is 1).
- `aligned`: every hyperparameter from the constructor, identical in every library: Adam with
  (`lr`, `beta1`, `beta2`, `eps`) and epsilon in the same place, minibatches of `batch_size`,
  `epochs`, L2 `alpha` as scikit-learn's MLP applies it, float32, scikit-learn's Glorot-uniform
  family for weights and biases. Each library draws with its own RNG unless `init_mode` /
  `order_mode` say `shared`.
- `shared`: `aligned` plus shared initial weights and shared batch order (whatever `init_mode` and
  `order_mode` say).

Outputs: log-loss models (logreg, mlp, cnn) have `predict_proba`; the linear SVM has no
probabilities (hinge loss) and offers `decision_function` instead, as scikit-learn's `LinearSVC`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from bench.data.order import epoch_orders
from bench.models import LOSSES, MODELS, NetSpec, image_shape_for, shared_init

MODES = ("defaults", "aligned", "shared")


def _has_proba(estimator: NeuralClassifier) -> bool:
    return LOSSES.get(estimator._model_name(), "log") == "log"


def _has_decision(estimator: NeuralClassifier) -> bool:
    return LOSSES.get(estimator._model_name(), "log") == "hinge"


class NeuralClassifier(ClassifierMixin, BaseEstimator):
    library: ClassVar[str] = ""
    supports_cnn: ClassVar[bool] = True
    # Fitted attributes holding library objects that do not pickle reliably (a Keras model with a
    # closure as its loss); pickling stores the canonical weights instead and rebuilds on load.
    _library_state: ClassVar[tuple[str, ...]] = ()

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
        model: str | None = None,
        mode: str = "aligned",
        conv_channels: tuple[int, ...] = (8, 16),
        kernel_size: int = 3,
        image_shape: tuple[int, ...] | None = None,  # (h, w) or (h, w, c); None: a square, c=1
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
        self.model = model
        self.mode = mode
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.image_shape = image_shape

    # --- parameters resolved at fit time ---------------------------------------------------------
    def _model_name(self) -> str:
        """`model=None` keeps the original two-model API: no hidden layer is logreg, else mlp."""
        if self.model is None:
            return "mlp" if len(self.hidden_sizes) else "logreg"
        return self.model

    def _resolved_modes(self) -> tuple[str, str]:
        """(init_mode, order_mode) actually used: `shared` forces both, `defaults` allows none."""
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {list(MODES)}, got {self.mode!r}")
        for key, value in (("init_mode", self.init_mode), ("order_mode", self.order_mode)):
            if value not in ("library", "shared"):
                raise ValueError(f"{key}: expected 'library' or 'shared', got {value!r}")
        if self.mode == "shared":
            return "shared", "shared"
        if self.mode == "defaults" and "shared" in (self.init_mode, self.order_mode):
            raise ValueError(
                "mode: 'defaults' uses each library's own initialiser and shuffling; "
                "use mode='aligned' with init_mode/order_mode='shared' instead"
            )
        return self.init_mode, self.order_mode

    def _netspec(self, n_features: int, n_classes: int) -> NetSpec:
        model = self._model_name()
        if model not in MODELS:
            raise ValueError(f"model: expected one of {list(MODELS)}, got {model!r}")
        if model in ("logreg", "linear_svm") and len(self.hidden_sizes):
            raise ValueError(f"hidden_sizes: {model} has no hidden layers, got {self.hidden_sizes}")
        if model == "mlp" and not len(self.hidden_sizes):
            raise ValueError("hidden_sizes: an mlp needs at least one hidden layer")
        conv: tuple[int, ...] = ()
        image = None
        if model == "cnn":
            if not self.supports_cnn:
                raise ValueError(
                    f"model: {self.library} has no cnn in bench; use torch or tensorflow"
                )
            conv = tuple(int(c) for c in self.conv_channels)
            if not conv:
                raise ValueError("conv_channels: a cnn needs at least one convolution")
            image = (
                tuple(self.image_shape) if self.image_shape is not None
                else image_shape_for(n_features)
            )  # fmt: skip
        return NetSpec(
            n_features=n_features,
            hidden_sizes=tuple(int(h) for h in self.hidden_sizes),
            n_classes=n_classes,
            activation=self.activation,
            conv_channels=conv,
            kernel_size=int(self.kernel_size),
            image_shape=image,  # type: ignore[arg-type]
            loss=LOSSES[model],
        )

    # --- the scikit-learn API, shared ------------------------------------------------------------
    def fit(self, X, y) -> NeuralClassifier:
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; "
                f"y has {len(self.classes_)} class"
            )
        self.init_mode_, self.order_mode_ = self._resolved_modes()
        self.net_ = self._netspec(X.shape[1], len(self.classes_))
        init = shared_init(self.net_, self.seed_init) if self.init_mode_ == "shared" else None
        orders = (
            epoch_orders(len(X), self.seed_order, self.epochs)
            if self.order_mode_ == "shared"
            else None
        )
        self._fit(np.array(X, dtype=np.float32, order="C"), y_idx.astype(np.int64), init, orders)
        return self

    def _output(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return np.asarray(self._forward_output(np.array(X, dtype=np.float32, order="C")))

    @available_if(_has_proba)
    def predict_proba(self, X) -> np.ndarray:
        out = self._output(X).astype(np.float32)
        if self.net_.n_outputs == 1:  # one sigmoid unit -> two class columns, as scikit-learn's MLP
            p = out.reshape(-1)
            out = np.column_stack([1.0 - p, p]).astype(np.float32)
        return out

    @available_if(_has_decision)
    def decision_function(self, X) -> np.ndarray:
        """Signed margins: (n,) for two classes (> 0 means classes_[1]), (n, k) one-vs-rest."""
        out = self._output(X).astype(np.float32)
        return out.reshape(-1) if self.net_.n_outputs == 1 else out

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        if _has_decision(self):
            scores = self.decision_function(X)
            index = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
            return self.classes_[index]
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def get_weights(self) -> list[np.ndarray]:
        """Fitted weights in the canonical layout (see bench.models), float32."""
        check_is_fitted(self)
        return [np.asarray(w, dtype=np.float32) for w in self._weights()]

    def set_weights(self, weights: list[np.ndarray]) -> NeuralClassifier:
        """Replace a fitted estimator's weights with canonical ones (same shapes as get_weights):
        how the tests put identical weights into every library."""
        check_is_fitted(self)
        shapes = [tuple(w.shape) for w in weights]
        if shapes != self.net_.shapes():
            raise ValueError(f"weights: expected shapes {self.net_.shapes()}, got {shapes}")
        self._restore([np.asarray(w, dtype=np.float32) for w in weights])
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object.__getstate__ hands out __dict__ itself
        if self._library_state and all(k in state for k in self._library_state):
            state["_pickled_weights"] = self.get_weights()
            for key in self._library_state:
                state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("_pickled_weights", None)
        super().__setstate__(state)
        if weights is not None:
            self._restore(weights)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.device != "cpu"
        return tags

    # --- what a backend implements ---------------------------------------------------------------
    def _fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        init: list[np.ndarray] | None,
        orders: list[np.ndarray] | None,
    ) -> None:
        """Train on float32 X and class indices y. `init`: canonical weights to load, or None for
        the library's own draw (aligned family, or the library's default initialiser in `defaults`
        mode) seeded by `seed_init`. `orders`: one permutation per epoch to follow exactly, or
        None for the library's own shuffling seeded by `seed_order`."""
        raise NotImplementedError

    def _forward_output(self, X: np.ndarray) -> np.ndarray:
        """The library's own output: (n, 1) sigmoid / (n, k) softmax probabilities for log loss,
        (n, 1) / (n, k) margins for the hinge loss."""
        raise NotImplementedError

    def _weights(self) -> list[np.ndarray]:
        raise NotImplementedError

    def _restore(self, weights: list[np.ndarray]) -> None:
        """Rebuild the fitted library model from canonical weights (after unpickling)."""
        raise NotImplementedError


def minibatches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of one epoch's order; the last batch may be smaller, as in every library."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def combined_seed(seed_init: int, seed_order: int) -> int:
    """One uint32 seed from both, for libraries with a single random_state (scikit-learn in
    `defaults` mode): changing either seed changes the whole random state, initial weights and
    shuffling alike, so the two are one joint source (`order+init` in the row's `seed_sources`,
    bench.backends.seed_use), never two."""
    return int(np.random.SeedSequence([seed_init, seed_order]).generate_state(1)[0])
