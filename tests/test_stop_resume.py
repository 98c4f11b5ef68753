"""A local sweep stopped by a stop signal mid-run and resumed, as a user (or SLURM) does it:
`python -m bench` subprocesses, an embedded Ray, Parquet on disk.

Workers write the part files (`rows_to=workers`), the riskiest layout for a stop: a worker may
finish and rename its part after the driver last listed one. The hang hook holds two of the four
trials for 8 s, so that the signal lands mid-run, after the two quick ones are on disk (the test
polls for them), and the 0.5 s grace cuts the hanging ones: they must run on resume rather than
become error rows. The stop must exit 75 with one line naming the run and the command that
resumes it, and leave no process of its Ray behind (every process the driver starts inherits a
tag in its environment, which the test looks for in /proc). That printed command finishes the
sweep: one ok row per trial, and `python -m bench verify` passes.

SIGTERM (SLURM's preemption) in the default run. SIGUSR1 (SLURM's time-limit warning) goes to
the same handler (bench.preempt.SIGNALS; tests/test_preempt.py checks that both are recorded,
tests/test_slurm.py sends SIGUSR1 through a real SLURM time limit), so the same test with
SIGUSR1 is `extended`: some 20-30 s more than CI's default run can spare.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from test_faults import assert_one_row_per_key, bench, final_rows, keys_hit, start_bench

from bench import store
from bench.config import compose
from bench.perf_soak import durable_rows
from bench.preempt import EXIT_RESUMABLE
from bench.sweep import expand

pytestmark = pytest.mark.slow

# 4 trials, two at a time on any machine (num_cpus, max_in_flight); with seeds.base=43 the hang
# hook picks the 2nd and the 4th (checked before the sweep runs), which hang 8 s: the 1st and the
# 3rd finish while the 2nd hangs, the signal comes at 2 rows, and the 0.5 s grace cuts what is in
# flight (the 2nd, and the 4th if it was submitted before the signal).
SWEEP = ["+sweep=smoke", "libraries=[sklearn]", "seeds.n=2", "seeds.base=43", "progress=false"]
SWEEP += ["rows_to=workers", "faults.hang_on=0.5", "faults.hang_seconds=8", "cluster.num_cpus=2"]
SWEEP += ["cluster.max_in_flight=2", "cluster.stop_grace_s=0.5"]
TAG = "BENCH_TEST_STOP_TAG"


def tagged(tag: str) -> list[str]:
    """Live processes whose environment carries `tag`: a driver's Ray (its GCS, raylet, agents,
    workers) inherits the driver's environment."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if f"{TAG}={tag}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:120]!r}")
        except OSError:  # gone, or not ours to read
            pass
    return found


def assert_nothing_left(tag: str, within_s: float = 15) -> None:
    """No process of the stopped driver's Ray outlives it (a few seconds to wind down allowed)."""
    end = time.monotonic() + within_s
    while (left := tagged(tag)) and time.monotonic() < end:
        time.sleep(0.2)
    assert not left, f"processes of a stopped run left behind: {left}"


def the_run(results: Path) -> Path | None:
    runs = [p for p in (results / "smoke").glob("[!.]*") if p.is_dir()]
    return runs[0] if runs else None


def stop_after_rows(
    args: list[str], results: Path, rows: int, sig: signal.Signals, tag: str
) -> tuple[int, list[str], subprocess.CompletedProcess[str]]:
    """Start `python -m bench ARGS`, send it `sig` once its run holds `rows` rows, wait for it to
    end: (the rows there when signalled, the tagged processes then, its exit status and output)."""
    driver = start_bench(*args)
    try:
        end = time.monotonic() + 180
        while (run := the_run(results)) is None or (seen := durable_rows(run)) < rows:
            if driver.poll() is not None:
                raise AssertionError(f"the driver ended before {rows} rows: {driver.communicate()}")
            assert time.monotonic() < end, f"fewer than {rows} rows in 180 s"
            time.sleep(0.1)
        alive = tagged(tag)
        driver.send_signal(sig)
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    return seen, alive, subprocess.CompletedProcess(args, driver.returncode, out, err)


def resume_command(stopped: subprocess.CompletedProcess[str], sig: signal.Signals) -> list[str]:
    """The arguments of the command a stopped run prints, checking the line that prints it."""
    assert stopped.returncode == EXIT_RESUMABLE, stopped.stderr
    assert f"bench: {sig.name}: no more trials are submitted" in stopped.stderr
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith(f"bench: stopped by {sig.name}: "), stopped.stderr
    assert "is resumable (resume with the same run_id): python -m bench " in line, line
    return shlex.split(line.split(": python -m bench ", 1)[1])


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGTERM, id="SIGTERM"),
        pytest.param(signal.SIGUSR1, id="SIGUSR1", marks=pytest.mark.extended),
    ],
)
def test_a_stopped_sweep_exits_75_and_resumes_to_one_ok_row_per_trial(
    sig: signal.Signals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/proc/self/environ").exists():
        pytest.skip("reads /proc to check that no Ray process is left")
    results = tmp_path / "my results"  # a space: the printed resume command quotes it
    args = [*SWEEP, f"results_dir={results}"]  # no run_id: the stop's line names it
    order = [s.trial_key for s in expand(compose(args))]
    every, hung = keys_hit(args, 0.5, "hang")
    assert [k in hung for k in order] == [False, True, False, True], "choose another seeds.base"
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)

    seen, alive, stopped = stop_after_rows(args, results, 2, sig, tag)
    for name in ("raylet", "ray::"):  # the tag reaches Ray's processes, its workers included
        assert any(name in p for p in alive), alive
    again = resume_command(stopped, sig)
    assert_nothing_left(tag)
    run = the_run(results)
    assert run is not None and f"run_id={run.name}" in again
    assert seen == 2
    # what is on disk: the two quick trials; those in flight were cut, not made error rows
    assert set(store.read_results(run)["trial_key"]) == {order[0], order[2]}

    resumed = bench(*again)
    assert resumed.returncode == 0, resumed.stderr
    assert f"2 of {len(every)} trials already ok, running 2" in resumed.stderr, resumed.stderr
    assert_nothing_left(tag)
    df = final_rows(run)
    assert_one_row_per_key(df, every)
    assert (df["status"] == "ok").all()
    assert not store.run_files(run).superseded.exists()  # no error row, no duplicate to put aside
    verified = bench("verify", str(run))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{len(every)} rows, {len(every)} trial keys" in verified.stdout, verified.stdout
