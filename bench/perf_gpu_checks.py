"""The measurements behind `python -m bench.perf gpu` (bench.perf_gpu), run in worker processes.

Each worker is a fresh Python process (`python -m bench.perf_gpu_checks TASKS OUT`) that runs a
list of tasks and appends one JSON line per finished task to OUT, so that a worker stopped by the
time budget still leaves what it finished. Fresh processes matter on a GPU: cuDNN's autotuning
cache lives per process, so repeats inside one process would share one algorithm choice and hide
the run-to-run noise a sweep's workers see. Nothing here imports Ray or TensorFlow (a TensorFlow
trial imports it, and only when it is installed): the GPU machines have neither.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

# Row columns a trial task sends back (weights and predictions only where the caller compares).
TRIAL_FIELDS = (
    "status", "error", "library", "model", "device", "deterministic", "repeat", "weights_sha256",
    "predictions_sha256", "fit_seconds", "accuracy", "nondeterministic_ops",
    "deterministic_in_force", "cudnn_benchmark", "gpu_name", "cuda_version", "cudnn_version",
    "driver_version", "library_version",
)  # fmt: skip
# The throughput variants. CUDA graphs: the stacked trainer has no path for them yet.
VARIANTS: tuple[tuple[str, dict[str, bool]], ...] = (
    ("default Adam", {}),
    ("fused Adam", {"fused": True}),
    ("compiled (fused Adam + torch.compile)", {"fused": True, "compile": True}),
)
CUDA_GRAPHS = "CUDA graphs"
NO_CUDA_GRAPHS = (
    "not run: the stacked trainer has no CUDA-graph path (issue 21 point 2 needs a GPU)"
)


def warm_up(device: str) -> None:
    """Create the CUDA context, a cuBLAS handle and cuDNN before any timed fit, so that a fresh
    process's first trial does not carry seconds of start-up in its fit time. Shapes unlike the
    CNN's: cuDNN's autotuning cache must stay empty for the trial's own shapes."""
    if device != "cuda":
        return
    import torch

    x = torch.ones(3, 5, 7, 7, device="cuda")
    torch.nn.functional.conv2d(x, torch.ones(2, 5, 2, 2, device="cuda"))
    (torch.ones(9, 9, device="cuda") @ torch.ones(9, 9, device="cuda")).sum().item()
    torch.cuda.synchronize()


