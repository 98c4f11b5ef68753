"""`python -m bench.perf gpu` (issue 21): the GPU checks as one command that cannot rot.

Its `--smoke` form runs every section's code on the CPU at tiny sizes, here with Ray and
TensorFlow hidden, since that is how the GPU machine looks (it has neither). The refusals are
checked in this process: they must come before any work, so they are cheap.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import perf, perf_gpu
from bench import perf_gpu_checks as checks

ROOT = Path(__file__).resolve().parent.parent
# A sitecustomize that hides Ray and TensorFlow from every process started with it on
# PYTHONPATH (their imports fail, find_spec and importlib.metadata find nothing), as on the GPU
# machine, where neither is installed.
HIDE = """
import sys

HIDDEN = {"ray", "tensorflow", "tensorflow_cpu", "keras", "tf_keras"}


class _Hiding:
    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        find = getattr(self._inner, "find_spec", None)
        return None if find is None else find(name, path, target)

    def find_distributions(self, *args, **kwargs):
        find = getattr(self._inner, "find_distributions", None)
        dists = find(*args, **kwargs) if find is not None else ()
        return (d for d in dists
                if (d.metadata["Name"] or "").lower().replace("-", "_") not in HIDDEN)

    def __getattr__(self, name):
        return getattr(self._inner, name)


sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
"""


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def hidden_env(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(HIDE)
    path = os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}


@pytest.mark.slow
def test_smoke_runs_every_section_without_ray_and_tensorflow(tmp_path: Path) -> None:
    env = hidden_env(tmp_path / "hide")
    probe = [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('ray'))"]
    assert subprocess.run(probe, env=env, capture_output=True, text=True).stdout.strip() == "None"
    out = tmp_path / "out"
    # two repeats; --smoke shares one process per environment (a process costs seconds of
    # imports), where the GPU run gives every run its own
    proc = subprocess.run(
        [sys.executable, "-m", "bench.perf", "gpu", "--smoke", "--repeats", "2", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu.json").read_text())
    assert {"machine", "determinism", "hardware", "throughput", "gpu_tests"} <= set(result)
    assert result["machine"]["torch_version"] and result["machine"]["tensorflow_version"] is None
    if not _cuda():
        assert result["device"] == "cpu" and result["substitution"].startswith("cuda -> cpu")
    # one worker per distinct environment (on the CPU the deterministic toggles may set the same
    # variables): the progress lines count them
    assert re.search(r"determinism: 12 tasks, [12] processes", proc.stderr), proc.stderr[-2000:]

    det = result["determinism"]
    torch_rows = {(r["model"], r["setting"]): r for r in det if r["library"] == "torch"}
    assert sorted(torch_rows) == sorted((m, s) for m in ("cnn", "mlp") for s in perf_gpu.SETTINGS)
    autotune, _, on = perf_gpu.SETTINGS
    for (_, setting), row in torch_rows.items():
        assert row["status"] == "ok" and row["runs"] == 2 and row["fit_seconds_median"] > 0
        assert row["distinct_weights"] == 1 and row["distinct_predictions"] == 1
        assert row["cudnn_benchmark"] == [str(setting == autotune)], row
        assert row["deterministic_in_force"] == [str(setting == on)], row
    for model in ("cnn", "mlp"):
        rows = [torch_rows[model, s] for s in perf_gpu.SETTINGS]
        if result["device"] == "cpu":  # cuDNN's switches do nothing on a CPU: the same bits
            assert rows[0]["weights_sha256"] == rows[1]["weights_sha256"]
        for key, other in (("autotune", rows[0]), ("default", rows[1])):
            ratio = rows[2]["fit_seconds_median"] / other["fit_seconds_median"]
            assert rows[2][f"fit_time_ratio_det_to_{key}"] == pytest.approx(ratio)
    tf_rows = [r for r in det if r["library"] == "tensorflow"]
    assert [r["status"] for r in tf_rows] == ["skipped: TensorFlow is not installed here"] * 2

    hw = {r["model"]: r for r in result["hardware"]}
    for model in ("cnn", "mlp"):
        assert hw[model]["status"] == "ok", hw[model]
        if result["device"] == "cpu":  # the same spec twice on one CPU: the same bits
            assert hw[model]["bitwise_equal"] and hw[model]["max_weight_diff"] == 0.0
            assert hw[model]["churn"] == 0.0
    assert hw["cnn, mlp"]["status"] == "skipped: TensorFlow is not installed here"

    rates = {(r["size"], r["variant"]): r for r in result["throughput"]}
    assert {size for size, _ in rates} == {32, 64}
    for size in (32, 64):
        for variant in ("default Adam", "fused Adam"):
            row = rates[size, variant]
            assert row["status"] == "ok" and row["models"] == size, row
            assert row["models_per_s"] == pytest.approx(size / row["seconds"])
            assert row["profiled_steps_seconds"] > 0  # the profiler found the steps' range
            if result["device"] == "cpu":
                assert row["host_share"] is None and row["host_share_note"].startswith("n/a")
        assert rates[size, "CUDA graphs"]["status"].startswith("not run: the stacked trainer")
        compiled = rates[size, "compiled (fused Adam + torch.compile)"]["status"]
        assert compiled.startswith("not run: --smoke")

    tests = result["gpu_tests"]
    assert tests["status"] == "ok" and tests["failed"] == 0 and tests["errors"] == 0
    found = sorted(f"tests/{p.name}" for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())  # fmt: skip
    assert tests["files"] == found and "tests/test_perf_gpu.py" in found
    assert tests["absent_here"] == ["ray", "tensorflow"]
    if not _cuda():
        assert tests["skipped"] >= len(found) and tests["passed"] == 0

    md = (out / "gpu.md").read_text()
    for heading in ("## Determinism", "## CPU vs GPU", "## Stacked throughput", "## gpu-marked"):
        assert heading in md
    assert "skipped: TensorFlow is not installed here" in md


def test_a_spent_budget_records_every_check_as_not_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert perf.main(["gpu", "--smoke", "--budget", "0.001", "--out", str(out)]) == 0
    result = json.loads((out / "gpu.json").read_text())
    torch_rows = [r for r in result["determinism"] if r["library"] == "torch"]
    assert len(torch_rows) == 6
    assert {r["status"] for r in torch_rows} == {"not run: budget"}
    assert {r["status"] for r in result["hardware"] if r["library"] == "torch"} == {
        "not run: budget"
    }
    stacked = [r for r in result["throughput"] if r["variant"] != "CUDA graphs"]
    assert len(stacked) == 6 and {r["status"] for r in stacked} == {"not run: budget"}
    assert result["gpu_tests"] == {"status": "not run: budget"}


def _event(name: str, device: str, start: float, end: float, annotation: bool = False):
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    kind = {"cpu": DeviceType.CPU, "cuda": DeviceType.CUDA}[device]
    return SimpleNamespace(name=name, device_type=kind, is_user_annotation=annotation,
                           time_range=SimpleNamespace(start=start, end=end))  # fmt: skip


def test_gpu_busy_counts_kernels_inside_the_steps_once() -> None:
    region = "steps"
    events = [
        _event("prepare", "cpu", 0, 100),
        _event("copy_kernel", "cuda", 50, 150),  # started before the steps: 50 us inside
        _event(region, "cpu", 100, 1100),  # the steps: 1,000 us
        _event("aten::mm", "cpu", 200, 210),  # its kernel's launch: no GPU time of its own
        _event("gemm", "cuda", 300, 500),  # 200 us
        _event("other_stream", "cuda", 400, 600),  # overlaps gemm: 100 us more
        _event(region, "cuda", 150, 1050, annotation=True),  # the range on the GPU: not a kernel
        _event("Optimizer.step#Adam.step", "cuda", 700, 900, annotation=True),
        _event("adam_kernel", "cuda", 1000, 1200),  # ends after the steps: 100 us inside
        _event("predict_kernel", "cuda", 1300, 1400),  # after the steps: none
    ]
    busy, wall = checks.gpu_busy(events, region)
    assert busy == pytest.approx(450e-6) and wall == pytest.approx(1000e-6)
    with pytest.raises(ValueError, match="0 ranges"):
        checks.gpu_busy(events[3:5], region)


def test_host_share_is_one_minus_busy_over_wall_and_shows_a_clip() -> None:
    assert checks.host_share("cuda", 0.25, 1.0)["host_share"] == pytest.approx(0.75)
    clipped = checks.host_share("cuda", 1.2, 1.0)
    assert clipped["host_share"] == 0.0 and clipped["host_share_raw"] == pytest.approx(-0.2)
    assert "clipped from -0.200" in clipped["host_share_note"]
    assert checks.host_share("cpu", 0.0, 1.0)["host_share"] is None
    assert checks.host_share("cuda", 0.0, 0.0)["host_share"] is None


def test_a_timed_out_worker_takes_its_whole_process_group_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    script = f"sleep 60 & echo $! > {pid_file}; wait"
    code, _, _ = checks.run_group(["sh", "-c", script], dict(os.environ), timeout=1.0)
    assert code is None
    stat = Path(f"/proc/{int(pid_file.read_text())}/stat")
    # gone, or a zombie waiting for whoever adopted it to reap it: not running
    assert not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] == "Z"


@pytest.mark.skipif(_cuda(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_a_gpu_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    assert perf.main(["gpu", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("bench.perf gpu: error: no CUDA device: "), line
    assert not out.exists()


def test_an_unwritable_out_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "results"  # under a file: no user, root included, can make it
    assert perf.main(["gpu", "--smoke", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"bench.perf gpu: error: --out {out}: not writable"), line


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
@pytest.mark.skipif(
    perf_gpu.INNER in os.environ, reason="inside `bench.perf gpu`, which runs the gpu tests"
)
def test_the_gpu_command_on_cuda_gives_every_figure(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.perf", "gpu", "--repeats", "2", "--sizes", "256",
         "--budget", "300", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["device"] == "cuda" and result["machine"]["gpu_name"]
    for row in result["determinism"]:
        if row["library"] == "torch" and row["deterministic"]:
            assert row["distinct_weights"] == 1, row
    assert all(r["status"] == "ok" for r in result["hardware"] if r["library"] == "torch")
    fused = next(r for r in result["throughput"] if r["variant"] == "fused Adam")
    assert fused["status"] == "ok" and fused["models"] == 256 and fused["gpu_busy_seconds"] > 0
    assert fused["host_share"] == min(1.0, max(0.0, fused["host_share_raw"]))
