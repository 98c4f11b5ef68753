"""Run a stream of TrialSpecs on Ray and stream their rows into the run's Parquet folder.

One Ray task per trial (or per stacked group), with the trial's own resources (CPUs = its thread count, a GPU fraction for
CUDA trials) and a worker environment keyed by its thread settings, so Ray keeps separate worker
pools for different thread counts and reuses workers within one (torch and TensorFlow are imported
once per worker, not once per trial). An embedded Ray is started with the sweep's most common
worker environment already in force, so its prestarted workers serve those trials at once; only
trials with other settings carry a `runtime_env` (Ray starts new workers for each distinct one,
about a second later). At most `max_in_flight` tasks are submitted at a time, made from the
stream as earlier ones finish; each returns its rows as one Arrow record batch (or, with
`rows_to=workers`, writes them itself and returns their keys), consumed in completion order,
journaled and written in part files as they arrive, and a progress bar shows counts and ETA.
"""

from __future__ import annotations

import errno
import math
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from omegaconf import DictConfig, OmegaConf

from bench import diskfull, preempt, provenance, rows, store, waves
from bench import manifest as mf
from bench.cluster.connect import (
    check_cpu_isa,
    check_fits,
    common_env,
    connect,
    embedded,
    task_env,
    user_targets,
)
from bench.config import (
    ConfigError,
    cpu_isa_key,
    stack_kernels,
    to_container,
)
from bench.data import RawDataset, load
from bench.data.split import LabelFlip
from bench.determinism import spec_env
from bench.preempt import Interrupted
from bench.rundir import check_verified, check_writable, prepare_run_dir
from bench.spec import TrialSpec
from bench.summary import print_summary
from bench.sweep import describe_left_out, iter_specs, left_out, setups
from bench.units import Unit, stack_totals, stream_units


@dataclass
class SweepOutcome:
    run_id: str
    path: Path
    n_trials: int
    n_ok: int
    n_error: int
    n_resumed: int = 0
    n_skipped: int = 0
    left_out: tuple[str, ...] = ()  # trials not run, and why (bench.sweep.left_out)


PART_ENTRY = b"bench.part"  # a worker's receipt (rows_to=workers): its part's manifest entry


def _execute(
    spec_jsons: list[dict[str, Any]],
    raw: RawDataset,
    faults: dict[str, Any] | None,
    timeout_s: float | None,
    kernels: dict[str, bool] | None = None,
    keep_weights: bool = False,
    run_id: str | None = None,
    predictions: str = "full",
    dry_run: bool = False,
    part_dir: str | None = None,
    stack_size: int | None = None,
    overrides: str | None = None,
    config: str | None = None,
    staging: str | None = None,
    models_to: str | None = None,
    wave: int | None = None,
) -> pa.RecordBatch:
    """The Ray task body: a worker turns one spec, or, given a stack's `kernels`
    (config.stack_kernels), one stacked group (stacks of at most `stack_size`, trained back to
    back), into one record batch of rows, each with the run's id and command-line `overrides`
    (JSON). With `part_dir` (rows_to=workers) it writes them there as a part of its own (by way
    of `staging`, the run's bookkeeping folder), the run's composed `config` in its metadata, and
    returns only their trial keys and statuses, the part's manifest entry in the receipt's schema
    metadata (the driver keeps the manifest). `models_to` (the run folder, save_models=true)
    is where the fitted models are stored (bench.modelstore)."""
    from bench import trial

    specs = [TrialSpec.from_dict(s) for s in spec_jsons]
    options = {
        "raw": raw, "faults": faults, "timeout_s": timeout_s, "keep_weights": keep_weights,
        "predictions": predictions, "dry_run": dry_run, "models_to": models_to,
    }  # fmt: skip
    if kernels is not None:
        batch = trial.run_group_batch(specs, **options, **kernels, stack_size=stack_size)
    else:
        batch = pa.concat_batches([trial.run_batch(spec, **options) for spec in specs])
    batch = with_run_id(batch, run_id, overrides, wave)
    if part_dir is None:
        return batch
    path = store.worker_part(Path(part_dir), specs)
    try:
        entry = store.write_worker_part(batch, path, Path(staging) if staging else None, config)
    except OSError as exc:  # named, so that the driver knows the full disk is the run's
        raise diskfull.naming(exc, path) from exc
    receipt = batch.select(["trial_key", "status"])
    return receipt.replace_schema_metadata({PART_ENTRY: mf.entry_to_json(entry)})


