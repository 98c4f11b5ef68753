"""Fault injection into real sweeps on real Ray: every trial key ends with exactly one final row.

Every sweep runs `python -m bench` as a user would (a subprocess), with fault hooks that pick
trials by hashing their keys, so the test knows in advance which trials must fail and checks that
those, and only those, end as error rows saying what happened, and that no ok row is lost or
duplicated.

Each `python -m bench` starts a Ray of its own (seconds), so runs are shared: module fixtures make
a run once (one sweep with several hooks at once, each hitting trials of its own; that sweep
resumed; a plain finished run; a driver killed mid-run and what follows) and several tests assert
on each, every test on its own part. A test that changes a run works on a copy of its results
folder (`copy_results`), so no test depends on another or on the order in which they run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from bench import __version__ as bench_version
from bench import faults, store
from bench.config import compose
from bench.sweep import expand

pytestmark = pytest.mark.slow

# Small, fast sweeps: sklearn and torch only (no TensorFlow import), a few epochs.
BASE = ["+sweep=smoke", "libraries=[sklearn,torch]", "seeds.n=3", "progress=false"]


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout
    )


def start_bench(*args: str) -> subprocess.Popen[str]:
    """`python -m bench ARGS` in the background, for tests that act on a driver while it runs.

    The driver gets SIGINT as a terminal gives it: a suite started in the background
    (`nohup pytest &`) runs with SIGINT ignored, which a child inherits and Python keeps, so
    the Ctrl-C test would send a signal nobody hears. A handler (unlike "ignore") is reset to
    the default across exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "bench", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)


def long_sweep(tmp_path: Path, run_id: str, *extra: str) -> tuple[list[str], set[str], Path]:
    """A sweep long enough to act on while it runs (6 seeds, 30 epochs): its arguments, its trial
    keys and its run folder."""
    args = [*BASE, "seeds.n=6", "model.epochs=30", f"results_dir={tmp_path}", f"run_id={run_id}"]
    args += extra
    every, _ = keys_hit(args, 0.0, "none")
    return args, every, tmp_path / "smoke" / run_id


def keys_hit(args: list[str], fraction: float, salt: str) -> tuple[set[str], set[str]]:
    """(all trial keys, the keys a hook with `fraction` and `salt` picks) for this sweep."""
    specs = expand(compose(args))
    every = {s.trial_key for s in specs}
    return every, {k for k in every if faults.chosen(k, fraction, salt)}


def final_rows(run: Path) -> pd.DataFrame:
    df = store.read_results(run)
    staging = store.run_files(run).staging
    assert not list(staging.glob(".*.tmp")), "a temporary part file was left behind"
    assert sorted(run.iterdir()) == store.part_files(run), "the run folder holds parts only"
    return df


def journals(run: Path) -> list[Path]:
    return store.journal_files(store.run_files(run).staging)


def assert_one_row_per_key(df: pd.DataFrame, every: set[str]) -> None:
    assert set(df["trial_key"]) == every
    assert df["trial_key"].is_unique, "a trial key has more than one final row"


def copy_results(results: Path, to: Path) -> Path:
    """A copy of a whole results folder, each run's hidden bookkeeping folder (`.<run_id>/`, see
    bench.store.RunFiles) included. `results_dir` may change when a run is resumed (it says where
    the run is, not what its trials are), so the copy resumes with `results_dir=<copy>` and leaves
    the original as it was."""
    shutil.copytree(results, to)
    return to


