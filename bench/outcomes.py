"""What a trained model's row says, for a whole stack of members at once: metrics, hashes,
predictions, weights.

One path for every trial: a one-by-one trial is a stack of one. The metrics are array operations
over all members (bench.metrics); the per-row arrays stay numpy arrays until bench.rows wraps them
as Arrow lists, so nothing here builds Python lists of numbers.

`predictions` keeps the rows smaller when a sweep does not need them all:
- `full`: test row numbers, true labels, predicted labels, scores and class probabilities;
- `compact`: test row numbers, true and predicted labels: enough for churn, flips and per-class
  accuracy, not for score-based analysis (the probabilities dominate a row's bytes);
- `none`: no per-row arrays; the predictions' hash is still there, churn is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench import fingerprint
from bench.data import Split
from bench.metrics import classification_metrics_many

PREDICTIONS = ("full", "compact", "none")
_KEPT = {
    "full": ("test_index", "y_true", "y_pred", "y_score", "y_proba"),
    "compact": ("test_index", "y_true", "y_pred"),
    "none": (),
}


def flat_weights(weights: list[np.ndarray]) -> np.ndarray:
    """All weights in one float64 vector, in `fingerprint.weights_sha256`'s order."""
    if not weights:
        return np.zeros(0)
    return np.concatenate([np.asarray(w, dtype=np.float64).ravel() for w in weights])


def _metrics(splits: list[Split], proba: list[np.ndarray]) -> list[dict[str, float]]:
    """Every member's metrics, in as few array operations as the shapes allow (a stack's members
    all have one shape; a one-by-one trial is its own)."""
    by_shape: dict[tuple, list[int]] = {}
    for i, p in enumerate(proba):
        by_shape.setdefault(p.shape, []).append(i)
    out: list[dict[str, float]] = [{} for _ in proba]
    for members in by_shape.values():
        many = classification_metrics_many(
            np.stack([splits[i].y_test for i in members]), np.stack([proba[i] for i in members])
        )
        for j, i in enumerate(members):
            out[i] = {name: float(values[j]) for name, values in many.items()}
    return out


def outcomes(
    splits: list[Split],
    proba: list[np.ndarray],
    classes: list[np.ndarray],
    weights: list[list[np.ndarray]],
    fit_seconds: float,
    predict_seconds: float,
    flagged: list[str],
    calibrated: bool = True,
    keep_weights: bool = False,
    predictions: str = "full",
    losses: list[np.ndarray | None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list[np.ndarray | None]]]:
    """Each member's scalar columns, and its list columns (bench.rows.to_batch's `lists`).
    `calibrated=False`: the scores are squashed margins, so log loss is NaN, not made up.
    `losses`: each member's per-epoch training loss (bench.backends.loss_curve), kept whatever
    `predictions` says (a few numbers per row)."""
    if predictions not in PREDICTIONS:
        raise ValueError(f"predictions: expected one of {PREDICTIONS}, got {predictions!r}")
    flagged_text = ",".join(sorted(set(flagged))) or None
    rows: list[dict[str, Any]] = []
    lists: dict[str, list[np.ndarray | None]] = {c: [] for c in (*_KEPT["full"], "weights")}
    lists["train_loss"] = list(losses) if losses is not None else [None] * len(splits)
    for data, p, cls, w, metrics in zip(
        splits, proba, classes, weights, _metrics(splits, proba), strict=True
    ):
        argmax = np.argmax(p, axis=1)
        y_pred = cls[argmax].astype(np.int64)
        score = p[:, 1] if p.shape[1] == 2 else p[np.arange(len(p)), argmax]
        rows.append(
            {
                **metrics,
                **({} if calibrated else {"log_loss": float("nan")}),
                "n_train": len(data.y_train),
                "n_test": len(data.y_test),
                "n_params": int(sum(np.asarray(x).size for x in w)),
                "fit_seconds": fit_seconds,
                "predict_seconds": predict_seconds,
                "weights_sha256": fingerprint.weights_sha256(w),
                "predictions_sha256": fingerprint.predictions_sha256(y_pred, p),
                "predictions_dtype": p.dtype.name,  # the scores' dtype, as the hash covers them
                "nondeterministic_ops": flagged_text,
                # Warn-only mode ran a kernel without a deterministic implementation: whatever
                # the switch reads, this training was not deterministic.
                **({"deterministic_in_force": False} if flagged_text else {}),
            }
        )
        lists["test_index"].append(data.test_index)
        lists["y_true"].append(data.y_test)
        lists["y_pred"].append(y_pred)
        lists["y_score"].append(score)
        lists["y_proba"].append(p)
        lists["weights"].append(flat_weights(w) if keep_weights else None)
    for column in _KEPT["full"]:
        if column not in _KEPT[predictions]:
            lists[column] = [None] * len(rows)
    return rows, lists


def made_up_proba(splits: list[Split], seeds: list[int]) -> list[np.ndarray]:
    """Class probabilities drawn from each trial's init seed, for `dry_run` sweeps: rows of the
    real shape and size (the real split, metrics, hashes and Arrow path) without any training,
    to measure what bench does around the trainer at a million trials."""
    out = []
    for data, seed in zip(splits, seeds, strict=True):
        p = np.random.default_rng(seed).random((len(data.y_test), data.n_classes), np.float32)
        out.append(p / p.sum(axis=1, keepdims=True))
    return out
