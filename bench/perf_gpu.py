"""`python -m bench.perf gpu --out DIR`: every GPU check bench needs, as one prepared command.

A GPU machine is lent now and then for about 15 minutes, start-up included, with PyTorch, CUDA,
scikit-learn, pandas and pyarrow but without Ray and TensorFlow. So this command runs trials
through `bench.trial.run` directly, each check in fresh worker processes
(bench.perf_gpu_checks, each the leader of its own process group, killed whole at its deadline),
inside a time budget (default 450 s, so that start-up and writing the results keep the command
under 8 minutes): a check that would overrun is recorded as "not run: budget" instead. It writes DIR/gpu.json (the machine and every figure) and
DIR/gpu.md (the tables). Sections:
- determinism: the CNN (digits) and the MLP (breast_cancer), k fixed-seed repeats each in three
  settings (SETTINGS: cuDNN autotuning on; deterministic mode off, PyTorch's defaults;
  deterministic mode on), one process per run;
- hardware: the same specs, deterministic mode on, on the CPU and on CUDA;
- throughput: stacked models/s of a 30-64-64 MLP at several sizes and kernels, with the host
  share of the steps' time (bench.perf_gpu_checks.host_share);
- gpu_tests: the `gpu`-marked tests' outcome.
`--smoke` runs the same code at tiny sizes on the CPU (the CUDA device replaced by the CPU, and
recorded so): the same sections, processes and deadlines, and the same gpu test files. It is part
of the test suite, so that the command cannot rot between GPU loans.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import perf_gpu_checks as checks
from bench.cli_common import json_plain
from bench.extras import installed
from bench.perf_gpu_report import markdown

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"cnn": ["model=cnn", "dataset=digits"], "mlp": ["model=mlp"]}
# Shares of what is left of the budget when a section starts (the last takes the rest).
SHARES = {"determinism": 0.3, "hardware": 0.15, "throughput": 0.35, "gpu_tests": 0.2}
# The determinism settings: name -> (the spec's `deterministic`, what the worker runs it with).
SETTINGS = {
    "cudnn autotuning on": (False, "autotune"),  # bench's deterministic=false
    "deterministic mode off (PyTorch defaults)": (False, "default"),  # autotuning off again
    "deterministic mode on": (True, "deterministic"),
}
DEFAULT_BUDGET = 450.0  # seconds of checks; with start-up and teardown under 8 minutes
ON_AUTOTUNE, ON_DEFAULT = list(SETTINGS)[:2]
INNER = "BENCH_PERF_GPU_INNER"  # set for the gpu tests' pytest: a test that runs this command skips


def add_parser(sub: Any) -> None:
    """The `gpu` subcommand's options (bench.perf's parser)."""
    g = sub.add_parser("gpu", help="every GPU check: determinism, hardware, throughput, gpu tests")
    g.add_argument("--out", required=True, help="folder for gpu.json and gpu.md")
    g.add_argument("--smoke", action="store_true", help="tiny sizes; the CPU stands in for CUDA")
    g.add_argument("--repeats", type=int, default=3, help="fixed-seed repeats per setting")
    g.add_argument("--sizes", default="256,1024,4096,16384", help="stack sizes, comma-separated")
    g.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    g.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET,
        help=f"seconds for all checks (default {DEFAULT_BUDGET:g}: with Python's start-up and "
        "the workers' teardown the command stays under 8 minutes); a check that would overrun "
        "is recorded as 'not run: budget'",
    )  # fmt: skip


def say(text: str) -> None:
    print(f"[bench.perf gpu] {text}", file=sys.stderr, flush=True)


def refuse(text: str) -> int:
    print(f"bench.perf gpu: error: {text}", file=sys.stderr)
    return 2


def writable(folder: Path) -> str | None:
    """Why `folder` cannot take the results, or None: checked before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def tensorflow_absent() -> str | None:
    """Why TensorFlow rows cannot run here, or None when TensorFlow is installed."""
    return None if installed("tensorflow") else "skipped: TensorFlow is not installed here"


def specs_for(overrides: list[str]) -> list[Any]:
    """TrialSpecs as a sweep would make them (Hydra compose + expand; Ray need not exist)."""
    from bench.config import compose
    from bench.sweep import expand

    return expand(compose(overrides, require_installed=False))


class Budget:
    """The time left for all checks, and each section's share of it."""

    def __init__(self, seconds: float) -> None:
        self.start = time.time()
        self.deadline = self.start + seconds

    def left(self) -> float:
        return self.deadline - time.time()

    def section(self, name: str) -> float:
        """The deadline of section `name`: its share of what is left."""
        names = list(SHARES)
        rest = sum(SHARES[n] for n in names[names.index(name) :])
        return time.time() + max(0.0, self.left()) * SHARES[name] / rest


