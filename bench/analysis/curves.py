"""Training-loss curves across seeds: each trial's `train_loss` (one value per epoch,
bench.backends.loss_curve) gathered per setup.

Seeds move a model's whole training trajectory, not only its final metric: curves that fan out
early and meet at the end say the seed matters for when training converges, not where; curves
that stay apart say it matters for the result. `curve_summary` gives the numbers, and
`bench.analysis.plots.loss_curves` draws a setup's seeds on one plot.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bench.analysis.common import groups


def with_curves(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that have a loss curve (models trained in epochs; runs since bench 0.7.0)."""
    if "train_loss" not in df.columns:
        return df.iloc[0:0]
    has = df["train_loss"].map(lambda c: c is not None and len(c) > 0)
    return df[has]


def curves(rows: pd.DataFrame) -> np.ndarray:
    """(trials, epochs) of rows whose curves have one length (NaN-padded if they differ)."""
    arrays = [np.asarray(c, dtype=float) for c in rows["train_loss"]]
    width = max((len(a) for a in arrays), default=0)
    out = np.full((len(arrays), width), np.nan)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def curve_summary(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per setup: how many curves, epochs, the median loss after the first and the last epoch,
    the final loss's spread across seeds (sd, min, max), and the epoch where the seeds' curves
    are furthest apart relative to their median (`widest_epoch`, 1-based)."""
    records = []
    for key, sub in groups(with_curves(df), list(by)):
        c = curves(sub)
        final = c[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            relative = (np.nanmax(c, axis=0) - np.nanmin(c, axis=0)) / np.nanmedian(c, axis=0)
        records.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": len(sub),
                "epochs": c.shape[1],
                "first_median": float(np.nanmedian(c[:, 0])),
                "final_median": float(np.nanmedian(final)),
                "final_sd": float(np.nanstd(final, ddof=1)) if len(final) > 1 else float("nan"),
                "final_min": float(np.nanmin(final)),
                "final_max": float(np.nanmax(final)),
                "widest_epoch": int(np.nanargmax(relative)) + 1 if len(sub) > 1 else 1,
            }
        )
    return pd.DataFrame.from_records(records)
