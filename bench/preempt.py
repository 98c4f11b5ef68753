"""Stop a sweep cleanly when the job that runs it is about to end (SLURM time limit, preemption).

SLURM warns a job before its time limit with the signal `#SBATCH --signal=B:USR1@<lead>` asks for
(slurm/bench.sbatch forwards it to the driver as SIGUSR1), and ends a preempted or requeued job
with SIGTERM to every process, SIGKILL `KillWait` seconds later. Either way the driver should stop
submitting trials, give those in flight a short grace to finish (each one lost is work redone),
write every finished row, and exit with EXIT_RESUMABLE so that the batch script knows the run is
resumable by its run_id rather than failed.

The handler only records the request: `bench.runner.execute` polls `requested()` between
`ray.wait` calls, stops submitting, and raises `Preempted` (a KeyboardInterrupt, so the Ctrl-C
path that writes finished rows and keeps the run resumable is the one path for both) once nothing
is in flight or the grace is over. Later signals change nothing: SLURM sends SIGTERM to every
process of the job and the batch script forwards its own, so the driver often gets two at once;
SIGKILL after `KillWait` is SLURM's own backstop.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

# "Temporary failure; try again" (sysexits.h EX_TEMPFAIL): the run stopped early on purpose and
# resumes with the same run_id. slurm/bench.sbatch requeues the job on it; nothing else does.
EXIT_RESUMABLE = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(KeyboardInterrupt):
    """Raised in the driver once a stop was requested and the grace is over (or nothing runs)."""


_state: dict[str, float | str | None] = {"at": None, "grace": 20.0, "name": None}
_active = False


def requested() -> bool:
    """Whether a stop signal arrived since `handling` was entered."""
    return _state["at"] is not None


def signal_name() -> str | None:
    """SIGTERM or SIGUSR1: which signal asked the driver to stop (None: none did)."""
    return _state["name"]  # type: ignore[return-value]


def grace_over() -> bool:
    """True once `grace` seconds have passed since the first stop signal."""
    at = _state["at"]
    return at is not None and time.monotonic() - float(at) >= float(_state["grace"] or 0)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state["at"] is not None:
        return
    _state["at"] = time.monotonic()
    _state["name"] = signal.Signals(signum).name
    print(
        f"bench: {_state['name']}: no more trials are submitted; waiting up to "
        f"{float(_state['grace'] or 0):g} s for those running, then writing every finished row",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def handling(grace_s: float) -> Iterator[None]:
    """SIGTERM and SIGUSR1 ask the sweep to stop (see the module's docstring) while inside; the
    previous handlers come back afterwards. Outside the main thread (signals cannot be handled
    there) it does nothing."""
    global _active
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state.update(at=None, grace=float(grace_s), name=None)
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _active = True
    try:
        yield
    finally:
        _active = False
        for s, handler in previous.items():
            signal.signal(s, handler)


def rearm() -> None:
    """Put the handlers back after `ray.init`: Ray's core worker installs its own SIGTERM handler
    (abseil's failure handler: it prints a stack trace and aborts the driver, exit status 134),
    which would turn a preemption into a crash that writes no part file."""
    if _active and threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _on_signal)


class Interrupted(Exception):
    """Ctrl-C, or a stop signal (SLURM's time-limit warning, preemption: `handling`), during a
    sweep: every finished row is on disk; the run can be resumed. `signal` names the stop signal
    (None for Ctrl-C), which makes it the planned stop a batch script requeues on."""

    def __init__(self, run_id: str, path: Path, rows: int, signal: str | None = None) -> None:
        why = f"stopped by {signal}" if signal else "interrupted"
        super().__init__(f"{why}: {rows} rows written to {path}")
        self.run_id, self.path, self.rows, self.signal = run_id, path, rows, signal
