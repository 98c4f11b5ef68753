"""Cluster benchmarks on a real multi-node Ray cluster on this machine: `python -m bench.perf_cluster`.

Starts a head node with `--cpus-per-node` CPUs (default 1, so that one vs two nodes means one vs
two CPUs on a small machine), runs a CPU sweep on it, adds a second node of the same size, runs the
same sweep again, then a sweep of trivial trials. Prints:

- speedup 1 -> 2 nodes: wall time of the CPU sweep on one node / on two nodes;
- driver absorption: trials per second the driver takes in (rows written) on two nodes when each
  trial is trivial (sklearn logistic regression, one epoch, 200 synthetic rows), so the rate is
  bounded by scheduling and the driver, not by training.

Wall time here is the sweep's span as its rows record it (first trial start to last trial end),
which leaves out interpreter start, Hydra and joining Ray; the whole command's time is printed too.
Each sweep is a fresh `python -m bench` driver, so every node starts its workers cold each time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.cluster.localray import LocalRayCluster

SPEEDUP_OVERRIDES = [
    "+sweep=seeds",
    "model=mlp",
    "model.epochs=60",
    "libraries=[sklearn,torch]",
    "sweep.varied=[all]",
    "seeds.n=8",
]
TRIVIAL_OVERRIDES = [
    "+sweep=seeds",
    "dataset=synthetic",
    "dataset.n_samples=200",
    "dataset.n_features=10",
    "dataset.n_informative=5",
    "model=logreg",
    "model.epochs=1",
    "libraries=[sklearn]",
    "sweep.varied=[all]",
]


def timed_sweep(
    cluster: LocalRayCluster, overrides: list[str], results: Path, run_id: str, cpus: int
) -> dict[str, Any]:
    """Run one sweep as a user would, joined to `cluster`; return its timings from the rows."""
    import pandas as pd

    cmd = [
        sys.executable,
        "-m",
        "bench",
        *overrides,
        "cluster=ray",
        f"cluster.address={cluster.address}",
        f"results_dir={results}",
        f"run_id={run_id}",
        "progress=false",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True)
    command_s = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"sweep failed ({done.returncode}): {done.stderr[-2000:]}")
    rows = pd.read_parquet(next(results.glob(f"*/{run_id}")))
    begin = rows["started_at"].min()
    end = (rows["started_at"] + pd.to_timedelta(rows["total_seconds"], unit="s")).max()
    span = (end - begin).total_seconds()
    return {
        "trials": len(rows),
        "errors": int((rows["status"] != "ok").sum()),
        "nodes_used": int(rows["ray_node_id"].nunique()),
        "span_s": span,
        "command_s": command_s,
        "mean_trial_s": float(rows["total_seconds"].mean()),
        "trials_per_s": len(rows) / span if span > 0 else float("nan"),
        # share of the span the cluster's CPUs spent inside trials: near 1 means the harness kept
        # every node busy, whatever the trials themselves cost on a shared machine
        "busy": float(rows["total_seconds"].sum()) / (span * cpus) if span > 0 else float("nan"),
    }


def measure(cpus_per_node: int, trivial_trials: int, speedup_seeds: int) -> dict[str, Any]:
    speedup = [o for o in SPEEDUP_OVERRIDES if not o.startswith("seeds.n=")]
    speedup.append(f"seeds.n={speedup_seeds}")
    trivial = [*TRIVIAL_OVERRIDES, f"seeds.n={trivial_trials}"]
    out: dict[str, Any] = {"cpus_per_node": cpus_per_node, "load_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="bench-perf-cluster-") as tmp:
        results = Path(tmp)
        with LocalRayCluster() as cluster:
            cluster.start_head(num_cpus=cpus_per_node)
            cluster.wait_for(nodes=1, cpus=cpus_per_node)
            out["one_node"] = timed_sweep(cluster, speedup, results, "one-node", cpus_per_node)
            cluster.add_node(num_cpus=cpus_per_node)
            cluster.wait_for(nodes=2, cpus=2 * cpus_per_node)
            out["two_nodes"] = timed_sweep(
                cluster, speedup, results, "two-nodes", 2 * cpus_per_node
            )
            out["trivial_two_nodes"] = timed_sweep(
                cluster, trivial, results, "trivial", 2 * cpus_per_node
            )
            out["left_after_stop"] = cluster.stop()
    out["speedup"] = out["one_node"]["span_s"] / out["two_nodes"]["span_s"]
    out["load_after"] = os.getloadavg()[0]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.perf_cluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--cpus-per-node", type=int, default=1)
    parser.add_argument("--trivial-trials", type=int, default=200)
    parser.add_argument(
        "--speedup-seeds", type=int, default=8, help="seeds per library in the CPU sweep"
    )
    parser.add_argument("--json", action="store_true", help="print the measurements as JSON")
    ns = parser.parse_args(sys.argv[1:] if argv is None else argv)
    m = measure(ns.cpus_per_node, ns.trivial_trials, ns.speedup_seeds)
    if ns.json:
        print(json.dumps(m, indent=2))
        return 0
    one, two, triv = m["one_node"], m["two_nodes"], m["trivial_two_nodes"]
    print(f"localhost Ray cluster, {m['cpus_per_node']} CPU(s) per node")
    print(f"CPU sweep (mlp, 60 epochs, sklearn+torch): {one['trials']} trials")
    for name, r in (("1 node ", one), ("2 nodes", two)):
        print(
            f"  {name}  span {r['span_s']:.1f} s, mean trial {r['mean_trial_s']:.2f} s, "
            f"CPUs busy {r['busy']:.0%}, {r['nodes_used']} node(s) used "
            f"(command {r['command_s']:.1f} s)"
        )
    print(f"  speedup 1 -> 2 nodes: {m['speedup']:.2f}x")
    print(
        f"trivial trials on 2 nodes: {triv['trials']} trials in {triv['span_s']:.1f} s = "
        f"{triv['trials_per_s']:.1f} trials/s absorbed by the driver "
        f"(mean trial {triv['mean_trial_s'] * 1000:.0f} ms, CPUs busy {triv['busy']:.0%}, "
        f"command {triv['command_s']:.1f} s)"
    )
    print(f"load average before {m['load_before']:.1f}, after {m['load_after']:.1f}")
    if m["left_after_stop"]:
        print(f"warning: processes left after stopping the cluster: {m['left_after_stop']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
