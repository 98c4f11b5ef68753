"""Benchmarks as commands, measured side by side in one run: `python -m bench.perf overhead|batched`
(and `gpu`, every GPU check as one command: bench.perf_gpu; `soak`, faults over thousands of
trials: bench.perf_soak).

`overhead` runs the same trials (default: 3 libraries x MLP x 20 seeds on breast_cancer) twice, each
in a fresh Python process so that neither inherits the other's imports or warm caches:
(a) through bench (`python -m bench ...`: Hydra, embedded Ray, workers, Parquet), and
(b) as a plain sequential loop in one process calling the same `bench.trial.run`.
It prints both wall times, their ratio and the harness overhead 1 - sum(fit) / (wall x workers),
where `fit` is each trial's training time as the bench rows record it, for each of `--repeat`
pairs run alternately, then the medians.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DEFAULT_OVERRIDES = [
    "+sweep=seeds",
    "model=mlp",
    "sweep.varied=[all]",
    "seeds.n=20",
    "libraries=[sklearn,torch,tensorflow]",
    "progress=false",
]


def _loop(overrides: list[str], out: Path) -> None:
    """The plain loop: compose, expand, load once, then trial.run for every spec in order."""
    from bench.config import compose, to_container
    from bench.data import load
    from bench.sweep import expand
    from bench.trial import run

    cfg = compose(overrides)
    specs = expand(cfg)
    raw = load(to_container(cfg.dataset))
    fits, accuracy = [], []
    for spec in specs:
        row = run(spec, raw=raw)
        if row["status"] != "ok":
            raise SystemExit(f"plain loop: trial failed: {row['error']}")
        fits.append(row["fit_seconds"])
        accuracy.append(row["accuracy"])
    out.write_text(json.dumps({"n": len(specs), "fit_seconds": fits, "accuracy": accuracy}))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, tuple[float, float]]:
    """Wall seconds of `cmd`, and the 1-minute load average before and after it (the machines
    are shared: a busy one explains a slow run)."""
    before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, (before, os.getloadavg()[0])


def loop_command(out: Path, overrides: list[str]) -> list[str]:
    """The plain-loop side of a bench-vs-loop benchmark, as a fresh Python process."""
    return [sys.executable, "-m", "bench.perf", "_loop", str(out), *overrides]


def bench_and_loop(
    overrides: list[str], workers: int, results_dir: Path, run_id: str
) -> dict[str, Any]:
    """One side-by-side pair over the same trials: `python -m bench` (embedded Ray on `workers`
    CPUs, results kept in results_dir/<sweep>/<run_id>), then the plain loop in a fresh process
    with the thread environment a bench worker gets. Raises SystemExit if a bench trial failed."""
    import pandas as pd

    from bench import store
    from bench.determinism import worker_env

    bench_cmd = [
        sys.executable, "-m", "bench", *overrides,
        f"results_dir={results_dir}", f"run_id={run_id}", f"cluster.num_cpus={workers}",
    ]  # fmt: skip
    bench_wall, bench_load = timed(bench_cmd, dict(os.environ))
    run_dir = next(results_dir.glob(f"*/{run_id}"))
    rows = pd.read_parquet(run_dir)
    if (rows["status"] != "ok").any():
        raise SystemExit(f"bench run had failed trials; see the rows in {run_dir}")
    loop_out = store.run_files(run_dir).meta / "perf_loop.json"  # beside the run, not in it
    loop_env = {**os.environ, **worker_env(1, False, "cpu")}
    loop_wall, loop_load = timed(loop_command(loop_out, overrides), loop_env)
    loop = json.loads(loop_out.read_text())
    return {
        "run_dir": run_dir,
        "rows": rows,
        "loop": loop,
        "bench_wall_s": bench_wall,
        "loop_wall_s": loop_wall,
        "fit_sum_bench_s": float(rows["fit_seconds"].sum()),
        "fit_sum_loop_s": float(sum(loop["fit_seconds"])),
        "load_bench": bench_load,
        "load_loop": loop_load,
    }


def overhead(overrides: list[str], workers: int, repeat: int = 1) -> list[dict[str, float]]:
    """`repeat` pairs of (bench, loop), run alternately so that a slow spell of a shared machine
    falls on both sides rather than on one; one dict of figures per pair."""
    pairs = []
    for i in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            m = bench_and_loop(overrides, workers, Path(tmp) / "results", "perf")
        pair = {
            "pair": float(i + 1),
            "trials": float(len(m["rows"])),
            "workers": float(workers),
            "bench_wall_s": m["bench_wall_s"],
            "loop_wall_s": m["loop_wall_s"],
            "ratio": m["bench_wall_s"] / m["loop_wall_s"],
            "fit_sum_bench_s": m["fit_sum_bench_s"],
            "fit_sum_loop_s": m["fit_sum_loop_s"],
            "harness_overhead": 1.0 - m["fit_sum_bench_s"] / (m["bench_wall_s"] * workers),
            "load_avg": max(*m["load_bench"], *m["load_loop"]),
        }
        _print_pair(pair)
        pairs.append(pair)
    return pairs


def _print_pair(m: dict[str, float]) -> None:
    print(
        f"pair {m['pair']:.0f}: bench {m['bench_wall_s']:.1f} s, loop {m['loop_wall_s']:.1f} s, "
        f"ratio {m['ratio']:.2f}; sum of fit seconds bench {m['fit_sum_bench_s']:.1f} s, "
        f"loop {m['fit_sum_loop_s']:.1f} s; harness overhead {m['harness_overhead']:.1%}; "
        f"highest 1-min load average {m['load_avg']:.1f}",
        flush=True,
    )


# The steps of `batched`, each adding one thing to the one before (what each gained is the ratio
# of neighbouring rows): torch's foreach Adam, its fused Adam kernel, then the loss compiled.
BATCHED_METHODS = (
    ("stacked, foreach Adam", {}),
    ("stacked, fused Adam", {"fused": True}),
    ("stacked, fused Adam, compiled", {"fused": True, "compile": True}),
)


def batched(
    device: str, sizes: list[int], epochs: int, threads: int, one_by_one: int
) -> Iterator[dict[str, Any]]:
    """models/s for the 30-64-1 MLP on breast_cancer: one by one, then stacked at each size with
    each step of BATCHED_METHODS, all in this one process. Compiling a stack's graphs happens
    before its training and is reported apart (`compile_s`), as the rows of a sweep count it."""
    import torch

    from bench.backends.torch import TorchNeuralClassifier
    from bench.backends.torch_batched import Member, fit_stack
    from bench.data import load, split

    torch.set_num_threads(threads)
    data = split(load({"name": "breast_cancer"}), 0, 0.2)
    est = TorchNeuralClassifier(hidden_sizes=(64,), epochs=epochs, mode="aligned", device=device)
    fit_stack(est, [Member(0, 0, data)] * 2)  # warm-up: kernels, allocator, CUDA context
    start = time.perf_counter()
    for i in range(one_by_one):
        TorchNeuralClassifier(**{**est.get_params(), "seed_init": i, "seed_order": i}).fit(
            data.X_train, data.y_train
        )
    if device == "cuda":
        torch.cuda.synchronize()
    base = one_by_one / (time.perf_counter() - start)
    yield {"device": device, "method": "one by one", "group": 1, "models_per_s": base,
           "speedup": 1.0, "compile_s": None}  # fmt: skip
    for n in sizes:
        members = [Member(i, i, data) for i in range(n)]
        for method, options in BATCHED_METHODS:
            result = fit_stack(est, members, **options)
            rate = n / (result.fit_seconds + result.predict_seconds)
            compile_s = result.compile_seconds if options.get("compile") else None
            yield {"device": device, "method": method, "group": n, "models_per_s": rate,
                   "speedup": rate / base, "compile_s": compile_s}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "_loop":
        _loop(args[2:], Path(args[1]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("overhead", help="bench vs a plain sequential loop over the same trials")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="CPUs given to Ray")
    p.add_argument(
        "--repeat", type=int, default=3, help="(bench, loop) pairs, run alternately; medians"
    )
    p.add_argument(
        "overrides", nargs="*", help="config overrides (default: 3 libraries x MLP x 20 seeds)"
    )
    b = sub.add_parser(
        "batched", help="models/s one by one vs stacked (30-64-1 MLP, breast_cancer)"
    )
    b.add_argument("--sizes", default="16,64,256,1024", help="group sizes, comma-separated")
    b.add_argument("--gpu-sizes", default="256,1024,4096,16384", help="group sizes on CUDA")
    b.add_argument("--epochs", type=int, default=30)
    b.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    b.add_argument(
        "--one-by-one", type=int, default=5, help="models trained one by one for the baseline"
    )
    from bench import perf_gpu

    perf_gpu.add_parser(sub)
    s = sub.add_parser("soak", help="thousands of trials, workers and the driver killed, resumed")
    s.add_argument("--trials", type=int, default=2000, help="trials per sweep (two sweeps)")
    s.add_argument("--worker-kills", type=int, default=10, help="about this many, per sweep")
    s.add_argument("--out", help="keep the runs here (default: a temporary folder)")
    s.add_argument("--seed", type=int, help="picks seeds.base and the driver kill's moment")
    s.add_argument("--modes", default="one-by-one,stacked", help="sweeps to soak, comma-separated")
    ns = parser.parse_args(args)
    if ns.command == "gpu":
        return perf_gpu.main(ns)
    if ns.command == "soak":
        from bench import perf_soak

        modes = ns.modes.split(",")
        if set(modes) - set(perf_soak.MODES):
            parser.error(f"--modes: choose from {', '.join(perf_soak.MODES)}")
        return perf_soak.main(ns.trials, ns.worker_kills, ns.out, ns.seed, modes)
    if ns.command == "batched":
        return _print_batched(ns)
    if ns.repeat < 1:
        parser.error("--repeat: must be >= 1")
    overrides = [*DEFAULT_OVERRIDES, *ns.overrides]
    print(f"python -m bench {' '.join(overrides)}  (workers={ns.workers})", flush=True)
    pairs = overhead(overrides, ns.workers, ns.repeat)

    def median(key: str) -> float:
        return statistics.median(p[key] for p in pairs)

    print(f"trials                       {pairs[0]['trials']:.0f}, {len(pairs)} pair(s), medians:")
    print(f"bench wall (a)               {median('bench_wall_s'):.1f} s")
    print(f"plain loop wall (b)          {median('loop_wall_s'):.1f} s")
    print(f"ratio a/b                    {median('ratio'):.2f}   (target <= 0.60 on 2 cores)")
    print(f"sum of fit seconds, bench    {median('fit_sum_bench_s'):.1f} s")
    print(f"sum of fit seconds, loop     {median('fit_sum_loop_s'):.1f} s")
    print(
        f"harness overhead             {median('harness_overhead'):.1%}   (1 - sum(fit) / (wall x {ns.workers}))"
    )
    return 0


def _print_batched(ns: argparse.Namespace) -> int:
    import torch

    runs = [("cpu", [int(x) for x in ns.sizes.split(",")])]
    if torch.cuda.is_available():
        runs.append(("cuda", [int(x) for x in ns.gpu_sizes.split(",")]))
    else:
        print("no CUDA device: CPU figures only")
    print(
        f"30-64-1 MLP, breast_cancer (455 train rows), {ns.epochs} epochs, batch 32, {ns.threads} threads"
    )
    print(
        f"{'device':7} {'method':30} {'group':>6} {'models/s':>10} {'x one by one':>13} "
        f"{'x row above':>12} {'compile s':>10}"
    )
    for device, sizes in runs:
        above: dict[int, float] = {}  # group -> models/s of the previous step at that size
        for r in batched(device, sizes, ns.epochs, ns.threads, ns.one_by_one):
            gain = r["models_per_s"] / above[r["group"]] if r["group"] in above else None
            above[r["group"]] = r["models_per_s"]
            gain_text = "" if gain is None else f"{gain:.2f}"
            compile_text = "" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
            print(
                f"{r['device']:7} {r['method']:30} {r['group']:>6} {r['models_per_s']:>10.1f} "
                f"{r['speedup']:>13.1f} {gain_text:>12} {compile_text:>10}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
