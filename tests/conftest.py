"""Shared fixtures: the heart file, the CLI as a user runs it, and single-threaded libraries.

Nothing here mocks anything: configs are composed from the real conf/, the CLI runs as a subprocess
of this interpreter, and the libraries are the installed ones.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The environment before any test touched it: CLI subprocesses get what a user's shell would have.
_USER_ENV = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

CliRunner = Callable[..., subprocess.CompletedProcess]


def heart_dir_path() -> Path:
    """Where the UCI file lives: BENCH_HEART_DIR, else ../shared/data/heart beside the repo."""
    return Path(os.environ.get("BENCH_HEART_DIR", REPO_ROOT.parent / "shared/data/heart"))


@pytest.fixture(scope="session")
def heart_dir() -> Path:
    """The folder holding processed.cleveland.data; a missing folder is a set-up error, not a skip."""
    path = heart_dir_path()
    if not (path / "processed.cleveland.data").is_file():
        pytest.fail(
            f"heart data not found in {path}; set BENCH_HEART_DIR to the folder holding "
            "processed.cleveland.data"
        )
    return path


@pytest.fixture(scope="session")
def heart_file(heart_dir: Path) -> Path:
    return heart_dir / "processed.cleveland.data"


@pytest.fixture(scope="session")
def bench_cli() -> CliRunner:
    """Run `python -m bench ARGS` the way a user does: a fresh interpreter, the user's environment.

    The working directory defaults to a folder outside the repo so that a test can never write into
    the repository's own results/.
    """

    def run(args: Sequence[str], cwd: Path, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bench", *args],
            cwd=cwd,
            env=_USER_ENV,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def _at_once(
    commands: list[list[str]],
    timeout: float,
    each: Sequence[dict[str, Any]] | None = None,
    **popen: Any,
) -> list[subprocess.CompletedProcess[str]]:
    """Run `commands` all at the same time (each one's output in a file: no pipe to fill), and
    return each one's exit status and output once every one has ended; past `timeout` seconds
    the ones still running are killed. `popen` goes to every Popen, `each[i]` (its own env, cwd)
    to the i-th's over it."""
    each = [{}] * len(commands) if each is None else each
    with contextlib.ExitStack() as stack:
        files = [
            [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(2)] for _ in commands
        ]
        procs = [
            subprocess.Popen(command, stdout=out, stderr=err, text=True, **{**popen, **own})
            for command, (out, err), own in zip(commands, files, each, strict=True)
        ]
        deadline = time.monotonic() + timeout
        try:
            for proc in procs:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        done = []
        for command, proc, (out, err) in zip(commands, procs, files, strict=True):
            out.seek(0)
            err.seek(0)
            done.append(
                subprocess.CompletedProcess(command, proc.returncode, out.read(), err.read())
            )
        return done


@pytest.fixture(scope="session")
def run_at_once() -> Callable[..., list[subprocess.CompletedProcess[str]]]:
    """Commands that share nothing and time nothing asserted, started together: much of each is
    process and Ray start-up, which overlaps."""
    return _at_once


@pytest.fixture(scope="session")
def bench_cli_at_once() -> Callable[..., list[subprocess.CompletedProcess[str]]]:
    """bench_cli for several argument lists started together (each its own interpreter, the
    user's environment): for commands that share nothing and time nothing asserted, such as
    refusals, whose cost is mostly an interpreter's start-up."""

    def run(
        many: Sequence[Sequence[str]], cwd: Path, timeout: float = 120.0
    ) -> list[subprocess.CompletedProcess[str]]:
        commands = [[sys.executable, "-m", "bench", *args] for args in many]
        return _at_once(commands, timeout, cwd=cwd, env=_USER_ENV)

    return run


def _selected(request: pytest.FixtureRequest, fixture: str) -> bool:
    """Whether a test selected in this session (for a module-scoped request, in its module)
    uses `fixture`."""
    module = request.module if request.scope == "module" else None
    return any(
        fixture in getattr(item, "fixturenames", ()) and module in (None, item.module)
        for item in request.session.items
    )


class Started:
    """`python -m bench ARGS` (the user's environment) started now, in a session of its own, and
    collected later with `result()`: a module's sweep that runs beside the module's in-process
    tests, which compute in this process meanwhile (two cores: neither waits for the other).
    `stop()` ends it and every process it started (Ray's included) if it is still running."""

    def __init__(self, args: Sequence[str], cwd: Path, timeout: float, output: Path) -> None:
        self.deadline = time.monotonic() + timeout
        self._output = output  # its stdout and stderr, as files: no pipe to fill
        with open(self._output / "out", "w") as out, open(self._output / "err", "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench", *args], cwd=cwd, env=_USER_ENV, text=True,
                stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip

    def result(self) -> subprocess.CompletedProcess[str]:
        try:
            self.proc.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        finally:
            self.stop()
        out, err = ((self._output / name).read_text() for name in ("out", "err"))
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait()


@pytest.fixture(scope="session")
def start_bench(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Started | None]:
    """start_bench(request, fixture, args, cwd, timeout): start `python -m bench ARGS` now (a
    Started) if a test selected in the requesting module uses `fixture`, else None. For an autouse
    module fixture, so that a module's sweep starts with its first test and overlaps the rest."""

    def start(
        request: pytest.FixtureRequest, fixture: str, args: Sequence[str], cwd: Path, timeout: float
    ) -> Started | None:
        if not _selected(request, fixture):
            return None
        return Started(args, cwd, timeout, tmp_path_factory.mktemp("started"))

    return start


@dataclass(frozen=True)
class SmokeRun:
    args: list[str]  # after `python -m bench`
    proc: subprocess.CompletedProcess
    results_dir: Path
    run_dir: Path


@pytest.fixture(scope="session", autouse=True)
def smoke_run_started(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Started, list[str], Path] | None]:
    """smoke_run's sweep, started with the session's first test when a selected test uses it:
    it runs beside the tests before the first that reads it (none of those times anything)."""
    if not _selected(request, "smoke_run"):
        yield None
        return
    results_dir = tmp_path_factory.mktemp("smoke-results")
    args = ["+sweep=smoke", f"results_dir={results_dir}", "progress=false", "report=true"]
    cwd, output = tmp_path_factory.mktemp("smoke-cwd"), tmp_path_factory.mktemp("started")
    started = Started(args, cwd, 900, output)
    yield started, args, results_dir
    started.stop()


