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
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import determinism, fingerprint
from bench.backends import loss_curve
from bench.config import SKLEARN_ONLY_PARAMS, USER_MODELS, USER_NETWORKS, USER_TRAINING
from bench.data import RawDataset, Split, load, split, split_many
from bench.data.split import LabelFlip, preprocessing, takes_sklearn_path, train_index
from bench.faults import inject
from bench.outcomes import outcomes
from bench.rows import to_batch
from bench.spec import TrialSpec, group_key

TRACEBACK_LINES = 12


def spec_row(spec: TrialSpec) -> dict[str, Any]:
    """The identity and spec columns of a row: all an error row needs, with the seed sources
    that reach its training (bench.backends.seed_use)."""
    return spec.row_fields()


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
    """svm_rbf / decision_tree / sklearn_estimator: the scikit-learn estimator itself, with the
    spec's params.

    The SVM has no `probability=True`: Platt scaling would run a hidden 5-fold CV with its own
    random state; its margins are squashed for the row instead (`test_scores`). The tree's
    random_state is `seed_init` (it breaks ties between equally good splits)."""
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    params = spec.hparams_dict()
    if spec.model == "sklearn_estimator":
        from bench.backends.user_sklearn import build

        target = params.pop("_target_")
        return build(target, params, spec.seed_init)
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
    if hasattr(estimator, "support_vectors_"):
        return [estimator.support_vectors_, estimator.dual_coef_, estimator.intercept_]
    return _fitted_state(estimator)


def _fitted_state(obj: Any, depth: int = 0) -> list[np.ndarray]:
    """Any scikit-learn estimator's fitted state (model=sklearn_estimator): every attribute that
    is not a constructor argument (fitted ones such as `coef_`, and private ones such as a
    k-NN's `_fit_X`) in name order; numbers and arrays as they are, trees by their structure,
    sub-estimators (a forest's trees, a pipeline's steps) likewise, a few levels deep."""
    arguments = set(obj.get_params(deep=False)) if hasattr(obj, "get_params") else set()
    out: list[np.ndarray] = []
    for name in sorted(set(vars(obj)) - arguments):
        out += _state_of(getattr(obj, name), depth)
    return out


def _state_of(value: Any, depth: int) -> list[np.ndarray]:
    if depth > 3:
        return []
    if isinstance(value, np.ndarray) and value.dtype != object:
        return [value]
    if isinstance(value, (bool, int, float, np.number)):
        return [np.asarray(value)]
    if hasattr(value, "children_left"):  # a fitted tree (sklearn.tree._tree.Tree)
        return [value.children_left, value.children_right, value.feature, value.threshold,
                value.value]  # fmt: skip
    if isinstance(value, (list, tuple, np.ndarray)):
        return [a for v in value for a in _state_of(v, depth + 1)]
    if hasattr(value, "get_params"):
        return _fitted_state(value, depth + 1)
    return []


def grid_search(
    estimator,
    preprocess,
    search: dict[str, Any],
    seed_cv: int,
    X_raw: np.ndarray,
    y: np.ndarray,
) -> tuple[Any, dict[str, Any]]:
    """GridSearchCV over `search["grid"]` with stratified k-fold folds shuffled by `seed_cv`, of
    `Pipeline([preprocess, estimator])` on the raw training rows `X_raw`: each fold fits the
    preprocessing (imputation, scaling, one-hot encoding: bench.data.split.preprocessing) on its
    own training rows only, so no statistic of a fold's validation rows reaches its model. The
    best pipeline is refit on all of `X_raw` (the preprocessing then is the split's own: the same
    arrays as a trial without search). Returns the refit pipeline and the row's `cv_score` (best
    mean CV score) and `best_params` (JSON, the estimator's parameter names without the
    pipeline's `estimator__`). The folds have their own seed so that the CV's randomness is a
    source of its own, separate from the split, the batch order and the initial weights."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    pipeline = Pipeline([("preprocess", preprocess), ("estimator", estimator)])
    grid = {f"estimator__{k}": v for k, v in search["grid"].items()}
    folds = StratifiedKFold(n_splits=search["folds"], shuffle=True, random_state=seed_cv)
    gs = GridSearchCV(pipeline, grid, scoring=search["scoring"], cv=folds, error_score="raise")
    gs.fit(X_raw, y)
    params = {k.removeprefix("estimator__"): v for k, v in gs.best_params_.items()}
    best = json.dumps(params, sort_keys=True, default=_json_value)
    return gs.best_estimator_, {"cv_score": float(gs.best_score_), "best_params": best}


def _json_value(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else str(value)


def user_network(spec: TrialSpec, image_shape: tuple[int, int, int] | None):
    """torch_module / keras_model: the user's network as bench's estimator
    (bench.backends.user_neural), with the spec's seeds and training settings."""
    hp = spec.hparams_dict()
    if spec.library == "torch":
        from bench.backends.user_torch import UserTorchClassifier as cls
    else:
        from bench.backends.user_keras import UserKerasClassifier as cls
    return cls(
        target=hp["_target_"],
        params=hp["params"],
        **{k: hp[k] for k in USER_TRAINING},
        seed_init=spec.seed_init,
        seed_order=spec.seed_order,
        order_mode=spec.order_mode,
        device=spec.device,
        image_shape=image_shape,
    )


