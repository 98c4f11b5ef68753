"""Train N trials that differ only in their seeds as one stacked PyTorch model.

A seed study trains hundreds of small models; one at a time, each step is a handful of tiny kernels
and the machine idles between them. Stacked, every layer's weight becomes a (N, fan_in, fan_out)
tensor and one `baddbmm` runs the layer for all N trials at once; each trial keeps its own data
(its split), its own initial weights and its own batch order, and its own loss. The total loss is
the sum of the per-trial losses, so each trial's gradient is exactly its own, and Adam's update is
elementwise, so one Adam over the stacked tensors is N independent Adams.

What equals the one-by-one run (`TorchNeuralClassifier`) and how exactly:
- initial weights: drawn by the one-by-one code itself (its `_build`, or `shared_init`): bitwise;
- batch order: the same generators (`torch.randperm` from `seed_order`, or the shared numpy order):
  bitwise;
- loss, L2 term, Adam constants and the per-step epsilon alignment of `aligned`/`shared` modes:
  the same formulas;
- arithmetic: `bmm` and `mm` block their sums differently, so weights agree within float32
  rounding (measured and asserted in tests/test_batched.py), not bitwise. Predictions and accuracy
  agree exactly on the test sets tried there.
Only `logreg` and `mlp` in `aligned` or `shared` mode are stacked (`batchable`); anything else runs
one by one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.backends.base import minibatches
from bench.backends.torch import TorchNeuralClassifier
from bench.data import Split
from bench.data.order import epoch_orders
from bench.models import shared_init

BATCHABLE_MODELS = ("logreg", "mlp")
# PyTorch's CPU elementwise kernels (Adam's update among them) run vectorised over chunks and finish
# the remainder with scalar code, which rounds differently (no FMA). A member's position in the
# stack would then decide its bits; padding the stack to a multiple of this keeps every real member
# inside the vectorised body, so a trial's bits do not depend on where it sits in its group.
STACK_MULTIPLE = 32
_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid}


@dataclass(frozen=True)
class Member:
    """One trial of a stack: its seeds and its (already split and preprocessed) data."""

    seed_init: int
    seed_order: int
    data: Split


@dataclass
class StackResult:
    weights: list[list[np.ndarray]]  # per member, canonical layout
    proba: list[np.ndarray]  # per member, (n_test, n_classes)
    fit_seconds: float
    predict_seconds: float


def _template(estimator: TorchNeuralClassifier, member: Member) -> TorchNeuralClassifier:
    """The one-by-one estimator for this member, prepared as its `fit` would be (no training)."""
    est = TorchNeuralClassifier(
        **{**estimator.get_params(), "seed_init": member.seed_init, "seed_order": member.seed_order}
    )
    est.classes_ = np.unique(member.data.y_train)
    est.init_mode_, est.order_mode_ = est._resolved_modes()
    est.net_ = est._netspec(member.data.X_train.shape[1], len(est.classes_))
    return est


def _initial_weights(est: TorchNeuralClassifier) -> list[np.ndarray]:
    """Canonical initial weights exactly as the one-by-one run starts from them."""
    if est.init_mode_ == "shared":
        return shared_init(est.net_, est.seed_init)
    est.model_ = est._build(None)
    return est._weights()


def _orders(est: TorchNeuralClassifier, n: int) -> list[np.ndarray]:
    """Every epoch's permutation, drawn by the same generator the one-by-one run uses."""
    if est.order_mode_ == "shared":
        return epoch_orders(n, est.seed_order, est.epochs)
    return est.library_orders(n)