# One sweep, three hooks at once, each hashing trial keys with its own salt: `raise_on` raises,
# `hang_on` sleeps past trial_timeout_s (15 s: the backstop of 2 * 15 + 30 s leaves the
# always-dying worker time for both of its tries on a busy machine), and `kill_worker_on` with
# `kill_always` kills the worker on every try (retries=1: twice). seeds.base=1 and these fractions give each hook trials of its
# own, and leave some to none (checked before the sweep runs); raise_on and hang_on hit trials of
# both libraries.
RAISE_ON, HANG_ON, KILL_ON = 0.17, 0.18, 0.2
FAULTY = [*BASE, "seeds.base=1", "run_id=faulty", "retries=1", "trial_timeout_s=15"]
HOOKS = [f"faults.raise_on={RAISE_ON}", f"faults.hang_on={HANG_ON}", "faults.hang_seconds=600"]
HOOKS += [f"faults.kill_worker_on={KILL_ON}", "faults.kill_always=true"]


@dataclass
class FaultRun:
    results: Path  # its results_dir
    run: Path
    result: subprocess.CompletedProcess[str]
    seconds: float
    every: set[str]
    raised: set[str]  # the trials each hook hits
    hung: set[str]
    died: set[str]


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory: pytest.TempPathFactory) -> FaultRun:
    """The sweep with every hook on, run to its end."""
    results = tmp_path_factory.mktemp("faulty")
    args = [*FAULTY, f"results_dir={results}", *HOOKS]
    every, raised = keys_hit(args, RAISE_ON, "raise")
    _, hung = keys_hit(args, HANG_ON, "hang")
    _, died = keys_hit(args, KILL_ON, "kill")
    assert raised and hung and died, "a hook hits no trial; choose other fractions"
    assert not (raised & hung or raised & died or hung & died), "the hooks' trials overlap"
    assert raised | hung | died < every, "no trial is left for the sweep to go on with"
    started = time.monotonic()
    result = bench(*args)
    seconds = time.monotonic() - started
    return FaultRun(
        results, results / "smoke" / "faulty", result, seconds, every, raised, hung, died
    )


def fault_rows(run: FaultRun) -> pd.DataFrame:
    """The fault sweep's rows: one per trial key, and errors for exactly the trials hooks hit."""
    assert run.result.returncode == 1, run.result.stderr
    df = final_rows(run.run)
    assert_one_row_per_key(df, run.every)
    assert set(df.loc[df["status"] == "error", "trial_key"]) == run.raised | run.hung | run.died
    return df


def errors_of(df: pd.DataFrame, keys: set[str]) -> pd.Series:
    return df.loc[df["trial_key"].isin(keys), "error"]


def test_exceptions_become_error_rows_and_the_sweep_goes_on(fault_run: FaultRun) -> None:
    df = fault_rows(fault_run)
    errors = errors_of(df, fault_run.raised)
    assert len(errors) == len(fault_run.raised)
    assert errors.str.startswith("InjectedFault: injected exception").all()
    assert errors.str.contains("Traceback").all()  # the tail of the traceback is kept
    assert (df.loc[df["status"] == "ok", "accuracy"] > 0.8).all()
    failed = df[df["status"] == "error"].groupby("library").size()
    for library, n in failed.items():
        assert f"{library}: {n} trial(s) failed" in fault_run.result.stdout


def test_worker_that_always_dies_becomes_an_error_row(fault_run: FaultRun) -> None:
    df = fault_rows(fault_run)
    errors = errors_of(df, fault_run.died)
    assert len(errors) == len(fault_run.died)
    assert errors.str.contains("Worker|worker|died", regex=True).all()


def test_hung_trial_becomes_a_timeout_row(fault_run: FaultRun) -> None:
    assert fault_run.seconds < 200  # nobody waited for the 600 s hang
    df = fault_rows(fault_run)
    errors = errors_of(df, fault_run.hung)
    assert len(errors) == len(fault_run.hung)
    assert errors.str.startswith("timeout").all()


@dataclass
class ResumedRun:
    run: Path
    result: subprocess.CompletedProcess[str]
    rerun: set[str]  # the trials that failed in the fault sweep
    killed: set[str]  # those the kill hook hits when they run again


