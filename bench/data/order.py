"""The shared batch order: every epoch's permutation drawn in numpy from the order seed."""

from __future__ import annotations

import numpy as np


def epoch_orders(n: int, seed_order: int, epochs: int) -> list[np.ndarray]:
    """One permutation of range(n) per epoch; any library can consume exactly these."""
    rng = np.random.default_rng(seed_order)
    return [rng.permutation(n) for _ in range(epochs)]
