"""PyTorch backend: nn.Sequential of Linear layers, Adam, an explicit training loop.

In `library` init mode the layers keep PyTorch's own initialisation (U(+-1/sqrt(fan_in)) for weights
and biases) drawn under `torch.manual_seed(seed_init)` inside `fork_rng`, so the global RNG of the
worker is left as it was. In `library` order mode each epoch is `torch.randperm` from a generator
seeded with `seed_order`, which is what `DataLoader(shuffle=True, generator=g)` does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backends.base import NeuralClassifier, minibatches

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid}


class TorchNeuralClassifier(NeuralClassifier):
    library = "torch"

    def _build(self, init: list[np.ndarray] | None) -> nn.Sequential:
        units = self.net_.layer_units
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_init)
            linears = [nn.Linear(i, o) for i, o in zip(units[:-1], units[1:], strict=True)]
        if init is not None:
            with torch.no_grad():
                for k, linear in enumerate(linears):
                    linear.weight.copy_(torch.from_numpy(init[2 * k].T))
                    linear.bias.copy_(torch.from_numpy(init[2 * k + 1]))
        layers: list[nn.Module] = []
        for k, linear in enumerate(linears):
            layers.append(linear)
            if k < len(linears) - 1:
                layers.append(_ACTIVATIONS[self.activation]())
        return nn.Sequential(*layers)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.net_.n_outputs == 1:
            data = F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
        else:
            data = F.cross_entropy(logits, y)
        l2 = sum(m.weight.pow(2).sum() for m in self.model_ if isinstance(m, nn.Linear))
        return data + 0.5 * self.alpha * l2 / y.shape[0]

    def _fit(self, X, y, init, orders):
        device = torch.device(self.device)
        self.model_ = self._build(init).to(device)
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        optimizer = torch.optim.Adam(
            self.model_.parameters(), lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps
        )
        shuffler = torch.Generator().manual_seed(self.seed_order)
        for epoch in range(self.epochs):
            if orders is not None:
                order = orders[epoch]
            else:
                order = torch.randperm(len(X), generator=shuffler).numpy()
            for idx in minibatches(order, self.batch_size):
                index = torch.from_numpy(idx).to(device)
                optimizer.zero_grad(set_to_none=True)
                self._loss(self.model_(Xt[index]), yt[index]).backward()
                optimizer.step()

    @torch.no_grad()
    def _forward_proba(self, X):
        logits = self.model_(torch.from_numpy(X).to(torch.device(self.device)))
        proba = torch.sigmoid(logits) if self.net_.n_outputs == 1 else torch.softmax(logits, dim=1)
        return proba.cpu().numpy()

    def _weights(self):
        out = []
        for m in self.model_:
            if isinstance(m, nn.Linear):
                out += [m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy()]
        return out
