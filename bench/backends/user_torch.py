"""A user's own PyTorch module, by import path (`model=torch_module model._target_=mypkg.nets.Net`),
trained by bench's loop (bench.backends.user_neural says what the loop is).

Seeds: the module is constructed under `torch.manual_seed(seed_init)` inside `fork_rng`, so its
initial weights depend on `seed_init` alone and the worker's global generator is left as it was.
Each epoch's order is `torch.randperm` from a generator seeded by `seed_order` (what
`DataLoader(shuffle=True, generator=g)` draws), or bench's shared order. Training runs under
`torch.manual_seed(seed_order)` in its own `fork_rng`, so whatever the module draws in its forward
pass (dropout) follows the order seed and nothing else. The module is in `train()` mode while it
trains and in `eval()` mode for predictions, as a PyTorch user writes it.

Stacked training of many seeds (`batching.enabled=true`) runs the same module for every member at
once with `torch.func` (bench.backends.torch_func).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backends.base import minibatches
from bench.backends.loss_curve import EpochLoss
from bench.backends.user_neural import UserNeuralClassifier


def l2_penalty(weights: list[torch.Tensor], alpha: float, rows: int) -> torch.Tensor | float:
    """bench's L2 term on the weights (tensors of two or more dimensions, not biases)."""
    if alpha == 0 or not weights:
        return 0.0
    return 0.5 * alpha * sum(w.pow(2).sum() for w in weights) / rows


def is_weight(tensor: torch.Tensor) -> bool:
    return tensor.ndim >= 2


class UserTorchClassifier(UserNeuralClassifier):
    library = "torch"

    def construct(self, n_features: int) -> nn.Module:
        """The user's module with its initial weights drawn under `seed_init`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_init)
            module = self.build(n_features)
        if not isinstance(module, nn.Module):
            raise ValueError(
                f"{self.target} returned {type(module).__name__}, not a torch.nn.Module"
            )
        return module

    def library_orders(self, n: int) -> list[np.ndarray]:
        shuffler = torch.Generator().manual_seed(self.seed_order)
        return [torch.randperm(n, generator=shuffler).numpy() for _ in range(self.epochs)]

    def _fit(self, X, y, orders):
        device = torch.device(self.device)
        self.module_ = module = self.construct(X.shape[1]).to(device)
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        weights = [p for p in module.parameters() if is_weight(p)]
        optimizer = torch.optim.Adam(
            module.parameters(), lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps
        )
        module.train()
        checked = False
        curve = EpochLoss()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed_order)  # what the module's forward draws (dropout)
            for order in orders:
                for idx in minibatches(order, self.batch_size):
                    index = torch.from_numpy(idx).to(device)
                    logits = module(Xt[index])
                    if not checked:
                        self.check_output(tuple(logits.shape), len(idx))
                        checked = True
                    loss = F.cross_entropy(logits, yt[index])
                    loss = loss + l2_penalty(weights, self.alpha, len(idx))
                    curve.add(loss, len(idx))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                curve.end_epoch()
        self.loss_curve_ = curve.curve()
        module.eval()

    @torch.no_grad()
    def _proba(self, X):
        self.module_.eval()
        logits = self.module_(torch.from_numpy(X).to(torch.device(self.device)))
        return torch.softmax(logits, dim=1).cpu().numpy()

    def _weights(self):
        return [t.detach().cpu().numpy() for t in self.module_.state_dict().values()]
