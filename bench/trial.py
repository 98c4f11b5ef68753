"""run(spec) -> one result row: the whole life of a trial, importable and testable without Ray.

Order of work: determinism and threads first (before any library computes), then data, split,
model, fit, predict, metrics, hashes, environment. Any exception becomes an `error` row with the
exception type, message and the end of the traceback; a trial never raises, so one bad trial
cannot take a sweep down with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import threading
import time
import traceback
from typing import Any

import numpy as np

from bench import determinism, fingerprint
from bench.data import RawDataset, load, split
from bench.faults import inject
from bench.spec import TrialSpec

TRACEBACK_LINES = 12


def spec_row(spec: TrialSpec) -> dict[str, Any]:
    """The identity and spec columns of a row: all an error row needs."""
    from dataclasses import asdict

    return {"trial_key": spec.trial_key, **asdict(spec)}


def _import_for(spec: TrialSpec) -> None:
    from bench.backends import estimator_class

    estimator_class(spec.library)
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401


def make_estimator(spec: TrialSpec):
    from bench.backends import estimator_class

    hp = spec.hparams_dict()
    return estimator_class(spec.library)(
        model=spec.model,
        mode=spec.mode,
        conv_channels=tuple(hp.get("conv_channels") or ()),
        kernel_size=hp.get("kernel_size", 3),
        hidden_sizes=tuple(hp["hidden_sizes"]),
        activation=hp["activation"],
        lr=hp["lr"],
        beta1=hp["beta1"],
        beta2=hp["beta2"],
        eps=hp["eps"],
        alpha=hp["alpha"],
        batch_size=hp["batch_size"],
        epochs=hp["epochs"],
        seed_init=spec.seed_init,
        seed_order=spec.seed_order,
        init_mode=spec.init_mode,
        order_mode=spec.order_mode,
        device=spec.device,
    )


def test_scores(estimator, X: np.ndarray) -> tuple[np.ndarray, bool]:
    """(n, k) class scores for the row, and whether they are probabilities. A hinge-loss model
    (linear_svm) has margins, not probabilities: they are squashed (sigmoid / softmax) so that
    argmax, accuracy and ROC AUC hold, and the row's log_loss is NaN rather than a made-up number."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X), True
    margins = np.asarray(estimator.decision_function(X), dtype=np.float64)
    if margins.ndim == 1:
        p = 1.0 / (1.0 + np.exp(-margins))
        return np.column_stack([1.0 - p, p]), False
    e = np.exp(margins - margins.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), False


def _train(spec: TrialSpec, raw: RawDataset) -> dict[str, Any]:
    from bench.metrics import classification_metrics

    data = split(raw, spec.seed_split, spec.dataset_dict()["test_size"])
    estimator = make_estimator(spec)
    flagged: list[str] = []
    with determinism.nondeterministic_ops(flagged):
        t0 = time.perf_counter()
        estimator.fit(data.X_train, data.y_train)
        t1 = time.perf_counter()
        proba, calibrated = test_scores(estimator, data.X_test)
        t2 = time.perf_counter()
    y_pred = estimator.classes_[np.argmax(proba, axis=1)]
    weights = estimator.get_weights()
    score = (
        proba[:, 1]
        if proba.shape[1] == 2
        else proba[np.arange(len(proba)), np.argmax(proba, axis=1)]
    )
    return {
        **classification_metrics(data.y_test, proba),
        **({} if calibrated else {"log_loss": float("nan")}),
        "n_train": len(data.y_train),
        "n_test": len(data.y_test),
        "n_params": int(sum(w.size for w in weights)),
        "fit_seconds": t1 - t0,
        "predict_seconds": t2 - t1,
        "weights_sha256": fingerprint.weights_sha256(weights),
        "predictions_sha256": fingerprint.predictions_sha256(y_pred, proba),
        "test_index": data.test_index.tolist(),
        "y_true": data.y_test.tolist(),
        "y_pred": y_pred.astype(np.int64).tolist(),
        "y_score": score.astype(np.float64).tolist(),
        "y_proba": proba.tolist(),
        "nondeterministic_ops": ",".join(sorted(set(flagged))) or None,
    }


class TrialTimeout(Exception):
    """Raised inside the trial when `timeout_s` elapses."""


@contextlib.contextmanager
def _deadline(timeout_s: float | None):
    """Interrupt the trial after `timeout_s` with SIGALRM (main thread only, where signals land).

    A hang inside a C call that never returns to Python is not interrupted here; the runner's
    backstop kills such a worker from outside.
    """
    if not timeout_s or threading.current_thread() is not threading.main_thread():
        yield
        return

    def _expire(signum, frame):
        raise TrialTimeout(f"timeout: trial exceeded trial_timeout_s={timeout_s:g}")

    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(
    spec: TrialSpec,
    raw: RawDataset | None = None,
    dataset_cfg: dict[str, Any] | None = None,
    faults: dict[str, Any] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Train and evaluate one trial. `raw` is the loaded dataset if the caller has it; otherwise it
    is loaded from `dataset_cfg` (needed for a heart file's path), or from the spec alone.
    `faults` injects failures for tests (bench.faults); `timeout_s` turns a hang into an error row."""
    start = time.perf_counter()
    row: dict[str, Any] = {
        **spec_row(spec),
        "started_at": dt.datetime.now(dt.UTC),
        "worker_pid": os.getpid(),
    }
    try:
        row.update(determinism.apply(spec))
        _import_for(spec)  # first-trial imports are not part of the trial's time budget
        if raw is None:
            raw = load(dataset_cfg or {"name": spec.dataset, **spec.dataset_dict()})
        with _deadline(timeout_s):
            inject(spec, faults)
            row.update(_train(spec, raw))
        row.update(status="ok", error=None)
    except TrialTimeout as exc:
        row.update(status="error", error=str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure must become a row
        tail = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
        row.update(status="error", error=f"{type(exc).__name__}: {exc}\n{tail}")
    row.update(fingerprint.environment(spec.library, spec.device))
    row["total_seconds"] = time.perf_counter() - start
    return row
