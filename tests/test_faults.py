"""Fault injection into real sweeps on real Ray: every trial key ends with exactly one final row.

Each test runs `python -m bench` as a user would (a subprocess), with fault hooks that pick trials
by hashing their keys, so the test knows in advance which trials must fail and checks that those,
and only those, end as error rows saying what happened, and that no ok row is lost or duplicated.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
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
    assert not list(run.glob(".*.tmp")), "a temporary part file was left behind"
    return df


def assert_one_row_per_key(df: pd.DataFrame, every: set[str]) -> None:
    assert set(df["trial_key"]) == every
    assert df["trial_key"].is_unique, "a trial key has more than one final row"


def test_exceptions_become_error_rows_and_the_sweep_goes_on(tmp_path: Path) -> None:
    args = [*BASE, f"results_dir={tmp_path}", "run_id=raise", "faults.raise_on=0.4"]
    every, hit = keys_hit(args, 0.4, "raise")
    assert 0 < len(hit) < len(every)
    result = bench(*args)
    assert result.returncode == 1, result.stderr
    df = final_rows(tmp_path / "smoke" / "raise")
    assert_one_row_per_key(df, every)
    errors = df[df["status"] == "error"]
    assert set(errors["trial_key"]) == hit
    assert errors["error"].str.startswith("InjectedFault: injected exception").all()
    assert errors["error"].str.contains("Traceback").all()  # the tail of the traceback is kept
    assert (df.loc[df["status"] == "ok", "accuracy"] > 0.8).all()
    assert f"{len(hit)} trial(s) failed" in result.stdout or "failed" in result.stdout


def test_killed_worker_is_retried_and_succeeds(tmp_path: Path) -> None:
    args = [*BASE, f"results_dir={tmp_path}", "run_id=kill", "faults.kill_worker_on=0.4"]
    every, hit = keys_hit(args, 0.4, "kill")
    assert hit
    result = bench(*args)
    assert result.returncode == 0, result.stderr
    run = tmp_path / "smoke" / "kill"
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    # The kills really happened: each hit trial left its marker before its worker died.
    assert {p.stem for p in (run / "_faults").glob("*.killed")} == hit


def test_worker_that_always_dies_becomes_an_error_row(tmp_path: Path) -> None:
    args = [*BASE, f"results_dir={tmp_path}", "run_id=dies", "retries=1"]
    args += ["faults.kill_worker_on=0.3", "faults.kill_always=true"]
    every, hit = keys_hit(args, 0.3, "kill")
    assert hit
    result = bench(*args)
    assert result.returncode == 1
    df = final_rows(tmp_path / "smoke" / "dies")
    assert_one_row_per_key(df, every)
    errors = df[df["status"] == "error"]
    assert set(errors["trial_key"]) == hit
    assert errors["error"].str.contains("Worker|worker|died", regex=True).all()


def test_hung_trial_becomes_a_timeout_row(tmp_path: Path) -> None:
    args = [*BASE, f"results_dir={tmp_path}", "run_id=hang", "trial_timeout_s=10"]
    args += ["faults.hang_on=0.3", "faults.hang_seconds=600"]
    every, hit = keys_hit(args, 0.3, "hang")
    assert hit
    started = time.monotonic()
    result = bench(*args)
    assert time.monotonic() - started < 200  # nobody waited for the 600 s hang
    assert result.returncode == 1
    df = final_rows(tmp_path / "smoke" / "hang")
    assert_one_row_per_key(df, every)
    errors = df[df["status"] == "error"]
    assert set(errors["trial_key"]) == hit
    assert errors["error"].str.startswith("timeout").all()


def _wait_for_journal_rows(run: Path, n: int, deadline_s: float = 180) -> int:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        rows = (
            sum(store.read_journal(j).num_rows for j in run.glob(store.JOURNAL_GLOB))
            if run.exists()
            else 0
        )
        if rows >= n:
            return rows
        time.sleep(0.2)
    raise AssertionError(f"fewer than {n} rows reached the journal in {deadline_s} s")


def test_driver_sigkill_loses_nothing_finished_and_resume_completes(tmp_path: Path) -> None:
    # rows_per_part larger than the sweep: before the kill, finished rows live in the journal only.
    args, every, run = long_sweep(tmp_path, "killed", "rows_per_part=1000")
    driver = start_bench(*args)
    try:
        _wait_for_journal_rows(run, 4)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    journaled = {
        key
        for j in run.glob(store.JOURNAL_GLOB)
        for key in store.read_journal(j).column("trial_key").to_pylist()
    }
    assert len(journaled) >= 4
    assert len(journaled) < len(every), "the sweep finished before it was killed; make it longer"

    result = bench(*args)
    assert result.returncode == 0, result.stderr
    assert f"{len(journaled)} of {len(every)} trials already ok" in result.stderr
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    assert not list(run.glob(".journal-*"))


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


def test_a_running_driver_holds_its_run_and_a_second_is_refused(tmp_path: Path) -> None:
    """Resuming a run that another driver is still writing would compact its live journal. A
    running driver holds the run's lock; a second driver meeting a held lock exits 2 with one
    line naming the holder and touches nothing; once the lock is free the same command resumes."""
    # rows_per_part larger than the sweep: finished rows stay in the journal until the end.
    args, every, run = long_sweep(tmp_path, "busy", "rows_per_part=1000")
    first = start_bench(*args)
    try:
        _wait_for_journal_rows(run, 1)
        with pytest.raises(store.RunInUseError, match=f"pid {first.pid} "):
            store.RunLock(run)
    finally:
        first.send_signal(signal.SIGKILL)  # a dead driver's lock is free again
        first.wait(timeout=30)
    held = store.RunLock(run)  # now this process plays the running driver
    try:
        before = sorted(p.name for p in run.iterdir())
        second = bench(*args)
        assert sorted(p.name for p in run.iterdir()) == before
    finally:
        held.release()
    assert second.returncode == 2
    (line,) = second.stderr.strip().splitlines()
    assert line.startswith("bench: error: run_id: ") and f"pid {os.getpid()} " in line, line
    resumed = bench(*args)
    assert resumed.returncode == 0, resumed.stderr
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()


def test_resume_by_another_bench_version_is_refused(tmp_path: Path) -> None:
    args = [*BASE, "libraries=[sklearn]", f"results_dir={tmp_path}", "run_id=old"]
    assert bench(*args).returncode == 0
    run = tmp_path / "smoke" / "old"
    assert store.run_version(run) == bench_version
    (run / store.VERSION_FILE).unlink()  # as runs written before bench 0.2.0 are
    result = bench(*args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("bench: error: run_id: ") and "bench 0.1.0" in line, line


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
    assert not list(run.glob(".journal-*"))
    assert bench(*args).returncode == 0
    assert_one_row_per_key(final_rows(run), every)


def test_resume_reruns_error_rows_and_keeps_one_final_row(tmp_path: Path) -> None:
    args = [*BASE, f"results_dir={tmp_path}", "run_id=again"]
    every, hit = keys_hit(args, 0.5, "raise")
    assert bench(*args, "faults.raise_on=0.5").returncode == 1
    result = bench(*args)  # the faults are gone: resuming runs exactly the failed trials again
    assert result.returncode == 0, result.stderr
    assert (
        f"{len(every) - len(hit)} of {len(every)} trials already ok, running {len(hit)}"
        in result.stderr
    )
    run = tmp_path / "smoke" / "again"
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    superseded = pd.concat(pd.read_parquet(p) for p in (run / "_superseded").glob("*.parquet"))
    assert (
        set(superseded["trial_key"]) == hit
    )  # the old error rows are kept aside, not in the table


def test_resume_with_another_config_is_refused_and_shows_the_difference(tmp_path: Path) -> None:
    args = [*BASE, "libraries=[sklearn]", f"results_dir={tmp_path}", "run_id=same"]
    assert bench(*args).returncode == 0
    before = sorted(p.name for p in (tmp_path / "smoke" / "same").iterdir())
    result = bench(*args, "model.epochs=7")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run_id" in lines[0] and "model.epochs: 5 -> 7" in lines[0]
    assert sorted(p.name for p in (tmp_path / "smoke" / "same").iterdir()) == before


def test_corrupt_part_is_named_with_a_command_that_moves_it_aside(tmp_path: Path) -> None:
    args = [*BASE, "libraries=[sklearn]", f"results_dir={tmp_path}", "run_id=bad"]
    assert bench(*args).returncode == 0
    run = tmp_path / "smoke" / "bad"
    good = store.part_files(run)[0]
    broken = run / "part-99999-deadbeef.parquet"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # a truncated copy
    with pytest.raises(store.CorruptPartError, match="part-99999-deadbeef.parquet"):
        store.read_results(run)
    result = bench(*args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert str(broken) in line and "mv " in line
    # Following the advice makes the run whole again.
    subprocess.run(line.split("with: ", 1)[1], shell=True, check=True)  # noqa: S602 - bench's own advice
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
    assert not any(tmp_path.rglob("*.parquet")) and not any(tmp_path.rglob("_config.yaml"))


def test_results_hold_no_pickled_objects(tmp_path: Path) -> None:
    args = [*BASE, "libraries=[sklearn]", f"results_dir={tmp_path}", "run_id=plain"]
    assert bench(*args).returncode == 0
    for part in store.part_files(tmp_path / "smoke" / "plain"):
        schema = pq.read_schema(part)
        assert schema.metadata is None or b"pickle" not in b"".join(schema.metadata.values())
        for field in schema:
            assert "binary" not in str(field.type) and "extension" not in str(field.type)
    text = (tmp_path / "smoke" / "plain" / store.CONFIG_FILE).read_text()
    assert "!!python" not in text
