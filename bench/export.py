"""`python -m bench export mlflow RUN_DIR`: one MLflow run per trial, for teams whose dashboards
and comparisons live in MLflow rather than in pandas.

The rows stay the record; an MLflow run is a view of one row: its spec as params (the
hyperparameters and dataset settings flattened from their JSON text into `hparams.<name>` and
`dataset.<name>`), its metrics (and the per-epoch `train_loss`, one step an epoch, where the row
has it), and its identity and hashes as `bench.*` tags. Error rows are exported too, as FAILED
runs without metrics, so that the MLflow view hides nothing the table holds.

Trials go through `MlflowClient` (create_run, log_batch, set_terminated: three calls a trial,
more only past log_batch's limits of 100 params and 1000 values a call) rather than the fluent
API's run context, so that a run of thousands of trials exports in seconds to minutes.
Exporting is idempotent: a trial whose `bench.trial_key` is already in the experiment under the
same `bench.run_id` is skipped, and a run an interrupted export left unfinished (still RUNNING)
is deleted and logged again.

Building the runs (`trial_run`, `log_batches`) is pure and needs no MLflow; only `export_mlflow`
imports it, after `main` has checked that it is installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXPORTERS = ("mlflow",)
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's recommended local store (3.x)

# Spec columns logged as params (null ones are left out); hparams and dataset_params are
# flattened into `hparams.<name>` and `dataset.<name>`.
PARAM_COLUMNS: tuple[str, ...] = (
    "seed_split", "seed_order", "seed_init", "seed_cv", "repeat", "library", "model", "dataset",
    "mode", "device", "varied", "deterministic", "threads", "init_mode", "order_mode", "cpu_isa",
    "search",
)  # fmt: skip
FLATTENED: dict[str, str] = {"hparams": "hparams", "dataset_params": "dataset"}
METRIC_COLUMNS: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss", "cv_score", "n_train", "n_test",
    "n_params", "fit_seconds", "predict_seconds", "total_seconds",
)  # fmt: skip
STEP_METRICS: tuple[str, ...] = ("train_loss",)  # list columns: one value per epoch, step = epoch
# Identity, hashes and provenance: `bench.<column>` tags where the row has a value.
TAG_COLUMNS: tuple[str, ...] = (
    "trial_key", "run_id", "sweep", "status", "error", "weights_sha256", "predictions_sha256",
    "dataset_sha256", "code_sha256", "bench_version", "bench_commit", "bench_dirty", "host",
    "library_version",
)  # fmt: skip
COLUMNS: tuple[str, ...] = (
    *TAG_COLUMNS, *PARAM_COLUMNS, *FLATTENED, *METRIC_COLUMNS, *STEP_METRICS, "started_at",
)  # fmt: skip
RUN_STATUS = {"ok": "FINISHED", "error": "FAILED", "skipped": "KILLED"}  # bench -> MLflow

# MLflow's limits (mlflow.utils.validation, 3.x): longer values are cut, larger batches split.
MAX_PARAM_LENGTH = 6000
MAX_TAG_LENGTH = 8000
MAX_PARAMS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000  # params + metrics (+ tags) in one log_batch call
PROGRESS_EVERY = 1000  # trials between progress lines when stderr is not a terminal


@dataclass(frozen=True)
class TrialRun:
    """One trial as an MLflow run: what create_run, log_batch and set_terminated are given."""

    trial_key: str
    run_id: str  # bench's run id (not MLflow's)
    name: str
    status: str  # MLflow's run status
    start_ms: int | None  # None: the row has no started_at (MLflow then takes now)
    end_ms: int | None
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)  # (key, value, step)
    tags: dict[str, str] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """A cell as a plain Python value, None for every kind of null (None, NaN, NaT, pd.NA)."""
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _text(value: Any) -> str:
    """A param or tag value: strings as they are, everything else as compact JSON (the form the
    hparams column uses: true, 0.01, [64,64]). Integer columns read with nulls come back as
    floats; an integral float is written as the integer it stored."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
        return str(int(value))
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _cut(text: str, limit: int) -> str:
    """MLflow refuses longer values; keep the start and say it was cut."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    """`{"lr": 0.01, "opt": {"eps": 1e-8}}` -> `prefix.lr`, `prefix.opt.eps`; nulls left out."""
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _flatten(f"{prefix}.{key}", sub, out)
    elif value is not None:
        out[prefix] = _cut(_text(value), MAX_PARAM_LENGTH)


def _ms(timestamp: Any) -> int | None:
    timestamp = _plain(timestamp)
    return None if timestamp is None else int(timestamp.timestamp() * 1000)


def run_name(row: Mapping[str, Any]) -> str:
    """`<library>-<model>-<varied>-<trial_key[:8]>`, e.g. `torch-mlp-split-32ae1d0b`: what the
    trial is at a glance, and unique within a run (the seeds are ten digits each; the key
    prefix tells trials apart and finds the row)."""
    parts = [_plain(row.get(c)) for c in ("library", "model", "varied")]
    key = str(_plain(row.get("trial_key")) or "")[:8]
    return "-".join(str(p) for p in (*parts, key) if p not in (None, ""))


def trial_run(row: Mapping[str, Any]) -> TrialRun:
    """The MLflow run of one result row (a dict of its columns; missing columns are nulls)."""
    params: dict[str, str] = {}
    for column in PARAM_COLUMNS:
        value = _plain(row.get(column))
        if value is not None:
            params[column] = _cut(_text(value), MAX_PARAM_LENGTH)
    for column, prefix in FLATTENED.items():
        text = _plain(row.get(column))
        if text is not None:
            _flatten(prefix, json.loads(text), params)

    start_ms = _ms(row.get("started_at"))
    total = _plain(row.get("total_seconds"))
    end_ms = None if start_ms is None else start_ms + round(1000 * (total or 0.0))
    metrics: list[tuple[str, float, int]] = []
    for column in METRIC_COLUMNS:
        value = _plain(row.get(column))
        if value is not None and math.isfinite(float(value)):
            metrics.append((column, float(value), 0))
    for column in STEP_METRICS:
        values = row.get(column)
        if values is None or isinstance(values, float):  # absent, or null (a float NaN)
            continue
        metrics.extend(
            (column, float(v), epoch)
            for epoch, v in enumerate(values)
            if v is not None and math.isfinite(float(v))
        )

    tags = {}
    for column in TAG_COLUMNS:
        value = _plain(row.get(column))
        if value is not None:
            tags[f"bench.{column}"] = _cut(_text(value), MAX_TAG_LENGTH)
    status = str(_plain(row.get("status")) or "")
    return TrialRun(
        trial_key=str(row["trial_key"]),
        run_id=str(_plain(row.get("run_id")) or ""),
        name=run_name(row),
        status=RUN_STATUS.get(status, "FAILED"),
        start_ms=start_ms,
        end_ms=end_ms,
        params=params,
        metrics=metrics,
        tags=tags,
    )


def log_batches(
    trial: TrialRun,
) -> Iterator[tuple[list[tuple[str, str]], list[tuple[str, float, int]]]]:
    """The trial's params and metrics in chunks within MLflow's log_batch limits: at most 100
    params and 1000 entities a call (a long `train_loss` takes several calls)."""
    params = list(trial.params.items())
    metrics = list(trial.metrics)
    while params or metrics:
        some_params, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
        room = MAX_ENTITIES_PER_BATCH - len(some_params)
        some_metrics, metrics = metrics[:room], metrics[room:]
        yield some_params, some_metrics


@dataclass(frozen=True)
class Exported:
    """What an export did: trials logged now, trials found already there."""

    n_exported: int
    n_present: int
    tracking_uri: str
    experiment: str


def _filter_value(text: str) -> str:
    """A string literal in MLflow's search syntax."""
    return f'"{text}"' if "'" in text else f"'{text}'"