@pytest.fixture(scope="module")
def resumed_fault_run(fault_run: FaultRun, tmp_path_factory: pytest.TempPathFactory) -> ResumedRun:
    """A copy of the fault sweep, resumed with `raise_on` and `hang_on` off and the kill hook's
    crash made transient (`kill_always=false`): the trials it hits die once, leaving a marker, and
    Ray's retry of each succeeds."""
    results = copy_results(fault_run.results, tmp_path_factory.mktemp("resumed") / "results")
    run = results / "smoke" / "faulty"
    args = [*FAULTY, f"results_dir={results}", f"faults.kill_worker_on={KILL_ON}"]
    rerun = fault_run.raised | fault_run.hung | fault_run.died
    _, hit = keys_hit(args, KILL_ON, "kill")
    assert hit & rerun, "the kill hook hits none of the trials that run again"
    assert not list(store.run_files(run).faults.glob("*.killed")), "kill_always leaves no marker"
    return ResumedRun(run, bench(*args), rerun, hit & rerun)


def test_resume_reruns_error_rows_and_keeps_one_final_row(
    fault_run: FaultRun, resumed_fault_run: ResumedRun
) -> None:
    resumed, every = resumed_fault_run, fault_run.every
    result, n_rerun = resumed.result, len(resumed.rerun)
    assert result.returncode == 0, result.stderr  # resuming ran exactly the failed trials again
    assert f"{len(every) - n_rerun} of {len(every)} trials already ok, running {n_rerun}" in (
        result.stderr
    )
    df = final_rows(resumed.run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    superseded = pd.read_parquet(store.run_files(resumed.run).superseded)  # `*.pq`: no results glob
    # the old error rows are kept aside, not in the table
    assert set(superseded["trial_key"]) == resumed.rerun


def test_killed_worker_is_retried_and_succeeds(
    fault_run: FaultRun, resumed_fault_run: ResumedRun
) -> None:
    resumed = resumed_fault_run
    assert resumed.result.returncode == 0, resumed.result.stderr
    df = final_rows(resumed.run)
    assert_one_row_per_key(df, fault_run.every)
    assert (df["status"] == "ok").all()
    # The kills really happened: each hit trial left its marker before its worker died.
    markers = store.run_files(resumed.run).faults.glob("*.killed")
    assert {p.stem for p in markers} == resumed.killed


def _wait_for_journal_rows(run: Path, n: int, deadline_s: float = 180) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        rows = sum(store.read_journal(j).num_rows for j in journals(run)) if run.exists() else 0
        if rows >= n:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} rows reached the journal in {deadline_s} s")


@dataclass
class KilledDriver:
    run: Path
    every: set[str]
    pid: int  # the killed driver's
    live_refusal: str  # why this process could not lock the run while that driver ran
    journaled: set[str]  # the keys its journal held when it was killed
    refused: subprocess.CompletedProcess[str]  # a second driver, while this process held the lock
    before: list[str]  # the run's files before and after the second driver
    after: list[str]
    resumed: subprocess.CompletedProcess[str]  # the same command once the lock was free


@pytest.fixture(scope="module")
def killed_driver(tmp_path_factory: pytest.TempPathFactory) -> KilledDriver:
    """A long sweep's driver killed with SIGKILL mid-run, and what follows, in a user's order.

    rows_per_part larger than the sweep: finished rows live in the journal only until the end.
    While the driver runs it holds the run's lock (resuming a run that another driver is still
    writing would compact its live journal). Once it is killed, this process takes the lock (a
    dead driver's lock is free again) and plays the running driver: a second driver meeting it is
    refused. Then, the lock released, the same command resumes the run."""
    args, every, run = long_sweep(tmp_path_factory.mktemp("killed"), "killed", "rows_per_part=1000")
    driver = start_bench(*args)
    try:
        _wait_for_journal_rows(run, 1)
        with pytest.raises(store.RunInUseError) as live:
            store.RunLock(run)
        _wait_for_journal_rows(run, 4)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    journaled = {
        key for j in journals(run) for key in store.read_journal(j).column("trial_key").to_pylist()
    }
    meta = store.run_files(run).meta
    held = store.RunLock(run)
    try:
        before = sorted(p.name for p in [*run.iterdir(), *meta.iterdir()])
        refused = bench(*args)
        after = sorted(p.name for p in [*run.iterdir(), *meta.iterdir()])
    finally:
        held.release()
    resumed = bench(*args)
    return KilledDriver(
        run, every, driver.pid, str(live.value), journaled, refused, before, after, resumed
    )


