"""Test-set metrics from class probabilities, for a whole stack of trials at once.

scikit-learn's metric functions validate their inputs on every call (about 4 ms a call here, five
calls a trial): for a stack of hundreds of seeds that was more than the training. These are the
same definitions as array operations over all members (`y_true` (N, n), `proba` (N, n, k)); tests
compare them with scikit-learn's own functions to 1e-12, with ties in the scores and a class
missing from a test set:
- accuracy: mean of y_true == argmax;
- balanced accuracy: mean recall over the classes present in y_true;
- F1: the positive class's (binary) or the unweighted mean over all k classes (multiclass), 0 where
  a class is neither true nor predicted (scikit-learn's zero_division);
- log loss: mean of -log p(true class), probabilities renormalised in float64 and clipped to
  float64's eps;
- ROC AUC: the Mann-Whitney statistic with tied scores at their average rank (equal to the area
  under the trapezoidal ROC curve scikit-learn computes); multiclass: one-vs-rest, macro; NaN when a
  class is absent from the test rows, where AUC is undefined.
"""

from __future__ import annotations

import numpy as np

NAMES = ("accuracy", "balanced_accuracy", "f1", "log_loss", "roc_auc")


def _auc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC AUC of each row of `scores` (N, n) for the boolean labels `positive` (N, n)."""
    from scipy.stats import rankdata

    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    ranks = rankdata(scores, axis=1)  # average ranks: ties count one half
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (np.where(positive, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (
            n_pos * n_neg
        )
    return np.where((n_pos == 0) | (n_neg == 0), np.nan, auc)


def classification_metrics_many(y_true: np.ndarray, proba: np.ndarray) -> dict[str, np.ndarray]:
    """The five metrics of every member: `y_true` (N, n) class indices, `proba` (N, n, k)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba)
    n_members, n, k = proba.shape
    p64 = proba.astype(np.float64)
    p64 /= p64.sum(axis=2, keepdims=True)
    y_pred = np.argmax(proba, axis=2)
    classes = np.arange(k)
    true_hot = y_true[..., None] == classes  # (N, n, k)
    pred_hot = y_pred[..., None] == classes
    tp = (true_hot & pred_hot).sum(axis=1).astype(np.float64)  # (N, k)
    true_sum = true_hot.sum(axis=1).astype(np.float64)
    pred_sum = pred_hot.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / true_sum
        f1_class = np.where(true_sum + pred_sum > 0, 2 * tp / (true_sum + pred_sum), 0.0)
    present = true_sum > 0
    balanced = np.where(present, recall, 0.0).sum(axis=1) / present.sum(axis=1)
    f1 = f1_class[:, 1] if k == 2 else f1_class.mean(axis=1)
    p_true = np.take_along_axis(p64, y_true[..., None], axis=2)[..., 0]
    eps = np.finfo(np.float64).eps
    log_loss = -np.log(np.clip(p_true, eps, 1 - eps)).mean(axis=1)
    if k == 2:
        roc_auc = _auc(proba[..., 1], y_true == 1)
    else:
        per_class = np.stack([_auc(p64[..., c], y_true == c) for c in range(k)], axis=1)
        roc_auc = per_class.mean(axis=1)  # NaN if any class is absent, as scikit-learn refuses
    return {
        "accuracy": (y_true == y_pred).mean(axis=1),
        "balanced_accuracy": balanced,
        "f1": f1,
        "log_loss": log_loss,
        "roc_auc": roc_auc,
    }


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """One trial's metrics (`classification_metrics_many` for a stack of one)."""
    many = classification_metrics_many(np.asarray(y_true)[None], np.asarray(proba)[None])
    return {name: float(values[0]) for name, values in many.items()}


def sklearn_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """The same five metrics through scikit-learn's own functions: the reference the tests and
    `python -m bench.perf hostwork` hold `classification_metrics_many` to."""
    from sklearn import metrics

    n_classes = proba.shape[1]
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
            zero_division=0.0,
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