def make_estimator(spec: TrialSpec):
    from bench.backends import estimator_class
    from bench.data.images import image_shape

    if spec.model in SKLEARN_ONLY_PARAMS:
        return sklearn_only_estimator(spec)
    shape = image_shape({"name": spec.dataset, **spec.dataset_dict()})
    if spec.model in USER_NETWORKS:
        return user_network(spec, shape)
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
        image_shape=shape,
    )


def test_scores(estimator, X: np.ndarray) -> tuple[np.ndarray, bool]:
    """(n, k) class scores for the row, and whether they are probabilities. A hinge-loss model
    (linear_svm) has margins, not probabilities: they are squashed (sigmoid / softmax) so that
    argmax, accuracy and ROC AUC hold, and the row's log_loss is NaN rather than a made-up number.
    A classifier with neither (a user's, with `predict` alone) scores its predicted class 1."""
    if hasattr(estimator, "predict_proba"):
        return estimator.predict_proba(X), True
    if not hasattr(estimator, "decision_function"):  # a user's classifier with predict alone:
        found = np.searchsorted(estimator.classes_, estimator.predict(X))  # its labels, one-hot
        return np.eye(len(estimator.classes_))[found], False
    margins = np.asarray(estimator.decision_function(X), dtype=np.float64)
    if margins.ndim == 1:
        p = 1.0 / (1.0 + np.exp(-margins))
        return np.column_stack([1.0 - p, p]), False
    e = np.exp(margins - margins.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), False


def split_settings(spec: TrialSpec) -> tuple[float, LabelFlip | None]:
    """What a trial's split takes beside the seed: the test size, and the training-label flip
    (`dataset.flip_fraction`; None when off)."""
    dataset = spec.dataset_dict()
    return dataset["test_size"], LabelFlip.of(dataset)


def _train(
    spec: TrialSpec,
    raw: RawDataset,
    keep_weights: bool = False,
    predictions: str = "full",
    models_to: str | None = None,
) -> tuple[dict[str, Any], dict[str, list]]:
    """Train and evaluate one trial: its row's outcome columns, and its list columns; with
    `models_to` (a run folder), its model and preprocessing stored there (bench.modelstore)."""
    data = split(raw, spec.seed_split, *split_settings(spec))
    estimator = make_estimator(spec)
    search = spec.search_dict()
    tuned: dict[str, Any] = {}
    flagged: list[str] = []
    with determinism.nondeterministic_ops(flagged):
        t0 = time.perf_counter()
        if search is None:
            estimator.fit(data.X_train, data.y_train)
            model, X_test = estimator, data.X_test
        else:  # the raw rows: the search fits the preprocessing per fold (fit_seconds: all of it)
            model, tuned = grid_search(
                estimator, preprocessing(raw), search, spec.seed_cv,
                raw.X[train_index(raw, data)], data.y_train,
            )  # fmt: skip
            estimator, X_test = model[-1], raw.X[data.test_index]
        t1 = time.perf_counter()
        proba, calibrated = test_scores(model, X_test)
        t2 = time.perf_counter()
    rows, lists = outcomes(
        [data], [np.asarray(proba)], [estimator.classes_], [fitted_weights(estimator)],
        t1 - t0, t2 - t1, flagged, calibrated, keep_weights, predictions,
        losses=[loss_curve.of(estimator)],
    )  # fmt: skip
    if models_to:
        from bench import modelstore

        run_dir = Path(models_to)
        rows[0].update(
            modelstore.save_estimator(run_dir, spec, estimator, rows[0]["weights_sha256"])
        )
        fitted = model[:-1] if search is not None else None
        rows[0].update(modelstore.save_preprocessing(run_dir, raw, spec, data, fitted))
    return {**rows[0], **tuned}, lists