def test_driver_sigkill_loses_nothing_finished_and_resume_completes(
    killed_driver: KilledDriver,
) -> None:
    killed, every = killed_driver, killed_driver.every
    assert len(killed.journaled) >= 4
    assert len(killed.journaled) < len(every), (
        "the sweep finished before it was killed; make it longer"
    )
    result = killed.resumed
    assert result.returncode == 0, result.stderr
    assert f"{len(killed.journaled)} of {len(every)} trials already ok" in result.stderr
    df = final_rows(killed.run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    assert not journals(killed.run)


def test_a_running_driver_holds_its_run_and_a_second_is_refused(
    killed_driver: KilledDriver,
) -> None:
    """A running driver holds the run's lock; a second driver meeting a held lock exits 2 with one
    line naming the holder and touches nothing; once the lock is free the same command resumes."""
    killed = killed_driver
    assert f"pid {killed.pid} " in killed.live_refusal, killed.live_refusal
    second = killed.refused
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith("bench: error: run_id: ") and f"pid {os.getpid()} " in line, line
    assert killed.after == killed.before
    assert killed.resumed.returncode == 0, killed.resumed.stderr
    df = final_rows(killed.run)
    assert_one_row_per_key(df, killed.every)
    assert (df["status"] == "ok").all()


# The default run covers both halves: the driver SIGKILL above, and test_stop_resume's rows_to=workers
# sweep stopped mid-run and resumed to one ok row per trial (CI's 30 minutes).
@pytest.mark.extended
def test_driver_sigkill_with_workers_writing_parts_loses_nothing(tmp_path: Path) -> None:
    """rows_to=workers: each task's part is on disk before the task returns, so the parts are the
    journal; a killed driver loses nothing and resume gives one row per trial."""
    args, every, run = long_sweep(tmp_path, "wkilled", "rows_to=workers")
    driver = start_bench(*args)
    try:
        end = time.monotonic() + 180
        while len(list(run.glob("part-w*.parquet"))) < 4:
            assert time.monotonic() < end, "fewer than 4 worker parts in 180 s"
            time.sleep(0.2)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    written = len(store.read_results(run))
    assert 4 <= written < len(every), "the sweep finished before it was killed; make it longer"
    result = bench(*args)
    assert result.returncode == 0, result.stderr
    # A worker busy when its driver died may still have finished its task and written its part.
    resumed = re.search(rf"(\d+) of {len(every)} trials already ok", result.stderr)
    assert resumed and written <= int(resumed.group(1)) < len(every), result.stderr
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()


def test_ctrl_c_writes_finished_rows_and_says_how_to_resume(tmp_path: Path) -> None:
    args, every, run = long_sweep(tmp_path, "intr")
    driver = start_bench(*args)
    _wait_for_journal_rows(run, 3)
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr
    assert "resume with: python -m bench" in stderr and "run_id=intr" in stderr
    written = pd.read_parquet(run)  # what Ctrl-C left is readable without any recovery step
    assert len(written) >= 3 and written["trial_key"].is_unique
    assert not journals(run)
    assert bench(*args).returncode == 0
    assert_one_row_per_key(final_rows(run), every)


# A finished run of sklearn trials only, made once (`finished`); tests that change it change a copy.
PLAIN = [*BASE, "libraries=[sklearn]", "run_id=plain"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The results_dir of a finished PLAIN run."""
    results = tmp_path_factory.mktemp("finished")
    result = bench(*PLAIN, f"results_dir={results}")
    assert result.returncode == 0, result.stderr
    return results


def test_resume_by_another_bench_version_is_refused(finished: Path, tmp_path: Path) -> None:
    assert store.run_version(finished / "smoke" / "plain") == bench_version
    results = copy_results(finished, tmp_path / "results")
    files = store.run_files(results / "smoke" / "plain")
    files.version.unlink()  # as runs before bench 0.2.0 are, which had no manifest either (a run
    files.manifest.unlink()  # with a manifest and no version fails `verify`: tests/test_verify.py)
    result = bench(*PLAIN, f"results_dir={results}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: run_id: ") and "bench 0.1.0" in line, line


def test_resume_with_another_config_is_refused_and_shows_the_difference(
    finished: Path, tmp_path: Path
) -> None:
    results = copy_results(finished, tmp_path / "results")
    before = sorted(p.name for p in (results / "smoke").rglob("*"))
    result = bench(*PLAIN, f"results_dir={results}", "model.epochs=7")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run_id" in lines[0] and "model.epochs: 5 -> 7" in lines[0]
    assert sorted(p.name for p in (results / "smoke").rglob("*")) == before


def test_corrupt_part_is_named_with_a_command_that_moves_it_aside(
    finished: Path, tmp_path: Path
) -> None:
    results = copy_results(finished, tmp_path / "results")
    args = [*PLAIN, f"results_dir={results}"]
    run = results / "smoke" / "plain"
    good = store.part_files(run)[0]
    broken = run / "part-99999-deadbeef.parquet"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated copy
    with pytest.raises(store.CorruptPartError, match="part-99999-deadbeef.parquet"):
        store.read_results(run)
    result = bench(*args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(broken) in line and "mv " in line
    # Following the advice makes the run whole again, and puts the bad part out of readers' way.
    subprocess.run(line.split("with: ", 1)[1], shell=True, check=True)  # noqa: S602 - bench's own advice
    assert not broken.exists() and not list(tmp_path.rglob("*deadbeef*.parquet"))
    assert bench(*args).returncode == 0
    assert len(store.read_results(run)) == len(expand(compose(args)))


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("results_dir=/etc/hostname/results", "results_dir"),
        ("cluster.address=127.0.0.1:9", "cluster.address"),
        ("cluster.address=notahost", "cluster.address"),  # no port: named as malformed
        ("seeds.base=4294967295", "seeds.n"),
        ("seeds.base=1.5", "seeds.base"),
        ("faults.raise_on=2", "faults.raise_on"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path: Path, override: str, key: str) -> None:
    results = tmp_path / "results"
    started = time.monotonic()
    result = bench("+sweep=smoke", f"results_dir={results}", override, timeout=60)
    assert time.monotonic() - started < 30  # bounded wait, even for an address nobody answers at
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"bench: error: {key}:"), line
    assert not results.exists() or not any(results.rglob("*"))


def test_gpu_requested_without_one_fails_before_any_trial(tmp_path: Path) -> None:
    result = bench("+sweep=smoke", "libraries=[torch]", "device=cuda", f"results_dir={tmp_path}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: device:") and "GPU" in line
    assert not any(tmp_path.rglob("*.parquet")) and not any(tmp_path.rglob("*config.yaml"))


def test_results_hold_no_pickled_objects(finished: Path) -> None:
    run = finished / "smoke" / "plain"
    for part in store.part_files(run):
        schema = pq.read_schema(part)
        meta = dict(schema.metadata or {})
        config = meta.pop(store.META_CONFIG)  # YAML, whose paths may say anything (this test's)
        assert b"!!python" not in config
        assert b"pickle" not in b"".join(meta.values())
        for field in schema:
            assert "binary" not in str(field.type) and "extension" not in str(field.type)
    text = store.run_files(run).config.read_text()
    assert "!!python" not in text
