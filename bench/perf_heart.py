"""The heart experiment through bench against the same work in a plain loop, measured in one run.

`python -m bench.perf_heart [--workers N] [--results-dir DIR] [OVERRIDE ...]` runs
`+experiment=heart` (every trial: split, preprocessing, grid search with k-fold CV, refit, test)
twice, each in a fresh Python process so that neither inherits the other's imports or caches:

(a) through bench: `python -m bench +experiment=heart ...` (Hydra, embedded Ray with N CPUs,
    one task per trial, Parquet); its results stay in DIR/heart/<run_id> for the report;
(b) as a plain sequential loop in one process: compose, expand, load the data once, then
    `bench.trial.run` for every spec in order, with the thread environment a bench worker gets.

Both phases train exactly the same specs, so the ratio of their wall times is what bench's
fan-out buys (or costs) on this machine. The load average before and after each phase is
printed because a shared machine's other work changes both numbers; the JSON written beside the
results (`_perf_heart.json`, skipped by pyarrow) keeps all of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from bench import store
from bench.perf import bench_and_loop

EXPERIMENT = ["+experiment=heart", "progress=false", "report=false"]


def measure(overrides: list[str], workers: int, results_dir: Path) -> dict[str, Any]:
    from bench.store import new_run_id

    m = bench_and_loop([*EXPERIMENT, *overrides], workers, results_dir, f"perf-{new_run_id()}")
    rows, loop = m["rows"], m["loop"]
    result = {
        "run_dir": str(m["run_dir"]),
        "trials": len(rows),
        "workers": workers,
        "bench_wall_s": m["bench_wall_s"],
        "loop_wall_s": m["loop_wall_s"],
        "speedup": m["loop_wall_s"] / m["bench_wall_s"],
        "fit_sum_bench_s": m["fit_sum_bench_s"],
        "fit_sum_loop_s": m["fit_sum_loop_s"],
        "same_mean_accuracy": bool(
            abs(float(rows["accuracy"].mean()) - sum(loop["accuracy"]) / loop["n"]) < 1e-12
        ),
        "load_bench": m["load_bench"],
        "load_loop": m["load_loop"],
        "cpus": os.cpu_count(),
        "overrides": overrides,
    }
    (store.run_files(m["run_dir"]).meta / "perf_heart.json").write_text(
        json.dumps(result, indent=2)
    )
    return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.perf_heart", description=__doc__)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--results-dir", default="results", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra overrides, e.g. dataset.path=DIR")
    ns = parser.parse_args(args)
    r = measure(ns.overrides, ns.workers, ns.results_dir.resolve())
    print(f"heart experiment, {r['trials']} trials, {r['cpus']} CPUs on this machine")
    print(
        f"  bench ({r['workers']} Ray workers): {r['bench_wall_s']:8.1f} s   "
        f"load avg {r['load_bench'][0]:.1f} -> {r['load_bench'][1]:.1f}"
    )
    print(
        f"  plain sequential loop:    {r['loop_wall_s']:8.1f} s   "
        f"load avg {r['load_loop'][0]:.1f} -> {r['load_loop'][1]:.1f}"
    )
    print(f"  loop / bench: {r['speedup']:.2f}x; same mean accuracy: {r['same_mean_accuracy']}")
    print(f"  sum of fit seconds: bench {r['fit_sum_bench_s']:.0f}, loop {r['fit_sum_loop_s']:.0f}")
    print(f"results (for the report): {r['run_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
