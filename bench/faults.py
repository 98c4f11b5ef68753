"""Fault hooks for testing the harness itself: off unless a config turns them on.

Each hook picks trials by hashing the trial key, so the same trials fail on every run and a test
can say in advance which ones will. `kill_worker_on` ends the worker process the way the OOM killer
does (no Python cleanup); with `kill_always=false` it leaves a marker file so that Ray's retry of
the same trial survives, which is what a transient crash looks like.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

from bench.spec import TrialSpec


class InjectedFault(RuntimeError):
    """An exception raised on purpose by `faults.raise_on`."""


def chosen(trial_key: str, fraction: float, salt: str) -> bool:
    """Whether a trial is among the `fraction` that a hook hits; stable across runs."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{salt}:{trial_key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") / 2**32 < fraction


def inject(spec: TrialSpec, faults: dict[str, Any] | None) -> None:
    """Called mid-trial (data loaded, model not yet trained)."""
    if not faults:
        return
    key = spec.trial_key
    if chosen(key, faults.get("raise_on", 0.0), "raise"):
        raise InjectedFault(f"injected exception (faults.raise_on) in trial {key[:12]}")
    if chosen(key, faults.get("hang_on", 0.0), "hang"):
        time.sleep(faults.get("hang_seconds", 3600.0))
    if chosen(key, faults.get("kill_worker_on", 0.0), "kill"):
        marker_dir = faults.get("marker_dir")
        if not faults.get("kill_always", False) and marker_dir:
            marker = Path(marker_dir) / f"{key}.killed"
            if marker.exists():
                return
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        os._exit(137)
