"""Determinism toggles, thread counts, devices and replay, through real sweeps on real Ray.

CPU assertions run everywhere; the GPU ones are marked `gpu` and skipped without CUDA.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import __version__ as bench_version
from bench import store

pytestmark = pytest.mark.slow


def bench(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


def run_of(results: Path, sweep: str) -> Path:
    (run,) = store.run_dirs(results / sweep)
    return run


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


# Without a GPU, the hardware sweep records its CUDA trials as skipped when asked.
HARDWARE_SKIP = ["+sweep=hardware", "seeds.n=2", "model.epochs=3", "hardware.skip_unavailable=true"]


@pytest.fixture(scope="module")
def sweeps(
    tmp_path_factory: pytest.TempPathFactory, run_at_once
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """The determinism sweep and, on a machine without a GPU, the hardware sweep with
    skip_unavailable, started at once (much of each is process and Ray start-up): by sweep
    name, the process and its results folder."""
    results = tmp_path_factory.mktemp("determinism")
    args = {"determinism": ["+sweep=determinism", "libraries=[sklearn,torch,tensorflow]",
                            "seeds.n=3", "model.epochs=5"]}  # fmt: skip
    if importlib.util.find_spec("torch") is not None and not _cuda():
        args["hardware"] = HARDWARE_SKIP
    done = run_at_once(
        [[sys.executable, "-m", "bench", *a, f"results_dir={results / name}", "progress=false"]
         for name, a in args.items()],
        600,
    )  # fmt: skip
    return {name: (proc, results / name) for name, proc in zip(args, done, strict=True)}


@pytest.fixture(scope="module")
def determinism_run(sweeps) -> Path:
    result, results = sweeps["determinism"]
    assert result.returncode == 0, result.stderr
    return run_of(results, "determinism")


def test_deterministic_repeats_give_one_hash_per_setup(determinism_run: Path) -> None:
    df = pd.read_parquet(determinism_run)
    assert len(df) == 3 * 2 * 3 and (df["status"] == "ok").all()
    for (library, det), group in df.groupby(["library", "deterministic"]):
        assert group["weights_sha256"].nunique() == 1, (library, det)
        assert group["predictions_sha256"].nunique() == 1, (library, det)
        assert group[["seed_split", "seed_order", "seed_init"]].nunique().eq(1).all()


def test_rows_record_the_flags_in_force(determinism_run: Path) -> None:
    df = pd.read_parquet(determinism_run)
    torch_rows = df[df["library"] == "torch"]
    for det, group in torch_rows.groupby("deterministic"):
        assert (group["deterministic_in_force"] == det).all()
        assert (group["deterministic_warn_only"] == det).all()  # read back, in a Ray worker
        assert (group["cudnn_deterministic"] == det).all()
        assert (group["cudnn_benchmark"] == (not det)).all()
        assert (group["tf32_matmul"] == False).all()  # noqa: E712 - a nullable column
    tf_rows = df[df["library"] == "tensorflow"]
    assert (tf_rows["deterministic_in_force"] == tf_rows["deterministic"]).all()
    assert (tf_rows["tf_intra_threads"] == 1).all() and tf_rows["tf_onednn"].isin(
        ["on", "off"]
    ).all()
    assert df.loc[df["library"] != "torch", "deterministic_warn_only"].isna().all()
    env = df["determinism_env"].map(json.loads)
    assert env.map(
        lambda e: e["OMP_NUM_THREADS"] == "1" and e["TF_NUM_INTRAOP_THREADS"] == "1"
    ).all()
    assert (
        df["nondeterministic_ops"].isna().all()
    )  # no CPU kernel here lacks a deterministic version


def test_summary_reports_hashes_churn_and_time_ratio(determinism_run: Path) -> None:
    from bench.summary import axis_summaries

    tables = axis_summaries(pd.read_parquet(determinism_run))
    repeats = tables["fixed-seed repeats: distinct hashes per setup"]
    assert (repeats["max_distinct_weights"] == 1).all() and len(repeats) == 6
    churn = tables["deterministic: False vs True, same seeds"]
    assert set(churn["library"]) == {"sklearn", "torch", "tensorflow"}
    cost = tables["fit time, deterministic / non-deterministic"]
    assert (cost["ratio_median"] > 0).all() and len(cost) == 3


@pytest.mark.extended  # the README's worked example replays bitwise in the default run (CI's 30 minutes)
def test_replay_of_a_cpu_run_reproduces_bitwise(determinism_run: Path) -> None:
    result = bench("replay", str(determinism_run), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "18 of 18 trials reproduced bitwise" in result.stdout


def _rewrite(run: Path, change) -> None:
    """Change stored rows in place (as a different past would have written them): `change`
    returns each part's rows as they should be."""
    for part in store.part_files(run):
        df = change(pq.read_table(part).to_pandas())
        pq.write_table(pa.Table.from_pandas(df, schema=store.SCHEMA, preserve_index=False), part)


