"""Which bench made a row, and with which command line.

Every row records `bench_version` (`bench.__version__`) and, when bench is imported from a git
checkout, `bench_commit` (its HEAD) and `bench_dirty`: true when a tracked file under `bench/`
or `conf/` differs from that commit, staged or not. Untracked files do not count: a new module
under `bench/` runs only if a tracked file was changed to import it, and a new file under `conf/`
reaches the trials only through the composed config, which every part file keeps in its
metadata (bench.store). Outside a checkout (an installed wheel), without git, or when git
refuses the folder (a checkout owned by another user), commit and dirty are null.

Computed once per process (a Ray worker: at its first trial) with one `git status` call bounded
by a timeout, which never takes locks in the repository and never fails a trial. A worker
records the code it imported itself: on a cluster node that may be other code than the
driver's.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
GIT_TIMEOUT_S = 5.0
# Variables that would point git at another repository than the one bench was imported from.
_GIT_LOCATION = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE",
)  # fmt: skip
_OID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


@functools.cache
def code() -> dict[str, Any]:
    """`bench_version`, `bench_commit` and `bench_dirty` of the bench this process imported."""
    from bench import __version__

    commit, dirty = checkout_state(PACKAGE_DIR)
    return {"bench_version": __version__, "bench_commit": commit, "bench_dirty": dirty}


def checkout_state(package: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, uncommitted changes to tracked files under the package or conf/) of the git
    checkout `package` is tracked in, or (None, None)."""
    if shutil.which("git") is None:
        return None, None
    root = package.parent
    env = {k: v for k, v in os.environ.items() if k not in _GIT_LOCATION}
    env["GIT_OPTIONAL_LOCKS"] = "0"  # `git status` would otherwise refresh (write) the index

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    # bench's own files must be tracked there: a copy installed inside some other checkout (a
    # virtualenv in a project folder) is not that checkout's code.
    if git("ls-files", "--error-unmatch", "--", f"{package.name}/__init__.py") is None:
        return None, None
    status = git(
        "status", "--porcelain=v2", "--branch", "--untracked-files=no", "--", package.name, "conf"
    )
    if status is None:
        return None, None
    lines = status.splitlines()
    head = [line.split()[2] for line in lines if line.startswith("# branch.oid ")]
    commit = head[0] if head and _OID.fullmatch(head[0]) else None  # "(initial)": no commit yet
    return commit, any(not line.startswith("#") for line in lines)


def overrides_text(overrides: Sequence[str] | None) -> str | None:
    """The command-line overrides as a row stores them: a JSON list, in the order given."""
    return None if overrides is None else json.dumps(list(overrides))
