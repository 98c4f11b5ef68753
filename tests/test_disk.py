"""A results folder that runs out of space: one line naming it, exit 4, nothing finished lost.

Each test mounts a tmpfs of its own (1 MiB) and fills most of it with a ballast file, so that a
sweep fills the rest mid-run; deleting the ballast is "freeing space". Mounting needs root (or
CAP_SYS_ADMIN); where it fails the tests skip and say why. The sweep runs as a user runs it,
`python -m bench` in a subprocess, with this checkout's code first on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from bench import diskfull, rows, store
from bench.config import compose
from bench.sweep import expand

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SIZE_KB = 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN); not root here")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE_KB}k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (no CAP_SYS_ADMIN?): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)  # a straggler holds a file


def leave_free(mount: Path, free_kb: int) -> Path:
    """A ballast file that leaves about `free_kb` KiB of `mount` free; delete it to free space."""
    stat = os.statvfs(mount)
    size = stat.f_bavail * stat.f_frsize - free_kb * 1024
    ballast = mount / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\0" * size)
    return ballast


def big_row(key: str) -> pa.RecordBatch:
    return rows.to_batch([{"trial_key": key, "status": "ok", "y_score": [0.5] * 2000}])


def test_part_writer_on_a_full_disk_keeps_every_acknowledged_row(small_disk: Path) -> None:
    """Rows whose add_batch returned are recovered by a resume once space is freed; the batch
    whose write failed may or may not be (it runs again); no half-written part is left."""
    ballast = leave_free(small_disk, 160)
    run = small_disk / "run"
    run.mkdir()
    staging = store.run_files(run).staging  # as a sweep's: journals where a resume looks
    staging.mkdir()
    writer = store.PartWriter(run, rows_per_part=3, staging=staging)
    acknowledged: list[str] = []
    with pytest.raises(OSError) as failure:
        for i in range(1000):
            writer.add_batch(big_row(f"k{i:04d}"))
            acknowledged.append(f"k{i:04d}")
    assert diskfull.reason(failure.value) == "No space left on device"
    assert writer.failed is not None and len(acknowledged) >= 3  # some parts were written
    writer.close()  # writes nothing more, deletes no journal, raises nothing
    with pytest.raises(OSError):
        writer.add_batch(big_row("after"))  # a failed writer takes nothing more
    assert not list(staging.glob(".*.tmp")), "a half-written part was left behind"
    assert store.journal_files(staging), "the rows no part holds are in journals"
    ballast.unlink()
    recovered = store.compact_for_resume(run)
    assert set(acknowledged) <= recovered <= {*acknowledged, f"k{len(acknowledged):04d}"}
    df = store.read_results(run)
    assert df["trial_key"].is_unique


def test_reason_sees_enospc_and_edquot_raised_anywhere() -> None:
    import errno

    assert diskfull.reason(OSError(errno.ENOSPC, "x")) == "No space left on device"
    assert diskfull.reason(OSError(errno.EDQUOT, "x")) == "Disk quota exceeded"
    wrapped = RuntimeError("worker died")
    wrapped.__cause__ = OSError("[Errno 28] Error writing bytes. Detail: No space left on device")
    assert diskfull.reason(wrapped) == "No space left on device"
    assert diskfull.reason(OSError(errno.EACCES, "Permission denied")) is None


def test_only_a_full_disk_in_the_run_folders_stops_the_sweep(tmp_path: Path) -> None:
    """A worker's full disk reaches the driver as text: it stops the sweep only when it names a
    path in the run folder or its bookkeeping folder; a node's full /tmp/ray, a user's model
    writing elsewhere, or an error naming no path stays the trial's error row."""
    import errno

    run = tmp_path / "results" / "smoke" / "r1"
    folders = diskfull.run_folders(run)
    named = diskfull.naming(
        OSError("Error writing bytes. Detail: No space left on device"), run / "part-w1.parquet"
    )
    assert named.errno == errno.ENOSPC and diskfull.in_folders(str(named), folders)
    meta = store.run_files(run).meta / "models" / "abc.safetensors"
    assert diskfull.in_folders(
        str(OSError(errno.ENOSPC, "No space left on device", str(meta))), folders
    )
    elsewhere = OSError(errno.ENOSPC, "No space left on device", "/tmp/ray/session/x")
    assert not diskfull.in_folders(str(elsewhere), folders)
    sibling = OSError(errno.ENOSPC, "No space left on device", f"{run}2/part-0.parquet")
    assert not diskfull.in_folders(str(sibling), folders)

    def errors(*texts: str) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict({"error": list(texts)})

    diskfull.check_rows(errors("OSError: [Errno 28] No space left on device", None), folders)
    diskfull.check_rows(errors(f"OSError: {elsewhere}"), folders)
    with pytest.raises(OSError):
        diskfull.check_rows(errors(f"OSError: {named}"), folders)


# 10 quick sklearn trials on one Ray worker, a part every 2 rows (~25 KB, its rows journaled
# meanwhile): 100 KB free holds the run's first parts, not all five.
SWEEP = ["+sweep=smoke", "libraries=[sklearn]", "seeds.n=5", "progress=false", "rows_per_part=2"]
SWEEP += ["cluster.num_cpus=1"]


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_full_disk_stops_with_one_line_and_resume_completes(small_disk: Path) -> None:
    results = small_disk / "results"
    args = [*SWEEP, f"results_dir={results}", "run_id=full"]
    every = {s.trial_key for s in expand(compose(args))}
    run = results / "smoke" / "full"
    ballast = leave_free(small_disk, 100)
    first = bench(*args)
    assert first.returncode == diskfull.EXIT_CODE, first.stderr
    assert "Traceback" not in first.stderr
    line = first.stderr.strip().splitlines()[-1]
    assert line == (
        f"bench: error: results folder {run} is full (No space left on device); "
        "free space and rerun with run_id=full to resume"
    ), first.stderr
    staging = store.run_files(run).staging
    assert not list(staging.glob(".*.tmp")), "a half-written part was left behind"
    kept = {k for p in store.part_files(run) for k in store.read_part(p)["trial_key"].to_pylist()}
    kept |= {
        k
        for j in store.journal_files(staging)
        for k in store.read_journal(j)["trial_key"].to_pylist()
    }
    assert 0 < len(kept) < len(every), "the disk filled at the start or not at all; resize"

    ballast.unlink()
    second = bench(*args)
    assert second.returncode == 0, second.stderr
    assert f"{len(kept)} of {len(every)} trials already ok" in second.stderr
    df = store.read_results(run)
    assert set(df["trial_key"]) == every and df["trial_key"].is_unique
    assert (df["status"] == "ok").all()
    assert not store.journal_files(staging)
    checked = bench("verify", str(run))  # the resumed folder, as a copy elsewhere would be checked
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "verified" in checked.stdout
    shutil.rmtree(results)  # the mount goes with the fixture; its files go first