@pytest.fixture(scope="session")
def smoke_run(smoke_run_started) -> SmokeRun:
    """`python -m bench +sweep=smoke report=true` as a user runs it (12 trials: three libraries,
    split-varied seeds and fixed-seed repeats, on embedded Ray), once for the whole session:
    test_runner.py, test_report.py, test_provenance.py and test_modelstore.py each assert what
    they own about it. A sweep costs half a minute of CI's 30; no test changes the run (copy it
    first)."""
    from bench import store

    started, args, results_dir = smoke_run_started
    proc = started.result()
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    runs = store.run_dirs(results_dir / "smoke")
    assert len(runs) == 1, runs
    return SmokeRun(args, proc, results_dir, runs[0])


@pytest.fixture(scope="session")
def single_threaded() -> None:
    """Put torch and TensorFlow on one thread before any test computes with them.

    TensorFlow fixes its thread pools the first time it runs an op, after which bench refuses to
    switch (bench.determinism). Tests that train estimators directly, and tests that call
    bench.trial.run, share one process: this fixture makes the first contact go through bench's
    own `determinism.apply` with threads=1, so the order in which tests run does not matter.
    """
    from dataclasses import replace

    from bench import determinism
    from bench.config import compose
    from bench.sweep import expand

    spec = expand(compose(["+sweep=smoke", "libraries=[torch]", "seeds.n=1"]))[0]
    for library in ("torch", "tensorflow"):
        determinism.apply(replace(spec, library=library, threads=1, deterministic=False))


# DESIGN.md "Column names": analysis, reports and outside tools rely on these.
DESIGN_COLUMNS = (
    "trial_key",
    "run_id",
    "sweep",
    "status",
    "error",
    "library",
    "model",
    "dataset",
    "device",
    "varied",
    "seed_split",
    "seed_order",
    "seed_init",
    "repeat",
    "deterministic",
    "threads",
    "init_mode",
    "order_mode",
    "hparams",
    "accuracy",
    "balanced_accuracy",
    "f1",
    "roc_auc",
    "log_loss",
    "n_train",
    "n_test",
    "fit_seconds",
    "total_seconds",
    "weights_sha256",
    "predictions_sha256",
    "y_true",
    "y_pred",
    "y_score",
    "host",
    "python_version",
    "library_version",
    "cuda_version",
    "cudnn_version",
    "gpu_name",
    "cpu_model",
    "ray_node_id",
)


@pytest.fixture
def design_columns() -> tuple[str, ...]:
    """DESIGN.md's column names, typed out here rather than taken from bench.store."""
    return DESIGN_COLUMNS
