"""Per-epoch training loss, recorded without slowing or changing the training.

Every trial that trains in epochs keeps its curve in its row (`train_loss`: one value per epoch,
the mean over the epoch's rows of the minibatch objective the optimiser minimised, its L2 term
included), so that the report can draw a setup's seeds on one plot. That is scikit-learn's
`MLPClassifier.loss_curve_` definition, which bench's PyTorch and Keras loops share: in `shared`
mode the three libraries' curves agree as their weights do.

In PyTorch the batch losses are detached and summed on the device, and read once when the fit
ends: no host synchronisation per step (on a GPU that would stall the queue), and the gradient
never sees them, so the weights are bitwise those of a fit without the curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class EpochLoss:
    """Sums a PyTorch loss (a scalar, or one value per stacked member) over an epoch's batches,
    weighted by their rows."""

    def __init__(self) -> None:
        self._epochs: list[Any] = []
        self._sum: Any = None
        self._rows = 0

    def add(self, loss: Any, rows: int) -> None:
        value = loss.detach() * rows
        self._sum = value if self._sum is None else self._sum + value
        self._rows += rows

    def end_epoch(self) -> None:
        if self._sum is not None:
            self._epochs.append(self._sum / self._rows)
        self._sum, self._rows = None, 0

    def curve(self) -> np.ndarray:
        """(epochs,) for one model, (members, epochs) for a stack; float64."""
        if not self._epochs:
            return np.zeros(0)
        import torch

        return torch.stack(self._epochs, dim=-1).double().cpu().numpy()


def of(estimator: Any) -> np.ndarray | None:
    """A fitted estimator's curve: bench's estimators and scikit-learn's MLP (`loss_curve_`);
    None for models that do not train in epochs (a solver run to convergence, a tree)."""
    curve = getattr(estimator, "loss_curve_", None)
    return None if curve is None else np.asarray(curve, dtype=np.float64)
