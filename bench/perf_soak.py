"""The soak: `python -m bench.perf soak [--trials 2000] [--worker-kills 10] [--out DIR] [--seed S]
[--modes one-by-one,stacked]`.

Thousands of trials, with workers killed along the way and the driver killed once, must still end
with exactly one ok row per trial. For each of two sweeps of `--trials` cheap trials, one by one
(scikit-learn logistic regression, really trained: one Ray task and one row per trial) and stacked
(torch logistic regression, `batching.enabled=true`, stacks of 50, fewer for small
sweeps: at least 8 tasks), it runs as whole commands,
side by side:

- a fault-free run of the sweep, for the wall time the faults are compared with;
- the same sweep with `faults.kill_worker_on` set so that about `--worker-kills` trials, picked by
  hashing their keys (a random `seeds.base` makes them random trials at random times), end their
  worker with `os._exit(137)` once (Ray's retry then succeeds; `retries=10`, as a stack may hold
  several), and the driver killed with SIGKILL once, when a random share (20-60 %) of the rows is
  durable (in parts or journals); then the same command resumes the run.

It prints, per sweep: trials, worker kills (the hook's marker files: one per kill), the driver
kill and the rows durable at that moment, rows lost (trials without an ok row), duplicates (rows
beyond one per trial key), the drivers' peak RSS (VmHWM, sampled), and the wall time of both runs
with the faults' cost. Exit 1 when a row is lost or duplicated.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

MODES = {
    "one-by-one": ["libraries=[sklearn]"],
    "stacked": ["libraries=[torch]", "batching.enabled=true"],  # + max_group: at least 8 stacks
}
COMMON = ["+sweep=seeds", "model=logreg", "sweep.varied=[all]", "progress=false", "retries=10"]


@dataclass
class Driver:
    """One `python -m bench` process: its wall time, peak RSS, exit code and stderr."""

    wall_s: float = 0.0
    peak_mb: float = 0.0
    returncode: int | None = None
    stderr: str = ""
    killed_at_rows: int | None = None  # rows durable when it was killed (SIGKILL)


@dataclass
class Figures:
    mode: str
    trials: int
    clean: Driver
    faulty: list[Driver] = field(default_factory=list)  # the killed driver, then the resume
    worker_kills: int = 0
    lost: int = 0
    duplicates: int = 0
    not_ok: int = 0


def durable_rows(run: Path) -> int:
    """Rows a resume would find: in part files (their footers) and in journals."""
    import pyarrow.parquet as pq

    from bench import store

    n = 0
    for part in store.part_files(run) if run.is_dir() else []:
        try:
            n += pq.read_metadata(part).num_rows
        except OSError:  # compacted away under our feet
            pass
    staging = store.run_files(run).staging
    for journal in store.journal_files(staging) if staging.is_dir() else []:
        try:
            n += store.read_journal(journal).num_rows
        except OSError:  # deleted once its part was written
            pass
    return n


def _vm_hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def drive(args: list[str], run: Path | None = None, kill_at: int | None = None) -> Driver:
    """Run `python -m bench ARGS` to its end, or with `kill_at` SIGKILL it once `run` holds that
    many durable rows. Its peak RSS is sampled from /proc (VmHWM only grows) every 0.25 s. Its
    session is its own, so that whatever it started and left behind is ended with it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_root(), _pythonpath()]))}
    out = Driver()
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        peak = 0
        try:
            while proc.poll() is None:
                peak = max(peak, _vm_hwm_kb(proc.pid))
                if kill_at is not None and run is not None and durable_rows(run) >= kill_at:
                    out.killed_at_rows = durable_rows(run)
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.25)
            proc.wait()
        finally:
            _end_session(proc)
        out.wall_s = time.perf_counter() - start
        out.peak_mb, out.returncode = peak / 1024, proc.returncode
        err.seek(0)
        out.stderr = err.read()
    return out