def _present(client: Any, experiment_id: str, run_id: str) -> tuple[set[str], list[str]]:
    """Trial keys of `run_id` already in the experiment (finished runs), and the MLflow run ids
    an interrupted export left RUNNING (to delete and log again)."""
    done: set[str] = set()
    unfinished: list[str] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`bench.run_id` = {_filter_value(run_id)}",
            max_results=10_000,
            page_token=token,
        )
        for run in page:
            key = run.data.tags.get("bench.trial_key")
            if run.info.status == "RUNNING":
                unfinished.append(run.info.run_id)
            elif key:
                done.add(key)
        token = page.token
        if not token:
            return done, unfinished


def _quiet_mlflow() -> None:
    """MLflow and alembic log at INFO (creating and migrating the database): the terminal shows
    bench's own lines only."""
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _Progress:
    """A rich bar on a terminal; elsewhere (logs, CI) a line every PROGRESS_EVERY trials. On
    stderr, so that stdout holds the summary line only."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.bar = total, 0, None
        if sys.stderr.isatty() and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

            self.bar = Progress(
                "[bold]mlflow",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.task = self.bar.add_task("export", total=total)
            self.bar.start()

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.advance(self.task)
        elif self.done % PROGRESS_EVERY == 0 and self.done < self.total:
            print(f"bench export: {self.done}/{self.total} trials", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def read_rows(run_dir: str | Path):
    """A run's final rows (one per trial), with only the columns the export logs: the per-row
    prediction arrays are most of a run's bytes and are not exported."""
    from bench.analysis import load
    from bench.rows import SCHEMA
    from bench.store import results_path

    return load(results_path(run_dir), columns=[c for c in COLUMNS if c in SCHEMA.names])