def _pytorch_defaults(apply: Callable[[Any], dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
    """bench.determinism.apply, then cuDNN autotuning back off: with deterministic=false that is
    PyTorch's defaults (no deterministic algorithms, no autotuning). Read back, as apply does."""

    def defaults(spec: Any) -> dict[str, Any]:
        import torch

        settings = apply(spec)
        torch.backends.cudnn.benchmark = False
        return {**settings, "cudnn_benchmark": torch.backends.cudnn.benchmark}

    return defaults


def run_trial(task: dict[str, Any]) -> dict[str, Any]:
    """One trial through `bench.trial.run` (no Ray): the fields the checks compare. A task of
    setting "default" runs its (deterministic=false) spec with PyTorch's defaults."""
    from unittest import mock

    from bench import determinism
    from bench.spec import TrialSpec
    from bench.trial import run

    spec = TrialSpec.from_dict(json.loads(task["spec"]))
    warm_up(spec.device)
    apply = determinism.apply
    if task.get("setting") == "default":
        apply = _pytorch_defaults(apply)
    with mock.patch.object(determinism, "apply", apply):
        row = run(spec, keep_weights=task.get("keep_weights", False))
    out = {k: row.get(k) for k in TRIAL_FIELDS}
    if task.get("keep_weights"):
        out["weights"] = row.get("weights")
        out["y_pred"] = row.get("y_pred")
    if out["error"]:
        out["error"] = str(out["error"]).splitlines()[0][:300]
    return out


def _profiled_steps(train: Callable[[], Any]) -> tuple[float, float]:
    """Run `train()` under torch.profiler: (seconds the GPU was busy inside the steps' region,
    the region's seconds), from `gpu_busy` over the profiler's events. On a CPU: (0, region)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench.backends.torch_batched import STEPS_REGION

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        train()
    return gpu_busy(prof.events(), STEPS_REGION)


def gpu_busy(events: Iterable[Any], region: str) -> tuple[float, float]:
    """(seconds in which the GPU ran a kernel or a copy inside the CPU range named `region`, the
    range's seconds) from torch.profiler FunctionEvents. Only CUDA activity counts: not the CPU
    ops that launched it (key_averages would count a kernel there too) and not user annotations
    (`gpu_user_annotation`: a record_function range replayed on the GPU's timeline, spanning
    kernels already counted). Overlapping kernels (streams) count once; a kernel that started
    before the range or ends after it counts only inside. The steps end with a synchronize inside
    the range, so every kernel they launched ends inside it."""
    from torch.autograd import DeviceType

    ranges = [e.time_range for e in events if e.name == region and e.device_type == DeviceType.CPU]
    if len(ranges) != 1:
        raise ValueError(f"{len(ranges)} ranges named {region!r} in the profile, expected 1")
    a, b = ranges[0].start, ranges[0].end
    spans = sorted(
        (max(e.time_range.start, a), min(e.time_range.end, b))
        for e in events
        if e.device_type == DeviceType.CUDA
        and not getattr(e, "is_user_annotation", False)  # torch < 2.4 has no such field
        and e.name != region
    )
    busy, reach = 0.0, a  # the union of the spans, clipped to [a, b]
    for start, stop in spans:
        start = max(start, reach)
        if stop > start:
            busy += stop - start
            reach = stop
    return busy / 1e6, (b - a) / 1e6


def throughput(task: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Stacked models/s of a 30-64-64 MLP on breast_cancer at each size and variant, each
    measured once unprofiled (models/s, the steps' wall time) and once under torch.profiler (the
    GPU's busy time inside the steps, for the host share). A measurement whose estimated time exceeds what is left before `deadline`
    is recorded as not run rather than started."""
    import torch

    from bench import fingerprint
    from bench.backends.torch import TorchNeuralClassifier
    from bench.backends.torch_batched import Member, prepare_stack, train_stack
    from bench.data import load, split

    device, deadline = task["device"], task["deadline"]
    data = split(load({"name": "breast_cancer"}), 0, 0.2)
    est = TorchNeuralClassifier(
        hidden_sizes=(64, 64), epochs=task["epochs"], mode="aligned", device=device
    )
    warm_up(device)
    train_stack(prepare_stack(est, [Member(0, 0, data)] * 2))  # kernels, allocator, context
    no_cxx = fingerprint.cxx_compiler() is None
    per_member: dict[str, float] = {}  # variant -> seconds per member of its last measurement
    last_compile = 0.0
    for n in task["sizes"]:
        members = [Member(i, i, data) for i in range(n)]
        for name, options in VARIANTS:
            base = {"size": n, "variant": name, "device": device}
            if options.get("compile") and task.get("skip_compile"):
                emit({**base, "status": f"not run: {task['skip_compile']}"})
                continue
            if options.get("compile") and no_cxx:
                emit({**base, "status": "not run: no C++ compiler"})
                continue
            # a timed and a profiled run, from this variant's last size (else any variant's),
            # plus compiling this size's graphs (as long as the last size's took)
            known = per_member.get(name, max(per_member.values(), default=0.0))
            guess = 2.2 * known * n + (last_compile if options.get("compile") else 0.0)
            if time.time() + guess > deadline:
                emit({**base, "status": "not run: budget"})
                continue
            began = time.perf_counter()
            result = train_stack(prepare_stack(est, members), **options)
            wall = result.fit_seconds + result.predict_seconds
            busy, profiled = _profiled_steps(
                lambda members=members, options=options: train_stack(
                    prepare_stack(est, members), **options
                )
            )
            per_member[name] = (time.perf_counter() - began - result.compile_seconds) / n
            last_compile = max(last_compile, result.compile_seconds)
            host = host_share(device, busy, result.steps_seconds)
            emit({**base, "status": "ok", "models": n, "seconds": wall, "models_per_s": n / wall,
                  "fit_seconds": result.fit_seconds, "steps_seconds": result.steps_seconds,
                  "compile_seconds": result.compile_seconds if options.get("compile") else None,
                  "gpu_busy_seconds": busy if device == "cuda" else None,
                  "profiled_steps_seconds": profiled, **host})  # fmt: skip
        emit({"size": n, "variant": CUDA_GRAPHS, "device": device, "status": NO_CUDA_GRAPHS})
        if device == "cuda":
            torch.cuda.empty_cache()


def host_share(device: str, gpu_busy_seconds: float, steps_seconds: float) -> dict[str, Any]:
    """Host share = 1 - (GPU busy time during the steps) / (wall time of the steps): the share of
    the optimisation steps' wall time in which the GPU ran nothing (the host loop's Python,
    launches, waits). The busy time comes from a profiled repeat of the same stack (kernel times
    do not depend on the profiler; host times do), the wall time from the unprofiled run, so the
    raw value can leave [0, 1]: `host_share` is clipped, `host_share_raw` is not, and a raw value
    out of range is a sign to distrust the figure. On a CPU host and device are one: n/a."""
    if device != "cuda":
        return {"host_share": None, "host_share_raw": None,
                "host_share_note": "n/a: on a CPU the host is the device"}  # fmt: skip
    if not steps_seconds > 0:
        return {"host_share": None, "host_share_raw": None, "host_share_note": "no steps timed"}
    raw = 1.0 - gpu_busy_seconds / steps_seconds
    share = min(1.0, max(0.0, raw))
    note = "1 - GPU busy time in the steps / steps' wall time"
    if share != raw:
        note += f" (clipped from {raw:.3f})"
    return {"host_share": share, "host_share_raw": raw, "host_share_note": note}


def run_group(
    command: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> tuple[int | None, str, str]:
    """Run `command` as the leader of a new session and process group; (exit code or None when
    stopped at `timeout`, stdout, stderr). On timeout, on the leader's exit and on any error here,
    the whole group is killed: what the leader started (pytest's subprocesses, torch.compile's
    compile workers) ends with it. Output goes to files, not pipes, so that nothing that escaped
    the group can hold this process waiting on a pipe."""
    import os
    import signal
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True
        )
        code: int | None = None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group's id is the leader's pid
            except (ProcessLookupError, PermissionError):  # no member of the group is left
                pass
            proc.wait()
        out.seek(0)
        err.seek(0)
        text = [f.read().decode(errors="replace") for f in (out, err)]
    return code, text[0], text[1]


def gpu_tests(command: list[str], junit: Path, cwd: Path, env: dict[str, str], timeout: float):
    """Run the gpu-marked tests in a subprocess; their counts, and each skip's reason."""
    import xml.etree.ElementTree as ET

    began = time.perf_counter()
    code, stdout, stderr = run_group(command, env, timeout, cwd)
    if code is None:
        return {"status": "not run: budget (stopped at the time limit)", "command": command}
    seconds = time.perf_counter() - began
    if not junit.exists():
        tail = (stdout + stderr).strip().splitlines()[-3:]
        return {"status": f"error: pytest exited {code}", "output": tail,
                "command": command}  # fmt: skip
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    cases = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome, reason = "passed", None
        for tag, label in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                outcome, reason = label, (found.get("message") or "").splitlines()[0][:200]
                break
        counts[outcome] += 1
        cases.append({"test": name, "outcome": outcome, "reason": reason})
    return {"status": "ok" if code in (0, 5) else f"pytest exited {code}",
            **counts, "seconds": seconds, "tests": cases, "command": command}  # fmt: skip


def summarise_determinism(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """k repeats of one (library, model, mode): distinct hashes, the kernels PyTorch flagged, and
    the median fit time."""
    ok = [r for r in runs if r["status"] == "ok"]
    ops = sorted({op for r in ok for op in (r["nondeterministic_ops"] or "").split(",") if op})
    fits = [r["fit_seconds"] for r in ok]
    return {
        "runs": len(runs),
        "ok": len(ok),
        "errors": sorted({r["error"] for r in runs if r["status"] != "ok"}),
        "distinct_weights": len({r["weights_sha256"] for r in ok}),
        "weights_sha256": sorted({r["weights_sha256"] for r in ok}),
        "distinct_predictions": len({r["predictions_sha256"] for r in ok}),
        "nondeterministic_ops": ops,
        "deterministic_in_force": sorted({str(r["deterministic_in_force"]) for r in ok}),
        "cudnn_benchmark": sorted({str(r["cudnn_benchmark"]) for r in ok}),
        "fit_seconds_median": float(np.median(fits)) if fits else None,
        "accuracy": sorted({r["accuracy"] for r in ok}),
    }


def compare_hardware(cpu: dict[str, Any], gpu: dict[str, Any]) -> dict[str, Any]:
    """One seed trained on the CPU and on CUDA: bitwise equal or not, and how far apart."""
    if cpu["status"] != "ok" or gpu["status"] != "ok":
        return {"status": "error", "errors": [r["error"] for r in (cpu, gpu) if r["error"]]}
    a, b = np.asarray(cpu["weights"]), np.asarray(gpu["weights"])
    churn = float(np.mean(np.asarray(cpu["y_pred"]) != np.asarray(gpu["y_pred"])))
    return {
        "status": "ok",
        "bitwise_equal": cpu["weights_sha256"] == gpu["weights_sha256"],
        "predictions_equal": cpu["predictions_sha256"] == gpu["predictions_sha256"],
        "max_weight_diff": float(np.max(np.abs(a - b))) if a.size else 0.0,
        "churn": churn,
        "accuracy_cpu": cpu["accuracy"],
        "accuracy_gpu": gpu["accuracy"],
        "accuracy_diff": gpu["accuracy"] - cpu["accuracy"],
        "fit_seconds_cpu": cpu["fit_seconds"],
        "fit_seconds_gpu": gpu["fit_seconds"],
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def worker(tasks_file: Path, out_file: Path) -> int:
    """Run every task in order, one JSON line per finished task (flushed at once)."""
    tasks = json.loads(tasks_file.read_text())
    with out_file.open("a") as out:

        def emit(record: dict[str, Any]) -> None:
            out.write(json.dumps(record, default=_json_safe) + "\n")
            out.flush()

        for task in tasks:
            try:
                if task["kind"] == "trial":
                    emit({"id": task["id"], **run_trial(task)})
                else:
                    throughput(task, lambda r, task=task: emit({"id": task["id"], **r}))
            except Exception as exc:  # noqa: BLE001 - a failed task is a record, not a lost worker
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                emit({"id": task["id"], "status": "error", "error": error, "size": None,
                      "variant": "(the rest)"})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[1]), Path(sys.argv[2])))
