"""Each library's defaults for bench's models, read from the installed libraries.

`python -m bench.backends.defaults` prints the markdown table that docs/equivalence.md's "Equivalent
models" section holds, so the table changes when a library's defaults change, not when someone
remembers to edit it. Values come from constructor signatures (`inspect.signature`), initialisers
from the source of the layers' `reset_parameters` / Keras layer signatures, and Keras's batch size
for `fit(batch_size=None)` from a one-epoch fit that counts the optimizer's steps. This is what
`mode=defaults` runs (bench.backends.base): only the architecture and `epochs` are bench's.
"""

from __future__ import annotations

import inspect
import os
from typing import Any


def _defaults(fn: Any, *names: str) -> dict[str, Any]:
    params = inspect.signature(fn).parameters
    return {n: params[n].default for n in names}


def _call(name: str, values: dict[str, Any]) -> str:
    return f"`{name}(" + ", ".join(f"{k}={v!r}" for k, v in values.items()) + ")`"


def _keras_fit_batch_size() -> int:
    """Rows per step when `fit` gets no batch_size: fit 64 rows once and count the steps."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    n = 64
    model.fit(np.zeros((n, 1), "float32"), np.zeros((n, 1), "float32"), epochs=1, verbose=0)
    return n // int(model.optimizer.iterations.numpy())


def _torch_init() -> str:
    from torch import nn

    src = inspect.getsource(nn.Linear.reset_parameters)
    if "kaiming_uniform_(self.weight, a=math.sqrt(5))" in src and "1 / math.sqrt(fan_in)" in src:
        return "`kaiming_uniform_(a=sqrt(5))` = U(+-1/sqrt(fan_in)) weights and biases"
    return "see `nn.Linear.reset_parameters` (changed from kaiming_uniform(a=sqrt(5)))"


def _sklearn_init() -> str:
    from sklearn.neural_network import MLPClassifier

    src = inspect.getsource(MLPClassifier._init_coef)
    if "factor = 6" in src and "factor = 2" in src:
        return "Glorot-uniform U(+-sqrt(6/(fan_in+fan_out))) (2 for logistic) weights and biases"
    return "see `MLPClassifier._init_coef`"


def table() -> str:
    """The markdown table of defaults, one row per setting, one column per library."""
    import keras
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import LinearSVC
    from torch.utils.data import DataLoader

    mlp = _defaults(
        MLPClassifier,
        "solver", "learning_rate_init", "beta_1", "beta_2", "epsilon", "alpha", "batch_size",
        "shuffle", "max_iter", "tol", "n_iter_no_change",
    )  # fmt: skip
    logreg = _defaults(LogisticRegression, "C", "l1_ratio", "solver", "max_iter", "tol")
    svc = _defaults(LinearSVC, "loss", "penalty", "C", "dual", "max_iter", "tol")
    t_adam = _defaults(torch.optim.Adam, "lr", "betas", "eps", "weight_decay")
    k_adam = _defaults(keras.optimizers.Adam, "learning_rate", "beta_1", "beta_2", "epsilon")
    loader = _defaults(DataLoader, "batch_size", "shuffle")
    dense = _defaults(keras.layers.Dense, "kernel_initializer", "bias_initializer")
    conv = _defaults(keras.layers.Conv2D, "kernel_initializer", "bias_initializer", "padding")
    fit = _defaults(keras.Model.fit, "batch_size", "epochs", "shuffle")
    tconv = _defaults(torch.nn.Conv2d, "stride", "padding")
    rows = [
        ("logreg", _call("LogisticRegression", logreg), "`nn.Linear` + Adam, no penalty",
         "`Dense` + Adam, no penalty"),
        ("linear_svm", _call("LinearSVC", svc), "`nn.Linear`, hinge loss + Adam, no penalty",
         "`Dense`, hinge loss + Adam, no penalty"),
        ("mlp", _call("MLPClassifier", {k: mlp[k] for k in ("solver", "alpha", "batch_size")}),
         "`nn.Linear` layers + Adam", "`Dense` layers + Adam"),
        ("cnn", "none (refused at validation)", f"`nn.Conv2d`({tconv['stride']=}, "
         f"{tconv['padding']=})".replace("tconv['", "").replace("']", ""),
         f"`Conv2D`(padding={conv['padding']!r})"),
        ("Adam learning rate", f"learning_rate_init={mlp['learning_rate_init']}",
         f"lr={t_adam['lr']}", f"learning_rate={k_adam['learning_rate']}"),
        ("Adam betas", f"{mlp['beta_1']}, {mlp['beta_2']}", f"{t_adam['betas']}",
         f"{k_adam['beta_1']}, {k_adam['beta_2']}"),
        ("Adam epsilon", f"{mlp['epsilon']:g}", f"{t_adam['eps']:g}", f"{k_adam['epsilon']:g}"),
        ("where epsilon enters", "sqrt(v) + eps, bias correction in the step size",
         "sqrt(v) / sqrt(1 - beta2^t) + eps", "sqrt(v) + eps, bias correction in the step size"),
        ("L2 penalty", f"alpha={mlp['alpha']} (MLP); C={logreg['C']} (logreg, svm)",
         f"weight_decay={t_adam['weight_decay']}", "none (kernel_regularizer=None)"),
        ("batch size", f"batch_size={mlp['batch_size']!r} = min(200, n) (MLP)",
         f"DataLoader batch_size={loader['batch_size']} (bench keeps model.batch_size)",
         f"fit(batch_size={fit['batch_size']}) = {_keras_fit_batch_size()} (measured)"),
        ("shuffling", f"shuffle={mlp['shuffle']} (MLP, one random_state with init)",
         f"DataLoader shuffle={loader['shuffle']} (bench: randperm per epoch)",
         f"fit(shuffle={fit['shuffle']})"),
        ("stopping", f"MLP max_iter={mlp['max_iter']} (bench: epochs), tol={mlp['tol']}, "
         f"n_iter_no_change={mlp['n_iter_no_change']}; logreg max_iter={logreg['max_iter']}; "
         f"svm max_iter={svc['max_iter']}", "none (bench: epochs)",
         f"fit(epochs={fit['epochs']}) (bench: epochs)"),
        ("weight init", _sklearn_init(), _torch_init(),
         f"kernel {dense['kernel_initializer']!r}, bias {dense['bias_initializer']!r} "
         f"(Conv2D: {conv['kernel_initializer']!r}, {conv['bias_initializer']!r})"),
        ("float dtype", "float64 (the input's dtype; bench upcasts its float32 arrays)", str(torch.get_default_dtype()),
         keras.config.floatx()),
    ]  # fmt: skip
    lines = [
        "| setting | scikit-learn | PyTorch | Keras (TensorFlow) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
