"""What bench does around the trainer, measured: `python -m bench.perf_rows hostwork|ingest|sweep|scale`.

- `hostwork`: stacks of the 30-64-1 MLP on breast_cancer (all seeds varied, fused Adam, one
  thread), as a task of one stack and as a task of several stacks (`batching.stacks_per_task`),
  whose host work runs on a helper thread while the next stack trains, alternately: each task's
  wall time outside the training (and outside the optimisation steps) per trial, with what the
  host work costs; beside it the same members' host work done the per-trial way
  (scikit-learn's split, ColumnTransformer and metric functions, a dict per row), and a check
  that both give identical splits and metrics within 1e-12.
- `ingest`: the driver's side alone: made-up record batches (copies of one real group's rows with
  new trial keys) into `PartWriter` (journal with one fsync per batch, a part per batch); beside
  it rows written one dict at a time with an fsync each, as before.
- `sweep`: the trainer alone (`fit_stack` on the sweep's own groups, one process per CPU, data
  prepared beforehand) and the whole sweep (`python -m bench`, embedded Ray, Parquet, summary)
  on the same seeds, stack size and threads, as whole commands, alternately; models/s of both and
  their ratio.
- `scale`: dry-run sweeps (`dry_run=true`: rows without training) of growing size, the driver's
  peak RSS sampled while it runs, bytes per row on disk and the columns that dominate them, and the
  peak RSS of reading the result back with `bench.analysis.load` (scalar columns) and
  `pd.read_parquet`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SWEEP = [
    "+sweep=seeds",
    "libraries=[torch]",
    "model=mlp",
    "sweep.varied=[all]",
    "batching.enabled=true",
    "batching.fused=true",
    "threads=1",
]


def _specs(n: int) -> tuple[list, Any]:
    from bench.config import compose, to_container
    from bench.data import load
    from bench.sweep import expand

    cfg = compose([*SWEEP, f"seeds.n={n}"])
    return expand(cfg), load(to_container(cfg.dataset))


def _old_hostwork(specs: list, raw, proba: list) -> float:
    """The per-trial host work as bench 0.4 did it, on the same members: seconds per trial."""
    import numpy as np

    from bench import fingerprint, rows
    from bench.data.split import split_sklearn
    from bench.metrics import sklearn_metrics

    start = time.perf_counter()
    out = []
    for spec, p in zip(specs, proba, strict=True):
        data = split_sklearn(raw, spec.seed_split, 0.2)
        y_pred = np.argmax(p, axis=1)
        out.append(
            {
                "trial_key": spec.trial_key,
                **sklearn_metrics(data.y_test, p),
                "weights_sha256": fingerprint.weights_sha256([p]),
                "predictions_sha256": fingerprint.predictions_sha256(y_pred, p),
                "test_index": data.test_index.tolist(),
                "y_true": data.y_test.tolist(),
                "y_pred": y_pred.tolist(),
                "y_score": p[:, 1].astype(np.float64).tolist(),
                "y_proba": p.tolist(),
            }
        )
    rows.to_table(out)
    return (time.perf_counter() - start) / len(specs)


def hostwork(members: int, repeat: int, stacks: int) -> None:
    import collections

    import numpy as np
    import torch

    from bench import trial
    from bench.data.split import split_many, split_sklearn
    from bench.metrics import classification_metrics_many, sklearn_metrics

    torch.set_num_threads(1)
    specs, raw = _specs(members * stacks)
    timed: dict[str, float] = collections.defaultdict(float)
    results: list = []

    def wrap(module, name, keep: bool = False):
        inner = getattr(module, name)

        def timing(*args, **kwargs):
            t = time.perf_counter()
            try:
                out = inner(*args, **kwargs)
                if keep:
                    results.append(out[0])
                return out
            finally:
                timed[name] += time.perf_counter() - t

        setattr(module, name, timing)

    for name in ("_prepare", "_finish", "_stack_batch"):
        wrap(trial, name)
    wrap(trial, "_train_stack", keep=True)
    wrap(trial.determinism, "apply")
    trial.run_group_batch(specs[:2], raw=raw, fused=True)  # imports, first-call costs
    n_all = members * stacks
    print(
        f"stacks of {members} (30-64-1 MLP, breast_cancer, fused Adam, 1 thread): a task of one "
        f"stack, and a task of {stacks} stacks ({n_all} trials) whose host work runs on a helper "
        "thread while the next stack trains"
    )
    outside: dict[str, list[float]] = {"one stack": [], f"{stacks} stacks": []}
    outside_steps: dict[str, list[float]] = {k: [] for k in outside}
    for r in range(repeat):
        for label, group, size in (
            ("one stack", specs[:members], None),
            (f"{stacks} stacks", specs, members),
        ):
            timed.clear()
            results.clear()
            t = time.perf_counter()
            batch = trial.run_group_batch(group, raw=raw, fused=True, stack_size=size)
            wall = time.perf_counter() - t
            assert set(batch.column("status").to_pylist()) == {"ok"}, batch.column("error")[0]
            steps = sum(res.steps_seconds for res in results)
            if size is None:
                one = results[-1]
            n = len(group)
            outside[label].append((wall - timed["_train_stack"]) / n)
            outside_steps[label].append((wall - steps) / n)
            parts = {
                "split+init (prepare)": timed["_prepare"], "metrics+hashes": timed["_finish"],
                "Arrow batch": timed["_stack_batch"], "determinism": timed["apply"],
            }  # fmt: skip
            print(
                f"  run {r + 1}, {label}: wall {wall:.3f} s, training {timed['_train_stack']:.3f} "
                f"s ({timed['_train_stack'] / n * 1e3:.2f} ms a trial); outside the training "
                f"{outside[label][-1] * 1e3:.3f} ms/trial, outside the steps "
                f"{outside_steps[label][-1] * 1e3:.3f}; host work done (overlapped or not) "
                + ", ".join(f"{k} {v / n * 1e3:.3f}" for k, v in parts.items())
            )
    for label in outside:
        print(
            f"median, {label}: outside the training {statistics.median(outside[label]) * 1e3:.3f} "
            f"ms/trial, outside the optimisation steps "
            f"{statistics.median(outside_steps[label]) * 1e3:.3f} ms/trial"
        )
    specs = specs[:members]
    new = statistics.median(outside["one stack"])
    proba = one.proba
    old = _old_hostwork(specs, raw, proba)
    print(
        f"per-trial scikit-learn path (split, ColumnTransformer, 5 metric calls, dict rows): "
        f"{old * 1e3:.3f} ms/trial; ratio per-trial / bulk (one stack) = {old / new:.1f}"
    )
    splits = split_many(raw, [s.seed_split for s in specs], 0.2)
    same_split = all(
        np.array_equal(getattr(splits[s.seed_split], f), getattr(split_sklearn(raw, s.seed_split, 0.2), f))
        for s in specs[:32]
        for f in ("X_train", "X_test", "test_index")
    )  # fmt: skip
    many = classification_metrics_many(
        np.stack([splits[s.seed_split].y_test for s in specs]), np.stack(proba)
    )
    worst = max(
        abs(many[k][i] - v)
        for i, s in enumerate(specs)
        for k, v in sklearn_metrics(splits[s.seed_split].y_test, proba[i]).items()
    )
    print(f"check: splits identical to scikit-learn's {same_split}; metrics max |diff| {worst:.2e}")
    _profile(specs, raw)


def _profile(specs: list, raw) -> None:
    """The issue's cProfile breakdown (one worker, one thread, a group of 256), redone: cumulative
    seconds in training, split, initial weights, metrics, rows; and a fresh process's first
    imports."""
    import cProfile
    import pstats

    from bench import trial

    # The task's phases one after another on this thread (cProfile sees only the thread that
    # enabled it, and run_group_batch prepares and finishes on a helper thread).
    profiler = cProfile.Profile()
    profiler.enable()
    data, prepared = trial._prepare(specs, raw, False)
    trained = trial._train_stack(prepared, True, False)
    rows, lists = trial._finish(specs, data, trained, False, "full")
    trial._stack_batch(specs, {}, rows, {"status": "ok"}, lists)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    wanted = {"train_stack": "training (train_stack)", "prepare_stack": "init draws, stacking",
              "split_many": "split + preprocessing", "classification_metrics_many": "metrics",
              "outcomes": "metrics, hashes, arrays", "to_batch": "Arrow batch"}  # fmt: skip
    found = {}
    for (_, _, name), (_, _, _, cumulative, _) in stats.items():
        if name in wanted:
            found[wanted[name]] = found.get(wanted[name], 0.0) + cumulative
    n = len(specs)
    print(f"cProfile, a group of {n} (profiling slows the Python parts):")
    for label in wanted.values():
        if label in found:
            print(f"  {label}: {found[label]:.3f} s ({found[label] / n * 1e3:.2f} ms a trial)")
    code = (
        "import time; t = time.perf_counter(); from bench import trial; "
        "from bench.sweep import expand; from bench.config import compose; "
        f"trial._import_for(expand(compose({SWEEP + ['seeds.n=1']!r}))[0]); "
        "print(time.perf_counter() - t)"
    )
    took = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"  first imports in a fresh worker process: {float(took.stdout):.2f} s (once a worker)")


def _made_up_batches(batch_rows: int, predictions: str = "full"):
    """One real dry-run group's rows (real shapes and strings), and a maker of copies of it with
    fresh trial keys."""
    import pyarrow as pa

    from bench import trial

    specs, raw = _specs(batch_rows)
    batch = trial.run_group_batch(specs, raw=raw, dry_run=True, predictions=predictions)
    i = batch.schema.get_field_index("trial_key")

    def copy(k: int) -> pa.RecordBatch:
        keys = pa.array([f"{k:016x}{j:048x}" for j in range(batch.num_rows)])
        return batch.set_column(i, "trial_key", keys)

    return batch, copy


def ingest(n_rows: int, batch_rows: int, old_rows: int) -> None:
    for predictions in ("full", "compact", "none"):
        _ingest(n_rows, batch_rows, old_rows if predictions == "full" else 0, predictions)
    _receipts(n_rows, batch_rows)


def _receipts(n_rows: int, batch_rows: int) -> None:
    """rows_to=workers: what reaches the driver per task is the rows' keys and statuses."""
    from collections import Counter

    batch, copy = _made_up_batches(batch_rows)
    receipts = [
        copy(k).select(["trial_key", "status"]) for k in range(max(1, n_rows // batch_rows))
    ]
    counts: Counter = Counter()
    start = time.perf_counter()
    for r in receipts:
        counts.update(r.column("status").to_pylist())
    rate = sum(r.num_rows for r in receipts) / (time.perf_counter() - start)
    print(
        f"rows_to=workers, the driver's side (a receipt of keys and statuses per task): {rate:,.0f} rows/s"
    )


def _ingest(n_rows: int, batch_rows: int, old_rows: int, predictions: str) -> None:
    from collections import Counter

    from bench import store

    batch, copy = _made_up_batches(batch_rows, predictions)
    batches = [copy(k) for k in range(max(1, n_rows // batch_rows))]
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        writer = store.PartWriter(Path(tmp))  # the sweep's defaults
        counts: Counter = Counter()
        start = time.perf_counter()
        for b in batches:
            writer.add_batch(b)
            counts.update(b.column("status").to_pylist())
        writer.close()
        new = sum(b.num_rows for b in batches) / (time.perf_counter() - start)
        size = sum(p.stat().st_size for p in store.part_files(Path(tmp)))
    print(
        f"driver ingest, predictions={predictions}, batches of {batch_rows} rows ({len(batches)} batches):"
    )
    print(f"  Arrow batches, one fsync per batch, parts of 1000 rows: {new:,.0f} rows/s")
    print(f"  ({size / sum(b.num_rows for b in batches):,.0f} bytes per row on disk)")
    if not old_rows:
        return
    rows = batch.to_pylist()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        start = time.perf_counter()
        done = _per_row_writer(Path(tmp), rows, old_rows)
        old = done / (time.perf_counter() - start)
    print(f"  one dict per row, JSON journal with one fsync per row (bench 0.4): {old:,.0f} rows/s")
    print(f"  ratio {new / old:.1f}")


def _per_row_writer(directory: Path, rows: list[dict], n: int) -> int:
    """bench 0.4's PartWriter: a JSON line and an fsync per row, a part per 50 rows."""
    import datetime as dt

    from bench import rows as rows_module
    from bench.store import _write_part

    def default(v):
        return v.isoformat() if isinstance(v, dt.datetime) else str(v)

    buffer: list[dict] = []
    parts = 0
    with open(directory / ".journal.jsonl", "a") as journal:
        for k in range(n):
            row = dict(rows[k % len(rows)], trial_key=f"{k:064x}")
            journal.write(json.dumps(row, default=default) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
            buffer.append(row)
            if len(buffer) >= 50:
                _write_part(rows_module.to_table(buffer), directory / f"part-{parts:05d}.parquet")
                parts += 1
                buffer = []
                journal.truncate(0)
                journal.seek(0)
    return n


def _trainer(seeds: int, max_group: int, worker: int, workers: int, out: str) -> None:
    """One process of the trainer-alone side: its share of the sweep's groups, fit_stack only."""
    import torch

    from bench.backends.torch_batched import Member, fit_stack
    from bench.data import split_many
    from bench.trial import make_estimator
    from bench.units import group_specs

    torch.set_num_threads(1)
    specs, raw = _specs(seeds)
    units = group_specs(specs, max_group)[worker::workers]  # the sweep's own groups
    prepared = []
    for unit, _ in units:
        splits = split_many(raw, [s.seed_split for s in unit], 0.2)
        prepared.append(
            (unit, [Member(s.seed_init, s.seed_order, splits[s.seed_split]) for s in unit])
        )
    fit_stack(make_estimator(units[0][0][0]), prepared[0][1][:2], fused=True)  # first-call costs
    start = time.perf_counter()
    for unit, members in prepared:
        fit_stack(make_estimator(unit[0]), members, fused=True)
    Path(out).write_text(
        json.dumps(
            {"models": sum(len(u) for u, _ in units), "seconds": time.perf_counter() - start}
        )
    )


def _whole(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def sweep(seeds: int, max_group: int, workers: int, repeat: int) -> None:
    print(
        f"{seeds} seeds, stacks of {max_group}, fused Adam, 1 thread per trial, {workers} "
        "workers / trainer processes; whole commands, alternately"
    )
    ratios = []
    for r in range(repeat):
        with tempfile.TemporaryDirectory(dir=".") as tmp:
            outs = [f"{tmp}/trainer-{w}.json" for w in range(workers)]
            start = time.perf_counter()
            procs = [
                subprocess.Popen([sys.executable, "-m", "bench.perf_rows", "_trainer", str(seeds),
                                  str(max_group), str(w), str(workers), outs[w]])
                for w in range(workers)
            ]  # fmt: skip
            for p in procs:
                if p.wait() != 0:
                    raise SystemExit("trainer process failed")
            trainer_wall = time.perf_counter() - start
            steady = max(json.loads(Path(o).read_text())["seconds"] for o in outs)
            bench_wall = _whole(
                [sys.executable, "-m", "bench", *SWEEP, f"seeds.n={seeds}",
                 f"batching.max_group={max_group}", f"cluster.num_cpus={workers}",
                 f"results_dir={tmp}", "progress=false"]
            )  # fmt: skip
        trainer, whole_trainer, sweep_rate = (
            seeds / steady,
            seeds / trainer_wall,
            seeds / bench_wall,
        )
        ratios.append(sweep_rate / trainer)
        print(
            f"  pair {r + 1}: trainer {trainer:,.0f} models/s (training alone; {whole_trainer:,.0f} "
            f"as whole commands), sweep {sweep_rate:,.0f} models/s (whole command, {bench_wall:.1f} "
            f"s); sweep / trainer {sweep_rate / trainer:.2f} (vs whole trainer commands "
            f"{sweep_rate / whole_trainer:.2f})"
        )
    print(f"median sweep / trainer: {statistics.median(ratios):.2f}")


def _peak_rss(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds of `cmd`, and its peak resident memory in MB (VmHWM, read just before it exits,
    and VmRSS sampled every 0.2 s in case it cannot be)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = 0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("VmHWM:", "VmRSS:")):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return time.perf_counter() - start, peak / 1024


# What a seed-variance analysis reads: identity, seeds, metrics, hashes.
ANALYSIS_COLUMNS = ["trial_key", "status", "library", "model", "varied", "seed_split",
                    "seed_order", "seed_init", "accuracy", "roc_auc", "weights_sha256"]  # fmt: skip


def _read_back(path: str, how: str) -> None:
    import pandas as pd

    from bench.analysis import load

    if how == "load":
        df = load(path, columns=ANALYSIS_COLUMNS)
    else:
        df = pd.read_parquet(path, columns=["trial_key", "accuracy", "seed_split"])
    print(len(df))


def scale(sizes: list[int], predictions: str) -> None:
    import pyarrow.parquet as pq

    from bench import store

    print(f"dry-run sweeps (no training), predictions={predictions}, stacks of 256, 2 workers")
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for n in sizes:
            run = f"n{n}"
            wall, rss = _peak_rss(
                [sys.executable, "-m", "bench", *SWEEP, f"seeds.n={n}", "dry_run=true",
                 f"predictions={predictions}", f"results_dir={tmp}", f"run_id={run}",
                 "progress=false"]
            )  # fmt: skip
            path = Path(tmp) / "seeds" / run
            parts = store.part_files(path)
            total = sum(p.stat().st_size for p in parts)
            by_column: dict[str, int] = {}
            rows = 0
            for p in parts:
                meta = pq.ParquetFile(p).metadata
                rows += meta.num_rows
                for g in range(meta.num_row_groups):
                    for c in range(meta.num_columns):
                        col = meta.row_group(g).column(c)
                        name = col.path_in_schema.split(".")[0]
                        by_column[name] = by_column.get(name, 0) + col.total_compressed_size
            top = sorted(by_column.items(), key=lambda kv: -kv[1])[:4]
            _, load_rss = _peak_rss(
                [sys.executable, "-m", "bench.perf_rows", "_read", str(path), "load"]
            )
            _, pd_rss = _peak_rss(
                [sys.executable, "-m", "bench.perf_rows", "_read", str(path), "pandas"]
            )
            print(
                f"  {n:>9,} trials: {wall:6.1f} s, {n / wall:6,.0f} rows/s, driver peak RSS "
                f"{rss:6.0f} MB; {total / rows:,.0f} bytes/row on disk ("
                + ", ".join(f"{k} {v / rows:,.0f}" for k, v in top)
                + f"); read back: analysis.load({len(ANALYSIS_COLUMNS)} columns) {load_rss:.0f} "
                f"MB, pd.read_parquet(3 columns) {pd_rss:.0f} MB"
            )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf_rows", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hostwork")
    p.add_argument("--members", type=int, default=256)
    p.add_argument("--stacks", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p = sub.add_parser("ingest")
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--old-rows", type=int, default=3_000)
    p = sub.add_parser("sweep")
    p.add_argument("--seeds", type=int, default=5000)
    p.add_argument("--max-group", type=int, default=256)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=2)
    p = sub.add_parser("scale")
    p.add_argument("--trials", default="10000,100000,1000000")
    p.add_argument("--predictions", default="full", choices=["full", "compact", "none"])
    p = sub.add_parser("_trainer")
    for name in ("seeds", "max_group", "worker", "workers"):
        p.add_argument(name, type=int)
    p.add_argument("out")
    p = sub.add_parser("_read")
    p.add_argument("path")
    p.add_argument("how")
    ns = parser.parse_args(argv)
    if ns.command == "hostwork":
        hostwork(ns.members, ns.repeat, ns.stacks)
    elif ns.command == "ingest":
        ingest(ns.rows, ns.batch, ns.old_rows)
    elif ns.command == "sweep":
        sweep(ns.seeds, ns.max_group, ns.workers, ns.repeat)
    elif ns.command == "scale":
        scale([int(x) for x in ns.trials.split(",")], ns.predictions)
    elif ns.command == "_trainer":
        _trainer(ns.seeds, ns.max_group, ns.worker, ns.workers, ns.out)
    else:
        _read_back(ns.path, ns.how)


if __name__ == "__main__":
    main(sys.argv[1:])
