"""run(spec) -> one result row: the whole life of a trial, importable and testable without Ray.

Order of work: determinism and threads first (before any library computes), then data, split,
model, fit, predict, metrics, hashes, environment. Any exception becomes an `error` row with the
exception type, message and the end of the traceback; a trial never raises, so one bad trial
cannot take a sweep down with it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import threading
import time
import traceback
from typing import Any

import numpy as np
import pyarrow as pa

from bench import determinism, fingerprint
from bench.config import SKLEARN_ONLY_PARAMS
from bench.data import RawDataset, load, split, split_many
from bench.faults import inject
from bench.outcomes import outcomes
from bench.rows import to_batch
from bench.spec import TrialSpec, group_key

TRACEBACK_LINES = 12


def spec_row(spec: TrialSpec) -> dict[str, Any]:
    """The identity and spec columns of a row: all an error row needs."""
    return {"trial_key": spec.trial_key, **spec.fields_dict()}


def _import_for(spec: TrialSpec) -> None:
    from bench.backends import estimator_class

    estimator_class(spec.library)
    import sklearn.metrics  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    if spec.library == "torch":
        # The first torch.optim optimizer a process builds imports torch._dynamo (1.2-2.8 s here):
        # inside the first trial's fit_seconds it made deterministic mode look 30x cheaper.
        import torch._dynamo  # noqa: F401


def sklearn_only_estimator(spec: TrialSpec):
    """svm_rbf / decision_tree: the scikit-learn estimator itself, with the spec's params.

    The SVM has no `probability=True`: Platt scaling would run a hidden 5-fold CV with its own
    random state; its margins are squashed for the row instead (`test_scores`). The tree's
    random_state is `seed_init` (it breaks ties between equally good splits)."""
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    params = spec.hparams_dict()
    if spec.model == "svm_rbf":
        return SVC(kernel="rbf", **params)
    return DecisionTreeClassifier(random_state=spec.seed_init, **params)


def fitted_weights(estimator) -> list[np.ndarray]:
    """The fitted state to hash: a bench estimator's weights, an SVM's support vectors and dual
    coefficients, a tree's structure and leaf values."""
    if hasattr(estimator, "get_weights"):  # in the dtype it trained in (float64 sklearn defaults)
        return [np.asarray(w) for w in estimator._weights()]
    if hasattr(estimator, "tree_"):
        t = estimator.tree_
        return [t.children_left, t.children_right, t.feature, t.threshold, t.value]
    return [estimator.support_vectors_, estimator.dual_coef_, estimator.intercept_]


def grid_search(
    estimator, search: dict[str, Any], seed_cv: int, X: np.ndarray, y: np.ndarray
) -> tuple[Any, dict[str, Any]]:
    """GridSearchCV over `search["grid"]` with stratified k-fold folds shuffled by `seed_cv`, refit
    on all of X. Returns the refit estimator and the row's `cv_score` (best mean CV score) and
    `best_params` (JSON). The folds have their own seed so that the CV's randomness is a source
    of its own, separate from the split, the batch order and the initial weights."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    folds = StratifiedKFold(n_splits=search["folds"], shuffle=True, random_state=seed_cv)
    gs = GridSearchCV(
        estimator, search["grid"], scoring=search["scoring"], cv=folds, error_score="raise"
    )
    gs.fit(X, y)
    best = json.dumps(gs.best_params_, sort_keys=True, default=_json_value)
    return gs.best_estimator_, {"cv_score": float(gs.best_score_), "best_params": best}


def _json_value(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def make_estimator(spec: TrialSpec):
    from bench.backends import estimator_class

    if spec.model in SKLEARN_ONLY_PARAMS:
        return sklearn_only_estimator(spec)
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


def _train(
    spec: TrialSpec, raw: RawDataset, keep_weights: bool = False, predictions: str = "full"
) -> tuple[dict[str, Any], dict[str, list]]:
    """Train and evaluate one trial: its row's outcome columns, and its list columns."""
    data = split(raw, spec.seed_split, spec.dataset_dict()["test_size"])
    estimator = make_estimator(spec)
    search = spec.search_dict()
    tuned: dict[str, Any] = {}
    flagged: list[str] = []
    with determinism.nondeterministic_ops(flagged):
        t0 = time.perf_counter()
        if search is None:
            estimator.fit(data.X_train, data.y_train)
        else:  # fit_seconds then covers the whole search, refit included
            estimator, tuned = grid_search(
                estimator, search, spec.seed_cv, data.X_train, data.y_train
            )
        t1 = time.perf_counter()
        proba, calibrated = test_scores(estimator, data.X_test)
        t2 = time.perf_counter()
    rows, lists = outcomes(
        [data], [np.asarray(proba)], [estimator.classes_], [fitted_weights(estimator)],
        t1 - t0, t2 - t1, flagged, calibrated, keep_weights, predictions,
    )  # fmt: skip
    return {**rows[0], **tuned}, lists


