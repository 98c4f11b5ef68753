"""A user's own Keras model, by import path (`model=keras_model model._target_=mypkg.nets.build`):
the function returns an uncompiled Keras model, bench compiles and trains it (bench.backends.
user_neural says what the loop is).

Seeds: the model is built right after `keras.utils.set_random_seed(seed_init)`, so its initial
weights, and the seed generators of any layer that draws while training (dropout), depend on
`seed_init` alone. Each epoch's order is TensorFlow's own (`stateless_shuffle` keyed by
(seed_order, epoch), as the built-in backend) or bench's shared order. The batches go through one
tf.data pipeline and one `fit` call with an epoch's steps per call into TensorFlow, XLA off, and
the L2 term inside the loss, for the reasons bench.backends.keras gives.

The output: one value per class, shape (batch, n_classes), checked on two probe rows (fixed
standard-normal numbers from their own generator, so no seed is touched) before training (which also builds a model declared without `keras.Input`). A model whose output comes
from a softmax (`Dense(k, activation="softmax")`, `Activation("softmax")`, `Softmax()`,
`keras.ops.softmax` in a functional model, inside a nested model too) outputs probabilities: it is
trained with `from_logits=False` and its outputs are the probabilities. Anything else outputs
logits: trained with `from_logits=True`, softmax applied for predictions. A subclassed model's
`call` cannot be read, so its output on the probe rows decides (non-negative rows summing to 1:
logits of random rows, whatever the biases, do not).
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.backends.keras import fit_on_orders, tf_orders  # noqa: E402
from bench.backends.user_neural import UserNeuralClassifier  # noqa: E402

_SOFTMAX_NAMES = ("softmax", "softmax_v2")  # keras.activations / keras.ops, tf.nn


def output_operation(model: keras.Model):
    """What produces the model's output: the last layer of a Sequential, the output's operation
    in a functional model (looking inside a nested model either way); None for a subclassed model,
    whose `call` alone says what it returns."""
    if isinstance(model, keras.Sequential):
        operation = model.layers[-1] if model.layers else None
    else:
        outputs = getattr(model, "outputs", None)  # functional models only
        if not outputs or len(outputs) != 1:
            return None
        operation = getattr(outputs[0], "_keras_history", (None,))[0]
    if isinstance(operation, keras.Model):
        return output_operation(operation)
    return operation


def ends_in_softmax(model: keras.Model, output: np.ndarray) -> bool:
    """Whether the model outputs class probabilities: its output operation is a softmax (a layer's
    activation, `Activation`/`Softmax` layers, `keras.ops.softmax`); for a subclassed model, whether
    its `output` on the probe rows is non-negative with rows summing to 1 (logits of random rows
    sum to 1 only by accident, whatever the model's biases)."""
    operation = output_operation(model)
    if operation is None:
        out = np.asarray(output, np.float64)
        return bool(np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-5))
    if isinstance(operation, keras.layers.Softmax) or type(operation).__name__ == "Softmax":
        return True
    activation = getattr(operation, "activation", None)
    return activation is keras.activations.softmax or (
        callable(activation) and getattr(activation, "__name__", "") in _SOFTMAX_NAMES
    )


class UserKerasClassifier(UserNeuralClassifier):
    library = "tensorflow"

    def construct(self, n_features: int) -> keras.Model:
        """The user's model with its initial weights (and dropout seeds) drawn from `seed_init`,
        built and checked on two probe rows: one output per class. Sets `probabilities_`:
        whether the model's output is already a softmax."""
        keras.utils.set_random_seed(self.seed_init)
        model = self.build(n_features)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"{self.target} returned {type(model).__name__}, not a keras.Model "
                "(return the uncompiled model)"
            )
        probe = np.random.default_rng(0).standard_normal((2, n_features)).astype(np.float32)
        try:
            out = model(probe, training=False)  # builds a model declared without keras.Input
        except Exception as exc:  # noqa: BLE001 - the user's model: say which, in one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{self.target}: the model cannot take a batch of shape {probe.shape}: {first}"
            ) from None
        if isinstance(out, (list, tuple, dict)):
            raise ValueError(f"{self.target} has several outputs; bench expects one")
        self.check_output(tuple(int(s) for s in out.shape), len(probe))
        self.probabilities_ = ends_in_softmax(model, np.asarray(out))
        return model

    def library_orders(self, n: int) -> list[np.ndarray]:
        return tf_orders(n, self.seed_order, self.epochs)

    def _loss_fn(self, model: keras.Model, from_logits: bool):
        weights = [w for w in model.trainable_weights if len(w.shape) >= 2]
        alpha = self.alpha

        def loss(y_true, output):
            labels = tf.cast(tf.reshape(y_true, (-1,)), tf.int32)
            if from_logits:
                data = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=output)
            else:  # Keras's own cross-entropy on probabilities (clipped away from 0 and 1)
                data = keras.losses.sparse_categorical_crossentropy(
                    labels, output, from_logits=False
                )
            if alpha == 0 or not weights:
                return data
            rows = tf.cast(tf.shape(output)[0], output.dtype)
            l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(w, output.dtype))) for w in weights])
            return data + 0.5 * alpha * l2 / rows  # averaged over the batch by Keras

        return loss

    def _fit(self, X, y, orders):
        if self.device != "cpu":
            raise ValueError(
                f"device: the TensorFlow backend runs on the CPU build, got {self.device!r}"
            )
        self.model_ = model = self.construct(X.shape[1])
        bs = self.batch_size
        model.compile(
            optimizer=keras.optimizers.Adam(
                learning_rate=self.lr, beta_1=self.beta1, beta_2=self.beta2, epsilon=self.eps
            ),
            loss=self._loss_fn(model, from_logits=not self.probabilities_),
            jit_compile=False,
            steps_per_execution=-(-len(X) // bs),
        )
        self.loss_curve_ = np.zeros(0)
        if not orders:  # no epochs: the model stays as built
            return
        self.loss_curve_ = fit_on_orders(model, X, y, orders, bs)

    def _proba(self, X):
        out = self.model_(X, training=False)
        if not self.probabilities_:
            out = tf.nn.softmax(out, axis=1)
        return np.asarray(out, dtype=np.float32)

    def _weights(self):
        return [np.asarray(w) for w in self.model_.get_weights()]

    # Pickling: a compiled Keras model with a closure for its loss does not pickle; the fitted
    # model travels as its weights and is rebuilt by the user's function (which must be
    # importable where it is unpickled), uncompiled: enough to predict.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if "model_" in state:
            state["_pickled_weights"] = self._weights()
            del state["model_"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.pop("_pickled_weights", None)
        super().__setstate__(state)
        if weights is not None:
            model = self.build(self.n_features_in_)  # no reseeding: the weights are replaced
            model(np.zeros((1, self.n_features_in_), np.float32), training=False)  # build it
            model.set_weights(weights)
            self.model_ = model