def _prepare(specs: list[TrialSpec], raw: RawDataset, dry_run: bool) -> tuple[list[Split], Any]:
    """A stack's splits (bench.data.split_many) and, unless a dry run, its prepared stack
    (bench.backends.torch_batched.prepare_stack): the host work before its first step."""
    splits = split_many(raw, [s.seed_split for s in specs], *split_settings(specs[0]))
    data = [splits[s.seed_split] for s in specs]
    if dry_run:
        return data, None
    from bench.backends.torch_batched import Member, prepare_stack

    if specs[0].model == "torch_module":  # a user's module: stacked by torch.func
        from bench.backends.torch_func import prepare_stack
    members = [Member(s.seed_init, s.seed_order, d) for s, d in zip(specs, data, strict=True)]
    return data, prepare_stack(make_estimator(specs[0]), members)


def _train_stack(prepared: Any, fused: bool, compile: bool) -> tuple[Any, list[str]]:
    """The stack's training and predictions, and the nondeterministic kernels it ran."""
    from bench.backends import torch_func
    from bench.backends.torch_batched import train_stack

    if isinstance(prepared, torch_func.FuncStack):  # a user's module, stacked by torch.func
        train_stack = torch_func.train_stack
    flagged: list[str] = []
    with determinism.nondeterministic_ops(flagged):
        result = train_stack(prepared, fused=fused, compile=compile)
    return result, flagged


def _finish(
    specs: list[TrialSpec],
    data: list[Split],
    trained: tuple[Any, list[str]] | None,
    keep_weights: bool,
    predictions: str,
    models_to: str | None = None,
    raw: RawDataset | None = None,
) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """Every member's outcome columns at once (bench.outcomes); made-up probabilities for a dry
    run (`trained` None); with `models_to`, each member's model and preprocessing stored."""
    if trained is None:
        from bench.outcomes import made_up_proba

        proba = made_up_proba(data, [s.seed_init for s in specs])
        classes = [np.arange(d.n_classes) for d in data]
        return outcomes(data, proba, classes, [[] for _ in specs], 0.0, 0.0, [],
                        predictions=predictions)  # fmt: skip
    result, flagged = trained
    n = len(specs)
    rows, lists = outcomes(
        data, result.proba, result.classes, result.weights, result.fit_seconds / n,
        result.predict_seconds / n, flagged, keep_weights=keep_weights, predictions=predictions,
        losses=result.losses or None,
    )  # fmt: skip
    if models_to:
        from bench import modelstore

        run_dir = Path(models_to)
        for spec, split_, weights, classes, row in zip(
            specs, data, result.weights, result.classes, rows, strict=True
        ):
            blob = modelstore.network_bytes(spec, weights, classes, split_.X_train.shape[1])
            row.update(
                modelstore.save_model(run_dir, spec, row["weights_sha256"], blob, ".safetensors")
            )
            row.update(modelstore.save_preprocessing(run_dir, raw, spec, split_))
    return rows, lists


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
    models_to: str | None = None,
) -> pa.RecordBatch:
    """Train and evaluate one trial; its row as a one-row record batch. `raw` is the loaded
    dataset if the caller has it; otherwise it is loaded from `dataset_cfg` (needed for a heart
    file's path), or from the spec alone. `faults` injects failures for tests (bench.faults);
    `timeout_s` turns a hang into an error row; `keep_weights` stores the final weights in the
    row; `predictions` says which per-row arrays it keeps (bench.outcomes); `dry_run` makes the
    row without training (`dry_run=true` in its row, metrics of made-up probabilities);
    `models_to` (a run folder) stores the fitted model there (save_models=true)."""
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
        row["dataset_sha256"] = raw.sha256
        row["code_sha256"] = code_digest(spec)
        with _deadline(timeout_s):
            inject(spec, faults)
            if dry_run:
                data, _ = _prepare([spec], raw, dry_run=True)
                outcome, lists = _finish([spec], data, None, False, predictions)
                row.update(outcome[0], dry_run=True)
            else:
                outcome, lists = _train(spec, raw, keep_weights, predictions, models_to)
                row.update(outcome)
        row.update(status="ok", error=None)
    except Exception as exc:  # noqa: BLE001 - every failure must become a row
        row.update(status="error", error=error_text(exc))
        lists = {}
    row.update(fingerprint.environment(spec.library, spec.device))
    row["total_seconds"] = time.perf_counter() - start
    return to_batch([row], lists)


