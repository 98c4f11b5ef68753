"""Parquet results: one explicit schema, part files that appear only complete, one folder per run.

`results/<sweep>/<run_id>/` holds the run's `part-*.parquet` files and nothing else, so that every
reader (pandas, pyarrow.dataset, polars, DuckDB, Ray Data; a folder or a `**/*.parquet` glob) reads
exactly the run's rows. Everything else about the run, its bookkeeping, lives in the hidden
sibling `results/<sweep>/.<run_id>/` (`RunFiles`): the resolved config, the bench version, the
lock, the journals, part files while they are written, superseded rows, replays, the report.
Bookkeeping that holds rows (superseded rows, replays) is Parquet named `*.pq`: polars and DuckDB
glob into hidden folders, and `*.parquet` must match result parts only. Runs written before this
layout keep their bookkeeping inside the run folder under `_`-names and are read, resumed and
replayed where they are (`RunFiles.legacy`).

Each part is written in the bookkeeping folder and renamed into the run folder when complete: a
reader or a crash never sees half a file. The schema lives in bench.rows; rows arrive here as
Arrow record batches and are journaled before they reach a part.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench import rows
from bench.manifest import CLOSED, Manifest, PartEntry

COLUMNS, SCHEMA, SPEC_COLUMNS = rows.COLUMNS, rows.SCHEMA, rows.SPEC_COLUMNS
check_columns, to_table = rows.check_columns, rows.to_table
_COLUMN_SET = frozenset(COLUMNS)
JOURNAL_GLOB = ".journal-*.arrows"
ASIDE_SUFFIX = ".pq"  # Parquet that holds rows but not results (superseded, replays): no *.parquet
LEGACY_CONFIG_FILE = "_config.yaml"  # a run folder holding it keeps its bookkeeping inside


@dataclass(frozen=True)
class RunFiles:
    """Where a run's rows (`rows`: part files only) and its bookkeeping (`meta`) live.

    A run `results/<sweep>/<run_id>` keeps its bookkeeping in the hidden sibling
    `results/<sweep>/.<run_id>/`; a run written before this layout (`legacy`) keeps it inside
    its run folder under the names it was written with (`_config.yaml`, `_bench_version`,
    `_lock`, `.journal-*`, `_superseded/`, `_replay/`, `_report/`, `_faults/`, `_slurm/`)."""

    rows: Path
    meta: Path
    legacy: bool = False

    def _name(self, name: str) -> Path:
        return self.meta / (f"_{name}" if self.legacy else name)

    @property
    def config(self) -> Path:  # the fully resolved config
        return self._name("config.yaml")

    @property
    def version(self) -> Path:  # which bench wrote the run: a resume by another one is refused
        return self._name("bench_version")

    @property
    def manifest(self) -> Path:  # the run's parts with their checksums (bench.manifest)
        return self._name("manifest.jsonl")

    @property
    def lock(self) -> Path:
        return self._name("lock")

    @property
    def staging(self) -> Path:
        """Journals, and part files while they are written (under dot-names)."""
        return self.meta

    @property
    def superseded(self) -> Path:
        return self._name("superseded")

    @property
    def replays(self) -> Path:
        return self._name("replay")

    @property
    def report(self) -> Path:
        return self._name("report")

    @property
    def faults(self) -> Path:
        return self._name("faults")

    @property
    def slurm(self) -> Path:
        return self._name("slurm")

    @property
    def models(self) -> Path:  # save_models=true: stored models (bench.modelstore)
        return self._name("models")


def run_files(directory: str | Path) -> RunFiles:
    """The files of the run whose rows are in `directory` (which need not exist yet)."""
    directory = Path(directory)
    if (directory / LEGACY_CONFIG_FILE).is_file():
        return RunFiles(directory, directory, legacy=True)
    named = directory if directory.name not in ("", ".", "..") else Path.cwd() / directory
    named = Path(os.path.normpath(named))
    return RunFiles(directory, named.with_name(f".{named.name}"))


class CorruptPartError(ValueError):
    """A part file that cannot be read; the message names it and says how to move it aside."""


class RunInUseError(ValueError):
    """Another driver holds the run folder: two writers would compact each other's journals."""