def test_replay_fails_when_a_trial_does_not_reproduce_on_the_same_environment(
    determinism_run: Path, tmp_path: Path
) -> None:
    """Three torch trials whose stored weights hash no longer matches, in one replay of a copy
    that keeps only them: on the same environment (a failure), after another torch version (a
    change the environment explains), and in rows an older bench wrote (likewise)."""
    import shutil

    run = tmp_path / "copy"  # the run folder and its bookkeeping, without its replays
    shutil.copytree(determinism_run, run)
    meta = store.run_files(determinism_run).meta
    shutil.copytree(meta, store.run_files(run).meta, ignore=shutil.ignore_patterns("replay"))
    torch_rows = pd.read_parquet(run).query("library == 'torch'")
    same, other_torch, older_bench = torch_rows["trial_key"].iloc[:3]
    torch_version = torch_rows["torch_version"].iloc[1]  # other_torch's, as stored

    def tamper(df: pd.DataFrame) -> pd.DataFrame:
        df = df[df["trial_key"].isin([same, other_torch, older_bench])].copy()
        df["weights_sha256"] = "0" * 64  # each of the three mismatches
        df.loc[df["trial_key"] == other_torch, "torch_version"] = "0.0.1"
        for column in ("bench_version", "bench_commit", "bench_dirty"):
            # rows before bench recorded itself: the run's _bench_version says
            df[column] = df[column].astype(object)
            df.loc[df["trial_key"] == older_bench, column] = None
        return df

    _rewrite(run, tamper)
    store.run_files(run).version.write_text("0.1.0\n")  # as an older bench wrote the run,
    store.run_files(run).manifest.unlink()  # which kept no manifest (bench verify)
    result = bench("replay", str(run), "--no-progress")
    out = " ".join(result.stdout.split())  # rich wraps long lines
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{same}: NOT REPRODUCED on the same environment" in out, result.stdout
    assert "0 of 3 trials reproduced bitwise; 1 failed to" in out, result.stdout  # only `same`
    changed = f"{other_torch[:12]}: differs; environment changed: torch_version: 0.0.1 -> "
    assert changed + torch_version in out, result.stdout
    changed = f"{older_bench[:12]}: differs; environment changed: bench_version: 0.1.0 -> "
    assert changed + bench_version in out, result.stdout


@pytest.mark.extended  # a benchmark-sized sweep (CI's 30 minutes)
def test_each_thread_count_repeats_itself_and_the_summary_says_what_the_bits_did(
    tmp_path: Path,
) -> None:
    """Whether 1 and 2 threads give other bits depends on the CPU (6% of this MLP's weights moved
    on an Intel Xeon; none on an AMD EPYC with AVX2: `python -m bench.facts`), so the test checks
    what holds everywhere: each thread count repeats itself, the rows say which threads were in
    force, and the summary's pairs agree with the hashes and the kept weights."""
    from bench.analysis import matched_pairs
    from bench.summary import axis_summaries

    result = bench(
        "+sweep=threads", "libraries=[torch]", "seeds.n=2", "model.epochs=3",
        f"results_dir={tmp_path}", "progress=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(run_of(tmp_path, "threads"))
    by_threads = df.groupby("threads")
    assert set(by_threads.groups) == {1, 2}
    assert (by_threads["weights_sha256"].nunique() == 1).all()  # each thread count repeats itself
    for threads, group in by_threads:
        assert (group["torch_threads"] == threads).all()
        env = group["determinism_env"].map(json.loads)
        assert (env.map(lambda e: e["OMP_NUM_THREADS"]) == str(threads)).all()
    pairs = matched_pairs(df, "threads", 1, 2)
    assert len(pairs) == 2
    same = df.groupby("threads")["weights_sha256"].first()
    assert (pairs["same_weights"] == (same[1] == same[2])).all()
    assert ((pairs["max_weight_diff"] == 0) == pairs["same_weights"]).all()  # kept weights agree
    assert (pairs["max_weight_diff"] < 1e-4).all()  # rounding (another model: ~0.1 apart)
    (table,) = [t for title, t in axis_summaries(df).items() if title.startswith("threads: 1 vs 2")]
    assert table["same_weights_share"].iloc[0] == float(same[1] == same[2])


def test_cuda_trials_without_a_gpu_are_skipped_when_asked(sweeps) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the skip path needs one without")
    result, results = sweeps["hardware"]  # HARDWARE_SKIP, run beside the determinism sweep
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(run_of(results, "hardware"))
    assert (df.loc[df["device"] == "cuda", "status"] == "skipped").all()
    assert (df.loc[df["device"] == "cpu", "status"] == "ok").all()
    assert df.loc[df["device"] == "cuda", "error"].str.contains("no GPU").all()


gpu = pytest.mark.skipif(not _cuda(), reason="needs CUDA")
# `python -m bench` runs on Ray; the GPU machine (bench.perf gpu) has none.
needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="needs Ray (python -m bench)"
)


