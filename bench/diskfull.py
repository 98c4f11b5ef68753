"""A full results folder: recognised wherever the driver (or a worker) writes, reported as one line.

A sweep of thousands of trials can outgrow its disk or quota. When it does, going on is worse
than stopping: every later write fails too, and a journal written past a failed append could hide
the rows after it. So the first ENOSPC or EDQUOT (from Python's own writes, from pyarrow's,
which carry the errno, or from a worker, whose error reaches the driver as Ray's wrapper) stops
the sweep: nothing more is submitted, what is already durable stays where it is (part files and
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


def check_rows(batch) -> None:
    """Raise ENOSPC when a row of `batch` (a pyarrow RecordBatch) failed for a full disk: with
    save_models=true a worker writes into the run's folder, and its error becomes the row's."""
    if "error" not in batch.schema.names:  # a worker's receipt for its own part
        return
    for text in batch.column("error").to_pylist():
        if text and any(found in text for found in _TEXTS):
            raise OSError(errno.ENOSPC, next(f for f in _TEXTS if f in text))
