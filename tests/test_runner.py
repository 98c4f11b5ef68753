"""A smoke sweep through real embedded Ray, run as a user runs it, and its Parquet read back.

One sweep (`python -m bench +sweep=smoke report=true`, about half a minute on two cores: the
session's `smoke_run`, conftest.py) is shared by every test here, and by test_report.py,
test_provenance.py and test_modelstore.py; each test asserts one property of what it left on disk.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench import store
from bench.config import compose
from bench.sweep import expand

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class SmokeRun:
    proc: subprocess.CompletedProcess
    results_dir: Path
    run_dir: Path
    df: pd.DataFrame


@pytest.fixture(scope="module")
def smoke(smoke_run) -> SmokeRun:
    run = smoke_run
    return SmokeRun(run.proc, run.results_dir, run.run_dir, pd.read_parquet(run.run_dir))


def test_exit_code_and_rows(smoke: SmokeRun) -> None:
    assert smoke.proc.returncode == 0
    assert len(smoke.df) == 12


def test_every_design_column_is_present(smoke: SmokeRun, design_columns: tuple[str, ...]) -> None:
    missing = [c for c in design_columns if c not in smoke.df.columns]
    assert not missing


def test_every_trial_succeeded(smoke: SmokeRun) -> None:
    df = smoke.df
    assert (df["status"] == "ok").all(), df.loc[df["status"] != "ok", "error"].tolist()
    assert df["error"].isna().all()
    assert df["accuracy"].between(0.8, 1.0).all()


def test_run_id_is_the_folder_name(smoke: SmokeRun) -> None:
    assert set(smoke.df["run_id"]) == {smoke.run_dir.name}
    assert smoke.run_dir.parent.name == "smoke" and set(smoke.df["sweep"]) == {"smoke"}
    assert smoke.run_dir.name in smoke.proc.stderr + smoke.proc.stdout


def test_rows_are_exactly_the_expanded_trials(smoke: SmokeRun) -> None:
    """One row per spec of the same composition: no trial lost, none run twice."""
    expected = {s.trial_key: s for s in expand(compose(["+sweep=smoke"]))}
    assert sorted(smoke.df["trial_key"]) == sorted(expected)
    for row in smoke.df.itertuples():
        spec = expected[row.trial_key]
        assert (row.library, row.varied, row.repeat) == (spec.library, spec.varied, spec.repeat)
        assert (row.seed_split, row.seed_order, row.seed_init) == (
            spec.seed_split,
            spec.seed_order,
            spec.seed_init,
        )


def test_counts_per_library_and_source(smoke: SmokeRun) -> None:
    counts = smoke.df.groupby(["library", "varied"]).size()
    assert counts.to_dict() == {
        (lib, v): 2 for lib in ("sklearn", "tensorflow", "torch") for v in ("none", "split")
    }


def test_config_is_saved_beside_the_parts(smoke: SmokeRun) -> None:
    """The saved config reproduces the sweep: expanding it gives the trial keys in the table."""
    config_file = store.run_files(smoke.run_dir).config
    assert config_file == smoke.results_dir / "smoke" / f".{smoke.run_dir.name}" / "config.yaml"
    assert config_file.is_file()
    saved = OmegaConf.load(config_file)
    assert saved.sweep.name == "smoke"
    assert saved.results_dir == str(smoke.results_dir)
    assert {s.trial_key for s in expand(saved)} == set(smoke.df["trial_key"])


def test_no_temporary_files_left(smoke: SmokeRun) -> None:
    """Parts appear only complete, and the run folder holds nothing else: its bookkeeping is in
    the hidden sibling folder, and nothing there is named `*.parquet`. (The sweep ran with
    report=true: the report's files, which test_report.py checks, are bookkeeping too.)"""
    meta = store.run_files(smoke.run_dir).meta
    names = [p.relative_to(meta).as_posix() for p in meta.rglob("*")]
    leftovers = [n for n in names if Path(n).name.startswith(".") or n.endswith(".tmp")]
    assert not leftovers
    report = store.run_files(smoke.run_dir).report
    assert report == meta / "report" and report.is_dir()
    written = [f"report/{p.name}" for p in report.iterdir()]
    assert all(p.is_file() for p in report.iterdir())
    assert sorted(names) == sorted(
        ["bench_version", "config.yaml", "lock", "manifest.jsonl", "report", *written]
    )
    parts = sorted(smoke.run_dir.glob("part-*.parquet"))
    assert parts and sorted(smoke.run_dir.iterdir()) == parts
    assert sorted(smoke.results_dir.rglob("*.parquet")) == parts


def test_types_read_back_as_written(smoke: SmokeRun) -> None:
    """pd.read_parquet needs no further work: numbers are numbers, lists are lists."""
    df = smoke.df
    for column in ("seed_split", "seed_order", "seed_init", "repeat", "threads", "n_test"):
        assert pd.api.types.is_integer_dtype(df[column]), column
    for column in ("accuracy", "roc_auc", "log_loss", "fit_seconds"):
        assert pd.api.types.is_float_dtype(df[column]), column
    assert pd.api.types.is_bool_dtype(df["deterministic"])
    first = df.iloc[0]
    assert len(first["y_true"]) == len(first["y_pred"]) == len(first["y_score"]) == first["n_test"]


def test_trials_ran_in_ray_workers_with_one_thread(smoke: SmokeRun) -> None:
    df = smoke.df
    assert df["ray_node_id"].notna().all()
    assert (df["threads"] == 1).all() and (df["blas_threads"] == 1).all()
    assert (df.loc[df["library"] == "torch", "torch_threads"] == 1).all()
    assert (df.loc[df["library"] == "tensorflow", "tf_intra_threads"] == 1).all()


def test_workers_are_reused(smoke: SmokeRun) -> None:
    """TensorFlow and torch are imported once per worker, not once per trial."""
    assert smoke.df["worker_pid"].nunique() < len(smoke.df)


def test_repeats_with_fixed_seeds_agree_bitwise(smoke: SmokeRun) -> None:
    """varied=none repeats one spec: on the CPU with one thread, every repeat gives the same bits."""
    none = smoke.df[smoke.df["varied"] == "none"]
    assert (none.groupby("library")["weights_sha256"].nunique() == 1).all()
    assert (none.groupby("library")["predictions_sha256"].nunique() == 1).all()
    split = smoke.df[smoke.df["varied"] == "split"]
    assert (split.groupby("library")["seed_split"].nunique() == 2).all()


def test_summary_is_printed(smoke: SmokeRun) -> None:
    out = smoke.proc.stdout
    for library in ("sklearn", "torch", "tensorflow"):
        assert library in out
    assert str(smoke.run_dir) in out


def test_embedded_workers_inherit_the_common_env_and_the_driver_keeps_its_own(monkeypatch) -> None:
    """connect(base_env=...) starts embedded Ray with the sweep's most common worker environment
    in force, so its prestarted workers serve those trials without a runtime_env; other settings
    still reach their workers; the driver's own environment is left as it was; a Ray started
    later by someone else is never taken for one with that environment."""
    import os

    import ray

    from bench.cluster.connect import connect, task_env

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    base = {"OMP_NUM_THREADS": "1", "BENCH_PROBE": "base"}
    other = {"OMP_NUM_THREADS": "2", "BENCH_PROBE": "other"}

    def probe() -> tuple[str | None, str | None]:
        return os.environ.get("OMP_NUM_THREADS"), os.environ.get("BENCH_PROBE")

    remote = ray.remote(probe)
    assert connect({"num_cpus": 1}, base)
    try:
        assert probe() == ("7", None)
        assert task_env(base) == {}
        assert task_env(other) == {"runtime_env": {"env_vars": other}}
        assert ray.get(remote.options(**task_env(base)).remote()) == ("1", "base")
        assert ray.get(remote.options(**task_env(other)).remote()) == ("2", "other")
    finally:
        ray.shutdown()
    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        assert task_env(base) == {"runtime_env": {"env_vars": base}}
    finally:
        ray.shutdown()


def test_common_env_never_makes_workers_inherit_a_variable_other_trials_leave_unset() -> None:
    """A runtime_env cannot remove an inherited variable: with deterministic CUDA trials in the
    majority, the base environment is still the one without CUBLAS_WORKSPACE_CONFIG."""
    from dataclasses import replace

    from bench.cluster.connect import common_env
    from bench.determinism import worker_env

    spec = expand(compose(["+sweep=smoke"]))[0]
    cuda_det = replace(spec, device="cuda", deterministic=True)
    cuda = replace(spec, device="cuda", deterministic=False)
    assert common_env([cuda_det, cuda_det, cuda]) == worker_env(1, False, "cuda")
    assert common_env([cuda_det, cuda_det]) == worker_env(1, True, "cuda")
    assert common_env([replace(spec, threads=2), spec, spec]) == worker_env(1, False, "cpu")
    assert common_env([]) is None


@pytest.mark.parametrize("address", ["notahost", "host:abc", "127.0.0.1:99999", "10.0.0.1:"])
def test_a_malformed_address_is_named_as_such_without_waiting(address: str) -> None:
    import time

    from bench.cluster.connect import _probe_address
    from bench.config import ConfigError

    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^cluster\.address: expected auto, .*HOST:PORT, got"):
        _probe_address(address)
    assert time.monotonic() - started < 3  # refused on its form, not after the 5 s probe


# --- streaming: a sweep of millions is never held whole ------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        ["+sweep=seeds", "sweep.varied=[split,all]", "seeds.n=7"],
        ["+sweep=determinism", "seeds.n=3"],
        ["+sweep=cpu_isa"],
    ],
)
def test_streamed_trials_and_settings_are_the_expanded_ones(overrides: list[str]) -> None:
    from bench.config import compose
    from bench.sweep import expand, iter_specs, setups

    cfg = compose(overrides)
    specs = expand(cfg)
    assert list(iter_specs(cfg)) == specs
    settings = setups(cfg)
    assert sum(n for _, n in settings) == len(specs)
    setting = lambda s: (s.library, s.device, s.threads, s.cpu_isa, s.varied, s.deterministic)  # noqa: E731
    assert {setting(s) for s, _ in settings} == {setting(s) for s in specs}


