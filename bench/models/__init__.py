"""Library-neutral model specs: one description of a network that every backend builds.

A model is a stack of dense layers (logistic regression is the stack with no hidden layer). The
output has one unit for two classes (sigmoid + binary cross-entropy) and k units for k > 2 classes
(softmax + cross-entropy), as scikit-learn's MLP does it, so that parameter shapes agree across all
three libraries. Weights are always exchanged in one canonical layout: [W1, b1, W2, b2, ...] with
W of shape (fan_in, fan_out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NetSpec:
    n_features: int
    hidden_sizes: tuple[int, ...]
    n_classes: int
    activation: str = "relu"  # relu | tanh | logistic

    @property
    def n_outputs(self) -> int:
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def layer_units(self) -> list[int]:
        return [self.n_features, *self.hidden_sizes, self.n_outputs]

    def shapes(self) -> list[tuple[int, ...]]:
        """Canonical parameter shapes, in the canonical order."""
        out: list[tuple[int, ...]] = []
        for fan_in, fan_out in zip(self.layer_units[:-1], self.layer_units[1:], strict=True):
            out += [(fan_in, fan_out), (fan_out,)]
        return out


def shared_init(net: NetSpec, seed_init: int) -> list[np.ndarray]:
    """Initial weights drawn in numpy from the init seed, for every library to load.

    The scheme is scikit-learn's Glorot-uniform (weights and biases from U(+-sqrt(f / (fan_in +
    fan_out))), f = 6, or 2 for logistic units), drawn from a RandomState as scikit-learn draws it,
    so scikit-learn's own initialisation with the same seed gives the same numbers.
    """
    rng = np.random.RandomState(seed_init)
    factor = 2.0 if net.activation == "logistic" else 6.0
    weights: list[np.ndarray] = []
    for fan_in, fan_out in zip(net.layer_units[:-1], net.layer_units[1:], strict=True):
        bound = np.sqrt(factor / (fan_in + fan_out))
        weights.append(rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, fan_out).astype(np.float32))
    return weights