def _train_stack(
    specs: list[TrialSpec],
    raw: RawDataset,
    fused: bool,
    compile: bool,
    keep_weights: bool,
    predictions: str,
) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Train a stack (bench.backends.torch_batched) and evaluate every member at once."""
    from bench.backends.torch_batched import Member, fit_stack

    first = specs[0]
    splits = split_many(raw, [s.seed_split for s in specs], first.dataset_dict()["test_size"])
    members = [Member(s.seed_init, s.seed_order, splits[s.seed_split]) for s in specs]
    flagged: list[str] = []
    with determinism.nondeterministic_ops(flagged):
        result = fit_stack(make_estimator(first), members, fused=fused, compile=compile)
    n = len(specs)
    return outcomes(
        [m.data for m in members], result.proba, result.classes, result.weights,
        result.fit_seconds / n, result.predict_seconds / n, flagged,
        keep_weights=keep_weights, predictions=predictions,
    )  # fmt: skip


def _dry(
    specs: list[TrialSpec], raw: RawDataset, predictions: str
) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Rows for `specs` without training: real splits, made-up probabilities (bench.outcomes)."""
    from bench.outcomes import made_up_proba

    test_size = specs[0].dataset_dict()["test_size"]
    splits = split_many(raw, [s.seed_split for s in specs], test_size)
    data = [splits[s.seed_split] for s in specs]
    proba = made_up_proba(data, [s.seed_init for s in specs])
    classes = [np.arange(d.n_classes) for d in data]
    return outcomes(data, proba, classes, [[] for _ in specs], 0.0, 0.0, [],
                    predictions=predictions)  # fmt: skip


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


def run(spec: TrialSpec, **options: Any) -> dict[str, Any]:
    """One trial's row as a dict (`run_batch`'s one row): for callers that want to look at it."""
    return run_batch(spec, **options).to_pylist()[0]


def run_batch(
    spec: TrialSpec,
    raw: RawDataset | None = None,
    dataset_cfg: dict[str, Any] | None = None,
    faults: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    keep_weights: bool = False,
    predictions: str = "full",
    dry_run: bool = False,
) -> pa.RecordBatch:
    """Train and evaluate one trial; its row as a one-row record batch. `raw` is the loaded
    dataset if the caller has it; otherwise it is loaded from `dataset_cfg` (needed for a heart
    file's path), or from the spec alone. `faults` injects failures for tests (bench.faults);
    `timeout_s` turns a hang into an error row; `keep_weights` stores the final weights in the
    row; `predictions` says which per-row arrays it keeps (bench.outcomes); `dry_run` makes the
    row without training (`dry_run=true` in its row, metrics of made-up probabilities)."""
    start = time.perf_counter()
    row: dict[str, Any] = {
        **spec_row(spec),
        "started_at": dt.datetime.now(dt.UTC),
        "worker_pid": os.getpid(),
        "batched": False,
        "group_size": 1,
        "group_index": 0,
        "batch_fused_adam": False,
        "batch_compiled": False,
    }
    lists: dict[str, list] = {}
    try:
        row.update(determinism.apply(spec))
        _import_for(spec)  # first-trial imports are not part of the trial's time budget
        if raw is None:
            raw = load(dataset_cfg or {"name": spec.dataset, **spec.dataset_dict()})
        with _deadline(timeout_s):
            inject(spec, faults)
            if dry_run:
                outcome, lists = _dry([spec], raw, predictions)
                row.update(outcome[0], dry_run=True)
            else:
                outcome, lists = _train(spec, raw, keep_weights, predictions)
                row.update(outcome)
        row.update(status="ok", error=None)
    except Exception as exc:  # noqa: BLE001 - every failure must become a row
        row.update(status="error", error=error_text(exc))
        lists = {}
    row.update(fingerprint.environment(spec.library, spec.device))
    row["total_seconds"] = time.perf_counter() - start
    return to_batch([row], lists)


