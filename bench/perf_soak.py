"""The soak: `python -m bench.perf soak [--trials 2000] [--worker-kills 10] [--out DIR] [--seed S]
[--modes one-by-one,stacked]`.

Thousands of trials, with workers killed along the way and the driver killed once, must still end
with exactly one ok row per trial. For each of two sweeps of `--trials` cheap trials, one by one
(scikit-learn logistic regression, really trained: one Ray task and one row per trial) and stacked
(torch logistic regression, `batching.enabled=true`, stacks of 50, fewer for small
sweeps: at least 8 tasks), it runs as whole commands,
side by side:

- a fault-free run of the sweep, for the wall time the faults are compared with;
- the same sweep with `faults.kill_worker_on` set so that exactly `--worker-kills` trials, picked
  by hashing their keys (a random `seeds.base` makes them random trials at random times), end
  their worker with `os._exit(137)` once (Ray's retry then succeeds; `retries=10`, as a stack may
  hold several), and the driver killed with SIGKILL once, when a random share (20-60 %) of the
  rows is durable (in parts or journals) and every planned worker kill before that point has
  happened; then the same command, faults still on, resumes the run. `seeds.base` and the
  driver kill's moment are drawn together so that planned worker kills fall on both sides of it:
  some kill workers of the driver that is killed, the others (sweep positions beyond what the
  killed driver can have in flight) those of the resumed driver.

It prints, per sweep: trials, worker kills planned and injected (the hook's marker files: one per
kill), split into those before the driver kill and those in the resumed run, the driver kill and
the rows durable at that moment, rows lost (trials without an ok row), duplicates (rows beyond
one per trial key), the drivers' peak RSS (VmHWM, sampled), and the wall time of both runs with
the faults' cost. Exit 1 when a row is lost or duplicated, a row is not ok, or a planned worker
kill was not injected (or none fell on one side of the driver kill), each said in a FAILED line.
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


LOADS: list[float] = []  # the 1-minute load average, sampled while the drivers run


@dataclass
class Figures:
    mode: str
    trials: int
    clean: Driver
    faulty: list[Driver] = field(default_factory=list)  # the killed driver, then the resume
    planned: set[str] = field(default_factory=set)  # trial keys the kill hook picks
    killed: set[str] = field(default_factory=set)  # trial keys whose worker was killed (markers)
    killed_before: int = 0  # of them, before the driver was killed
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


def killed_keys(run: Path) -> set[str]:
    """Trial keys whose worker the kill hook ended: one marker file each (bench.faults)."""
    from bench import store

    faults = store.run_files(run).faults
    return (
        {m.name.removesuffix(".killed") for m in faults.glob("*.killed")}
        if faults.is_dir()
        else set()
    )


def drive(
    args: list[str],
    run: Path | None = None,
    kill_at: int | None = None,
    kills_first: set[str] | None = None,
) -> Driver:
    """Run `python -m bench ARGS` to its end, or with `kill_at` SIGKILL it once `run` holds that
    many durable rows and the workers of every trial in `kills_first` have been killed (their
    markers are there). Its peak RSS is sampled from /proc (VmHWM only grows) every 0.25 s. Its
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
                LOADS.append(os.getloadavg()[0])
                if (
                    kill_at is not None
                    and run is not None
                    and durable_rows(run) >= kill_at
                    and (kills_first or set()) <= killed_keys(run)
                ):
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


def in_flight(mode: str, group: int, trials: int) -> int:
    """About how many trials past the rows durable a driver may have started: bench.runner keeps
    max(2, 2 x CPUs) tasks in flight (a trial, or a stack of `group`, each), one task more for
    the time between two looks at the rows, and 2 % of the sweep for a busy machine's lag."""
    tasks = max(2, 2 * (os.cpu_count() or 1)) + 1
    return tasks * (group if mode == "stacked" else 1) + trials // 50