class RunLock:
    """An exclusive lock on a run folder, held from before a resume compacts it until the run's
    last part is written. flock: the kernel drops it when the holder dies, even by SIGKILL, so a
    crashed run can always be resumed; the lock file (in the run's bookkeeping folder, never
    deleted, so that two drivers cannot lock two different files) names the holder while held.
    Advisory and per host; where the file system has no locks (some network mounts) the run goes
    on unlocked, with a warning."""

    def __init__(self, directory: Path) -> None:
        import fcntl
        import socket
        import sys

        self.path = run_files(directory).lock
        try:
            self._file = open(self.path, "a+")  # noqa: SIM115 - held for the run's lifetime
        except OSError as exc:
            raise RunInUseError(
                f"results_dir: cannot open {self.path}: {exc.strerror or exc}"
            ) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise RunInUseError(
                f"run_id: {directory} is being written by another bench driver ({holder}); "
                "wait for it to finish, or choose another run_id"
            ) from None
        except OSError as exc:  # ENOLCK, EOPNOTSUPP: no locking on this file system
            print(
                f"bench: warning: cannot lock {self.path} ({exc.strerror or exc}); "
                "nothing stops a second driver on this run",
                file=sys.stderr,
            )
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        """Clear the holder's name, then unlock: everything this driver writes is written."""
        if self._file.closed:
            return
        self._file.truncate(0)
        self._file.close()


def run_version(directory: Path) -> str:
    """The bench version that wrote a run (runs without the file predate it: 0.1.0)."""
    path = run_files(directory).version
    return path.read_text().strip() if path.is_file() else "0.1.0"


def write_version(directory: Path) -> None:
    from bench import __version__

    run_files(directory).version.write_text(__version__ + "\n")


def new_run_id() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def run_dir(results_dir: str | Path, sweep: str, run_id: str) -> Path:
    return Path(results_dir) / sweep / run_id


