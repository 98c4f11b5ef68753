"""bench.preempt without Ray or SLURM: what a stop signal sets, and that handlers come back.

The end-to-end paths (a SLURM time-limit warning, `scontrol requeue`) are in tests/test_slurm.py;
these check the small state machine they rely on, in milliseconds."""

from __future__ import annotations

import os
import signal
import time
from types import SimpleNamespace

import pytest

from bench import preempt
from bench.runner import Interrupted


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_a_stop_signal_is_recorded_not_fatal_and_the_old_handler_returns(
    sig: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace is measured on a clock of the test's own: a loaded CI machine can take longer
    # than any real grace between two lines.
    clock = [1000.0]
    monkeypatch.setattr(preempt, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    before = signal.getsignal(sig)
    with preempt.handling(grace_s=0.2):
        assert not preempt.requested()
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler runs between bytecodes of the main thread
        assert preempt.requested() and preempt.signal_name() == sig.name
        clock[0] += 0.19
        assert not preempt.grace_over()
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal (SLURM's and the shell's) is no news
        time.sleep(0.05)
        clock[0] += 0.05
        assert preempt.signal_name() == sig.name and preempt.grace_over()
    assert signal.getsignal(sig) == before


def test_rearm_puts_the_handler_back_after_something_replaced_it() -> None:
    """ray.init installs its own SIGTERM handler (abseil's, which aborts the driver)."""
    with preempt.handling(grace_s=1):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        preempt.rearm()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert preempt.requested()


def test_the_exit_status_and_message_say_resumable() -> None:
    exc = Interrupted("rid", preempt.__file__, 3, "SIGUSR1")  # type: ignore[arg-type]
    assert str(exc).startswith("stopped by SIGUSR1: 3 rows written")
    assert preempt.EXIT_RESUMABLE == 75 and Interrupted("r", None, 0).signal is None  # type: ignore[arg-type]


def test_a_multiruns_stopped_run_exits_resumable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of a multirun stopped by a stop signal exits 75 (bench.sbatch: not requeued, as a
    multirun has no run_id), Ctrl-C 130."""
    from bench import multirun, runner
    from bench.config import compose

    cfg = compose(["+sweep=smoke", "libraries=[sklearn]"])
    for sig, code in (("SIGUSR1", preempt.EXIT_RESUMABLE), (None, 130)):

        def stopped(cfg: object, sig: str | None = sig) -> None:
            raise Interrupted("rid", preempt.__file__, 0, sig)  # type: ignore[arg-type]

        monkeypatch.setattr(runner, "run_sweep", stopped)
        assert multirun.run_one(["+sweep=smoke"], cfg)[0] == code
