"""`python -m bench.perf gpu` (issue 21): the GPU checks as one command that cannot rot.

Its `--smoke` form runs every section's code on the CPU at tiny sizes, here with Ray and
TensorFlow hidden, since that is how the GPU machine looks (it has neither). The refusals are
checked in this process: they must come before any work, so they are cheap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import perf, perf_gpu

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

    det = result["determinism"]
    torch_rows = [r for r in det if r["library"] == "torch"]
    assert len(torch_rows) == 4  # cnn, mlp x deterministic off, on
    for row in torch_rows:
        assert row["status"] == "ok" and row["runs"] == 2 and row["fit_seconds_median"] > 0
        assert row["distinct_weights"] >= 1 and row["distinct_predictions"] >= 1
        assert row["cudnn_benchmark"] == [str(not row["deterministic"])]
        if row["deterministic"]:
            assert row["fit_time_ratio_det_to_nondet"] > 0
    tf_rows = [r for r in det if r["library"] == "tensorflow"]
    assert [r["status"] for r in tf_rows] == ["skipped: TensorFlow is not installed here"] * 2

    hw = {r["model"]: r for r in result["hardware"]}
    for model in ("cnn", "mlp"):
        assert hw[model]["status"] == "ok", hw[model]
        assert 0.0 <= hw[model]["churn"] <= 1.0 and hw[model]["max_weight_diff"] >= 0.0
        if result["device"] == "cpu":  # the same spec twice on one CPU: the same bits
            assert hw[model]["bitwise_equal"] and hw[model]["max_weight_diff"] == 0.0
    assert hw["cnn, mlp"]["status"] == "skipped: TensorFlow is not installed here"

    rates = {(r["size"], r["variant"]): r for r in result["throughput"]}
    for size in (32, 64):
        for variant in ("default Adam", "fused Adam"):
            assert rates[size, variant]["status"] == "ok"
            assert rates[size, variant]["models_per_s"] > 0
        assert rates[size, "CUDA graphs"]["status"].startswith("not run: the stacked trainer")
        compiled = rates[size, "compiled (fused Adam + torch.compile)"]["status"]
        assert compiled.startswith("not run: --smoke")

    tests = result["gpu_tests"]
    assert tests["status"] == "ok" and tests["failed"] == 0 and tests["errors"] == 0
    assert tests["absent_here"] == ["ray", "tensorflow"]
    if not _cuda():
        assert tests["skipped"] >= 1 and tests["passed"] == 0

    md = (out / "gpu.md").read_text()
    for heading in ("## Determinism", "## CPU vs GPU", "## Stacked throughput", "## gpu-marked"):
        assert heading in md
    assert "skipped: TensorFlow is not installed here" in md


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
    assert fused["models_per_s"] > 0 and 0.0 <= fused["host_share"] <= 1.0
