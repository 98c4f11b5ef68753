"""Parquet results: one explicit schema, part files that appear only complete, one folder per run.

`results/<sweep>/<run_id>/` holds `part-*.parquet` and `_config.yaml` (the resolved config; the
leading underscore makes pyarrow skip it), so `pd.read_parquet("results/<sweep>/<run_id>")` returns
the tidy table directly. Each part is written under a dot-name (ignored by readers) and renamed
when complete: a reader or a crash never sees half a file. The schema is fixed so that error rows
(metrics all null) and ok rows always concatenate into the same column types.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_str, _int, _float, _bool = pa.string(), pa.int64(), pa.float64(), pa.bool_()

SPEC_COLUMNS = [
    ("library", _str), ("model", _str), ("dataset", _str), ("device", _str), ("varied", _str),
    ("seed_split", _int), ("seed_order", _int), ("seed_init", _int), ("repeat", _int),
    ("deterministic", _bool), ("threads", _int), ("init_mode", _str), ("order_mode", _str),
    ("hparams", _str), ("dataset_params", _str), ("mode", _str),
    ("seed_cv", _int), ("search", _str),  # null unless the trial ran a grid search
    ("cpu_isa", _str),  # the CPU kernel level asked for (null in runs before bench 0.4.0: native)
]  # fmt: skip
SCHEMA = pa.schema(
    [
        ("trial_key", _str), ("run_id", _str), ("sweep", _str), ("status", _str), ("error", _str),
        *SPEC_COLUMNS,
        ("accuracy", _float), ("balanced_accuracy", _float), ("f1", _float), ("roc_auc", _float),
        ("log_loss", _float), ("n_train", _int), ("n_test", _int), ("n_params", _int),
        ("cv_score", _float), ("best_params", _str),  # grid search: best mean CV score, its params
        ("fit_seconds", _float), ("predict_seconds", _float), ("total_seconds", _float),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("weights_sha256", _str), ("predictions_sha256", _str),
        ("test_index", pa.list_(_int)), ("y_true", pa.list_(_int)), ("y_pred", pa.list_(_int)),
        ("y_score", pa.list_(_float)), ("y_proba", pa.list_(pa.list_(pa.float32()))),
        ("weights", pa.list_(_float)),  # keep_weights=true: final weights, flattened
        ("cpu_vendor", _str), ("cpu_flags", _str),  # the CPU, and its vector flags that matter
        ("torch_cpu_capability", _str), ("numpy_simd", _str), ("onednn_max_cpu_isa", _str),
        ("deterministic_in_force", _bool), ("torch_threads", _int), ("torch_interop_threads", _int),
        ("tf_intra_threads", _int), ("tf_inter_threads", _int), ("blas_threads", _int), ("blas", _str),
        ("determinism_env", _str), ("cudnn_deterministic", _bool), ("cudnn_benchmark", _bool),
        ("tf32_matmul", _bool), ("tf32_cudnn", _bool), ("tf_onednn", _str),
        ("nondeterministic_ops", _str), ("batched", _bool), ("group_size", _int),
        ("group_index", _int), ("group_key", _str),  # stacked: sha256 of the group's trial keys
        ("batch_fused_adam", _bool), ("batch_compiled", _bool),
        ("cxx_version", _str),  # compiled stacks only: the C++ compiler Inductor used
        ("host", _str), ("python_version", _str), ("platform", _str), ("cpu_model", _str),
        ("numpy_version", _str), ("sklearn_version", _str), ("torch_version", _str),
        ("tensorflow_version", _str), ("keras_version", _str), ("ray_version", _str),
        ("library_version", _str), ("cuda_version", _str), ("cudnn_version", _str),
        ("gpu_name", _str), ("driver_version", _str), ("ray_node_id", _str), ("worker_pid", _int),
    ]
)  # fmt: skip
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_COLUMN_SET = frozenset(COLUMNS)
CONFIG_FILE = "_config.yaml"
JOURNAL_GLOB = ".journal-*.jsonl"
LOCK_FILE = "_lock"
VERSION_FILE = "_bench_version"  # which bench wrote the run: a resume by another one is refused


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> Arrow table in SCHEMA; a key outside the schema is a bug, not something to drop."""
    for row in rows:
        check_columns(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def check_columns(row: dict[str, Any]) -> None:
    extra = row.keys() - _COLUMN_SET
    if extra:
        raise KeyError(f"result row has columns outside the schema: {sorted(extra)}")


class CorruptPartError(ValueError):
    """A part file that cannot be read; the message names it and says how to move it aside."""


class RunInUseError(ValueError):
    """Another driver holds the run folder: two writers would compact each other's journals."""


class RunLock:
    """An exclusive lock on a run folder, held from before a resume compacts it until the run's
    last part is written. flock: the kernel drops it when the holder dies, even by SIGKILL, so a
    crashed run can always be resumed; the `_lock` file (skipped by Parquet readers, never
    deleted, so that two drivers cannot lock two different files) names the holder while held.
    Advisory and per host; where the file system has no locks (some network mounts) the run goes
    on unlocked, with a warning."""

    def __init__(self, directory: Path) -> None:
        import fcntl
        import socket
        import sys

        self.path = directory / LOCK_FILE
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
    path = directory / VERSION_FILE
    return path.read_text().strip() if path.is_file() else "0.1.0"


def write_version(directory: Path) -> None:
    from bench import __version__

    (directory / VERSION_FILE).write_text(__version__ + "\n")


def new_run_id() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def run_dir(results_dir: str | Path, sweep: str, run_id: str) -> Path:
    return Path(results_dir) / sweep / run_id


def part_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.parquet"))


def journal_files(directory: Path) -> list[Path]:
    return sorted(directory.glob(JOURNAL_GLOB))


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot journal a {type(value).__name__}")


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Rows appended to a journal; a last line cut short by a crash is ignored."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("started_at"):
            row["started_at"] = dt.datetime.fromisoformat(row["started_at"])
        rows.append(row)
    return rows


def _write_part(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
                f"move it aside with: mv '{path}' '{path.parent / ('_corrupt-' + path.name)}'"
            ) from None
        problem = _schema_problem(schema)
        if problem:
            raise CorruptPartError(
                f"{path}: {problem}; move it aside with: "
                f"mv '{path}' '{path.parent / ('_corrupt-' + path.name)}'"
            )
    return parts


def read_part(path: Path) -> pa.Table:
    """One checked part in this version's schema: columns added since it was written are null."""
    return pq.read_table(path, schema=SCHEMA)


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


def compact_for_resume(directory: Path) -> set[str]:
    """Prepare a run folder for resuming; return the trial keys that already have an ok row.

    Keeps exactly one ok row per trial key (journal rows of a killed driver included) in a new
    part, moves error rows and duplicates into `_superseded/` (their trials run again), then
    removes the old parts and journals. A crash in between leaves duplicates that the next
    resume removes the same way.
    """
    parts = check_parts(directory)
    journals = journal_files(directory)
    tables = [read_part(p) for p in parts]
    journal_rows = [row for j in journals for row in read_journal(j)]
    if journal_rows:
        tables.append(to_table(journal_rows))
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
    if keep:
        _write_part(table.take(keep), directory / f"part-r{stamp}.parquet")
    if drop:
        (directory / "_superseded").mkdir(exist_ok=True)
        _write_part(table.take(drop), directory / "_superseded" / f"{stamp}.parquet")
    for path in [*parts, *journals]:
        path.unlink()
    return done


class PartWriter:
    """Buffers rows into numbered part files, each written atomically, behind a journal.

    Every row is also appended (and fsynced) to a dot-named journal the moment it arrives, and
    the journal is emptied once its rows are in a part file: a driver killed with SIGKILL loses
    no finished trial, and resuming the run moves journal rows into a part.
    """

    def __init__(self, directory: Path, rows_per_part: int = 50) -> None:
        self.directory = directory
        self.rows_per_part = rows_per_part
        self._token = secrets.token_hex(4)
        self._buffer: list[dict[str, Any]] = []
        self._parts = 0
        self.rows_written = 0
        self._journal_path = directory / f".journal-{self._token}.jsonl"
        self._journal = open(self._journal_path, "a")  # noqa: SIM115 - lives as long as the writer

    def add(self, row: dict[str, Any]) -> None:
        check_columns(row)  # a row outside the schema fails here, not at the flush
        self._journal.write(json.dumps(row, default=_json_default) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_part:
            self.flush()

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        path = self.directory / f"part-{self._parts:05d}-{self._token}.parquet"
        _write_part(to_table(self._buffer), path)
        self._journal.truncate(0)
        self._journal.seek(0)
        self._parts += 1
        self.rows_written += len(self._buffer)
        self._buffer = []
        return path

    def close(self) -> None:
        self.flush()
        self._journal.close()
        self._journal_path.unlink(missing_ok=True)