def fit_stack(
    estimator: TorchNeuralClassifier, members: list[Member], fused: bool = False
) -> StackResult:
    """Train `estimator`'s model once per member, all members as one stacked model."""
    if estimator.mode == "defaults" or estimator._model_name() not in BATCHABLE_MODELS:
        raise ValueError("batching: only logreg and mlp in aligned or shared mode can be stacked")
    device = torch.device(estimator.device)
    real = len(members)
    # Pad with copies so that every real member sits in the kernels' vectorised body (a group of
    # one too: its bits must equal those it would get inside any larger group).
    members = members + [members[0]] * (-real % STACK_MULTIPLE)
    templates = [_template(estimator, m) for m in members]
    net = templates[0].net_
    shapes = {
        (m.data.X_train.shape, m.data.X_test.shape, t.net_)
        for m, t in zip(members, templates, strict=True)
    }
    if len(shapes) != 1:
        raise ValueError("batching: members differ in data shape or network; cannot stack them")
    N, n = len(members), members[0].data.X_train.shape[0]

    start = time.perf_counter()
    init = [_initial_weights(t) for t in templates]
    # PyTorch's own layout, W (N, fan_out, fan_in), used as nn.Linear uses it (x @ W^T): the same
    # GEMM shapes and transposition as the one-by-one run, one per member.
    params = [
        torch.tensor(
            np.stack([w[k].T if w[k].ndim == 2 else w[k] for w in init]), device=device
        ).requires_grad_(True)
        for k in range(len(init[0]))
    ]
    X = torch.tensor(np.stack([m.data.X_train for m in members]), device=device)
    y = torch.tensor(
        np.stack(
            [
                np.searchsorted(t.classes_, m.data.y_train)
                for m, t in zip(members, templates, strict=True)
            ]
        ),
        device=device,
    )
    orders = np.stack([np.stack(_orders(t, n)) for t in templates], axis=1)  # (epochs, N, n)
    rows = torch.arange(N, device=device).unsqueeze(1)
    act = _ACTIVATIONS[estimator.activation]
    binary = net.n_outputs == 1

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        h = inputs
        for k in range(0, len(params), 2):
            h = torch.baddbmm(params[k + 1].unsqueeze(1), h, params[k].transpose(1, 2))
            if k + 2 < len(params):
                h = act(h)
        return h

    optimizer = torch.optim.Adam(
        params, lr=estimator.lr, betas=(estimator.beta1, estimator.beta2), eps=estimator.eps,
        **({"fused": True} if fused else {}),
    )  # fmt: skip
    step = 0
    for epoch in range(estimator.epochs):
        epoch_order = torch.from_numpy(orders[epoch]).to(device)
        for cols in minibatches(np.arange(n), estimator.batch_size):
            step += 1
            optimizer.param_groups[0]["eps"] = estimator.eps / math.sqrt(1 - estimator.beta2**step)
            idx = epoch_order[:, cols[0] : cols[-1] + 1]  # (N, B)
            logits = forward(X[rows, idx])
            target = y[rows, idx]
            if binary:
                data = F.binary_cross_entropy_with_logits(
                    logits[..., 0], target.to(logits.dtype), reduction="none"
                ).mean(dim=1)
            else:
                data = F.cross_entropy(logits.transpose(1, 2), target, reduction="none").mean(dim=1)
            l2 = sum(params[k].pow(2).sum(dim=(1, 2)) for k in range(0, len(params), 2))
            loss = data + 0.5 * estimator.alpha * l2 / idx.shape[1] if estimator.alpha else data
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    with torch.no_grad():
        X_test = torch.tensor(np.stack([m.data.X_test for m in members]), device=device)
        logits = forward(X_test)
        out = torch.sigmoid(logits) if binary else torch.softmax(logits, dim=2)
        out = out.cpu().numpy()
    predict_seconds = time.perf_counter() - start
    out, params = out[:real], [p[:real] for p in params]
    N = real
    proba = [
        np.column_stack([1.0 - o[:, 0], o[:, 0]]).astype(np.float32) if binary else o for o in out
    ]
    weights = [
        [
            p[i].detach().cpu().numpy().T if p.ndim == 3 else p[i].detach().cpu().numpy()
            for p in params
        ]
        for i in range(N)
    ]
    return StackResult(weights, proba, fit_seconds, predict_seconds)