@pytest.mark.gpu
@gpu
@needs_ray
def test_gpu_determinism_sweep_shows_autotuning_noise_and_deterministic_mode_removes_it(
    tmp_path: Path,
) -> None:
    result = bench(
        "+sweep=determinism", "libraries=[torch]", "sweep.devices=[cuda]", "model=cnn",
        "dataset=digits", "seeds.n=3", f"results_dir={tmp_path}", "progress=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(run_of(tmp_path, "determinism"))
    on = df[df["deterministic"]]
    assert on["weights_sha256"].nunique() == 1
    assert on["gpu_name"].notna().all() and on["cuda_version"].notna().all()
    assert (df.loc[~df["deterministic"], "cudnn_benchmark"]).all()


@pytest.mark.gpu
@gpu
@needs_ray
def test_hardware_sweep_pairs_cpu_and_gpu_runs(tmp_path: Path) -> None:
    result = bench("+sweep=hardware", "seeds.n=3", f"results_dir={tmp_path}", "progress=false")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(run_of(tmp_path, "hardware"))
    assert set(df["device"]) == {"cpu", "cuda"} and (df["status"] == "ok").all()
    from bench.analysis import matched_pairs

    pairs = matched_pairs(df, "device", "cpu", "cuda")
    assert len(pairs) == 3 and (pairs["churn"] <= 0.1).all()


# --- What PyTorch reports as non-deterministic, in every wording it uses (issue 16) -------------

_TRIGGERED = " (Triggered internally at /pytorch/aten/src/ATen/Context.cpp:{}.)"
# ATen's Context::alertNotDeterministic and alertCuBLASConfigNotDeterministic, as Python sees
# them (TORCH_WARN appends where it was raised), and flex attention's backward (torch._inductor).
KERNEL_WARNING = (
    "scatter_add_cuda_kernel does not have a deterministic implementation, but you set "
    "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at "
    "https://github.com/pytorch/pytorch/issues to help us prioritize adding deterministic "
    "support for this operation." + _TRIGGERED.format(91)
)
CUBLAS_WARNING = (
    "Deterministic behavior was enabled with either `torch.use_deterministic_algorithms(True)` "
    "or `at::Context::setDeterministicAlgorithms(true)`, but this operation is not deterministic "
    "because it uses CuBLAS and you have CUDA >= 10.2. To enable deterministic behavior in this "
    "case, you must set an environment variable before running your PyTorch application: "
    "CUBLAS_WORKSPACE_CONFIG=:4096:8 or CUBLAS_WORKSPACE_CONFIG=:16:8. For more information, go "
    "to https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility"
    + _TRIGGERED.format(217)
)
FLEX_WARNING = (
    "flex_attention backward with block_mask and BACKEND='FLASH' does not have a deterministic "
    "implementation for this configuration, but you set "
    "'torch.use_deterministic_algorithms(True, warn_only=True)'. Running non-deterministic "
    "backward."
)


@contextlib.contextmanager
def _warn_only():
    """torch's deterministic mode in warn-only form for the block, then the process's own again."""
    import torch

    was = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])


