"""TensorFlow/Keras backend: keras.Sequential of Dense layers, compiled and trained with `fit`.

In `library` init mode Keras's own initialisers (glorot_uniform kernels, zero biases) draw under
`keras.utils.set_random_seed(seed_init)`; in `library` order mode `fit(shuffle=True)` shuffles under
`set_random_seed(seed_order)`, set after the model is built so that the two sources stay apart. In
`shared` order mode a tf.data pipeline yields exactly the given batches, epoch after epoch, through
one `fit` call. The L2 term follows scikit-learn's convention (divided by the batch's rows) inside
the loss, which a Keras regularizer cannot express. XLA is off: small models compile slower than
they train, and bench records kernels as the library runs them by default on CPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench.backends.base import NeuralClassifier  # noqa: E402

_ACTIVATIONS = {"relu": "relu", "tanh": "tanh", "logistic": "sigmoid"}


class KerasNeuralClassifier(NeuralClassifier):
    library = "tensorflow"

    def _build(self, init: list[np.ndarray] | None) -> keras.Sequential:
        keras.utils.set_random_seed(self.seed_init)
        layers: list[keras.layers.Layer] = [keras.Input((self.net_.n_features,))]
        layers += [
            keras.layers.Dense(u, activation=_ACTIVATIONS[self.activation])
            for u in self.net_.hidden_sizes
        ]
        layers.append(keras.layers.Dense(self.net_.n_outputs))
        model = keras.Sequential(layers)
        if init is not None:
            model.set_weights(init)
        return model

    def _loss_fn(self, model: keras.Sequential):
        kernels = [layer.kernel for layer in model.layers]
        binary, alpha = self.net_.n_outputs == 1, self.alpha

        def loss(y_true, logits):
            if binary:
                labels = tf.cast(tf.reshape(y_true, (-1, 1)), logits.dtype)
                data = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)[:, 0]
            else:
                labels = tf.cast(tf.reshape(y_true, (-1,)), tf.int32)
                data = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
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
        optimizer = keras.optimizers.Adam(
            learning_rate=self.lr, beta_1=self.beta1, beta_2=self.beta2, epsilon=self.eps
        )
        model.compile(optimizer=optimizer, loss=self._loss_fn(model), jit_compile=False)
        if orders is None:
            keras.utils.set_random_seed(self.seed_order)
            model.fit(X, y, batch_size=self.batch_size, epochs=self.epochs, shuffle=True, verbose=0)
            return
        bs, Xc, yc = self.batch_size, tf.constant(X), tf.constant(y)
        batches = (
            tf.data.Dataset.from_tensor_slices(np.stack(orders))
            .flat_map(lambda order: tf.data.Dataset.from_tensor_slices(order).batch(bs))
            .map(lambda idx: (tf.gather(Xc, idx), tf.gather(yc, idx)))
            .apply(tf.data.experimental.assert_cardinality(sum(-(-len(o) // bs) for o in orders)))
        )
        model.fit(batches, epochs=1, shuffle=False, verbose=0)

    def _forward_proba(self, X):
        logits = self.model_(X, training=False)
        proba = tf.sigmoid(logits) if self.net_.n_outputs == 1 else tf.nn.softmax(logits, axis=1)
        return np.asarray(proba)

    def _weights(self):
        return self.model_.get_weights()
