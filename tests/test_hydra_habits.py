"""Hydra habits on `python -m bench`, typed as a Hydra user types them (docs/hydra.md).

Each case is a fresh interpreter. Refusals are one line, exit 2, before any work; the two real
multiruns (bench's own, one run after another, and hydra-submitit-launcher's submitit_local,
the real plugin, whose jobs are subprocesses as SLURM array tasks would be) each train two tiny
scikit-learn runs and check their two run folders. tests/test_slurm.py runs the same multirun
through submitit_slurm on a real SLURM.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pandas as pd
import pytest

from bench.store import run_dirs

# hydra-submitit-launcher (the test extra): its launchers show in --cfg hydra and --info
SUBMITIT = find_spec("hydra_plugins.hydra_submitit_launcher") is not None

SMOKE = ["+sweep=smoke", "libraries=[sklearn]", "seeds.n=1", "progress=false"]
TWO_MODELS = "model=logreg,decision_tree"


def refused(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, f"rc={proc.returncode}\n{proc.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("bench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr and "add --multirun" not in proc.stderr
    return lines[0].removeprefix("bench: error: ")


S = "+sweep=smoke"


@pytest.mark.parametrize(
    ("args", "starts", "needles"),
    [
        # bench's own axes: refused with the one-run command, with or without -m
        (["-m", S, "seeds.n=1,2"], "seeds.n: ", ["run: python -m bench +sweep=smoke seeds.n=2"]),
        ([S, "seeds.n=1,2"], "seeds.n: ", ["run: python -m bench +sweep=smoke seeds.n=2"]),
        # a sweep without -m: bench's words, naming the key and the command with -m
        ([S, TWO_MODELS], "model: ", [f"add -m: python -m bench -m {S} {TWO_MODELS}"]),
        # hydra.* keys: honoured with -m and a launcher, or refused saying what bench uses
        ([S, "hydra.run.dir=/x"], "hydra.run.dir: ", ["results_dir=DIR"]),
        ([S, "hydra/launcher=submitit_slurm"], "hydra/launcher: ", ["add -m", "cluster=slurm"]),
        # every combination is composed before any run: the bad one is named
        (["-m", S, "model=logreg,cnn"], "model.name: ", ["run 2 of 2 (model=cnn)"]),
        (["-x", S], "-x: ", ["-m/--multirun", "--cfg job|hydra|all"]),
    ],
)
def test_habit_as_typed_is_one_line(bench_cli, tmp_path: Path, args, starts, needles) -> None:
    """In a fresh interpreter, as a user meets it."""
    line = refused(bench_cli(args, cwd=tmp_path))
    assert line.startswith(starts), line
    for needle in needles:
        assert needle in line, line
    assert not any(tmp_path.iterdir()), sorted(tmp_path.rglob("*"))  # no results, no multirun/


@pytest.mark.parametrize(
    ("args", "starts", "needles"),
    [
        (
            ["-m", S, "libraries=sklearn,torch", TWO_MODELS],
            "libraries: ",
            [f"run: python -m bench -m {S} 'libraries=[sklearn,torch]' {TWO_MODELS}"],
        ),
        (["-m", S, "mode=aligned,shared"], "mode: ", [f"bench {S} 'modes=[aligned,shared]'"]),
        (["-m", S, "threads=range(1,3)"], "threads: ", ["'sweep.threads=[1,2]'"]),
        (["-m", S, "deterministic=true,false"], "deterministic: ", ["[true,false]'"]),
        (["-m", S, "x=interval(0,1)"], "x: ", ["sampling sweeper"]),
        ([S, "sweep.varied=split,init"], "sweep.varied: ", ["sweep.varied=[split,init]"]),
        (["-m", S, "hydra.run.dir=/x", TWO_MODELS], "hydra.run.dir: ", ["results_dir=DIR"]),
        ([S, "hydra.sweep.dir=/x"], "hydra.sweep.dir: ", ["results_dir=DIR"]),
        ([S, "hydra.job.chdir=true"], "hydra.job.chdir: ", ["working directory"]),
        ([S, "hydra/sweeper=optuna"], "hydra/sweeper: ", ["not supported"]),
        (["-m", S, "hydra/launcher=nope", "model=logreg,mlp"], "hydra/launcher: ", ["basic"]),
        (["-m", S, "hydra.launcher.cpus_per_task=2", TWO_MODELS], "hydra.launcher.", ["NAME"]),
        (["-m", S, "run_id=x", TWO_MODELS], "run_id: ", ["makes 2"]),
        (["-m", S, "--cfg", "job"], "-m, --cfg and --info", []),
        (["--resolve", S], "--resolve: ", ["--cfg"]),
        (["-p", "model", S], "--package: ", ["--cfg"]),
        (["--cfg", "jobs", S], "jobs: not an override", []),  # not a --cfg choice
        (["--cfg", "job", "-p", "nope", S], "--package: ", ["'nope'"]),
        (["--config-name", "other", S], "--config-name: ", ["+sweep=NAME"]),
        (["--info", "defaults", S, "seeds.n=abc"], "seeds.n: ", []),
    ],
)
def test_more_habits_are_one_line(capsys, args, starts, needles) -> None:
    """The same code path without a fresh interpreter each (bench.cli.main)."""
    from bench.cli import main

    rc = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("bench: error: "), err
    line = lines[0].removeprefix("bench: error: ")
    assert line.startswith(starts), line
    for needle in needles:
        assert needle in line, line


def test_cfg_job_hydra_all_package_and_resolve(bench_cli, tmp_path: Path, capsys) -> None:
    """--cfg prints as Hydra's does; interpolations stay as typed unless --resolve."""
    from bench.cli import main

    interp = "results_dir=${oc.env:HOME}/r"
    job = bench_cli(["--cfg", "job", "+sweep=smoke", interp], cwd=tmp_path)
    assert job.returncode == 0, job.stderr
    assert "results_dir: ${oc.env:HOME}/r" in job.stdout and "hydra:" not in job.stdout
    hydra = bench_cli(["--cfg", "hydra", "+sweep=smoke"], cwd=tmp_path)
    assert hydra.returncode == 0, hydra.stderr
    assert hydra.stdout.startswith("# bench does not use Hydra's run/output settings")
    assert "\nhydra:\n" in hydra.stdout and "sweeper:" in hydra.stdout
    assert "\nsweep:\n" not in hydra.stdout  # the job config is not in it
    assert not any(tmp_path.iterdir())

    capsys.readouterr()
    assert main(["--cfg", "job", "--resolve", "+sweep=smoke", interp]) == 0
    assert f"results_dir: {Path.home()}/r" in capsys.readouterr().out
    assert main(["--cfg", "all", "+sweep=smoke", "seeds.n=3"]) == 0
    out = capsys.readouterr().out
    assert "\nhydra:\n" in out and "\nseeds:\n" in out and "'n': 3" in out
    launcher = "submitit_slurm" if SUBMITIT else "basic"
    assert main(["--cfg=hydra", "-p", "hydra.launcher", S, f"hydra/launcher={launcher}"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# @package hydra.launcher")
    assert not SUBMITIT or ("SlurmLauncher" in out and "partition: null" in out)
    assert main(["--cfg", "job", "-p", "seeds.n", S]) == 0
    assert capsys.readouterr().out == "2\n"


def test_info_prints_hydras_report(bench_cli, tmp_path: Path) -> None:
    proc = bench_cli(["--info", "+sweep=smoke", "model=mlp"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in ("Config search path", "Defaults Tree", "Defaults List", "Config"):
        assert section in out, out
    assert "model: mlp" in out and "sweep: smoke" in out
    assert "BasicLauncher" in out and (not SUBMITIT or "SlurmLauncher" in out)  # the plugins


def _runs(results: Path) -> dict[str, pd.DataFrame]:
    """Each run folder's rows, by the model they trained."""
    out = {}
    for run in run_dirs(results / "smoke"):
        rows = pd.read_parquet(run)
        assert len(rows) == 2 and (rows["status"] == "ok").all(), rows
        assert rows["run_id"].nunique() == 1 and rows["run_id"].iloc[0] == run.name
        out[rows["model"].iloc[0]] = rows
    return out


@pytest.mark.slow
def test_multirun_runs_each_combination_as_its_own_run(bench_cli, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = bench_cli(
        ["-m", *SMOKE, TWO_MODELS, f"results_dir={results}", "cluster.num_cpus=1"],
        cwd=tmp_path,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "multirun [1/2]: python -m bench" in proc.stderr and "model=logreg" in proc.stderr
    assert "multirun [2/2]" in proc.stderr and "exit 0  model=decision_tree" in proc.stderr
    assert set(_runs(results)) == {"logreg", "decision_tree"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no Hydra folder


@pytest.mark.slow
@pytest.mark.extended  # multirun itself runs in the default run (CI's 30 minutes)
def test_multirun_through_submitit_local_launcher(bench_cli, tmp_path: Path) -> None:
    """The real hydra-submitit-launcher: each combination a submitit job (a subprocess here, an
    array task on SLURM), Hydra's sweep dir holding the launcher's logs, rows in results_dir."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "multirun"
    proc = bench_cli(
        [
            "-m", "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}",
            *SMOKE, TWO_MODELS, "results_dir=results",  # relative: made absolute for the jobs
        ],
        cwd=tmp_path,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "through hydra/launcher=submitit_local" in proc.stderr
    assert f"the launcher's logs: {sweep_dir}" in proc.stderr
    assert set(_runs(tmp_path / "results")) == {"logreg", "decision_tree"}
    logs = sorted(sweep_dir.glob(".submitit/*/*_log.out"))
    assert len(logs) == 2, sorted(sweep_dir.rglob("*"))
    assert all("Job completed successfully" in p.read_text() for p in logs)
    for job in ("0", "1"):  # Hydra's per-job record; cluster.num_cpus from cpus_per_task
        overrides = (sweep_dir / job / ".hydra" / "overrides.yaml").read_text()
        assert "cluster.num_cpus=1" in overrides and "progress=false" in overrides
        assert f"results_dir={tmp_path / 'results'}" in overrides