def test_every_wording_of_a_nondeterminism_warning_is_captured_and_others_pass() -> None:
    """The missing-CUBLAS_WORKSPACE_CONFIG warning (CUDA, deterministic mode, variable unset)
    named no kernel and went by uncaptured; so did any other wording. The Python-side alert
    (torch._prims_common, used by decompositions) is raised by torch itself here."""
    import warnings

    from torch._prims_common import alert_not_deterministic

    from bench import determinism

    found: list[str] = []
    with (
        _warn_only(),
        pytest.warns(UserWarning, match="unrelated") as passed,
        determinism.nondeterministic_ops(found),
    ):
        warnings.warn(KERNEL_WARNING, UserWarning, stacklevel=1)
        warnings.warn(CUBLAS_WARNING, UserWarning, stacklevel=1)
        warnings.warn(FLEX_WARNING, UserWarning, stacklevel=1)
        alert_not_deterministic("aten::my_decomposed_op")
        warnings.warn("index_reduce is nondeterministic on this device, for now.", stacklevel=1)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert found == [
        "scatter_add_cuda_kernel",
        "CuBLAS (CUBLAS_WORKSPACE_CONFIG not :4096:8 or :16:8)",
        "flex_attention backward with block_mask and BACKEND='FLASH'",
        "aten::my_decomposed_op",
        "index_reduce is nondeterministic on this device; for now.",
    ]
    assert [str(w.message) for w in passed] == ["an unrelated warning"]


def test_a_cpu_kernel_without_a_deterministic_version_is_captured_for_real() -> None:
    import torch

    from bench import determinism

    found: list[str] = []
    with _warn_only(), determinism.nondeterministic_ops(found):
        torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
    assert found == ["put_"]


@pytest.mark.extended
def test_replay_of_a_run_hashed_before_predictions_dtype_compares_like_with_like(
    tmp_path: Path,
) -> None:
    """Rows written before `predictions_dtype` hashed float64 scores cast to float32; a replay
    hashes its own predictions that way for them, so an old scikit-learn run still reproduces
    (linear_svm: float64 squashed margins)."""
    import numpy as np

    from bench import fingerprint

    result = bench(
        "+sweep=smoke", "libraries=[sklearn]", "model=linear_svm", "seeds.n=1",
        f"results_dir={tmp_path}", "progress=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = run_of(tmp_path, "smoke")
    assert (pd.read_parquet(run)["predictions_dtype"] == "float64").all()
    for part in store.part_files(run):  # as bench 0.5.0 wrote it
        table = pq.read_table(part)
        old = [
            fingerprint.predictions_sha256_as_float32(np.asarray(y), np.asarray(p, np.float32))
            for y, p in zip(table["y_pred"].to_pylist(), table["y_proba"].to_pylist(), strict=True)
        ]
        assert old != table["predictions_sha256"].to_pylist()
        i = table.schema.get_field_index("predictions_sha256")
        table = table.set_column(i, "predictions_sha256", pa.array(old, pa.string()))
        pq.write_table(table.drop_columns(["predictions_dtype"]), part)
    store.run_files(run).version.write_text("0.5.0\n")  # which kept no manifest (bench verify)
    store.run_files(run).manifest.unlink()
    n = len(pd.read_parquet(run))
    result = bench("replay", str(run), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{n} of {n} trials reproduced bitwise" in result.stdout


@pytest.mark.gpu
@gpu
def test_cublas_without_a_deterministic_workspace_is_named_and_voids_determinism() -> None:
    """On CUDA, deterministic mode without CUBLAS_WORKSPACE_CONFIG (a worker the runner did not
    start, here a plain process) runs cuBLAS non-deterministically: PyTorch warns, and the row
    names it and does not claim determinism."""
    import os

    import torch

    code = """
import json
from bench import trial
from bench.config import compose
from bench.sweep import expand
spec = expand(compose(["+sweep=smoke", "libraries=[torch]", "sweep.devices=[cuda]",
                       "deterministic=true", "seeds.n=1"], require_installed=False))[0]
assert spec.device == "cuda"
row = trial.run(spec)
print(json.dumps([row[c] for c in ("status", "error", "nondeterministic_ops",
                  "deterministic_in_force", "deterministic_warn_only", "cuda_version")]))
"""
    env = {k: v for k, v in os.environ.items() if k != "CUBLAS_WORKSPACE_CONFIG"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    status, error, ops, in_force, warn_only, cuda = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "ok", error
    assert "CuBLAS (CUBLAS_WORKSPACE_CONFIG not :4096:8 or :16:8)" in ops.split(",")
    assert in_force is False and warn_only is True
    assert cuda == torch.version.cuda