def run_dirs(sweep_dir: str | Path) -> list[Path]:
    """The run folders of a sweep folder (`results/<sweep>`), in name (start time) order, without
    their hidden bookkeeping folders."""
    return sorted(
        p for p in Path(sweep_dir).iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


def results_path(path: str | Path) -> Path:
    """`path` if it holds bench results (a part file, or a folder with part files anywhere
    below: a run, a sweep, a tree), else FileNotFoundError saying which is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no results at {path}")
    if path.is_dir() and not any(path.rglob("part-*.parquet")):
        raise FileNotFoundError(f"{path}: no bench results here (no part-*.parquet files)")
    return path


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def scan_parts(
    directory: Path, columns: list[str], batch_size: int = 1 << 16
) -> Iterator[pa.RecordBatch]:
    """A run's rows, `columns` only, in this version's schema (`read_part`), a batch at a time,
    one part file after another: a `pyarrow.dataset` scan of the whole folder kept every file's
    parsed footer until it ended (about 0.3 KB a row with 1,000-row parts: 330 MB at a million
    trials, after the sweep's last row)."""
    for path in part_files(directory):
        yield from read_part(path, columns).to_batches(batch_size)


def journal_files(directory: Path) -> list[Path]:
    """The journals in `directory` (a run's are in its `RunFiles.staging`)."""
    return sorted(directory.glob(JOURNAL_GLOB))


def read_journal(path: Path) -> pa.Table:
    """The batches appended to a journal (an Arrow IPC stream); a last batch cut short by a crash
    is ignored, as is a journal cut short before its first batch."""
    batches: list[pa.RecordBatch] = []
    data = path.read_bytes()  # an unreadable journal raises: it must never be taken for empty
    try:
        reader = pa.ipc.open_stream(pa.BufferReader(data))
        while True:
            batches.append(reader.read_next_batch())
    except (StopIteration, pa.ArrowInvalid, OSError):  # pyarrow: a message cut short
        pass
    return pa.Table.from_batches(batches, schema=SCHEMA)


# Dictionary encoding pays for strings (keys, versions, JSON settings repeat within a part), not
# for the per-row arrays of numbers: limited to strings, a part was written 3x faster and 10%
# smaller (`python -m bench.perf_rows ingest`). Statistics (min/max, for readers' filters) are kept
# for the scalar columns only.
_DICTIONARY = [f.name for f in SCHEMA if pa.types.is_string(f.type)]
_STATISTICS = list(rows.SCALAR_COLUMNS)
# Keys of a part's Parquet key-value metadata (`pyarrow.parquet.read_metadata(part).metadata`).
META_SCHEMA_VERSION = b"bench.schema_version"  # bench.rows.SCHEMA_VERSION, as decimal text
META_CONFIG = b"bench.config"  # the run's composed config, resolved, as YAML (= _config.yaml)


def part_metadata(config: str | None = None) -> dict[bytes, bytes]:
    """A part's key-value metadata: the schema version, and the composed config when known."""
    meta = {META_SCHEMA_VERSION: str(rows.SCHEMA_VERSION).encode()}
    if config is not None:
        meta[META_CONFIG] = config.encode()
    return meta


def _write_part(
    table: pa.Table, path: Path, staging: Path | None = None, config: str | None = None
) -> PartEntry:
    """Write `table` under a dot-name in `staging` (default: beside `path`), fsync it, rename it
    to `path` (the same file system: a run's bookkeeping folder is its run folder's sibling). Its
    metadata holds the schema version and `config`, the run's composed config (`part_metadata`).
    Returns its manifest entry, hashed while the file is open for its fsync: the bytes just
    written, from the page cache, not a second read of the folder."""
    import hashlib

    if staging is None:
        staging = path.parent
    else:
        staging.mkdir(parents=True, exist_ok=True)  # a bare folder of parts has none yet
    tmp = staging / f".{path.name}.tmp"
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), **part_metadata(config)}
    )
    try:
        pq.write_table(table, tmp, use_dictionary=_DICTIONARY, write_statistics=_STATISTICS)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            entry = PartEntry(
                path.name, os.fstat(f.fileno()).st_size, hashlib.file_digest(f, "sha256").hexdigest(),
                table.num_rows,
            )  # fmt: skip
        os.replace(tmp, path)
    except BaseException:  # a full disk: what was written of it frees its space, and is no part
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return entry


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: without it, a power cut can forget a part that had been renamed."""
    import errno

    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some network and FUSE file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _schema_problem(schema: pa.Schema) -> str | None:
    """Why a part's columns cannot be read as this version's rows, or None. Columns that an older
    bench did not write yet are fine (they read as null); a column this version does not know, or
    one whose type changed, is not."""
    unknown = [name for name in schema.names if name not in _COLUMN_SET]
    if unknown:
        return f"columns {unknown} are not in this version's schema (written by a newer bench?)"
    changed = [f.name for f in schema if not f.type.equals(SCHEMA.field(f.name).type)]
    if changed:
        return f"columns {changed} have types other than this version's"
    return None


def _aside(path: Path) -> Path:
    """Where a bad part is moved out of readers' way: the run's bookkeeping folder, under a name
    that no Parquet reader or `*.parquet` glob takes for rows."""
    return run_files(path.parent)._name(f"{path.name}.corrupt")


def check_parts(directory: Path) -> list[Path]:
    """Every part file, each opened; the first unreadable one stops everything, by name."""
    parts = part_files(directory)
    for path in parts:
        try:
            schema = pq.read_schema(path)
            pq.ParquetFile(path).metadata  # noqa: B018 - reads the footer
        except (OSError, pa.ArrowException) as exc:
            raise CorruptPartError(
                f"{path}: not a readable Parquet part ({' '.join(str(exc).split())[:200]}); "
                f"move it aside with: {_mv_aside(path)}"
            ) from None
        problem = _schema_problem(schema)
        if problem:
            raise CorruptPartError(f"{path}: {problem}; move it aside with: {_mv_aside(path)}")
    return parts


def _mv_aside(path: Path) -> str:
    import shlex

    aside = _aside(path)
    make = "" if aside.parent.is_dir() else f"mkdir -p {shlex.quote(str(aside.parent))} && "
    return f"{make}mv {shlex.quote(str(path))} {shlex.quote(str(aside))}"


def read_part(path: Path, columns: list[str] | None = None) -> pa.Table:
    """One checked part (`columns` of it, or all) in this version's schema: columns added since it
    was written are null."""
    return pq.read_table(path, schema=SCHEMA, columns=columns)


def read_results(directory: str | Path):
    """The run's rows as a DataFrame, after checking every part (a bad one is named)."""
    import pandas as pd

    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such results folder")
    parts = check_parts(directory)
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in COLUMNS})
    return pa.concat_tables([read_part(p) for p in parts]).to_pandas()


