"""A run's manifest: every part file of the run folder with its size, sha256 and row count, and
the sha256 of the run's config and the bench version that wrote it (`python -m bench verify`).

It lives in the run's bookkeeping folder (`results/<sweep>/.<run_id>/manifest.jsonl`, see
`bench.store.RunFiles.manifest`), not beside the parts: the run folder holds result parts only,
so that every Parquet reader, globs included, reads exactly the run's rows.

Kept as a log (`Manifest`): each change is one line appended and fsynced, from what the writer
already has in hand: a part's checksum is taken from the file just written (still in the page
cache), never by reading the folder again, so keeping it costs one short write per part. Two rules keep it honest through a crash of the driver:

- an entry is added only after its part has been renamed into the run folder, and removed before
  the part is deleted, so a listed part is always present: a crash can leave a part *unlisted*,
  never a listed part missing;
- `state` is `writing` while a driver writes the run and `closed` once its sweep has finished
  and its writer has closed. A run that stopped before the end (Ctrl-C, SIGTERM/SIGUSR1, a full
  disk, an error) stays `writing`, as a killed driver's does: with `rows_to=workers` a worker
  may have renamed its part into the run folder after the driver last listed one. An unlisted
  part, or a trial key with two rows, in a run whose manifest still says `writing` is what such
  a stop leaves (a part renamed just before it, a resume's compaction cut short): resuming
  takes them in. In a `closed` run they are not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

FORMAT = 1  # the manifest's own layout; raised when its keys change meaning
# The first bench version whose runs carry a manifest: a run written by an older one has none,
# which `verify` says (exit 3) rather than calling it a failure.
SINCE = "0.9.0"
WRITING, CLOSED = "writing", "closed"


@dataclass(frozen=True)
class PartEntry:
    """One part as written: its file name (in the run folder), bytes, sha256 and rows."""

    name: str
    bytes: int
    sha256: str
    rows: int


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def entry_of(path: Path, rows: int | None = None) -> PartEntry:
    """A part already on disk, hashed (for parts whose writer could not say: a worker's part the
    driver finds after the task failed, a part a killed driver left unlisted)."""
    if rows is None:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    return PartEntry(path.name, path.stat().st_size, sha256_file(path), rows)


def entry_to_json(entry: PartEntry) -> str:
    """How a Ray task hands its part's entry to the driver (its receipt's schema metadata)."""
    return json.dumps(asdict(entry))


def entry_from_json(text: str | bytes) -> PartEntry:
    return PartEntry(**json.loads(text))


class Manifest:
    """The manifest of one run: a log of JSON lines, folded in memory.

    The first line holds the run's `format`, `bench_version` and `config_sha256`; each later
    line one change: `{"add": {part entry}}`, `{"remove": name}`, `{"state": ...}`. A change is
    appended and fsynced, so recording a part costs one short write whatever the run's size (a
    whole JSON file rewritten per part grew quadratic with a run's part count: 10,000
    `rows_to=workers` parts made 15 GB of rewrites). A last line cut short by a crash (no
    newline) is ignored, as a journal's last batch is: the change it held had not happened yet
    (rules above); the next append cuts it off first, and an append that fails is cut off too. `rewrite` replaces the log by its folded state, atomically (a resume does,
    after compacting the parts).

    Thread-safe: a PartWriter records its parts from its helper thread while the driver records
    the parts workers wrote (`rows_to=workers`)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data
        self._lock = threading.Lock()

    @classmethod
    def create(cls, path: Path, config_file: Path, version: str) -> Manifest:
        """A new run's manifest (no parts yet, `writing`), written."""
        header = {"format": FORMAT, "bench_version": version}
        manifest = cls(
            path,
            {**header, "config_sha256": sha256_file(config_file), "state": WRITING, "parts": {}},
        )
        manifest.rewrite()
        return manifest

    @classmethod
    def load(cls, path: Path) -> Manifest | None:
        """The manifest as its log says, or None when the run has none. A log that is not what
        bench writes raises ValueError naming the file and line."""
        if not path.is_file():
            return None
        try:
            text = path.read_text()
            lines = text.split("\n")
            lines = lines[:-1]  # the text after the last newline: empty, or a line cut short
            if not lines:
                raise ValueError("empty")
            data = json.loads(lines[0])
            if not isinstance(data, dict) or "config_sha256" not in data:
                raise ValueError("line 1: not a bench manifest")
            if int(data.get("format", FORMAT)) > FORMAT:
                raise ValueError(f"format {data['format']}: written by a newer bench")
            data.update(state=CLOSED, parts={})
            for n, line in enumerate(lines[1:], 2):
                change = json.loads(line)
                if not isinstance(change, dict) or len(change) != 1:
                    raise ValueError(f"line {n}: not a change")
                _fold(data, change)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: unreadable manifest ({exc})") from None
        return cls(path, data)

    @property
    def state(self) -> str:
        return str(self.data.get("state", CLOSED))

    def entries(self) -> dict[str, PartEntry]:
        return {n: PartEntry(name=n, **e) for n, e in self.data["parts"].items()}

    def update(
        self,
        add: Iterable[PartEntry] = (),
        remove: Iterable[str] = (),
        state: str | None = None,
    ) -> None:
        """Remove and add (or replace: a retried task's part) entries, set the state: appended
        to the log and fsynced before this returns."""
        changes: list[dict[str, Any]] = [{"remove": name} for name in remove]
        changes += [{"add": asdict(entry)} for entry in add]
        changes += [{"state": state}] if state is not None else []
        if not changes:
            return
        data = "".join(json.dumps(c, sort_keys=True) + "\n" for c in changes).encode()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR)
            try:
                # A last line cut short by a crash goes first: appended to, it would become a
                # corrupt middle line, and the manifest unreadable for good.
                start = _complete_length(fd)
                os.ftruncate(fd, start)
                try:
                    view = memoryview(data)
                    offset = start
                    while view:
                        n = os.pwrite(fd, view, offset)
                        view, offset = view[n:], offset + n
                    os.fsync(fd)
                except BaseException:  # a full disk: no half-written line left behind
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)
                        os.fsync(fd)
                    raise
            finally:
                os.close(fd)
            for change in changes:
                _fold(self.data, change)

    def rewrite(self) -> None:
        """The log replaced by its folded state (header, state, one line per part), atomically
        and durably: a dot-name, fsync, rename, the folder fsynced (as a part is). Opened with
        the umask's mode, as the run's other files (a run folder is shared and copied)."""
        with self._lock:
            header = {k: self.data[k] for k in ("format", "bench_version", "config_sha256")}
            changes = [{"state": self.state}]
            changes += [{"add": asdict(e)} for e in self.entries().values()]
            text = "".join(json.dumps(c, sort_keys=True) + "\n" for c in [header, *changes])
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            try:
                with open(tmp, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)
            except BaseException:  # a full disk: no half-written copy left beside the manifest
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(self.path.parent)


def _fold(data: dict[str, Any], change: dict[str, Any]) -> None:
    """One line of the log into the manifest's state (`parts`: name -> bytes, sha256, rows)."""
    ((kind, value),) = change.items()
    if kind == "add":
        entry = PartEntry(**value)
        data["parts"][entry.name] = {k: v for k, v in asdict(entry).items() if k != "name"}
    elif kind == "remove":
        data["parts"].pop(str(value), None)
    elif kind == "state" and value in (WRITING, CLOSED):
        data["state"] = value
    else:
        raise ValueError(f"unknown change {change}")


def _complete_length(fd: int) -> int:
    """The bytes of the file's complete lines: its size, less a last line without a newline."""
    end = os.lseek(fd, 0, os.SEEK_END)
    pos = end
    while pos > 0:
        chunk = os.pread(fd, min(pos, 4096), max(0, pos - 4096))
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return pos - len(chunk) + cut + 1
        pos -= len(chunk)
    return 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some network and FUSE file systems cannot fsync a folder
        pass
    finally:
        os.close(fd)