@dataclass
class Plan:
    """A section's work: groups of worker tasks (each group one fresh process, with its
    environment), and how the records they write become the section's rows."""

    groups: list[tuple[dict[str, str], list[dict[str, Any]]]]
    collect: Callable[[dict[str, dict[str, Any]]], Any]


def shared_processes(
    groups: list[tuple[dict[str, str], list[dict[str, Any]]]],
) -> list[tuple[dict[str, str], list[dict[str, Any]]]]:
    """The groups with the same environment merged into one process each, in order of first
    appearance. Only for --smoke: a fresh process per run exists for cuDNN's autotuning cache,
    which the CPU does not have, and each process costs seconds of imports; the tasks and the
    workers' code stay the same."""
    merged: dict[tuple, tuple[dict[str, str], list[dict[str, Any]]]] = {}
    for env, tasks in groups:
        merged.setdefault(tuple(sorted(env.items())), (env, []))[1].extend(tasks)
    return list(merged.values())


def run_workers(groups: list[tuple[dict[str, str], list[dict[str, Any]]]], deadline: float):
    """Each group of tasks in its own fresh worker process, in order; every record they wrote,
    by task id (a throughput task writes several: a list). A group that would start past
    `deadline` does not start; one that reaches it is stopped, keeping what it wrote."""
    records: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (env, group) in enumerate(groups):
            if time.time() >= deadline:
                break
            say(f"  process {k + 1} of {len(groups)}: {', '.join(t['id'] for t in group)[:120]}")
            tasks, out = Path(tmp, f"tasks{k}.json"), Path(tmp, f"out{k}.jsonl")
            tasks.write_text(json.dumps(group))
            out.touch()
            command = [sys.executable, "-m", "bench.perf_gpu_checks", str(tasks), str(out)]
            timeout = max(1.0, deadline - time.time())
            code, _, stderr = checks.run_group(command, {**os.environ, **env}, timeout)
            _pass_on(stderr)
            if code is None:
                say("a worker reached the section's time limit and was stopped with its group")
            for line in out.read_text().splitlines():
                record = json.loads(line)
                if record["id"].startswith("throughput"):
                    records.setdefault(record["id"], []).append(record)
                else:
                    records[record["id"]] = record
    return records


def _pass_on(stderr: str) -> None:
    """A worker's stderr, less the profiler's start/stop lines (torch's USDT probes)."""
    for line in stderr.splitlines():
        if not line.startswith("USDT:"):
            print(line, file=sys.stderr)