def compact_for_resume(
    directory: Path, config: str | None = None, manifest: Manifest | None = None
) -> set[str]:
    """Prepare a run folder for resuming; return the trial keys that already have an ok row.

    Keeps exactly one ok row per trial key (journal rows of a killed driver included) in a new
    part, moves error rows and duplicates into the bookkeeping's `superseded/` (their trials run
    again; `*.pq`, out of readers' way), then removes the old parts and journals. A crash in
    between leaves duplicates that the next resume removes the same way. `config`: the composed
    config, for the parts' metadata. `manifest`: the run's, which lists the new part before the
    old ones are deleted, and never lists a deleted one (bench.manifest).
    """
    files = run_files(directory)
    parts = check_parts(directory)
    journals = journal_files(files.staging)
    tables = [read_part(p) for p in parts]
    tables += [t for t in (read_journal(j) for j in journals) if t.num_rows]
    if not tables:
        return set()
    table = pa.concat_tables(tables)
    keep, drop, done = [], [], set()
    for i, (key, status) in enumerate(
        zip(table["trial_key"].to_pylist(), table["status"].to_pylist(), strict=True)
    ):
        if status == "ok" and key not in done:
            done.add(key)
            keep.append(i)
        else:
            drop.append(i)
    if not drop and not journals and len(parts) <= 1:
        return done
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")
    new = []
    if keep:
        new.append(
            _write_part(
                table.take(keep), directory / f"part-r{stamp}.parquet", files.staging, config
            )
        )
    if drop:
        files.superseded.mkdir(parents=True, exist_ok=True)
        _write_part(table.take(drop), files.superseded / f"{stamp}{ASIDE_SUFFIX}", config=config)
    if manifest is not None:
        manifest.update(add=new, remove=[p.name for p in parts])
    for path in [*parts, *journals]:
        path.unlink()
    return done


def worker_part(directory: Path, specs: list) -> Path:
    """Where a Ray task writes its rows with `rows_to=workers`: named after its trials, so that a
    retried task replaces its own part instead of adding a second copy of its rows."""
    from bench.spec import group_key

    return directory / f"part-w{group_key(specs)[:24]}.parquet"


def write_worker_part(
    batch: pa.RecordBatch, path: Path, staging: Path | None = None, config: str | None = None
) -> PartEntry:
    """A Ray task's rows as a part file of its own, durable before this returns: written under a
    dot-name in `staging`, fsynced, renamed over any earlier attempt's, the folder fsynced.
    `config`: the run's composed config, for the part's metadata. Returns the part's manifest
    entry, which the task hands to the driver (the driver keeps the manifest)."""
    return _write_part(pa.Table.from_batches([batch], schema=SCHEMA), path, staging, config)