def error_text(exc: BaseException) -> str:
    """What an error row says: the exception, and the end of its traceback (not for timeouts)."""
    if isinstance(exc, TrialTimeout):
        return str(exc)
    tail = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
    return f"{type(exc).__name__}: {exc}\n{tail}"


def run_group(specs: list[TrialSpec], **options: Any) -> list[dict[str, Any]]:
    """A stack's rows as dicts (`run_group_batch`'s rows)."""
    return run_group_batch(specs, **options).to_pylist()


def run_group_batch(
    specs: list[TrialSpec],
    raw: RawDataset | None = None,
    dataset_cfg: dict[str, Any] | None = None,
    faults: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    fused: bool = False,
    compile: bool = False,
    keep_weights: bool = False,
    predictions: str = "full",
    dry_run: bool = False,
) -> pa.RecordBatch:
    """Train trials that differ only in seeds as one stacked model (bench.backends.torch_batched);
    one row per trial, as `run_batch` would write it, plus `batched=True`, the group size and
    the stack's kernels (fused Adam, torch.compile: both change the last bits). The group
    shares one fate: an exception, a fault or the timeout (`timeout_s` for the whole group) turns
    every trial of it into an error row. `fit_seconds` is the group's training time divided by its
    size (the amortised cost of one model). `group_key` names the group (its trial keys, in
    order): a stack's last bits may depend on its size on some CPUs, so replay trains it again
    whole. Splits, metrics and hashes are computed for all members at once (bench.data.split_many,
    bench.outcomes)."""
    start = time.perf_counter()
    first = specs[0]
    group = group_key(specs)
    now = dt.datetime.now(dt.UTC)
    common = {"started_at": now, "worker_pid": os.getpid(), "batched": True,
              "group_size": len(specs), "group_key": group, "batch_fused_adam": fused,
              "batch_compiled": compile,
              "cxx_version": fingerprint.cxx_version() if compile else None}  # fmt: skip
    rows = [{**spec_row(s), **common, "group_index": i} for i, s in enumerate(specs)]
    lists: dict[str, list] = {}
    try:
        settings = determinism.apply(first)
        for row in rows:
            row.update(settings)
        _import_for(first)
        if raw is None:
            raw = load(dataset_cfg or {"name": first.dataset, **first.dataset_dict()})
        with _deadline(timeout_s):
            for spec in specs:
                inject(spec, faults)
            if dry_run:
                outcome, lists = _dry(specs, raw, predictions)
            else:
                outcome, lists = _train_stack(specs, raw, fused, compile, keep_weights, predictions)
        dry = {"dry_run": True} if dry_run else {}
        for row, columns in zip(rows, outcome, strict=True):  # all computed before any changes
            row.update(columns, status="ok", error=None, **dry)
    except Exception as exc:  # noqa: BLE001 - every failure must become a row
        lists = {}
        for row in rows:
            row.update(status="error", error=error_text(exc))
    environment = fingerprint.environment(first.library, first.device)
    total = (time.perf_counter() - start) / len(specs)
    for row in rows:
        row.update(environment)
        row["total_seconds"] = total
    return to_batch(rows, lists)
