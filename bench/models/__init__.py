"""Library-neutral model specs: one description of a network that every backend builds.

Four models share one shape language:
- `logreg`: no hidden layer, log loss;
- `mlp`: dense hidden layers (`hidden_sizes`), log loss;
- `linear_svm`: no hidden layer, hinge loss (one-vs-rest for k > 2 classes, as LinearSVC);
- `cnn`: `conv_channels` 2-D convolutions (stride 1, no padding, `kernel_size` square kernels) on
  an image of one or more channels (grayscale, RGB), then flatten, then dense hidden layers, then
  the output (torch and Keras).

The output has one unit for two classes (sigmoid + binary cross-entropy, or a signed margin for the
hinge loss) and k units for k > 2 classes (softmax + cross-entropy, or k one-vs-rest margins), as
scikit-learn does it, so that parameter shapes agree across all three libraries. Weights are always
exchanged in one canonical layout, Keras's: [K1, c1, ..., W1, b1, W2, b2, ...] with conv kernels of
shape (kh, kw, in, out), dense W of shape (fan_in, fan_out), and the flattened image in (h, w, c)
order. Backends convert to their own layout when they load and when they hand weights back.

Nothing here imports a training library: the config, the sweep and the tests use it freely.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODELS = ("logreg", "mlp", "linear_svm", "cnn")
LOSSES = {"logreg": "log", "mlp": "log", "linear_svm": "hinge", "cnn": "log"}
# Built-in datasets whose rows are images (height, width), one channel; a cnn also accepts the
# user's own images (`dataset=images`, bench.data.images.image_shape).
IMAGE_SHAPES: dict[str, tuple[int, int]] = {"digits": (8, 8)}


def image_shape_for(n_features: int) -> tuple[int, int]:
    """A square one-channel image for `n_features` pixels, or ValueError if there is none."""
    side = math.isqrt(n_features)
    if side * side != n_features:
        raise ValueError(
            f"image_shape: {n_features} features are not a square image; pass image_shape=(h, w)"
        )
    return (side, side)


@dataclass(frozen=True)
class NetSpec:
    n_features: int
    hidden_sizes: tuple[int, ...]
    n_classes: int
    activation: str = "relu"  # relu | tanh | logistic
    conv_channels: tuple[int, ...] = ()
    kernel_size: int = 3
    # (h, w) for one channel or (h, w, c); needed when conv_channels is not empty. Rows hold the
    # image flattened in (h, w, c) order.
    image_shape: tuple[int, ...] | None = None
    loss: str = "log"  # log | hinge

    def __post_init__(self) -> None:
        if self.conv_channels:
            if self.image_shape is None or len(self.image_shape) not in (2, 3):
                raise ValueError("image_shape: a convolutional net needs the image's (h, w[, c])")
            h, w = self.image_shape[:2]
            c = self.in_channels
            if h * w * c != self.n_features:
                raise ValueError(
                    f"image_shape: {h}x{w}x{c} does not match {self.n_features} features"
                )
            oh, ow = self.conv_output_hw
            if oh < 1 or ow < 1:
                raise ValueError(
                    f"kernel_size: {len(self.conv_channels)} convolutions of size "
                    f"{self.kernel_size} leave nothing of a {h}x{w} image"
                )
        if self.loss not in ("log", "hinge"):
            raise ValueError(f"loss: expected 'log' or 'hinge', got {self.loss!r}")

    @property
    def n_outputs(self) -> int:
        return 1 if self.n_classes == 2 else self.n_classes

    @property
    def in_channels(self) -> int:
        """Channels of the input image: 1 unless image_shape names a third dimension."""
        shape = self.image_shape or ()
        return int(shape[2]) if len(shape) == 3 else 1

    @property
    def conv_output_hw(self) -> tuple[int, int]:
        """Spatial size after the convolutions ('valid' padding shrinks by kernel_size - 1)."""
        assert self.image_shape is not None
        shrink = len(self.conv_channels) * (self.kernel_size - 1)
        return (self.image_shape[0] - shrink, self.image_shape[1] - shrink)

    @property
    def flat_features(self) -> int:
        """Inputs of the first dense layer: the features, or the flattened last feature map."""
        if not self.conv_channels:
            return self.n_features
        oh, ow = self.conv_output_hw
        return oh * ow * self.conv_channels[-1]

    @property
    def layer_units(self) -> list[int]:
        """Units of the dense stack, starting with its inputs."""
        return [self.flat_features, *self.hidden_sizes, self.n_outputs]

    def fans(self) -> list[tuple[int, int]]:
        """(fan_in, fan_out) of every weight tensor in canonical order, as Keras's Glorot counts
        them: a conv kernel's fans are its receptive field times its input / output channels."""
        out: list[tuple[int, int]] = []
        field = self.kernel_size * self.kernel_size
        c_in = self.in_channels
        for c in self.conv_channels:
            out.append((field * c_in, field * c))
            c_in = c
        units = self.layer_units
        out += list(zip(units[:-1], units[1:], strict=True))
        return out

    def shapes(self) -> list[tuple[int, ...]]:
        """Canonical parameter shapes, in the canonical order."""
        out: list[tuple[int, ...]] = []
        k, c_in = self.kernel_size, self.in_channels
        for c in self.conv_channels:
            out += [(k, k, c_in, c), (c,)]
            c_in = c
        units = self.layer_units
        for fan_in, fan_out in zip(units[:-1], units[1:], strict=True):
            out += [(fan_in, fan_out), (fan_out,)]
        return out

    def n_params(self) -> int:
        return int(sum(np.prod(s) for s in self.shapes()))

    def init_bound(self, fan_in: int, fan_out: int) -> float:
        """Half-width of the aligned initialiser: scikit-learn's Glorot-uniform bound."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        return float(np.sqrt(factor / (fan_in + fan_out)))

    def flatten_permutation(self) -> np.ndarray:
        """perm[j] = canonical (h, w, c) row of the first dense layer that PyTorch's (c, h, w)
        flatten puts at position j; identity for a net without convolutions."""
        if not self.conv_channels:
            return np.arange(self.n_features)
        oh, ow = self.conv_output_hw
        c = self.conv_channels[-1]
        return np.arange(oh * ow * c).reshape(oh, ow, c).transpose(2, 0, 1).ravel()


def shared_init(net: NetSpec, seed_init: int) -> list[np.ndarray]:
    """Initial weights drawn in numpy from the init seed, for every library to load.

    The scheme is scikit-learn's Glorot-uniform (weights and biases from U(+-sqrt(f / (fan_in +
    fan_out))), f = 6, or 2 for logistic units), drawn from a RandomState as scikit-learn draws it,
    so scikit-learn's own initialisation with the same seed gives the same numbers. Conv kernels
    (cnn only) come first, with Keras's receptive-field fans.
    """
    rng = np.random.RandomState(seed_init)
    weights: list[np.ndarray] = []
    shapes = net.shapes()
    for i, (fan_in, fan_out) in enumerate(net.fans()):
        bound = net.init_bound(fan_in, fan_out)
        weights.append(rng.uniform(-bound, bound, shapes[2 * i]).astype(np.float32))
        weights.append(rng.uniform(-bound, bound, shapes[2 * i + 1]).astype(np.float32))
    return weights