def test_stacks_are_cut_as_they_fill_evenly_and_match_the_whole_lists_groups() -> None:
    from bench.config import compose
    from bench.sweep import expand, iter_specs, setups
    from bench.units import group_specs, stack_totals, stream_units

    cfg = compose(["+sweep=seeds", "libraries=[sklearn,torch]", "model=mlp", "seeds.n=11",
                   "sweep.varied=[init,all]", "batching.enabled=true"])  # fmt: skip
    whole = group_specs(expand(cfg), 4)
    streamed = list(stream_units(iter_specs(cfg), 4, stack_totals(setups(cfg))))
    key = lambda units: sorted(tuple(s.trial_key for s in u) for u, _ in units)  # noqa: E731
    assert key(streamed) == key(whole)
    stacks = [u for u, stacked in whole if stacked]
    # 22 torch trials share one stack key: ceil(22 / 4) = 6 stacks of ceil(22 / 6) = 4, the rest
    # in the last
    assert sorted(len(u) for u in stacks) == [2, 4, 4, 4, 4, 4]
    assert all(len(u) == 1 and not stacked for u, stacked in whole if u[0].library == "sklearn")
    five = [s for s in expand(cfg) if s.library == "torch"][:5]
    assert [len(u) for u, _ in group_specs(five, 4)] == [3, 2]  # evened out, not 4 and 1


def test_a_run_made_before_stacks_per_task_resumes_with_one_stack_a_task() -> None:
    from bench.rundir import config_diff

    before = {"batching": {"enabled": True, "max_group": 256}}
    assert config_diff(before, {"batching": {**before["batching"], "stacks_per_task": 1}}) == []
    changed = config_diff(before, {"batching": {**before["batching"], "stacks_per_task": 4}})
    assert changed == ["batching.stacks_per_task: 1 -> 4"]
