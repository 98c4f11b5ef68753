"""Stacked training of a user's PyTorch module (model=torch_module) with `torch.func`.

bench's own stacked trainer (bench.backends.torch_batched) writes the MLP's layers out as batched
matrix products; a user's module has no such form, so here every member's module is built as its
one-by-one fit builds it (under its own `seed_init`), their parameters are stacked with
`torch.func.stack_module_state`, and one `vmap` of `functional_call` runs the module for all
members at once. As in bench's trainer, each member keeps its split, its initial weights and its
batch order, the loss is the sum of the members' own losses (so each member's gradient is its
own) and Adam is elementwise (one Adam over the stacked tensors is N independent ones).

"Stateless enough" is checked, not assumed (`unstackable`, before a task's first stack): a module
with buffers (BatchNorm's running statistics, updated in place) or one that draws random numbers
in its forward pass (dropout, which vmap would draw differently from the one-by-one run) trains
one by one instead, and its rows say `batched=false`. The equivalence with one-by-one training is
the same as the built-in trainer's: initial weights and batch orders bitwise, weights within
float32 rounding (batched products block their sums differently; tests/test_user_torch.py). Unlike
it, the stack is not padded: a member's last bits may depend on its stack's size, which its rows
name (`group_key`), and replay trains such a stack again whole.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from bench.backends.base import minibatches
from bench.backends.loss_curve import EpochLoss
from bench.backends.torch_batched import GLOBAL_RNG, Member, StackResult
from bench.backends.user_torch import UserTorchClassifier, is_weight, l2_penalty
from bench.data.order import epoch_orders


@dataclass
class FuncStack:
    """A stack of a user's module ready to train (see bench.backends.torch_batched.PreparedStack
    for why preparing is separate)."""

    estimator: UserTorchClassifier
    members: list[UserTorchClassifier]  # per member: its seeds and classes
    base: nn.Module  # the module's structure, on the meta device: no memory of its own
    params: dict[str, torch.Tensor]  # name -> (N, ...) stacked initial parameters
    X_train: np.ndarray  # (N, n, d)
    y_index: np.ndarray  # (N, n)
    X_test: np.ndarray  # (N, n_test, d)
    seconds: float


def _member(estimator: UserTorchClassifier, member: Member) -> UserTorchClassifier:
    est = copy.copy(estimator)
    est.seed_init, est.seed_order = member.seed_init, member.seed_order
    est.classes_ = np.unique(member.data.y_train)
    return est


def prepare_stack(estimator: UserTorchClassifier, members: list[Member]) -> FuncStack:
    """Every member's module built as its one-by-one fit builds it, then stacked."""
    start = time.perf_counter()
    ests = [_member(estimator, m) for m in members]
    if any(not np.array_equal(e.classes_, ests[0].classes_) for e in ests):
        raise ValueError("batching: members' training rows hold different classes; cannot stack")
    if len({(m.data.X_train.shape, m.data.X_test.shape) for m in members}) != 1:
        raise ValueError("batching: members differ in data shape; cannot stack them")
    d = members[0].data.X_train.shape[1]
    with GLOBAL_RNG:  # construction seeds torch's process-wide generator (inside fork_rng)
        modules = [e.construct(d) for e in ests]
    params, _ = stack_module_state(modules)  # no buffers: `unstackable` let it through
    base = copy.deepcopy(modules[0]).to("meta")
    y_index = np.stack(
        [np.searchsorted(e.classes_, m.data.y_train) for e, m in zip(ests, members, strict=True)]
    )
    return FuncStack(
        estimator, ests, base, {k: v.detach() for k, v in params.items()},
        np.stack([m.data.X_train for m in members]), y_index,
        np.stack([m.data.X_test for m in members]), time.perf_counter() - start,
    )  # fmt: skip


def unstackable(estimator: UserTorchClassifier, n_features: int, classes: np.ndarray) -> str | None:
    """Why the user's module cannot be stacked (buffers, randomness in its forward pass), or
    None: one module is built (under the global-generator lock) and two copies of it run once
    under vmap on two probe rows, in training mode as the stack would run them."""
    est = copy.copy(estimator)
    est.classes_ = classes
    with GLOBAL_RNG:
        module = est.construct(n_features)
    buffers = [name for name, _ in module.named_buffers()]
    if buffers:
        return f"{estimator.target} has buffers ({', '.join(buffers[:3])}), updated in place"
    params, _ = stack_module_state([module, module])
    base = copy.deepcopy(module).to("meta").train()
    probe = torch.zeros(2, 2, n_features)
    try:
        vmap(lambda p, x: functional_call(base, p, (x,)), randomness="error")(params, probe)
    except RuntimeError as exc:
        if "randomness" in str(exc):
            return f"{estimator.target} draws random numbers in its forward pass (dropout?)"
        return f"{estimator.target} does not run under torch.func.vmap: {str(exc).splitlines()[0]}"
    return None