def with_run_id(
    batch: pa.RecordBatch, run_id: str | None, overrides: str | None = None, wave: int | None = None
) -> pa.RecordBatch:
    """The run's own columns, the same in every row: its id and command-line overrides, and the
    seeds.until wave the rows belong to (bench.waves; null without it)."""
    for name, value, type_ in (
        ("run_id", run_id, pa.string()), ("overrides", overrides, pa.string()),
        ("wave", wave, pa.int64()),
    ):  # fmt: skip
        i = batch.schema.get_field_index(name)
        batch = batch.set_column(i, name, pa.array([value] * batch.num_rows, type_))
    return batch


def driver_row(
    spec: TrialSpec, message: str, run_id: str, overrides: str | None, wave: int | None = None
) -> dict[str, Any]:
    """An error row the driver makes itself (a worker that died, a trial skipped): the run's
    columns and the driver's own bench (no worker's code ran the trial)."""
    return {**error_row(spec, message), "run_id": run_id, "overrides": overrides, "wave": wave,
            **provenance.code()}  # fmt: skip


def error_row(spec: TrialSpec, message: str) -> dict[str, Any]:
    """A row for a trial whose worker never returned one (the process died, Ray gave up)."""
    return {**spec.row_fields(), "status": "error", "error": message}


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
    retries: int = 2,
    timeout_s: float | None = None,
    faults: dict[str, Any] | None = None,
    gpu_fraction: float = 1.0,
    batching: dict[str, Any] | None = None,
    units: Iterable[Unit] | None = None,
    keep_weights: bool = False,
    predictions: str = "full",
    total: int | None = None,
    setups: list[TrialSpec] | None = None,
    dry_run: bool = False,
    rows_to: str = "driver",
    totals: dict[tuple, int] | None = None,
    overrides: str | None = None,
    models_to: str | None = None,
    wave: int | None = None,
) -> Iterable[pa.RecordBatch]:
    """Submit `specs` to the connected Ray cluster; write and yield each task's record batch as it
    finishes (a task's rows travel as one Arrow batch, and are journaled with one fsync).

    `specs` may be a stream (bench.sweep.iter_specs): then `total` counts them for the progress
    bar and `setups` holds one trial per setting for the checks, and tasks are made from the
    stream as earlier ones finish, so the driver holds no more than `max_in_flight` of them.

    One task per trial, or per stackable group with `batching={"enabled": True, ...}` (stacks of
    `max_group`, `stacks_per_task` of them a task). A worker that dies is retried by Ray
    `retries` times, then its trials become error rows. With `timeout_s`, the trial interrupts
    itself (bench.trial); as a backstop for a hang that never returns to Python, a task without
    a result `2 * timeout_s + 30` s after submission (`2 * timeout_s` more for each further
    stack of the task) is killed
    (with a timeout, no more tasks are submitted than can start at once, so queueing alone never
    reaches that). `keep_weights` stores each trial's final weights in its row; `predictions`
    says which per-row arrays rows keep (bench.outcomes). `rows_to="workers"`: each task writes
    its rows into `writer`'s folder itself and the driver gets their keys and statuses (the
    batches yielded then hold just those two columns); rows the driver makes (a task whose
    worker died) it still writes. `overrides` (JSON text) goes into every row, and `writer`'s
    config into the metadata of every part, the workers' included. `wave`: the seeds.until
    wave of every row (bench.waves).
    """
    import ray

    if isinstance(specs, list):
        total = len(specs) if total is None else total
        setups = specs if setups is None else setups
        totals = stack_totals((s, 1) for s in specs) if totals is None else totals
    setups = setups or []
    if any(s.device == "cuda" for s in setups) and ray.cluster_resources().get("GPU", 0) == 0:
        raise ConfigError("device: cuda requested, but the Ray cluster has no GPU; use device=cpu")
    batching = batching or {}
    # Units made here are `stacks_per_task` stacks of at most `max_group`; units given (replay:
    # whole stacks by group_key) are one stack each.
    stack_size = None
    if units is None:
        stack_size = int(batching.get("max_group", 256))
        per_task = stack_size * int(batching.get("stacks_per_task", 1))
        units = stream_units(specs, per_task if batching.get("enabled") else None, totals)
    kernels = stack_kernels(batching)
    task = ray.remote(_execute)
    raw_ref = ray.put(raw)
    limit = max_in_flight or max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    if timeout_s:  # the backstop counts from submission: submit no more than can start at once
        resources = ray.cluster_resources()
        fits = int(resources.get("CPU", 1) // max(s.threads for s in setups)) if setups else 1
        if any(s.device == "cuda" for s in setups):
            fits = min(fits, int(resources.get("GPU", 0) / gpu_fraction + 1e-9))
        limit = min(limit, max(1, fits))
    queue = iter(units)
    exhausted = False
    # ref -> (its trials, submitted at, its backstop)
    pending: dict[Any, tuple[list[TrialSpec], float, float]] = {}
    counts = {"ok": 0, "error": 0}

    # Absolute: a worker's current folder is wherever its Ray node was started.
    part_dir = str(writer.directory.resolve()) if rows_to == "workers" else None
    config = ray.put(writer.config) if part_dir is not None else None  # once, not per task
    staging = str(writer.staging.resolve()) if rows_to == "workers" else None
    folders = diskfull.run_folders(part_dir) if part_dir is not None else ()

    def finish(batch: pa.RecordBatch, entry: mf.PartEntry | None = None) -> pa.RecordBatch:
        if models_to is not None:  # a worker storing a model in the run folder found it full
            diskfull.check_rows(batch, diskfull.run_folders(models_to))
        if batch.schema.equals(rows.SCHEMA):  # rows, not a worker's receipt for its own part
            writer.add_batch(batch)
        elif PART_ENTRY in (batch.schema.metadata or {}):
            entry = mf.entry_from_json(batch.schema.metadata[PART_ENTRY])
        if entry is not None and writer.manifest is not None:
            writer.manifest.update(add=[entry])
        for status, n in Counter(batch.column("status").to_pylist()).items():
            counts[status] = counts.get(status, 0) + n
        bar.update(job, advance=batch.num_rows, **counts)
        return batch

    def written_part(unit: list[TrialSpec]) -> pa.RecordBatch | None:
        """The receipt of the unit's part if its worker wrote it before it failed (or before Ray
        went down with the job), with the part's manifest entry."""
        if part_dir is None:
            return None
        written = store.worker_part(Path(part_dir), unit)
        if not written.exists():
            return None
        receipt = store.read_part(written).select(["trial_key", "status"])
        entry = mf.entry_to_json(mf.entry_of(written, receipt.num_rows))
        return receipt.to_batches()[0].replace_schema_metadata({PART_ENTRY: entry})

    def failed(unit: list[TrialSpec], message: str) -> pa.RecordBatch:
        written = written_part(unit)
        if written is not None:
            return written
        return rows.to_batch([driver_row(s, message, run_id, overrides, wave) for s in unit])

    dropped = False  # a task lost to the stop: the sweep did not finish, whatever comes next
    with _progress(progress) as bar:
        job = bar.add_task(description, total=total, **counts)
        try:
            while not exhausted or pending:
                if preempt.requested() and (not pending or preempt.grace_over()):
                    raise preempt.Preempted  # the Ctrl-C path: finished rows written, resumable
                while not exhausted and len(pending) < limit and not preempt.requested():
                    try:
                        unit, stacked = next(queue)
                    except StopIteration:
                        exhausted = True
                        break
                    first = unit[0]
                    ref = task.options(
                        num_cpus=first.threads,
                        num_gpus=gpu_fraction if first.device == "cuda" else 0,
                        max_retries=retries,
                        **task_env(spec_env(first)),
                    ).remote(
                        [s.fields_dict() for s in unit], raw_ref, faults, timeout_s,
                        kernels if stacked else None, keep_weights, run_id, predictions,
                        dry_run, part_dir, stack_size, overrides, config, staging, models_to, wave,
                    )  # fmt: skip
                    # each stack's training and host work get timeout_s: 2 x timeout_s a stack
                    stacks = math.ceil(len(unit) / stack_size) if stacked and stack_size else 1
                    allowed = 2 * timeout_s * stacks + 30 if timeout_s else math.inf
                    pending[ref] = (unit, time.monotonic(), allowed)
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                rest = [r for r in pending if r not in done]
                if done and rest:  # collect everything else that already finished, without waiting
                    more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
                    done += more
                for ref in done:
                    unit, _, _ = pending.pop(ref)
                    try:
                        batch = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        # a worker's part (rows_to=workers) in the run's folders; a full disk
                        # elsewhere (a node's /tmp/ray) is the trial's error
                        why = diskfull.reason(exc)
                        if why and part_dir and diskfull.in_folders(str(exc), folders):
                            raise OSError(errno.ENOSPC, why) from exc
                        if preempt.requested():  # Ray going down with the job: run it on resume
                            written = written_part(unit)  # unless its part is already written
                            if written is not None:
                                yield finish(written)
                            dropped = True
                            continue
                        batch = failed(
                            unit, f"{type(exc).__name__}: {' '.join(str(exc).split())[:2000]}"
                        )
                    yield finish(batch)
                if timeout_s:
                    now = time.monotonic()
                    for ref, (unit, submitted, allowed) in list(pending.items()):
                        if now - submitted > allowed:
                            ray.cancel(ref, force=True)
                            del pending[ref]
                            message = (
                                f"timeout: no result {allowed:g} s after submission "
                                f"(trial_timeout_s={timeout_s:g}); worker killed"
                            )
                            yield finish(failed(unit, message))
            if dropped:  # its trials run on resume: stopped, not finished
                raise preempt.Preempted
        finally:
            writer.flush()
            for ref in pending:
                ray.cancel(ref, force=True)


def load_checked(cfg: DictConfig) -> RawDataset:
    """The run's dataset, read once in the driver: a missing or wrong file, an impossible
    dataset, or a flipped class it does not have (dataset.flip_class) is a ConfigError here,
    before Ray starts."""
    dataset = to_container(cfg.dataset)
    try:
        raw = load(dataset)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"dataset: {' '.join(str(exc).split())}") from None
    flip = LabelFlip.of(dataset)
    try:
        if flip is not None:
            flip.check(raw.n_classes)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return raw


