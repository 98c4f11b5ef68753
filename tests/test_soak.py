"""The soak command (`python -m bench.perf soak`, bench.perf_soak) on a small sweep, so that it
cannot rot: workers killed (every planned kill injected, some before the driver kill and some in
the resumed run), the driver killed once and resumed, one ok row per trial.

Both are `extended` (outside the default run, which must fit CI's 30 minutes; the faults they
combine are each tested in tests/test_faults.py and tests/test_stop_resume.py). The small test
soaks the stacked sweep of 40 trials (8 stacks; the one-by-one sweep differs only in its
overrides); the full soak, 2,000 trials of both sweeps, is the other (some 10 minutes on 2 idle
cores; docs/faults.md has the figures measured so far).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def soak(*args: str, timeout: float) -> str:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "bench.perf", "soak", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def figures(out: str, trials: int) -> dict[str, list[str]]:
    """Each sweep's row of the table: trials, worker kills planned, injected, before and after
    the driver kill, driver kills, durable at kill, rows lost, duplicates, not ok, peak RSS,
    clean s, faulty s."""
    found = re.findall(r"^(one-by-one|stacked)" + r"\s+(\d+)" * 11 + r"\s+([\d.]+)\s+([\d.]+)",
                       out, re.M)  # fmt: skip
    rows = {f[0]: list(f[1:]) for f in found}
    for mode, row in rows.items():
        assert int(row[0]) == trials, out
        planned, injected, before, after = map(int, row[1:5])
        assert planned >= 2 and injected == planned, f"{mode}: planned worker kills missing\n{out}"
        assert before >= 1 and after >= 1 and before + after == injected, out
        assert int(row[5]) == 1 and 0 < int(row[6]) < trials, out
        assert row[7:10] == ["0", "0", "0"], out  # rows lost, duplicates, not ok
        assert int(row[10]) > 0, out  # the driver's peak RSS, in MB
    assert "ok: one ok row per trial; every planned worker kill injected" in out
    return rows


@pytest.mark.extended  # about a minute even idle: outside the default run (CI's 30 minutes)
def test_soak_kills_workers_and_the_driver_and_loses_nothing() -> None:
    out = soak("--trials", "40", "--worker-kills", "2", "--modes", "stacked", timeout=600)
    assert list(figures(out, 40)) == ["stacked"]


@pytest.mark.extended
def test_full_soak_two_thousand_trials_both_sweeps() -> None:
    out = soak("--trials", "2000", timeout=3600)
    assert list(figures(out, 2000)) == ["one-by-one", "stacked"]