def _orders(members: list[UserTorchClassifier], n: int) -> Iterator[np.ndarray]:
    """(N, n) row orders, epoch by epoch: each member's own, drawn as its one-by-one fit draws."""
    shared = members[0].order_mode == "shared"
    per_member = [
        iter(epoch_orders(n, m.seed_order, m.epochs) if shared else m.library_orders(n))
        for m in members
    ]
    for _ in range(members[0].epochs):
        yield np.stack([next(orders) for orders in per_member])


def train_stack(prepared: FuncStack, fused: bool = False, compile: bool = False) -> StackResult:
    """The steps and predictions of a prepared stack (`fit_seconds` counts the preparation)."""
    if compile:
        raise ValueError("batching.compile: a user's module is stacked with torch.func, uncompiled")
    est, members = prepared.estimator, prepared.members
    device = torch.device(est.device)
    N, n = prepared.X_train.shape[:2]
    k = len(members[0].classes_)
    start = time.perf_counter()
    params = {
        name: p.to(device).clone().requires_grad_(True) for name, p in prepared.params.items()
    }
    weights = [p for p in params.values() if is_weight(p[0])]
    base = prepared.base

    def one(member_params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, member_params, (x,))

    forward = vmap(one, randomness="error")
    X = torch.as_tensor(prepared.X_train, device=device).reshape(N * n, -1)
    y = torch.as_tensor(prepared.y_index, device=device).reshape(-1)
    offsets = (torch.arange(N, device=device) * n).unsqueeze(1)
    optimizer = torch.optim.Adam(
        list(params.values()), lr=est.lr, betas=(est.beta1, est.beta2), eps=est.eps,
        **({"fused": True} if fused else {}),
    )  # fmt: skip
    base.train()
    checked = False
    curve = EpochLoss()
    for order in _orders(members, n):
        flat = offsets + torch.from_numpy(order).to(device)
        for idx in minibatches(np.arange(n), est.batch_size):
            rows = flat[:, int(idx[0]) : int(idx[-1]) + 1].reshape(-1)
            b = len(idx)
            xb, yb = X.index_select(0, rows).view(N, b, -1), y.index_select(0, rows)
            logits = forward(params, xb)
            if not checked:
                members[0].check_output(tuple(logits.shape[1:]), b)
                checked = True
            data = F.cross_entropy(logits.reshape(N * b, k), yb, reduction="none").view(N, b)
            each = data.mean(dim=1)
            loss = each.sum() + l2_penalty(weights, est.alpha, b)  # the members' own terms, summed
            curve.add(each + _member_l2(weights, est.alpha, b), b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        curve.end_epoch()
    if device.type == "cuda":
        torch.cuda.synchronize()
    fit_seconds = time.perf_counter() - start + prepared.seconds
    base.eval()
    start = time.perf_counter()
    with torch.no_grad():
        X_test = torch.as_tensor(prepared.X_test, device=device)
        proba = torch.softmax(forward(params, X_test), dim=2).cpu().numpy()
    predict_seconds = time.perf_counter() - start
    stacked = [p.detach().cpu().numpy() for p in params.values()]
    return StackResult(
        weights=[[w[i] for w in stacked] for i in range(N)],
        proba=list(proba),
        fit_seconds=fit_seconds,
        predict_seconds=predict_seconds,
        steps_seconds=fit_seconds - prepared.seconds,
        classes=[m.classes_ for m in members],
        losses=list(curve.curve()) if est.epochs else [np.zeros(0)] * N,
    )


@torch.no_grad()
def _member_l2(weights: list[torch.Tensor], alpha: float, rows: int) -> torch.Tensor | float:
    """Each member's own L2 term (l2_penalty's, per member), for its loss curve only."""
    if alpha == 0 or not weights:
        return 0.0
    return 0.5 * alpha * sum(w.pow(2).flatten(1).sum(dim=1) for w in weights) / rows
