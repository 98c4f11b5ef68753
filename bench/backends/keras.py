"""TensorFlow/Keras backend: keras.Sequential of (Conv2D,) Dense layers, compiled and trained by `fit`.

Initial weights: `defaults` mode keeps Keras's own initialisers (glorot_uniform kernels, zero
biases); `aligned` mode draws kernels and biases from scikit-learn's Glorot-uniform bound
(`RandomUniform`); both draw under `keras.utils.set_random_seed(seed_init)`. Shared init loads
the numpy weights with `set_weights` (the canonical layout is Keras's own).

Batches: `defaults` mode is `fit(X, y, shuffle=True)` as a typical user writes it (Keras's own
shuffling under `set_random_seed(seed_order)`, set after the model is built so that the two
sources stay apart, and Keras's batch size of 32). Every other mode feeds one tf.data pipeline
that yields exactly the given batches, epoch after epoch, through a single `fit` call: in
`library` order mode the permutations are TensorFlow's own (`stateless_shuffle` keyed by
(seed_order, epoch)), in `shared` order mode they are bench's. Why not `fit(X, y, shuffle=True)`
there too: Keras's array adapter builds a new tf.data iterator every epoch, and on a few hundred
rows that costs more than the epoch's training (about 40 ms of 60 per epoch here) and starts
threads that make two Keras trials on two cores slow each other down by a third. One call into
TensorFlow runs a whole epoch's steps (`steps_per_execution`), which takes another quarter off.

The L2 term follows scikit-learn's convention (divided by the batch's rows) inside the loss, which
a Keras regularizer cannot express; `defaults` mode has none, as Keras. XLA is off: small models
compile slower than they train, and bench records kernels as the library runs them by default on
CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.backends.base import NeuralClassifier  # noqa: E402

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid"}


def _single_threaded() -> tf.data.Options:
    """The batch pipeline runs in the training thread: gathering 32 rows needs no thread pool, and
    tf.data's own threads (autotuning, prefetch) would compete with the next trial's process for
    the cores the runner has given out (a Keras trial 1.1 -> 1.0 s alone, 1.5 -> 1.2 s beside another)."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    options.experimental_optimization.inject_prefetch = False
    return options


_SINGLE_THREADED = _single_threaded()


def tf_orders(n: int, seed_order: int, epochs: int) -> list[np.ndarray]:
    """TensorFlow's own batch order: one permutation per epoch from its stateless shuffle."""
    rows = tf.range(n, dtype=tf.int64)
    return [
        tf.random.experimental.stateless_shuffle(rows, seed=[seed_order, epoch]).numpy()
        for epoch in range(epochs)
    ]


class _EpochEnds(keras.callbacks.Callback):
    """The loss of each of bench's epochs. One `fit` call runs them all, so Keras sees one epoch
    and its loss metric would be a running mean over all of them: at the last step of each of
    bench's epochs (the steps per call divide an epoch's steps) the callback reads it and resets
    the metrics, so each value is that epoch's own mean. Metrics never feed back into training."""

    def __init__(self, steps_per_epoch: int) -> None:
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.means: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (batch + 1) % self.steps_per_epoch == 0 and logs and "loss" in logs:
            self.means.append(float(logs["loss"]))
            self.model.reset_metrics()


