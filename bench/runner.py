"""Run a list of TrialSpecs on Ray and stream their rows into the run's Parquet folder.

One Ray task per trial, with the trial's own resources (CPUs = its thread count, a GPU fraction for
CUDA trials) and a worker environment keyed by its thread settings, so Ray keeps separate worker
pools for different thread counts and reuses workers within one (torch and TensorFlow are imported
once per worker, not once per trial). At most `max_in_flight` trials are submitted at a time;
results are consumed in completion order, written in part files as they arrive, and a progress
bar shows counts and ETA.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench import store
from bench.config import ConfigError, to_container
from bench.data import RawDataset, load
from bench.determinism import worker_env
from bench.spec import TrialSpec
from bench.sweep import expand

GPU_FRACTION = 1.0


@dataclass
class SweepOutcome:
    run_id: str
    path: Path
    n_trials: int
    n_ok: int
    n_error: int


def _execute(spec_json: dict[str, Any], raw: RawDataset) -> dict[str, Any]:
    """The Ray task body: a worker turns one spec into one row."""
    from bench import trial

    return trial.run(TrialSpec.from_dict(spec_json), raw=raw)


def connect(cluster: dict[str, Any]) -> bool:
    """Join the configured cluster, or start an embedded Ray. True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    address = cluster.get("address") or os.environ.get("RAY_ADDRESS")
    common = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address:
        ray.init(address=address, **common)
    else:
        ray.init(
            address="local",  # always a new embedded instance, never a stale cluster's address
            num_cpus=cluster.get("num_cpus") or os.cpu_count(),
            num_gpus=cluster.get("num_gpus"),
            include_dashboard=cluster.get("include_dashboard", False),
            **common,
        )
    return True


def prepare_run_dir(cfg: DictConfig) -> tuple[str, Path]:
    run_id = cfg.run_id or store.new_run_id()
    path = store.run_dir(cfg.results_dir, cfg.sweep.name, run_id)
    if path.exists() and any(path.glob("part-*.parquet")):
        raise ConfigError(f"run_id: {path} already holds results; choose another run_id")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"results_dir: cannot write to {path}: {exc.strerror or exc}") from None
    OmegaConf.save(cfg, path / store.CONFIG_FILE, resolve=True)
    return run_id, path


def error_row(spec: TrialSpec, message: str) -> dict[str, Any]:
    """A row for a trial whose worker never returned one (the process died, Ray gave up)."""
    return {"trial_key": spec.trial_key, **asdict(spec), "status": "error", "error": message}


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("ok {task.fields[ok]} error {task.fields[error]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def execute(
    specs: list[TrialSpec],
    raw: RawDataset,
    writer: store.PartWriter,
    run_id: str,
    max_in_flight: int | None = None,
    progress: bool = True,
    description: str = "trials",
) -> Iterable[dict[str, Any]]:
    """Submit `specs` to the connected Ray cluster; write and yield rows as trials finish."""
    import ray

    if any(s.device == "cuda" for s in specs) and ray.cluster_resources().get("GPU", 0) == 0:
        raise ConfigError("device: cuda requested, but the Ray cluster has no GPU; use device=cpu")
    task = ray.remote(_execute)
    raw_ref = ray.put(raw)
    limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    queue = list(reversed(specs))
    pending: dict[Any, TrialSpec] = {}
    counts = {"ok": 0, "error": 0}
    with _progress(progress) as bar:
        job = bar.add_task(description, total=len(specs), **counts)
        try:
            while queue or pending:
                while queue and len(pending) < limit:
                    spec = queue.pop()
                    ref = task.options(
                        num_cpus=spec.threads,
                        num_gpus=GPU_FRACTION if spec.device == "cuda" else 0,
                        runtime_env={
                            "env_vars": worker_env(spec.threads, spec.deterministic, spec.device)
                        },
                    ).remote(asdict(spec), raw_ref)
                    pending[ref] = spec
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    spec = pending.pop(ref)
                    try:
                        row = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        row = error_row(
                            spec, f"{type(exc).__name__}: {' '.join(str(exc).split())[:2000]}"
                        )
                    row["run_id"] = run_id
                    writer.add(row)
                    counts[row["status"]] = counts.get(row["status"], 0) + 1
                    bar.update(job, advance=1, **counts)
                    yield row
        finally:
            writer.flush()
            for ref in pending:
                ray.cancel(ref, force=True)


def summary_table(path: Path):
    """library x varied source: n, mean, std, min, max of accuracy (read back from Parquet)."""
    import pandas as pd

    df = pd.read_parquet(path)
    ok = df[df["status"] == "ok"]
    table = (
        ok.groupby(["library", "varied"], sort=True)["accuracy"]
        .agg(["count", "mean", "std", "min", "max"])
        .rename(columns={"count": "n"})
    )
    errors = df[df["status"] != "ok"].groupby("library").size().rename("errors")
    return table, errors


def print_summary(path: Path, outcome: SweepOutcome) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False)
    table, errors = summary_table(path)
    view = Table(
        title=f"accuracy by library and varied source ({outcome.n_ok} ok, {outcome.n_error} errors)"
    )
    for column in ("library", "varied", "n", "mean", "std", "min", "max"):
        view.add_column(column, justify="left" if column in ("library", "varied") else "right")
    for (library, varied), r in table.iterrows():
        view.add_row(
            library,
            varied,
            str(int(r["n"])),
            *(f"{r[c]:.4f}" for c in ("mean", "std", "min", "max")),
        )
    console.print(view)
    for library, n in errors.items():
        console.print(f"[red]{library}: {n} trial(s) failed[/red]; see the 'error' column")
    console.print(f"results: {path}")
    console.print(f'read with: pandas.read_parquet("{path}")')


def run_sweep(cfg: DictConfig) -> SweepOutcome:
    """Everything `python -m bench` does after composing: expand, check, run, write, summarise."""
    import ray

    specs = expand(cfg)
    raw = load(to_container(cfg.dataset))  # a missing or wrong file fails here, before Ray starts
    run_id, path = prepare_run_dir(cfg)
    print(f"run {run_id}: {len(specs)} trials -> {path}", file=sys.stderr)
    writer = store.PartWriter(path, cfg.rows_per_part)
    started = connect(to_container(cfg.cluster))
    counts = {"ok": 0, "error": 0}
    try:
        for row in execute(
            specs, raw, writer, run_id, cfg.cluster.max_in_flight, cfg.progress, cfg.sweep.name
        ):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
    except ConfigError:
        if writer.rows_written == 0:
            _remove_empty(path)
        raise
    finally:
        if started:
            ray.shutdown()
    outcome = SweepOutcome(run_id, path, len(specs), counts["ok"], len(specs) - counts["ok"])
    print_summary(path, outcome)
    return outcome


def _remove_empty(path: Path) -> None:
    """A run refused before any trial leaves nothing behind."""
    (path / store.CONFIG_FILE).unlink(missing_ok=True)
    for folder in (path, path.parent):
        try:
            folder.rmdir()
        except OSError:
            break
