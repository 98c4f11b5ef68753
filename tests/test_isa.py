"""CPU kernel levels (bench.isa): set in the worker before import, read back into the row, swept as
an axis, compared in the summary, refused where the CPU lacks them, and listed by replay.

Which bits a level changes depends on the CPU (on an AVX2-only CPU `avx2` is `native`; on every
CPU measured so far `baseline` moved every library's bits). The tests assert what holds on every
x86 CPU: the row says what ran, each level repeats itself, and the summary agrees with the rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import isa, store

LACKING = [level for level in isa.LEVELS if isa.missing_flags(level)]
# The environment without level variables set by hand (the suite may run under one), so that
# `native` means the libraries' own choice here.
CLEAN = {k: v for k, v in os.environ.items() if k not in isa.ENV_KEYS}


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        capture_output=True, text=True, timeout=900, env=CLEAN if env is None else env,
    )  # fmt: skip


def fresh(code: str, level: str) -> list[str]:
    """The lines a fresh interpreter prints with `level`'s environment."""
    env = {**CLEAN, **isa.level_env(level)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip().splitlines()


def test_each_level_caps_every_library_and_native_sets_nothing() -> None:
    from numpy._core._multiarray_umath import __cpu_dispatch__

    assert isa.level_env("native") == {}
    expected = {"avx512": "avx512", "avx2": "avx2", "baseline": "default"}
    for level, aten in expected.items():
        env = isa.level_env(level)
        assert env["ATEN_CPU_CAPABILITY"] == aten
        assert {"MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE"} <= set(env)
        disabled = set(env["NPY_DISABLE_CPU_FEATURES"].split())
        kept = set(__cpu_dispatch__) - disabled
        assert disabled <= set(__cpu_dispatch__)  # numpy refuses to disable its baseline
        assert all(
            isa.numpy_target_rank(t) > isa.numpy_target_rank(k) for t in disabled for k in kept
        )
    avx2 = "X86_V3" if "X86_V3" in __cpu_dispatch__ else "AVX2"  # numpy 2.4 / before
    assert avx2 in isa.level_env("baseline")["NPY_DISABLE_CPU_FEATURES"].split()
    assert avx2 not in isa.level_env("avx2")["NPY_DISABLE_CPU_FEATURES"].split()
    # The AVX-512 level is x86-64-v4: later AVX-512 families are beyond it, in either naming.
    for name, rank in (("X86_V4", 2), ("AVX512_SKX", 2), ("AVX512_ICL", 3), ("AVX512_SPR", 3),
                       ("X86_V3", 1), ("AVX2", 1), ("SSE42", 0)):  # fmt: skip
        assert isa.numpy_target_rank(name) == rank, name


def test_a_level_is_refused_where_the_cpu_lacks_a_flag_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message names the key, the missing flags, the CPU and the levels it can run."""
    have = isa.REQUIRED_FLAGS["baseline"] + isa.REQUIRED_FLAGS["avx2"]
    monkeypatch.setattr(isa, "cpu", lambda: isa.Cpu("AuthenticAMD", "AMD EPYC", frozenset(have)))
    if isa.missing_flags("avx2") is None:
        pytest.skip("not an x86 machine")
    isa.check("avx2")
    with pytest.raises(isa.UnsupportedLevel) as caught:
        isa.check("avx512", "sweep.cpu_isa")
    message = str(caught.value)
    assert message.startswith("sweep.cpu_isa: avx512 needs avx512f")
    assert "AMD EPYC" in message and "levels it runs: native, avx2, baseline" in message
    monkeypatch.setattr(isa, "cpu", lambda: isa.Cpu(None, "unknown", None))
    with pytest.raises(isa.UnsupportedLevel, match="no readable x86 flags"):
        isa.check("baseline")
    isa.check("native")  # always allowed: it sets nothing


@pytest.mark.skipif(not LACKING, reason="this CPU runs every kernel level")
def test_a_sweep_at_a_level_this_cpu_lacks_stops_before_any_work(tmp_path: Path) -> None:
    level = LACKING[0]
    result = bench("+sweep=cpu_isa", f"sweep.cpu_isa=[native,{level}]", f"results_dir={tmp_path}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"bench: error: sweep.cpu_isa: {level} needs ")
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(not LACKING, reason="this CPU runs every kernel level")
@pytest.mark.parametrize("library", ["sklearn", "torch", "tensorflow"])
def test_a_worker_whose_cpu_lacks_the_level_writes_an_error_row_before_computing(
    library: str,
) -> None:
    """On a joined cluster the driver cannot see the nodes' CPUs: each worker checks its own,
    in a process started with the level's variables (which would die of SIGILL at the first
    vector kernel, not raise)."""
    code = (
        "import json, dataclasses; from bench import trial; from bench.config import compose; "
        "from bench.sweep import expand; "
        f"spec = expand(compose(['+sweep=smoke', 'libraries=[{library}]', 'seeds.n=1']))[0]; "
        f"row = trial.run(dataclasses.replace(spec, cpu_isa={LACKING[0]!r})); "
        "print(json.dumps({k: row[k] for k in ('status', 'error', 'cpu_flags', 'cpu_vendor')}))"
    )
    env = {**CLEAN, **isa.level_env(LACKING[0])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    row = json.loads(done.stdout.strip().splitlines()[-1])
    assert row["status"] == "error"
    assert row["error"].startswith(f"UnsupportedLevel: cpu_isa: {LACKING[0]} needs ")
    assert row["cpu_flags"] is not None and row["cpu_vendor"] == isa.cpu().vendor


def test_native_beside_other_levels_is_refused_while_a_level_variable_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`native` trials would inherit the variable and run another level under its name."""
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    with pytest.raises(isa.UnsupportedLevel, match="ATEN_CPU_CAPABILITY=default is set"):
        isa.check_environment({"native", "baseline"}, "sweep.cpu_isa")
    isa.check_environment({"native"})  # one level: the rows record what it ran
    isa.check_environment({"baseline", "avx2"})  # every such level sets each variable itself
    result = bench(
        "+sweep=cpu_isa", f"results_dir={tmp_path}", env={**CLEAN, "ATEN_CPU_CAPABILITY": "default"}
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: sweep.cpu_isa: ATEN_CPU_CAPABILITY=default is set")
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def isa_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("cpu_isa")
    result = bench(
        "+sweep=cpu_isa", "libraries=[sklearn,torch]", "sweep.cpu_isa=[native,baseline]",
        "seeds.n=2", "model.epochs=3", f"results_dir={results}", "progress=false",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cpu_isa: native vs baseline, same seeds" in result.stdout
    (run,) = store.run_dirs(results / "cpu_isa")
    return run


@pytest.mark.slow
def test_rows_record_the_kernels_each_level_put_in_force(isa_run: Path) -> None:
    df = pd.read_parquet(isa_run)
    assert len(df) == 2 * 2 * 2 and (df["status"] == "ok").all()
    assert set(df["cpu_isa"]) == {"native", "baseline"}
    assert (df["cpu_vendor"] == isa.cpu().vendor).all()
    assert (df["cpu_flags"] == isa.cpu_columns()["cpu_flags"]).all()
    for level, rows in df.groupby("cpu_isa"):
        torch_rows = rows[rows["library"] == "torch"]
        # one fresh interpreter per level (a torch import each): its kernels and numpy's targets
        capability, simd = fresh(
            "import torch; print(torch.backends.cpu.get_cpu_capability()); "
            "from bench.isa import numpy_simd; print(numpy_simd())",
            level,
        )
        assert (torch_rows["torch_cpu_capability"] == capability).all()
        assert (rows["numpy_simd"] == simd).all()
        env = rows["determinism_env"].map(json.loads)
        for key, value in isa.level_env(level).items():
            assert (env.map(lambda e, k=key: e[k]) == value).all(), key
        assert rows.loc[rows["library"] == "sklearn", "torch_cpu_capability"].isna().all()
    baseline = df[df["cpu_isa"] == "baseline"]
    assert (baseline.loc[baseline["library"] == "torch", "torch_cpu_capability"] == "DEFAULT").all()
    from numpy._core._multiarray_umath import __cpu_baseline__

    for simd in baseline["numpy_simd"]:  # no numpy target beyond x86-64-v2 ran
        assert all(isa.numpy_target_rank(t) == 0 for t in simd.split() if t not in __cpu_baseline__)
    assert (baseline.loc[baseline["library"] == "torch", "onednn_max_cpu_isa"] == "SSE41").all()
    assert baseline["blas"].str.contains("openblas").all()
    assert baseline["blas"].str.contains("Nehalem").all()  # OpenBLAS's core type, read back


@pytest.mark.slow
def test_levels_pair_by_seed_and_the_summary_agrees_with_the_hashes_and_weights(
    isa_run: Path,
) -> None:
    from bench.analysis import matched_churn, matched_pairs

    df = pd.read_parquet(isa_run)
    assert df["weights"].map(len).eq(df["n_params"]).all()  # keep_weights=true in this sweep
    pairs = matched_pairs(df, "cpu_isa", "native", "baseline")
    assert len(pairs) == 4  # 2 libraries x 2 seeds
    assert ((pairs["max_weight_diff"] == 0) == pairs["same_weights"]).all()
    assert (pairs["max_weight_diff"] < 1e-4).all()  # rounding (another model: ~0.1 apart)
    for pair in pairs.itertuples():
        a = df.set_index("trial_key").loc[pair.trial_key_a]
        b = df.set_index("trial_key").loc[pair.trial_key_b]
        assert pair.same_weights == (a["weights_sha256"] == b["weights_sha256"])
        assert pair.churn == np.mean(np.asarray(a["y_pred"]) != np.asarray(b["y_pred"]))
    table = matched_churn(df, "cpu_isa", "native", "baseline", by="library")
    for row in table.itertuples():
        mine = pairs[pairs["library"] == row.library]
        assert row.same_weights_share == mine["same_weights"].mean()
        assert row.max_weight_diff == mine["max_weight_diff"].max()


@pytest.mark.slow
@pytest.mark.extended
def test_replay_reproduces_each_level_and_names_a_changed_kernel(
    isa_run: Path, tmp_path: Path, run_at_once
) -> None:
    """The run replayed whole, and beside it (both at once: two replays of separate folders) one
    trial of a copy whose row says it ran on AVX-512 kernels and whose bits differ."""
    run = tmp_path / "copy"  # the run folder and its bookkeeping, without its replays
    shutil.copytree(isa_run, run)
    meta = store.run_files(isa_run).meta
    shutil.copytree(meta, store.run_files(run).meta, ignore=shutil.ignore_patterns("replay"))
    key = pd.read_parquet(run).query("library == 'torch' and cpu_isa == 'baseline'")["trial_key"]
    key = key.iloc[0]
    for part in store.part_files(run):  # as if it had run on a CPU with AVX-512 kernels
        table = pq.read_table(part)
        df = table.to_pandas()
        hit = df["trial_key"] == key
        df.loc[hit, "weights_sha256"] = "0" * 64
        df.loc[hit, "torch_cpu_capability"] = "AVX512"
        schema = store.SCHEMA.with_metadata(table.schema.metadata)  # as bench wrote it
        pq.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False), part)
    from bench.manifest import Manifest, entry_of

    kept = Manifest.load(store.run_files(run).manifest)  # as bench wrote them there: listed
    kept.update(add=[entry_of(part) for part in store.part_files(run)])
    module = [sys.executable, "-m", "bench", "replay"]
    whole, one = run_at_once(
        [[*module, str(isa_run), "--no-progress"],
         [*module, str(run), "--trial", key[:16], "--no-progress"]],
        900, env=CLEAN,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stdout + whole.stderr
    assert "8 of 8 trials reproduced bitwise" in whole.stdout
    assert one.returncode == 0, one.stdout
    assert "environment changed" in one.stdout
    assert "torch_cpu_capability: AVX512 -> DEFAULT" in " ".join(one.stdout.split())


@pytest.mark.slow
@pytest.mark.extended
def test_compiled_stacks_build_at_every_level_one_after_another(tmp_path: Path) -> None:
    """Inductor's caches are not keyed by the CPU capability: with one shared cache, a stack
    compiled at `native` (AVX2 or AVX-512 kernels) made the same stack fail to build at
    `baseline` (C++ error). bench gives each capability its own cache folder.

    Both levels in one sweep, one task at a time (`cluster.max_in_flight=1`): `native`'s stack
    compiles and trains in its worker before `baseline`'s starts in another, both workers started
    with the same TORCHINDUCTOR_CACHE_DIR. Kept short, as compiling is most of its time:
    TORCHINDUCTOR_VEC_ISA_OK=1 skips Inductor's probe of which vector instruction sets this
    compiler builds (a test program compiled per set in each new cache folder, two thirds of a
    level's compile time; the kernels still follow the capability), and batches of 65 divide
    breast_cancer's 455 training rows, so that each level compiles one graph, not a second one
    for an epoch's shorter last batch."""
    cache = tmp_path / "inductor"
    env = {**CLEAN, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TORCHINDUCTOR_VEC_ISA_OK": "1"}
    result = bench(
        "+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]", "seeds.n=2",
        "model.epochs=2", "model.batch_size=65", "batching.enabled=true", "batching.fused=true",
        "batching.compile=true", "sweep.cpu_isa=[native,baseline]", "cluster.max_in_flight=1",
        f"results_dir={tmp_path}", "progress=false", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = store.run_dirs(tmp_path / "seeds")
    df = pd.read_parquet(run)
    assert (df["status"] == "ok").all() and df["batch_compiled"].all()
    assert set(df["cpu_isa"]) == {"native", "baseline"}
    first = df.groupby("cpu_isa")["started_at"].min()
    assert first["native"] < first["baseline"], first  # native compiled first, as it did
    assert df["worker_pid"].nunique() == 2  # each level compiled in a worker of its own
    assert (cache.parent / "inductor-default").is_dir()  # the baseline level's own cache