def determinism_plan(ns: argparse.Namespace, ctx: dict[str, Any]) -> Plan:
    """k repeats per (library, model, mode), each run in its own fresh process (cuDNN's
    autotuning cache is per process, as in a sweep's workers)."""
    from bench.determinism import worker_env

    settings: list[dict[str, Any]] = []
    groups = []
    tf_skip = tensorflow_absent()
    for library in ("torch", "tensorflow"):
        for model, extra in MODELS.items():
            if library == "tensorflow" and tf_skip:
                settings.append({"library": library, "model": model, "status": tf_skip})
                continue
            device = ctx["device"] if library == "torch" else "cpu"
            specs = specs_for(["+sweep=determinism", f"libraries=[{library}]", *extra,
                               f"sweep.devices=[{device}]", f"seeds.n={ns.repeats}",
                               *ctx["model_overrides"]])  # fmt: skip
            for setting, (det, how) in SETTINGS.items():
                if library == "tensorflow" and how == "default":  # no autotuning switch there
                    continue
                ids = []
                for i, spec in enumerate(s for s in specs if s.deterministic == det):
                    ids.append(f"det:{library}:{model}:{how}:{i}")
                    task = {"kind": "trial", "id": ids[-1], "setting": how,
                            "spec": ctx["placed"](spec).to_json()}  # fmt: skip
                    groups.append((worker_env(1, det, device), [task]))
                settings.append({"library": library, "model": model, "device": device,
                                 "setting": setting, "deterministic": det, "ids": ids})  # fmt: skip

    def collect(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for setting in settings:
            ids = setting.pop("ids", None)
            if ids is None:
                rows.append(setting)
                continue
            runs = [records[i] for i in ids if i in records]
            status = "ok" if len(runs) == len(ids) else "not run: budget"
            if runs and status != "ok":
                status = f"partly run: budget ({len(runs)} of {len(ids)} runs)"
            failed = [r["error"] for r in runs if r["status"] != "ok"]
            if failed:
                status = f"error in {len(failed)} of {len(ids)} runs: {failed[0]}"
            rows.append({**setting, "status": status,
                         **(checks.summarise_determinism(runs) if runs else {})})  # fmt: skip
        fits = {(r["library"], r["model"], r.get("setting")): r.get("fit_seconds_median")
                for r in rows}  # fmt: skip
        for row in rows:  # deterministic mode on: its fit time over each non-deterministic one's
            if row.get("deterministic") and row.get("fit_seconds_median"):
                for setting, key in ((ON_AUTOTUNE, "autotune"), (ON_DEFAULT, "default")):
                    other = fits.get((row["library"], row["model"], setting))
                    if other:
                        row[f"fit_time_ratio_det_to_{key}"] = row["fit_seconds_median"] / other
        return rows

    return Plan(groups, collect)


def hardware_plan(ns: argparse.Namespace, ctx: dict[str, Any]) -> Plan:
    """The same specs (deterministic mode on) on the CPU and on CUDA, one process for all."""
    from bench.determinism import worker_env

    tasks, pairs = [], []
    for model, extra in MODELS.items():
        specs = specs_for(["+sweep=hardware", *extra, "seeds.n=1", "deterministic=true",
                           *ctx["model_overrides"]])  # fmt: skip
        cpu = next(s for s in specs if s.device == "cpu")
        gpu = ctx["placed"](next(s for s in specs if s.device == "cuda"))
        for where, spec in (("cpu", cpu), ("gpu", gpu)):
            tasks.append({"kind": "trial", "id": f"hw:{model}:{where}", "spec": spec.to_json(),
                          "keep_weights": True})  # fmt: skip
        pairs.append((model, gpu.device))

    def collect(records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        rows = []
        for model, device in pairs:
            row = {"library": "torch", "model": model, "devices": f"cpu vs {device}"}
            a, b = records.get(f"hw:{model}:cpu"), records.get(f"hw:{model}:gpu")
            row.update(checks.compare_hardware(a, b) if a and b else {"status": "not run: budget"})
            rows.append(row)
        tf_skip = tensorflow_absent() or "skipped: bench runs TensorFlow on the CPU only"
        rows.append({"library": "tensorflow", "model": "cnn, mlp", "status": tf_skip})
        return rows

    return Plan([(worker_env(1, True, "cuda"), tasks)], collect)


def throughput_plan(ns: argparse.Namespace, ctx: dict[str, Any]) -> Plan:
    """Stacked models/s per size and variant, in one fresh process."""
    from bench.determinism import worker_env

    task = {"kind": "throughput", "id": "throughput", "device": ctx["device"],
            "deadline": ctx["deadline"], "sizes": ctx["sizes"], "epochs": 1 if ns.smoke else 30,
            "skip_compile": "--smoke (compiling takes 10-30 s on a CPU; tests/test_perf.py "
                            "covers the compiled stack)" if ns.smoke else None}  # fmt: skip
    threads = 1 if ns.smoke else os.cpu_count() or 1

    def collect(records: dict[str, Any]) -> list[dict[str, Any]]:
        rows = records.get("throughput", [])
        done = {(r["size"], r["variant"]) for r in rows}
        for n in ctx["sizes"]:
            for variant in [v for v, _ in checks.VARIANTS] + [checks.CUDA_GRAPHS]:
                if (n, variant) not in done:
                    graphs = variant == checks.CUDA_GRAPHS
                    status = checks.NO_CUDA_GRAPHS if graphs else "not run: budget"
                    rows.append({"size": n, "variant": variant, "status": status})
        return [{k: v for k, v in r.items() if k != "id"} for r in rows]

    return Plan([(worker_env(threads, False, ctx["device"]), [task])], collect)


def tests_section(ns: argparse.Namespace, ctx: dict[str, Any], deadline: float) -> dict:
    """The gpu-marked tests, in the test files that hold any (without CUDA, in --smoke, they
    skip; the test that runs this command skips inside it)."""
    tests = ROOT / "tests"
    if not tests.is_dir():
        return {"status": "not run: no tests folder beside bench/"}
    files = sorted(p for p in tests.glob("test_*.py") if "mark.gpu" in p.read_text())
    junit = Path(ctx["tmp"]) / "gpu-tests.xml"
    # hypothesis's pytest plugin costs 1.7 s of start-up and no gpu test needs it
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "-p", "no:hypothesispytest",
               "--continue-on-collection-errors", f"--junitxml={junit}",
               *(str(f.relative_to(ROOT)) for f in files)]  # fmt: skip
    say(f"gpu tests: {len(files)} test files")
    env = {**os.environ, INNER: "1"}
    out = checks.gpu_tests(command, junit, ROOT, env, max(1.0, deadline - time.time()))
    out["files"] = [str(f.relative_to(ROOT)) for f in files]
    out["absent_here"] = [m for m in ("ray", "tensorflow") if not installed(m)]
    return out


def machine(device: str) -> dict[str, Any]:
    """What the figures depend on: GPU, driver, CUDA and cuDNN, torch, the CPU."""
    import platform

    import torch

    from bench import fingerprint

    if device == "cuda":
        torch.zeros(1, device="cuda")
    env = fingerprint.environment("torch", device)
    keys = ("gpu_name", "driver_version", "cuda_version", "cudnn_version", "torch_version",
            "numpy_version", "sklearn_version", "tensorflow_version", "ray_version", "cpu_model",
            "host", "python_version")  # fmt: skip
    return {**{k: env.get(k) for k in keys}, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_cuda_build": torch.version.cuda}  # fmt: skip


def main(ns: argparse.Namespace) -> int:
    """Check the options and the machine before any work, then every section in order."""
    budget = Budget(ns.budget)  # from the start: the whole command stays inside it
    if ns.repeats < 1:
        return refuse("--repeats: must be >= 1")
    if ns.budget <= 0:
        return refuse("--budget: must be > 0 seconds")
    try:
        sizes = [int(x) for x in ns.sizes.split(",")]
    except ValueError:
        return refuse(f"--sizes: comma-separated integers, got {ns.sizes!r}")
    import torch

    has_cuda = torch.cuda.is_available()
    if ns.device == "cuda" and not has_cuda and not ns.smoke:
        return refuse(
            f"no CUDA device: torch {torch.__version__} (CUDA build {torch.version.cuda}) sees "
            "none; run on a GPU machine, or use --smoke / --device cpu"
        )
    out = Path(ns.out)  # after the CUDA check: a refused run leaves no folder behind
    why = writable(out)
    if why:
        return refuse(f"--out {out}: not writable ({why})")
    device = "cuda" if ns.device == "cuda" and has_cuda else "cpu"
    substituted = device == "cpu"  # the checks' CUDA trials run on the CPU, and say so
    why_cpu = (
        "--device cpu" if ns.device == "cpu" else "no CUDA device (--smoke runs the same code)"
    )

    def placed(spec: Any) -> Any:
        import dataclasses

        return dataclasses.replace(spec, device="cpu") if substituted else spec

    with tempfile.TemporaryDirectory() as tmp:
        ctx = {"device": device, "placed": placed, "tmp": tmp,
               "sizes": [32, 64] if ns.smoke else sizes,
               "model_overrides": ["model.epochs=1"] if ns.smoke else []}  # fmt: skip
        result: dict[str, Any] = {
            "command": f"python -m bench.perf gpu --out {ns.out} --repeats {ns.repeats} "
            f"--sizes {ns.sizes} --device {ns.device} --budget {ns.budget:g}"
            + (" --smoke" if ns.smoke else ""),
            "smoke": ns.smoke, "device_requested": ns.device, "device": device,
            "substitution": f"cuda -> cpu: {why_cpu}" if substituted else None,
            "budget_s": ns.budget, "repeats": ns.repeats, "sizes": ctx["sizes"],
            "machine": machine(device),
        }  # fmt: skip
        plans = {"determinism": determinism_plan, "hardware": hardware_plan,
                 "throughput": throughput_plan}  # fmt: skip
        for name, plan in plans.items():
            began, ctx["deadline"] = time.time(), budget.section(name)
            made = plan(ns, ctx)
            if ns.smoke:
                made = Plan(shared_processes(made.groups), made.collect)
            say(
                f"{name}: {sum(len(g) for _, g in made.groups)} tasks, "
                f"{len(made.groups)} processes, {ctx['deadline'] - began:.0f} s at most"
            )
            result[name] = made.collect(run_workers(made.groups, ctx["deadline"]))
            say(f"{name}: {time.time() - began:.1f} s")
        began = time.time()
        if budget.left() <= 0:
            result["gpu_tests"] = {"status": "not run: budget"}
        else:
            result["gpu_tests"] = tests_section(ns, ctx, budget.deadline)
        say(f"gpu_tests: {time.time() - began:.1f} s")
    result["seconds"] = time.time() - budget.start
    result = json_plain(result)
    (out / "gpu.json").write_text(json.dumps(result, indent=1, default=str, allow_nan=False))
    (out / "gpu.md").write_text(markdown(result))
    say(f"wrote {out / 'gpu.json'} and {out / 'gpu.md'} in {result['seconds']:.0f} s")
    return 0