def code_digest(spec: TrialSpec) -> str | None:
    """The digest of the user's code a trial trains (bench.backends.user_code), else None."""
    if spec.model not in USER_MODELS:
        return None
    from bench.backends.user_code import code_sha256

    return code_sha256(spec.hparams_dict()["_target_"])


def _unstackable(spec: TrialSpec, raw: RawDataset) -> str | None:
    """Why a user's module cannot be stacked (bench.backends.torch_func.unstackable), or None
    (also for every other model: the sweep stacks only what bench's trainers can stack)."""
    if spec.model != "torch_module":
        return None
    from bench.backends.torch_func import unstackable

    data = split(raw, spec.seed_split, *split_settings(spec))
    return unstackable(make_estimator(spec), data.X_train.shape[1], np.unique(data.y_train))


def error_text(exc: BaseException) -> str:
    """What an error row says: the exception, and the end of its traceback (not for timeouts)."""
    if isinstance(exc, TrialTimeout):
        return str(exc)
    tail = "".join(traceback.format_exception(exc)[-TRACEBACK_LINES:])
    return f"{type(exc).__name__}: {exc}\n{tail}"


def run_group(specs: list[TrialSpec], **options: Any) -> list[dict[str, Any]]:
    """A stack's rows as dicts (`run_group_batch`'s rows)."""
    return run_group_batch(specs, **options).to_pylist()


def stacks_of(specs: list[TrialSpec], stack_size: int | None) -> list[list[TrialSpec]]:
    """`specs` cut into ceil(n / stack_size) stacks, in order, whose sizes differ by one at most
    (all of them: None)."""
    k = -(-len(specs) // stack_size) if stack_size else 1
    size, extra = divmod(len(specs), k)
    starts = [i * size + min(i, extra) for i in range(k + 1)]  # the first `extra` get one more
    return [specs[a:b] for a, b in zip(starts, starts[1:], strict=False)]


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
    stack_size: int | None = None,
    models_to: str | None = None,
) -> pa.RecordBatch:
    """Train trials that differ only in seeds as stacked models (bench.backends.torch_batched):
    one stack, or stacks of at most `stack_size` trained back to back; one row per trial, as
    `run_batch` would write it, plus `batched=True`, the stack's size and its kernels (fused Adam,
    torch.compile: both change the last bits). `group_key` names the trial's stack (its trial
    keys, in order): a stack's last bits may depend on its size on some CPUs, so replay trains
    it again whole.

    While one stack trains on this thread, a helper thread prepares the next (splits,
    preprocessing, initial weights: bench.data.split_many, prepare_stack) and finishes the last
    (metrics, hashes, list columns: bench.outcomes), so with several stacks the host work hides
    behind the training. Each stack shares one fate: an exception, a fault or the timeout
    (`timeout_s` for each stack's training) turns every trial of that stack into an error row.
    `fit_seconds` is a stack's preparation and training divided by its size (the amortised cost
    of one model)."""
    start = time.perf_counter()
    stacks = stacks_of(specs, stack_size)
    first = specs[0]
    now = dt.datetime.now(dt.UTC)
    common = {"started_at": now, "worker_pid": os.getpid(), "batched": True,
              "batch_fused_adam": fused, "batch_compiled": compile,
              "cxx_version": fingerprint.cxx_version() if compile else None}  # fmt: skip
    batches: list[Any] = []  # per stack: a Future of its record batch, or an error's text
    try:
        common.update(determinism.apply(first))
        _import_for(first)
        if raw is None:
            raw = load(dataset_cfg or {"name": first.dataset, **first.dataset_dict()})
        common["dataset_sha256"] = raw.sha256
        common["code_sha256"] = code_digest(first)
        if not dry_run and _unstackable(first, raw):  # a user's module, trained one by one
            options = {"faults": faults, "timeout_s": timeout_s, "keep_weights": keep_weights,
                       "predictions": predictions, "models_to": models_to}  # fmt: skip
            return pa.concat_batches([run_batch(s, raw, **options) for s in specs])
    except Exception as exc:  # noqa: BLE001 - every failure must become a row
        batches = [_Failed(error_text(exc))] * len(stacks)
    common.update(fingerprint.environment(first.library, first.device))

    def finish(stack: list[TrialSpec], data: list[Split], trained: Any) -> pa.RecordBatch:
        rows, lists = _finish(stack, data, trained, keep_weights, predictions, models_to, raw)
        ok = {"status": "ok", "error": None, **({"dry_run": True} if dry_run else {})}
        return _stack_batch(stack, common, rows, ok, lists)

    if not batches:
        batches = _pipeline(stacks, raw, dry_run, timeout_s, faults, fused, compile, finish)
    for k, (stack, batch) in enumerate(zip(stacks, batches, strict=True)):
        if isinstance(batch, _Failed):
            error = {"status": "error", "error": batch.text}
            batches[k] = _stack_batch(stack, common, [{} for _ in stack], error, {})
    out = batches[0] if len(batches) == 1 else pa.concat_batches(batches)
    total = pa.array(np.full(len(specs), (time.perf_counter() - start) / len(specs)))
    return out.set_column(out.schema.get_field_index("total_seconds"), "total_seconds", total)