def run_sweep(cfg: DictConfig, overrides: list[str] | None = None) -> SweepOutcome:
    """Everything `python -m bench` does after composing: expand, check, run, write, summarise.
    `overrides`: the command-line overrides `cfg` was composed from, recorded in every row.
    SIGTERM and SIGUSR1 stop it as Ctrl-C does, after `cluster.stop_grace_s` for the trials in
    flight (bench.preempt), raising Interrupted with the signal's name."""
    with preempt.handling(cfg.cluster.stop_grace_s):
        return _run_sweep(cfg, overrides)


def _run_sweep(cfg: DictConfig, overrides: list[str] | None) -> SweepOutcome:
    """run_sweep's body.

    Order matters for "bad input loses nothing": the data file and the results folder are checked,
    and Ray is joined (address and GPU checks) before the run folder is created or a trial runs.
    """
    import ray

    settings = setups(cfg)  # one trial per setting: the checks need no more
    examples = [spec for spec, _ in settings]
    total = sum(n for _, n in settings)
    not_run = describe_left_out(left_out(cfg))
    if not total and not_run:
        raise ConfigError(f"sweep.varied: nothing to run ({'; '.join(not_run)})")
    raw = load_checked(cfg)
    if raw.dropped:
        print(f"dataset: {raw.dropped} row(s) without a target left out", file=sys.stderr)
    check_writable(store.run_dir(cfg.results_dir, cfg.sweep.name, cfg.run_id or "new"))
    if cfg.run_id:  # a resume: the run must verify (bench.verify) before Ray starts
        check_verified(store.run_dir(cfg.results_dir, cfg.sweep.name, cfg.run_id))
    plain = to_container(cfg)
    plan = waves.plan_of(plain)  # seeds.until: the setups and their seeds, wave by wave
    cluster = plain["cluster"]
    if embedded(cluster):
        check_cpu_isa(examples, cpu_isa_key(cfg))
    started = connect(cluster, common_env(examples, [n for _, n in settings]), user_targets(plain))
    preempt.rearm()  # ray.init replaced the SIGTERM handler with its own
    lock: store.RunLock | None = None
    run_id, path = cfg.run_id, store.run_dir(cfg.results_dir, cfg.sweep.name, cfg.run_id or "")
    try:
        no_gpu = ray.cluster_resources().get("GPU", 0) == 0
        cuda = any(s.device == "cuda" for s in examples)
        if no_gpu and cuda and not cfg.hardware.skip_unavailable:
            raise ConfigError(
                "device: cuda requested, but the Ray cluster has no GPU; use device=cpu, "
                "or hardware.skip_unavailable=true to record those trials as skipped"
            )
        check_fits(
            [s for s in examples if not (no_gpu and s.device == "cuda")],
            cfg.hardware.gpu_fraction,
        )
        run_id, path, done, lock = prepare_run_dir(cfg)

        def runnable(spec: TrialSpec) -> bool:
            return not (no_gpu and spec.device == "cuda")

        # Trial keys are worked out in the driver only to resume: a fresh run leaves them to
        # the workers.
        n_done = sum(1 for s in iter_specs(cfg) if s.trial_key in done) if done else 0
        n_unavailable = sum(n for s, n in settings if not runnable(s))
        if done:
            n_skip = sum(1 for s in iter_specs(cfg) if not runnable(s) and s.trial_key not in done)
            n_todo = total - n_done - n_skip
            print(
                f"resuming run {run_id}: {len(done)} trials already ok; the waves' decisions "
                "are recomputed from their rows"
                if plan
                else f"resuming run {run_id}: {n_done} of {total} trials already ok, "
                f"running {n_todo}",
                file=sys.stderr,
            )
        else:
            n_skip, n_todo = n_unavailable, total - n_unavailable
            print(f"run {run_id}: {waves.trials_phrase(plan, total)} -> {path}", file=sys.stderr)
        for line in not_run:
            print(line, file=sys.stderr)
        faults = to_container(cfg.faults)
        if faults["kill_worker_on"] > 0:
            faults["marker_dir"] = str(store.run_files(path).faults)
        injecting = any(faults[k] > 0 for k in ("raise_on", "kill_worker_on", "hang_on"))
        config = OmegaConf.to_yaml(cfg, resolve=True)  # what config.yaml holds
        if cfg.save_models and not cfg.dry_run:
            from bench.modelstore import write_dataset_info

            write_dataset_info(path, raw, to_container(cfg.dataset))
        files = store.run_files(path)
        writer = store.PartWriter(
            path, cfg.rows_per_part, config=config, staging=files.staging,
            manifest=mf.Manifest.load(files.manifest),
        )  # fmt: skip
        command = provenance.overrides_text(overrides)
        counts = {"ok": 0, "error": 0, "skipped": 0}
        if n_skip:
            skipped = [
                {**driver_row(s, "skipped: no GPU in the Ray cluster "
                              "(hardware.skip_unavailable=true)", run_id, command),
                 "status": "skipped"}
                for s in iter_specs(cfg) if not runnable(s) and s.trial_key not in done
            ]  # fmt: skip
            writer.add_batch(rows.to_batch(skipped))
            counts["skipped"] = len(skipped)
        todo = (s for s in iter_specs(cfg) if runnable(s) and (not done or s.trial_key not in done))
        options = dict(
            raw=raw,
            writer=writer,
            run_id=run_id,
            max_in_flight=cfg.cluster.max_in_flight,
            progress=cfg.progress,
            description=cfg.sweep.name,
            retries=cfg.retries,
            timeout_s=cfg.trial_timeout_s,
            faults=faults if injecting else None,
            gpu_fraction=cfg.hardware.gpu_fraction,
            batching=to_container(cfg.batching),
            keep_weights=cfg.keep_weights,
            predictions=plain["predictions"],
            models_to=str(path.resolve()) if cfg.save_models and not cfg.dry_run else None,
            setups=[s for s in examples if runnable(s)],
            dry_run=cfg.dry_run,
            rows_to=plain["rows_to"],
            overrides=command,
        )
        if plan is None:
            totals = None if done else stack_totals((s, n) for s, n in settings if runnable(s))
            batches = execute(todo, total=n_todo, totals=totals, **options)
        else:  # one wave after another, each a list of specs through the same execute
            loop = waves.Waves(plan, path)
            batches = loop.run(lambda specs, k: execute(specs, wave=k, **options), done, runnable)
        try:
            for batch in batches:
                for status, n in Counter(batch.column("status").to_pylist()).items():
                    counts[status] = counts.get(status, 0) + n
            batches.close()
        except KeyboardInterrupt as exc:
            batches.close()  # cancels what is in flight, before the writer and Ray go
            writer.close(complete=False)  # `writing`: a resume takes in unlisted worker parts
            stopped_by = preempt.signal_name() if isinstance(exc, preempt.Preempted) else None
            raise Interrupted(run_id, path, counts["ok"] + counts["error"], stopped_by) from None
        except BaseException:
            batches.close()
            writer.close(complete=False)
            raise
        writer.close()
    except OSError as exc:  # a full disk wherever the driver wrote: one line, exit 4
        full = diskfull.full(exc, path, run_id)
        if full is None:
            raise
        raise full from None
    finally:
        if lock is not None:
            lock.release()
        if started:
            ray.shutdown()
    if plan is not None:  # every wave's trials, not only the first wave's
        total, n_done = loop.n_trials + counts["skipped"], loop.n_done
    n_ok = n_done + counts["ok"]
    n_skipped = counts["skipped"]
    outcome = SweepOutcome(
        run_id, path, total, n_ok, total - n_ok - n_skipped, len(done), n_skipped, tuple(not_run)
    )
    print_summary(path, outcome)
    if plan is not None:
        print("\n".join(waves.summary_lines(plan, waves.read_values(path, plan))))
    if cfg.save_models and not cfg.dry_run:
        from bench.modelstore import storage_line

        print(storage_line(path), file=sys.stderr)
    if cfg.get("report", False):
        from bench.report import report_after_sweep

        report_after_sweep(path)
    return outcome