def fit_on_orders(
    model: keras.Model, X: np.ndarray, y: np.ndarray, orders: list[np.ndarray], batch_size: int
) -> np.ndarray:
    """Train a compiled model on exactly these epoch orders, in minibatches of `batch_size` (the
    last one smaller), through one tf.data pipeline and one `fit` call (the module docstring says
    why); the user's own Keras models train the same way (bench.backends.user_keras). Returns the
    loss per epoch (bench.backends.loss_curve)."""
    bs, Xc, yc = batch_size, tf.constant(X), tf.constant(y)
    batches = (
        tf.data.Dataset.from_tensor_slices(np.stack(orders))
        .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(bs))
        .map(lambda idx: (tf.gather(Xc, idx), tf.gather(yc, idx)))
        .apply(tf.data.experimental.assert_cardinality(sum(-(-len(o) // bs) for o in orders)))
        .with_options(_SINGLE_THREADED)
    )
    ends = _EpochEnds(-(-len(orders[0]) // bs))
    model.fit(batches, epochs=1, shuffle=False, verbose=0, callbacks=[ends])
    return np.asarray(ends.means, dtype=np.float64)


class KerasNeuralClassifier(NeuralClassifier):
    library = "tensorflow"
    _library_state = ("model_",)
    # Training steps per call into the TensorFlow runtime outside `defaults` mode; None: one
    # epoch's worth. Fewer calls, fewer hand-offs between Python and TensorFlow's threads; the
    # weights are bitwise the same as one step per call (tests/test_backends.py checks).
    _steps_per_execution: int | None = None

    def _init_kwargs(self, fan_in: int, fan_out: int) -> dict:
        if self.mode == "defaults":
            return {}
        bound = self.net_.init_bound(fan_in, fan_out)
        return {
            "kernel_initializer": keras.initializers.RandomUniform(-bound, bound),
            "bias_initializer": keras.initializers.RandomUniform(-bound, bound),
        }

    def _build(self, init: list[np.ndarray] | None) -> keras.Sequential:
        net = self.net_
        act = _ACTIVATIONS[self.activation]
        fans = iter(net.fans())
        keras.utils.set_random_seed(self.seed_init)
        layers: list = [keras.Input((net.n_features,))]
        if net.conv_channels:
            assert net.image_shape is not None
            h, w = net.image_shape[:2]
            layers.append(keras.layers.Reshape((h, w, net.in_channels)))
            for c in net.conv_channels:
                layers.append(
                    keras.layers.Conv2D(
                        c, net.kernel_size, activation=act, **self._init_kwargs(*next(fans))
                    )
                )
            layers.append(keras.layers.Flatten())
        for u in net.hidden_sizes:
            layers.append(keras.layers.Dense(u, activation=act, **self._init_kwargs(*next(fans))))
        layers.append(keras.layers.Dense(net.n_outputs, **self._init_kwargs(*next(fans))))
        model = keras.Sequential(layers)
        if init is not None:
            model.set_weights(init)
        return model

    def _loss_fn(self, model: keras.Sequential):
        kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
        binary, hinge = self.net_.n_outputs == 1, self.net_.loss == "hinge"
        alpha = 0.0 if self.mode == "defaults" else self.alpha
        n_outputs = self.net_.n_outputs

        def loss(y_true, logits):
            if hinge:
                labels = tf.cast(tf.reshape(y_true, (-1,)), tf.int32)
                target = (
                    tf.cast(tf.reshape(labels, (-1, 1)), logits.dtype)
                    if binary
                    else tf.one_hot(labels, n_outputs, dtype=logits.dtype)
                )
                data = tf.reduce_sum(tf.nn.relu(1.0 - (2.0 * target - 1.0) * logits), axis=1)
            elif binary:
                labels = tf.cast(tf.reshape(y_true, (-1, 1)), logits.dtype)
                data = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)[:, 0]
            else:
                labels = tf.cast(tf.reshape(y_true, (-1,)), tf.int32)
                data = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            if alpha == 0:
                return data
            rows = tf.cast(tf.shape(logits)[0], logits.dtype)
            l2 = tf.add_n([tf.reduce_sum(tf.square(k)) for k in kernels])
            return data + 0.5 * alpha * l2 / rows  # averaged over the batch by Keras

        return loss

    def _fit(self, X, y, init, orders):
        if self.device != "cpu":
            raise ValueError(
                f"device: the TensorFlow backend runs on the CPU build, got {self.device!r}"
            )
        self.model_ = model = self._build(init)
        if self.mode == "defaults":
            optimizer = keras.optimizers.Adam()
        else:
            optimizer = keras.optimizers.Adam(
                learning_rate=self.lr, beta_1=self.beta1, beta_2=self.beta2, epsilon=self.eps
            )
        if self.mode == "defaults":
            model.compile(optimizer=optimizer, loss=self._loss_fn(model), jit_compile=False)
            keras.utils.set_random_seed(self.seed_order)
            history = model.fit(X, y, epochs=self.epochs, shuffle=True, verbose=0)
            self.loss_curve_ = np.asarray(history.history.get("loss", []), dtype=np.float64)
            return
        steps = self._steps_per_execution or -(-len(X) // self.batch_size)
        model.compile(
            optimizer=optimizer,
            loss=self._loss_fn(model),
            jit_compile=False,
            steps_per_execution=steps,
        )
        if orders is None:
            orders = tf_orders(len(X), self.seed_order, self.epochs)
        self.loss_curve_ = fit_on_orders(model, X, y, orders, self.batch_size)

    def _forward_output(self, X):
        logits = self.model_(X, training=False)
        if self.net_.loss == "hinge":
            out = logits
        elif self.net_.n_outputs == 1:
            out = tf.sigmoid(logits)
        else:
            out = tf.nn.softmax(logits, axis=1)
        return np.asarray(out)

    def _weights(self):
        return self.model_.get_weights()

    def _restore(self, weights):
        self.model_ = self._build(weights)