@dataclass(frozen=True)
class _Failed:
    """A stack's error, as its rows will say it. Kept as text: an exception's traceback would keep
    the failed stack's tensors (GPU memory) alive while the next stacks train."""

    text: str


class _Inline:
    """`ThreadPoolExecutor`'s `submit`, run at once on the calling thread."""

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except Exception as exc:  # noqa: BLE001 - handed over as the Future's exception
            future.set_exception(exc)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pipeline(
    stacks: list[list[TrialSpec]],
    raw: RawDataset,
    dry_run: bool,
    timeout_s: float | None,
    faults: dict[str, Any] | None,
    fused: bool,
    compile: bool,
    finish,
) -> list[Any]:
    """Each stack's record batch, or its `_Failed`: stacks trained in order on this thread, their
    preparation and finishing on a helper thread. Data that takes scikit-learn's path
    (categorical columns, missing values) is prepared here instead: scikit-learn's validation
    enters `warnings.catch_warnings`, which is process-wide and would cut into the capture of
    the nondeterministic kernels the training reports. A helper that hangs is given up after
    `timeout_s`, as the training would be."""
    if takes_sklearn_path(raw):
        helper = _Inline()
    else:
        helper = ThreadPoolExecutor(1, thread_name_prefix="bench-host")
    batches: list[Any] = []
    hung = False

    def wait(future: Future) -> Any:
        nonlocal hung
        try:
            return future.result(timeout=timeout_s)
        except FuturesTimeout:
            hung = True
            raise TrialTimeout(
                f"timeout: a stack's host work exceeded trial_timeout_s={timeout_s:g}"
            ) from None

    try:
        ahead = helper.submit(_prepare, stacks[0], raw, dry_run)
        for k, stack in enumerate(stacks):
            current = ahead
            if k + 1 < len(stacks):  # queued behind the last stack's finish
                ahead = helper.submit(_prepare, stacks[k + 1], raw, dry_run)
            try:
                data, prepared = wait(current)
                with _deadline(timeout_s):
                    for spec in stack:
                        inject(spec, faults)
                    trained = None if dry_run else _train_stack(prepared, fused, compile)
            except Exception as exc:  # noqa: BLE001 - the stack's rows say it
                batches.append(_Failed(error_text(exc)))
                continue
            finally:
                prepared = None  # the next stack's arrays replace these, not join them
            batches.append(helper.submit(finish, stack, data, trained))
            trained = None
        out = []
        for batch in batches:
            if isinstance(batch, _Failed):
                out.append(batch)
                continue
            try:
                out.append(wait(batch))
            except Exception as exc:  # noqa: BLE001
                out.append(_Failed(error_text(exc)))
        return out
    finally:
        helper.shutdown(wait=not hung, cancel_futures=True)


def _stack_batch(
    stack: list[TrialSpec],
    common: dict[str, Any],
    outcome: list[dict[str, Any]],
    status: dict[str, Any],
    lists: dict[str, list],
) -> pa.RecordBatch:
    """One stack's rows: the task's common columns, the stack's, each member's."""
    group = {**common, "group_size": len(stack), "group_key": group_key(stack), **status}
    rows = [
        {**spec_row(spec), **group, "group_index": i, **columns}
        for i, (spec, columns) in enumerate(zip(stack, outcome, strict=True))
    ]
    return to_batch(rows, lists)