def soak_mode(mode: str, trials: int, worker_kills: int, out: Path, rng: random.Random) -> Figures:
    from bench.config import compose
    from bench.faults import chosen
    from bench.sweep import expand

    fraction = worker_kills / trials
    group = max(1, min(50, trials // 8))  # a driver killed mid-run needs several tasks' rows
    args = [*COMMON, *MODES[mode], f"seeds.n={trials}"]
    if mode == "stacked":
        args.append(f"batching.max_group={group}")
    cfg = compose([*args, "seeds.base=1"])
    margin = in_flight(mode, group, trials)
    # A random base whose trials the kill hook hits exactly `worker_kills` times, and a random
    # moment (rows durable) for the driver kill with planned worker kills on both sides: before
    # it (the killed driver's workers) and beyond what the killed driver can have in flight (the
    # resumed driver's). Trials run in `expand`'s order (tasks are made from it as a stream).
    for _ in range(10_000):
        base = rng.randrange(1, 2**31)
        kill_at = max(1, int(trials * rng.uniform(0.2, 0.6)))
        cfg.seeds.base = base
        keys = [s.trial_key for s in expand(cfg)]
        at = [i for i, k in enumerate(keys) if chosen(k, fraction, "kill")]
        if len(at) == worker_kills and at[0] < kill_at and at[-1] >= kill_at + margin:
            break
    else:
        raise SystemExit(
            f"{mode}: no seeds.base puts {worker_kills} worker kills on both sides of a driver "
            f"kill in {trials} trials; try more --trials or fewer --worker-kills"
        )
    every = set(keys)
    planned = {keys[i] for i in at}
    first = {keys[i] for i in at if i < kill_at}
    args += [f"seeds.base={base}", f"results_dir={out / mode}"]
    print(
        f"{mode}: {len(every)} trials, seeds.base={base}; worker kills planned at sweep positions "
        f"{', '.join(map(str, at))}; driver kill at {kill_at} rows durable, once the "
        f"{len(first)} planned before it have happened",
        flush=True,
    )
    clean = drive([*args, "run_id=clean"])
    if clean.returncode != 0:
        raise SystemExit(f"{mode}: the fault-free run failed:\n{clean.stderr[-3000:]}")
    figures = Figures(mode, len(every), clean, planned=planned)
    check(out / mode / "seeds" / "clean", every, figures)
    if figures.lost or figures.duplicates:
        raise SystemExit(f"{mode}: the fault-free run lost or duplicated rows: {figures}")
    faulty = [*args, "run_id=faulty", f"faults.kill_worker_on={fraction}"]
    run = out / mode / "seeds" / "faulty"
    killed = drive(faulty, run, kill_at, first)
    figures.faulty.append(killed)
    if killed.killed_at_rows is None or killed.killed_at_rows >= len(every):
        raise SystemExit(f"{mode}: the driver ended before it was killed mid-run; rerun")
    figures.killed_before = len(killed_keys(run))
    resumed = drive(faulty)  # the same command: faults.kill_worker_on still set
    figures.faulty.append(resumed)
    if resumed.returncode != 0:
        raise SystemExit(f"{mode}: the resumed run failed:\n{resumed.stderr[-3000:]}")
    figures.killed = killed_keys(run)
    check(run, every, figures)
    return figures


def problems(f: Figures) -> list[str]:
    """What makes a sweep's soak fail, one line each."""
    out = []
    if f.lost or f.duplicates or f.not_ok:
        out.append(f"{f.mode}: {f.lost} rows lost, {f.duplicates} duplicates, {f.not_ok} not ok")
    if f.killed != f.planned:
        missing = sorted(k[:12] for k in f.planned - f.killed)
        extra = sorted(k[:12] for k in f.killed - f.planned)
        out.append(
            f"{f.mode}: {len(f.planned & f.killed)} of {len(f.planned)} planned worker kills "
            f"injected (not injected: {', '.join(missing) or 'none'}; unplanned: "
            f"{', '.join(extra) or 'none'})"
        )
    if not f.killed_before or len(f.killed) <= f.killed_before:
        out.append(
            f"{f.mode}: worker kills {f.killed_before} before the driver kill, "
            f"{len(f.killed) - f.killed_before} in the resumed run: both must be some"
        )
    return out


def report(figures: list[Figures]) -> None:
    head = (
        f"{'sweep':11} {'trials':>6} {'kills planned':>13} {'injected':>8} {'before':>6} "
        f"{'after':>5} {'driver kills':>12} {'durable at kill':>15} {'rows lost':>9} "
        f"{'duplicates':>10} {'not ok':>6} {'peak RSS MB':>11} {'clean s':>7} {'faulty s':>8} "
        f"{'fault cost':>14}"
    )
    print(head)
    for f in figures:
        faulty_s = sum(d.wall_s for d in f.faulty)
        cost = faulty_s - f.clean.wall_s
        peak = max(d.peak_mb for d in f.faulty)
        print(
            f"{f.mode:11} {f.trials:>6} {len(f.planned):>13} {len(f.killed):>8} "
            f"{f.killed_before:>6} {len(f.killed) - f.killed_before:>5} {1:>12} "
            f"{f.faulty[0].killed_at_rows:>15} {f.lost:>9} {f.duplicates:>10} {f.not_ok:>6} "
            f"{peak:>11.0f} {f.clean.wall_s:>7.1f} {faulty_s:>8.1f} "
            f"{cost:>+7.1f} s {cost / f.clean.wall_s:>+4.0%}"
        )
    print(
        "worker kills: planned (trials the hook picks), injected (marker files), before the "
        "driver kill and after it (in the resumed run); peak RSS: the highest VmHWM of the "
        "faulty run's two drivers (fault-free: "
        + ", ".join(f"{f.mode} {f.clean.peak_mb:.0f} MB" for f in figures)
        + "); faulty s: the killed driver's wall time plus the resume's"
    )


def main(
    trials: int, worker_kills: int, out: str | None, seed: int | None, modes: list[str]
) -> int:
    if worker_kills < 2:
        print("soak: --worker-kills: at least 2 (some before the driver kill, some after)")
        return 2
    seed = random.randrange(2**31) if seed is None else seed
    rng = random.Random(seed)
    LOADS.clear()
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
        f"soak wall time {total:.0f} s; 1-min load average while it ran: mean "
        f"{sum(LOADS) / max(1, len(LOADS)):.1f}, max {max(LOADS, default=0):.1f} "
        f"({os.cpu_count()} CPUs)"
    )
    bad = [line for f in figures for line in problems(f)]
    for line in bad:
        print(f"FAILED: {line}")
    if not bad:
        print("ok: one ok row per trial; every planned worker kill injected")
    return 1 if bad else 0