def _end_session(proc: subprocess.Popen) -> None:
    """Kill what is left of the driver's own session (its process group), by its id."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # nothing left of it
        pass


def _root() -> str:
    return str(Path(__file__).resolve().parents[1])


def _pythonpath() -> str:
    return os.environ.get("PYTHONPATH", "")


def check(run: Path, every: set[str], figures: Figures) -> None:
    """Count rows lost, duplicates and rows not ok in a finished run."""
    import pandas as pd

    from bench import store

    store.check_parts(run)
    df = pd.read_parquet(run, columns=["trial_key", "status"])
    ok = set(df.loc[df["status"] == "ok", "trial_key"])
    figures.lost = len(every - ok)
    figures.duplicates = len(df) - df["trial_key"].nunique()
    figures.not_ok = int((df["status"] != "ok").sum())


def soak_mode(mode: str, trials: int, worker_kills: int, out: Path, rng: random.Random) -> Figures:
    from bench import store
    from bench.config import compose
    from bench.faults import chosen
    from bench.sweep import expand

    fraction = worker_kills / trials
    for _ in range(100):  # a random base whose trials the kill hook hits at least once
        base = rng.randrange(1, 2**31)
        args = [*COMMON, *MODES[mode], f"seeds.n={trials}", f"seeds.base={base}"]
        if mode == "stacked":  # a driver killed mid-run needs several tasks' rows to fall between
            args.append(f"batching.max_group={max(1, min(50, trials // 8))}")
        args.append(f"results_dir={out / mode}")
        every = {s.trial_key for s in expand(compose(args))}
        if any(chosen(k, fraction, "kill") for k in every):
            break
    print(f"{mode}: {len(every)} trials, seeds.base={base}", flush=True)
    clean = drive([*args, "run_id=clean"])
    if clean.returncode != 0:
        raise SystemExit(f"{mode}: the fault-free run failed:\n{clean.stderr[-3000:]}")
    figures = Figures(mode, len(every), clean)
    check(out / mode / "seeds" / "clean", every, figures)
    if figures.lost or figures.duplicates:
        raise SystemExit(f"{mode}: the fault-free run lost or duplicated rows: {figures}")
    faulty = [*args, "run_id=faulty", f"faults.kill_worker_on={fraction}"]
    run = out / mode / "seeds" / "faulty"
    kill_at = max(1, int(trials * rng.uniform(0.2, 0.6)))
    killed = drive(faulty, run, kill_at)
    figures.faulty.append(killed)
    if killed.killed_at_rows is None or killed.killed_at_rows >= len(every):
        raise SystemExit(f"{mode}: the driver ended before it was killed mid-run; rerun")
    resumed = drive(faulty)
    figures.faulty.append(resumed)
    if resumed.returncode != 0:
        raise SystemExit(f"{mode}: the resumed run failed:\n{resumed.stderr[-3000:]}")
    figures.worker_kills = len(list(store.run_files(run).faults.glob("*.killed")))
    check(run, every, figures)
    return figures


def report(figures: list[Figures]) -> None:
    head = (
        f"{'sweep':11} {'trials':>6} {'worker kills':>12} {'driver kills':>12} "
        f"{'durable at kill':>15} {'rows lost':>9} {'duplicates':>10} {'not ok':>6} "
        f"{'peak RSS MB':>11} {'clean s':>7} {'faulty s':>8} {'fault cost':>14}"
    )
    print(head)
    for f in figures:
        faulty_s = sum(d.wall_s for d in f.faulty)
        cost = faulty_s - f.clean.wall_s
        peak = max(d.peak_mb for d in f.faulty)
        print(
            f"{f.mode:11} {f.trials:>6} {f.worker_kills:>12} {1:>12} "
            f"{f.faulty[0].killed_at_rows:>15} {f.lost:>9} {f.duplicates:>10} {f.not_ok:>6} "
            f"{peak:>11.0f} {f.clean.wall_s:>7.1f} {faulty_s:>8.1f} "
            f"{cost:>+7.1f} s {cost / f.clean.wall_s:>+4.0%}"
        )
    print(
        "peak RSS: the highest VmHWM of the faulty run's two drivers (fault-free: "
        + ", ".join(f"{f.mode} {f.clean.peak_mb:.0f} MB" for f in figures)
        + "); faulty s: the killed driver's wall time plus the resume's"
    )


def main(
    trials: int, worker_kills: int, out: str | None, seed: int | None, modes: list[str]
) -> int:
    seed = random.randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    load = os.getloadavg()[0]
    print(
        f"soak: --trials {trials} --worker-kills {worker_kills} --seed {seed} "
        f"--modes {','.join(modes)}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        root = Path(out) if out else Path(tmp)
        started = time.perf_counter()
        figures = [soak_mode(m, trials, worker_kills, root, rng) for m in modes]
        total = time.perf_counter() - started
    report(figures)
    print(
        f"soak wall time {total:.0f} s; 1-min load average {load:.1f} before, "
        f"{os.getloadavg()[0]:.1f} after"
    )
    bad = any(f.lost or f.duplicates or f.not_ok for f in figures)
    print("FAILED: rows lost, duplicated or not ok" if bad else "ok: one ok row per trial")
    return 1 if bad else 0