class Journal:
    """Batches appended to a dot-named Arrow IPC stream, each made durable by one fsync before
    `append` returns: what a driver killed with SIGKILL has received is on disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open(path, "wb")  # noqa: SIM115 - lives until its rows are in a part
        self._stream = pa.ipc.new_stream(self._file, SCHEMA)

    def append(self, batch: pa.RecordBatch) -> None:
        self._stream.write_batch(batch)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


# A part is written once its oldest row has waited this long, whatever rows_per_part says
# (checked as batches arrive; the rest is written when the sweep ends).
PART_MAX_AGE_S = 30.0


class PartWriter:
    """Record batches into numbered part files, each written atomically, behind journals.

    Journals and part files being written go to `staging` (a run's bookkeeping folder; default:
    `directory` itself, under dot-names); `suffix` names the parts (`.parquet` for results,
    `ASIDE_SUFFIX` for rows that are not: replays).

    Every batch (a Ray task's rows: one trial, or a stack of hundreds) is appended to the current
    journal with one fsync the moment it arrives: a driver killed with SIGKILL loses no finished
    trial, and resuming the run moves journal rows into a part (one row per trial key, should a
    part and its journal both hold it). Once `rows_per_part` rows are waiting, they go to a part
    file (or once the oldest has waited `max_age_s`, so that a slow sweep's rows reach readers),
    written on a helper thread while the driver goes on with a fresh journal; the old
    journal is deleted when its part is on disk. Encoding Parquet was most of the driver's time
    per row; pyarrow does it without the GIL, so the driver keeps taking batches meanwhile.
    `config` (the run's composed config, YAML) goes into every part's metadata. `manifest`: the
    run's (bench.manifest), which lists each part once it is in the run folder, and is closed by
    `close`.
    """

    def __init__(
        self,
        directory: Path,
        rows_per_part: int = 1000,
        max_age_s: float = PART_MAX_AGE_S,
        config: str | None = None,
        staging: Path | None = None,
        suffix: str = ".parquet",
        manifest: Manifest | None = None,
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.directory = directory
        self.config = config
        self.manifest = manifest
        self.staging = directory if staging is None else staging  # journals, parts being written
        self.suffix = suffix
        self.rows_per_part = rows_per_part
        self.max_age_s = max_age_s
        self._oldest = 0.0
        self._token = secrets.token_hex(4)
        self._buffer: list[pa.RecordBatch] = []
        self._buffered = 0
        self._parts = 0
        self.rows_written = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bench-parts")
        self._pending: list = []
        self.failed: OSError | None = None  # a write failed (a full disk): write nothing more
        self._journal = self._new_journal()

    def _new_journal(self) -> Journal:
        return Journal(self.staging / f".journal-{self._token}-{self._parts:05d}.arrows")

    def add(self, row: dict[str, Any]) -> None:
        """One row made in the driver (a skipped trial, a trial whose worker died)."""
        self.add_batch(rows.to_batch([row]))

    def add_batch(self, batch: pa.RecordBatch) -> None:
        if not batch.schema.equals(SCHEMA):
            raise ValueError("result batch: its schema is not bench.rows.SCHEMA")
        self._check()
        if not self._buffer:
            self._oldest = time.monotonic()
        # Buffered first: a Ctrl-C right after the journal's fsync must not leave a batch that
        # the journal holds but the part written at the end lacks (its journal is then deleted).
        self._buffer.append(batch)
        self._buffered += batch.num_rows
        with self._failing():
            self._journal.append(batch)
            if (
                self._buffered >= self.rows_per_part
                or time.monotonic() - self._oldest >= self.max_age_s
            ):
                self._rotate()

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """A write that fails (a full disk, bench.diskfull) stops this writer for good: a batch
        appended after a half-written one would be unreadable, and the journals must stay (they
        hold the rows no part holds) for a resume to recover them."""
        if self.failed is not None:
            raise self.failed
        try:
            yield
        except OSError as exc:
            self.failed = exc
            raise

    def _rotate(self) -> None:
        """Hand the waiting rows to the part writer; start a new journal for what comes next."""
        table = pa.Table.from_batches(self._buffer, schema=SCHEMA)
        path = self.directory / f"part-{self._parts:05d}-{self._token}{self.suffix}"
        journal, n = self._journal, self._buffered
        journal.close()
        self._parts += 1
        self._journal = self._new_journal()
        self._buffer, self._buffered = [], 0

        def write() -> None:
            entry = _write_part(table, path, self.staging, self.config)
            if self.manifest is not None:  # listed before its journal goes (bench.manifest)
                self.manifest.update(add=[entry])
            journal.path.unlink(missing_ok=True)
            self.rows_written += n

        self._pending.append(self._pool.submit(write))

    def _check(self) -> None:
        """Raise a part write's error (a full disk) here, in the driver, once it is known."""
        with self._failing():
            while self._pending and self._pending[0].done():
                self._pending.pop(0).result()

    def flush(self) -> None:
        """Every row received so far is in a part file when this returns. After a failed write,
        nothing: the rows stay in their journals, for a resume."""
        if self.failed is not None:
            return
        with self._failing():
            if self._buffer:
                self._rotate()
            while self._pending:
                self._pending.pop(0).result()

    def close(self, complete: bool = True) -> None:
        """Write what is buffered and end the helper thread. `complete`: the sweep ran to its end,
        so every part is listed and the manifest says `closed`. A stopped one (Ctrl-C, a stop
        signal, a full disk, an error) passes False and leaves it `writing`: parts that workers
        wrote but the driver had not listed yet are then what a killed driver leaves, and the
        resume takes them in (bench.manifest)."""
        if self.failed is not None:  # keep every journal; let the helper thread end its write
            self._pool.shutdown()
            with contextlib.suppress(OSError):  # its buffer cannot be written either
                self._journal.close()
            return
        self.flush()
        self._pool.shutdown()
        self._journal.close()
        self._journal.path.unlink(missing_ok=True)
        if complete and self.manifest is not None:  # every part listed: a resume tolerates nothing
            self.manifest.update(state=CLOSED)