def export_mlflow(
    run_dir: str | Path, tracking_uri: str | None = None, experiment: str | None = None
) -> Exported:
    """Log every trial of `run_dir` not yet in the experiment as one MLflow run.

    `tracking_uri`: default MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` here. `experiment`:
    default `bench/<sweep>`, created if missing."""
    rows = read_rows(run_dir)
    rows["run_id"] = rows["run_id"].fillna(Path(run_dir).name)  # the key of "already there"
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if experiment is None:
        sweeps = sorted(set(rows["sweep"].dropna())) if "sweep" in rows else []
        if len(sweeps) > 1:
            raise ValueError(f"{run_dir}: rows of sweeps {', '.join(sweeps)}; name --experiment")
        experiment = f"bench/{sweeps[0] if sweeps else Path(run_dir).resolve().parent.name}"

    _quiet_mlflow()
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        raise ValueError(f"experiment {experiment!r} is deleted in {uri}; restore it or rename it")
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)

    trials = [trial_run(r) for r in rows.to_dict("records")]
    present: set[tuple[str, str]] = set()
    for run_id in sorted({t.run_id for t in trials}):
        done, unfinished = _present(client, experiment_id, run_id)
        present.update((run_id, key) for key in done)
        for mlflow_run in unfinished:
            client.delete_run(mlflow_run)
    todo = [t for t in trials if (t.run_id, t.trial_key) not in present]

    progress = _Progress(len(todo))
    try:
        for trial in todo:
            run = client.create_run(
                experiment_id, start_time=trial.start_ms, tags=trial.tags, run_name=trial.name
            )
            at = trial.start_ms if trial.start_ms is not None else int(time.time() * 1000)
            for params, metrics in log_batches(trial):
                client.log_batch(
                    run.info.run_id,
                    metrics=[Metric(k, v, at, step) for k, v, step in metrics],
                    params=[Param(k, v) for k, v in params],
                )
            client.set_terminated(run.info.run_id, trial.status, end_time=trial.end_ms)
            progress.advance()
    finally:
        progress.close()
    return Exported(len(todo), len(trials) - len(todo), uri, experiment)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and not args[0].startswith("-") and args[0] not in EXPORTERS:
        print(
            f"bench export: error: unknown exporter {args[0]!r}; only "
            f"{', '.join(EXPORTERS)} is supported (python -m bench export mlflow RUN_DIR)",
            file=sys.stderr,
        )
        return 2
    parser = argparse.ArgumentParser(
        prog="python -m bench export",
        description="Log one MLflow run per trial of a results folder: params (seeds, library, "
        "model, mode, hparams.*, dataset.*), metrics (accuracy, ..., train_loss per epoch), "
        "tags (bench.trial_key, bench.run_id, hashes). Trials already exported are skipped.",
    )
    parser.add_argument(
        "exporter", choices=EXPORTERS, metavar="EXPORTER", help="mlflow (the only one so far)"
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="results/<sweep>/<run_id>")
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help=f"MLflow tracking URI (default: $MLFLOW_TRACKING_URI if set, else "
        f"{DEFAULT_TRACKING_URI} in the current directory)",
    )
    parser.add_argument(
        "--experiment", metavar="NAME", help="MLflow experiment (default: bench/<sweep>)"
    )
    parsed = parser.parse_args(args)

    from bench.extras import not_installed

    uri = parsed.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    needed = ["mlflow"]
    if "://" in uri and not uri.split("://")[0].startswith(("http", "databricks", "file")):
        needed += ["sqlalchemy", "alembic"]  # a database store (sqlite, postgresql, mysql...)
    refusal = not_installed(needed, "mlflow", "export mlflow needs it")
    if refusal:
        print(f"bench export: error: {refusal}", file=sys.stderr)
        return 2
    from mlflow.exceptions import MlflowException

    try:
        done = export_mlflow(parsed.run_dir, uri, parsed.experiment)
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        print(f"bench export: error: {exc}", file=sys.stderr)
        return 2
    except MlflowException as exc:  # a store it cannot open, a server it cannot reach
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"bench export: error: mlflow: {first}", file=sys.stderr)
        return 2
    already = f" ({done.n_present} already there)" if done.n_present else ""
    print(
        f"exported {done.n_exported} trials of {parsed.run_dir} to {done.tracking_uri}, "
        f"experiment {done.experiment}{already}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
