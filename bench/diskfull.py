"""A full results folder: recognised wherever the driver (or a worker) writes, reported as one line.

A sweep of thousands of trials can outgrow its disk or quota. When it does, going on is worse
than stopping: every later write fails too, and a journal written past a failed append could hide
the rows after it. So the first ENOSPC or EDQUOT (from Python's own writes, from pyarrow's,
which carry the errno, or from a worker, whose error reaches the driver as Ray's wrapper and
counts only when it names a path in the run folder or its bookkeeping folder: a node's full
/tmp/ray, or a user's model writing elsewhere, is that trial's error row) stops the sweep: nothing more is submitted, what is already durable stays where it is (part files and
journals; the part writer deletes no journal whose rows are not in a part, `store.PartWriter`),
and the command exits with `EXIT_CODE` and one line that names the folder and the run id to
resume with. Rows that were in flight, or whose journal append failed, are run again on resume.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

EXIT_CODE = 4  # 0 ok, 1 some trials failed, 2 bad input, 3 gate inconclusive, 75 stopped by a
# signal (resumable), 130 Ctrl-C
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_TEXTS = tuple(os.strerror(e) for e in _ERRNOS)  # "No space left on device", "Disk quota exceeded"


class DiskFull(Exception):
    """The run's folder ran out of space (or quota); the message is the line the command prints."""

    def __init__(self, folder: Path, run_id: str | None, reason: str) -> None:
        again = f"rerun with run_id={run_id} to resume" if run_id else "rerun (nothing was written)"
        # absolute: the line is read where the command ran, often from a job's log elsewhere
        super().__init__(
            f"results folder {Path(folder).absolute()} is full ({reason}); free space and {again}"
        )
        self.folder, self.run_id, self.reason = folder, run_id, reason


def reason(exc: BaseException | None) -> str | None:
    """Why `exc` (or an exception it was raised from or during) means a full disk, as the OS says
    it ("No space left on device"), or None when it does not. Errors that crossed a process
    boundary (a worker's, through Ray) keep only their text, so the text counts too."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _ERRNOS:
            return os.strerror(exc.errno)
        text = str(exc)
        for found in _TEXTS:
            if found in text:
                return found
        exc = exc.__cause__ or exc.__context__
    return None


def full(exc: BaseException, folder: Path, run_id: str | None) -> DiskFull | None:
    """`exc` as a DiskFull naming `folder` and `run_id`, or None when it is another error."""
    why = reason(exc)
    return None if why is None else DiskFull(folder, run_id, why)


def naming(exc: OSError, path: Path | str) -> OSError:
    """`exc`, or, when it is a full disk that does not name its file (pyarrow's write errors, a
    plain write's), the same error naming `path`: a worker's error reaches the driver as text, and
    the driver counts it as the run's full folder only when the text names a path in it."""
    why = reason(exc)
    if why is None or getattr(exc, "filename", None):
        return exc
    code = exc.errno if exc.errno in _ERRNOS else _ERRNOS[_TEXTS.index(why)]
    return OSError(code, why, str(path))


def run_folders(run_dir: Path | str) -> tuple[str, ...]:
    """The run folder and its bookkeeping folder (`.<run_id>`), as a worker's error names them."""
    from bench.store import run_files

    run = Path(run_dir)
    found = (run, run_files(run).meta)
    return tuple(dict.fromkeys(str(f) for p in found for f in (p.absolute(), p.resolve())))


def in_folders(text: str, folders: tuple[str, ...]) -> bool:
    """Whether an error's text names a path inside one of `folders` (bench.diskfull.run_folders):
    a full disk elsewhere (a node's /tmp/ray, a user's model writing its own files) is the
    trial's error, not the run's full results folder."""
    return any(folder.rstrip(os.sep) + os.sep in text for folder in folders)


def check_rows(batch, folders: tuple[str, ...]) -> None:
    """Raise ENOSPC when a row of `batch` (a pyarrow RecordBatch) failed for a full disk in the
    run's `folders`: with save_models=true a worker writes into the run's bookkeeping folder, and
    its error becomes the row's. A row whose error names no path there stays an error row."""
    if "error" not in batch.schema.names:  # a worker's receipt for its own part
        return
    for text in batch.column("error").to_pylist():
        if text and any(found in text for found in _TEXTS) and in_folders(text, folders):
            raise OSError(errno.ENOSPC, next(f for f in _TEXTS if f in text))
