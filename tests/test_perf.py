"""The benchmark commands run end to end on a tiny workload and print what the README quotes.

They time nothing here (timed tests on shared machines are noise); they check that the commands a
reader is told to run still work and report both sides, so that the README's figures can be
reproduced.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

import pytest

pytestmark = pytest.mark.slow


def perf(*args: str, timeout: float, module: str = "bench.perf", cwd: str | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.extended
def test_overhead_runs_both_sides_alternately_and_prints_medians() -> None:
    out = perf("overhead", "--repeat", "2", "libraries=[sklearn]", "seeds.n=1", timeout=300)
    pairs = re.findall(r"pair (\d): bench ([\d.]+) s, loop ([\d.]+) s, ratio ([\d.]+)", out)
    assert [p[0] for p in pairs] == ["1", "2"], out
    for _, bench, loop, ratio in pairs:
        assert float(ratio) == pytest.approx(
            float(bench) / float(loop), rel=0.1
        )  # printed to 0.1 s
    assert re.search(r"^trials\s+1, 2 pair\(s\), medians:", out, re.M), out
    assert re.search(r"^ratio a/b\s+[\d.]+", out, re.M), out


@pytest.mark.extended  # a benchmark command (CI's 30 minutes)
def test_batched_prints_one_by_one_and_stacked_rates() -> None:
    out = perf(
        "batched", "--sizes", "4", "--epochs", "1", "--one-by-one", "2", "--threads", "1",
        timeout=300,
    )  # fmt: skip
    number = r"\s+([\d.]+)"
    rows = re.findall(
        rf"^cpu\s+(.+?)\s+(\d+){number}{number}(?:{number})?(?:{number})?\s*$", out, re.M
    )
    methods = [r[0] for r in rows]
    assert methods == [
        "one by one", "stacked, foreach Adam", "stacked, fused Adam",
        "stacked, fused Adam, compiled",
    ], out  # fmt: skip
    assert all(float(r[2]) > 0 for r in rows)
    assert [bool(r[4]) for r in rows] == [False, False, True, True]  # x row above
    assert [bool(r[5]) for r in rows] == [False, False, False, True]  # compile seconds


@pytest.mark.extended  # a benchmark command (CI's 30 minutes)
def test_facts_reports_each_measurement_with_the_cpu_it_ran_on() -> None:
    """`python -m bench.facts` (README, "Bits and the CPU"): runs, names the CPU, gives one row
    per fact, and refuses a level this CPU lacks as a sweep does."""
    from bench import isa

    proc = subprocess.run(
        [sys.executable, "-m", "bench.facts", "--no-compile", "--no-keras"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith(f"CPU: {isa.cpu().model} ")
    rows = re.findall(r"^\| (.+?) \| (yes|\*\*no\*\*): (.+?) \|$", proc.stdout, re.M)
    assert len(rows) == 7, proc.stdout  # threads, 3 positions, 2 stack sizes, torch row order
    assert "torch: 1 and 2 threads" in rows[0][0] and "toy MLP" in rows[-1][0]
    lacking = [level for level in isa.LEVELS if isa.missing_flags(level)]
    if lacking:  # a level this CPU lacks is refused in one line, as by a sweep
        clean = {k: v for k, v in os.environ.items() if k not in isa.ENV_KEYS}  # see test_isa
        refused = subprocess.run(
            [sys.executable, "-m", "bench.facts", "--cpu-isa", f"native,{lacking[0]}"],
            capture_output=True, text=True, timeout=60, env=clean,
        )  # fmt: skip
        assert refused.returncode == 2
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"bench.facts: error: --cpu-isa: {lacking[0]} needs ")


def perf_rows_at_once(run_at_once, *commands: list[str], timeout: float) -> list[str]:
    """The stdout of each `python -m bench.perf_rows COMMAND`, all started at once: they share
    nothing, and time nothing asserted here, so they may overlap (much of each is process and
    Ray start-up). They run in the temporary folder: perf_rows keeps its temporary runs in the
    current folder (the results disk in real use)."""
    module = [sys.executable, "-m", "bench.perf_rows"]
    done = run_at_once([module + c for c in commands], timeout, cwd=tempfile.gettempdir())
    for proc in done:
        assert proc.returncode == 0, (proc.args, proc.stderr[-3000:])
    return [proc.stdout for proc in done]


@pytest.mark.extended
def test_the_rows_benchmarks_print_both_sides_their_ratios_and_the_drivers_memory(
    run_at_once,
) -> None:
    """`python -m bench.perf_rows` (README, "Rows in bulk"), each subcommand on a tiny workload."""
    hostwork, ingest, sweep, scale = perf_rows_at_once(
        run_at_once,
        ["hostwork", "--members", "4", "--stacks", "2", "--repeat", "1"],
        ["ingest", "--rows", "256", "--batch", "64", "--old-rows", "20"],
        ["sweep", "--seeds", "16", "--max-group", "8", "--repeat", "1"],
        ["scale", "--trials", "200", "--predictions", "compact"],
        timeout=900,
    )
    out = hostwork
    for label in ("one stack", "2 stacks"):
        assert re.search(rf"median, {label}: outside the training [\d.]+ ms/trial", out), out
    assert re.search(r"ratio per-trial / bulk \(one stack\) = [\d.]+", out), out
    assert "splits identical to scikit-learn's True" in out, out
    worst = float(re.search(r"metrics max \|diff\| ([\d.e+-]+)", out).group(1))
    assert worst <= 1e-12, out
    assert "first imports in a fresh worker process" in out, out
    for phase in ("training (train_stack)", "split + preprocessing", "metrics, hashes, arrays"):
        assert re.search(rf"  {re.escape(phase)}: [\d.]+ s", out), out
    out = ingest
    for predictions in ("full", "compact", "none"):
        assert f"predictions={predictions}, batches of 64 rows" in out, out
    assert re.search(r"JSON journal with one fsync per row \(bench 0\.4\): [\d,]+ rows/s", out), out
    assert re.search(r"rows_to=workers, the driver's side .*: [\d,]+ rows/s", out), out
    out = sweep
    assert re.search(r"pair 1: trainer [\d,]+ models/s .* sweep [\d,]+ models/s", out), out
    assert re.search(r"median sweep / trainer: [\d.]+", out), out
    out = scale
    sizes = re.findall(
        r"^\s+([\d,]+) trials: .* driver peak RSS\s+(\d+) MB; ([\d,]+) bytes/row", out, re.M
    )
    assert [s[0] for s in sizes] == ["200"], out
    assert all(int(s[1]) > 0 and int(s[2].replace(",", "")) > 0 for s in sizes), out
