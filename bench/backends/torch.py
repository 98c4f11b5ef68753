"""PyTorch backend: nn.Sequential of (Conv2d,) Linear layers, Adam, an explicit training loop.

Initial weights: `defaults` mode keeps PyTorch's own initialisation (kaiming_uniform(a=sqrt(5)),
i.e. U(+-1/sqrt(fan_in)) for weights and biases of Linear and Conv2d); `aligned` mode redraws every
weight and bias from scikit-learn's Glorot-uniform bound with torch's RNG; shared init loads the
numpy weights. Draws happen under `torch.manual_seed(seed_init)` inside `fork_rng`, so the global
RNG of the worker is left as it was. In `library` order mode each epoch is `torch.randperm` from a
generator seeded with `seed_order`, which is what `DataLoader(shuffle=True, generator=g)` does.

Adam's epsilon: torch computes `lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)` (eps added to the
bias-corrected sqrt(v_hat)), Keras and scikit-learn `lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps)`
(eps added to the raw sqrt(v), bias correction folded into the step size), with bc1 = 1 - beta1^t,
bc2 = 1 - beta2^t. The two agree exactly when torch's eps at step t is eps / sqrt(bc2): in
`aligned` and `shared` modes the loop sets the parameter group's eps to that before every step,
so the same `eps` means the same update in all three libraries. `defaults` mode leaves torch's.

The convolutional net flattens (c, h, w) as PyTorch does; the canonical layout flattens (h, w, c)
as Keras does, so the first dense layer's rows are permuted on load and on read-back. Input rows
are (h, w, c) too: a multi-channel image is moved channels-first before the first convolution.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.backends.base import NeuralClassifier, minibatches
from bench.backends.loss_curve import EpochLoss

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "logistic": nn.Sigmoid}


class _ChannelsFirst(nn.Module):
    """Rows flattened in (h, w, c) order (the canonical layout) -> (n, c, h, w) for Conv2d."""

    def __init__(self, h: int, w: int, c: int) -> None:
        super().__init__()
        self.shape = (h, w, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, *self.shape).permute(0, 3, 1, 2).contiguous()


class TorchNeuralClassifier(NeuralClassifier):
    library = "torch"
    _library_state = ("model_",)

    # --- layout ------------------------------------------------------------------------------------
    def _trainable(self, model: nn.Sequential) -> list[nn.Module]:
        return [m for m in model if isinstance(m, nn.Linear | nn.Conv2d)]

    def _to_torch(self, weights: list[np.ndarray]) -> list[np.ndarray]:
        """Canonical (Keras) layout -> PyTorch parameter layout, in module order."""
        out: list[np.ndarray] = []
        n_conv = len(self.net_.conv_channels)
        for k in range(len(weights) // 2):
            w, b = weights[2 * k], weights[2 * k + 1]
            if k < n_conv:
                w = w.transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
            else:
                if k == n_conv:
                    w = w[self.net_.flatten_permutation()]
                w = w.T
            out += [np.ascontiguousarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32)]
        return out

    def _from_torch(self, params: list[np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        n_conv = len(self.net_.conv_channels)
        for k in range(len(params) // 2):
            w, b = params[2 * k], params[2 * k + 1]
            if k < n_conv:
                w = w.transpose(2, 3, 1, 0)
            else:
                w = w.T
                if k == n_conv:
                    canonical = np.empty_like(w)
                    canonical[self.net_.flatten_permutation()] = w
                    w = canonical
            out += [np.ascontiguousarray(w), b]
        return out

    # --- model -------------------------------------------------------------------------------------
    def _build(self, init: list[np.ndarray] | None) -> nn.Sequential:
        net = self.net_
        act = _ACTIVATIONS[self.activation]
        layers: list[nn.Module] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed_init)
            if net.conv_channels:
                assert net.image_shape is not None
                h, w = net.image_shape[:2]
                c_in = net.in_channels
                if c_in == 1:  # (h, w, 1) rows are (1, h, w) images as they stand
                    layers.append(nn.Unflatten(1, (1, h, w)))
                else:
                    layers.append(_ChannelsFirst(h, w, c_in))
                for c in net.conv_channels:
                    layers += [nn.Conv2d(c_in, c, net.kernel_size), act()]
                    c_in = c
                layers.append(nn.Flatten())
            units = net.layer_units
            for k, (i, o) in enumerate(zip(units[:-1], units[1:], strict=True)):
                layers.append(nn.Linear(i, o))
                if k < len(units) - 2:
                    layers.append(act())
            model = nn.Sequential(*layers)
            if init is None and self.mode != "defaults":
                with torch.no_grad():
                    for m, (fan_in, fan_out) in zip(
                        self._trainable(model), net.fans(), strict=True
                    ):
                        bound = net.init_bound(fan_in, fan_out)
                        nn.init.uniform_(m.weight, -bound, bound)
                        nn.init.uniform_(m.bias, -bound, bound)
        if init is not None:
            self._load(model, init)
        return model

    def _load(self, model: nn.Sequential, weights: list[np.ndarray]) -> None:
        params = self._to_torch(weights)
        with torch.no_grad():
            for k, m in enumerate(self._trainable(model)):
                m.weight.copy_(torch.from_numpy(params[2 * k]))
                m.bias.copy_(torch.from_numpy(params[2 * k + 1]))

    def _loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        binary = self.net_.n_outputs == 1
        if self.net_.loss == "hinge":
            target = (
                y.to(logits.dtype).reshape(-1, 1)
                if binary
                else F.one_hot(y, self.net_.n_outputs).to(logits.dtype)
            )
            data = torch.clamp(1.0 - (2.0 * target - 1.0) * logits, min=0.0).sum(dim=1).mean()
        elif binary:
            data = F.binary_cross_entropy_with_logits(logits[:, 0], y.to(logits.dtype))
        else:
            data = F.cross_entropy(logits, y)
        if self.mode == "defaults" or self.alpha == 0:
            return data  # torch's default: no weight penalty
        l2 = sum(m.weight.pow(2).sum() for m in self._trainable(self.model_))
        return data + 0.5 * self.alpha * l2 / y.shape[0]

    def library_orders(self, n: int) -> list[np.ndarray]:
        """PyTorch's own batch order: `randperm` per epoch from a generator seeded by
        `seed_order`, which is what `DataLoader(shuffle=True, generator=g)` draws."""
        shuffler = torch.Generator().manual_seed(self.seed_order)
        return [torch.randperm(n, generator=shuffler).numpy() for _ in range(self.epochs)]

    def _fit(self, X, y, init, orders):
        device = torch.device(self.device)
        self.model_ = self._build(init).to(device)
        Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
        defaults = self.mode == "defaults"
        if defaults:
            optimizer = torch.optim.Adam(self.model_.parameters())
        else:
            optimizer = torch.optim.Adam(
                self.model_.parameters(), lr=self.lr, betas=(self.beta1, self.beta2), eps=self.eps
            )
        if orders is None:
            orders = self.library_orders(len(X))
        step = 0
        curve = EpochLoss()
        for order in orders:
            for idx in minibatches(order, self.batch_size):
                step += 1
                if not defaults:  # eps where Keras and scikit-learn put it (module docstring)
                    optimizer.param_groups[0]["eps"] = self.eps / math.sqrt(1 - self.beta2**step)
                index = torch.from_numpy(idx).to(device)
                optimizer.zero_grad(set_to_none=True)
                loss = self._loss(self.model_(Xt[index]), yt[index])
                curve.add(loss, len(idx))
                loss.backward()
                optimizer.step()
            curve.end_epoch()
        self.loss_curve_ = curve.curve()

    @torch.no_grad()
    def _forward_output(self, X):
        logits = self.model_(torch.from_numpy(X).to(torch.device(self.device)))
        if self.net_.loss == "hinge":
            out = logits
        elif self.net_.n_outputs == 1:
            out = torch.sigmoid(logits)
        else:
            out = torch.softmax(logits, dim=1)
        return out.cpu().numpy()

    def _weights(self):
        params = []
        for m in self._trainable(self.model_):
            params += [m.weight.detach().cpu().numpy(), m.bias.detach().cpu().numpy()]
        return self._from_torch(params)

    def _restore(self, weights):
        self.model_ = self._build(weights).to(torch.device(self.device))
