"""Test-set metrics from class probabilities (scikit-learn's definitions, one place)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    from sklearn import metrics

    n_classes = proba.shape[1]
    # float32 rows sum to 1 only within rounding; scikit-learn warns (and renormalises) otherwise.
    p64 = proba.astype(np.float64)
    p64 /= p64.sum(axis=1, keepdims=True)
    y_pred = np.argmax(proba, axis=1)
    labels = np.arange(n_classes)
    binary = n_classes == 2
    out = {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "balanced_accuracy": metrics.balanced_accuracy_score(y_true, y_pred),
        "f1": metrics.f1_score(
            y_true,
            y_pred,
            average="binary" if binary else "macro",
            labels=None if binary else labels,
        ),
        "log_loss": metrics.log_loss(y_true, p64, labels=labels),
    }
    try:
        if binary:
            out["roc_auc"] = metrics.roc_auc_score(y_true, proba[:, 1])
        else:
            out["roc_auc"] = metrics.roc_auc_score(y_true, p64, multi_class="ovr", labels=labels)
    except ValueError:  # a class absent from the test rows: AUC is undefined, not zero
        out["roc_auc"] = float("nan")
    return {k: float(v) for k, v in out.items()}
