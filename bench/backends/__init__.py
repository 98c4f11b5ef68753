"""One scikit-learn-compatible classifier per library, imported only when its name is asked for.

The driver, the sweep and the store never import torch or TensorFlow: `estimator_class("torch")`
imports `bench.backends.torch` (and with it torch) in the worker that trains the model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the base imports scikit-learn; the driver imports this package without it
    from bench.backends.base import NeuralClassifier

_MODULES = {
    "sklearn": ("bench.backends.sklearn", "SklearnNeuralClassifier"),
    "torch": ("bench.backends.torch", "TorchNeuralClassifier"),
    "tensorflow": ("bench.backends.keras", "KerasNeuralClassifier"),
}
LIBRARIES = tuple(_MODULES)


def estimator_class(library: str) -> type[NeuralClassifier]:
    try:
        module, name = _MODULES[library]
    except KeyError:
        raise ValueError(
            f"library: unknown library {library!r}; known: {list(LIBRARIES)}"
        ) from None
    return getattr(importlib.import_module(module), name)


def __getattr__(name: str):
    if name == "NeuralClassifier":
        from bench.backends.base import NeuralClassifier

        return NeuralClassifier
    raise AttributeError(name)


__all__ = ["LIBRARIES", "NeuralClassifier", "estimator_class"]
