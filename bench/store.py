"""Parquet results: one explicit schema, part files that appear only complete, one folder per run.

`results/<sweep>/<run_id>/` holds `part-*.parquet` and `_config.yaml` (the resolved config; the
leading underscore makes pyarrow skip it), so `pd.read_parquet("results/<sweep>/<run_id>")` returns
the tidy table directly. Each part is written under a dot-name (ignored by readers) and renamed
when complete: a reader or a crash never sees half a file. The schema is fixed so that error rows
(metrics all null) and ok rows always concatenate into the same column types.
"""

from __future__ import annotations

import datetime as dt
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
    ("hparams", _str), ("dataset_params", _str),
]  # fmt: skip
SCHEMA = pa.schema(
    [
        ("trial_key", _str), ("run_id", _str), ("sweep", _str), ("status", _str), ("error", _str),
        *SPEC_COLUMNS,
        ("accuracy", _float), ("balanced_accuracy", _float), ("f1", _float), ("roc_auc", _float),
        ("log_loss", _float), ("n_train", _int), ("n_test", _int), ("n_params", _int),
        ("fit_seconds", _float), ("predict_seconds", _float), ("total_seconds", _float),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("weights_sha256", _str), ("predictions_sha256", _str),
        ("test_index", pa.list_(_int)), ("y_true", pa.list_(_int)), ("y_pred", pa.list_(_int)),
        ("y_score", pa.list_(_float)), ("y_proba", pa.list_(pa.list_(pa.float32()))),
        ("deterministic_in_force", _bool), ("torch_threads", _int), ("torch_interop_threads", _int),
        ("tf_intra_threads", _int), ("tf_inter_threads", _int), ("blas_threads", _int), ("blas", _str),
        ("determinism_env", _str),
        ("host", _str), ("python_version", _str), ("platform", _str), ("cpu_model", _str),
        ("numpy_version", _str), ("sklearn_version", _str), ("torch_version", _str),
        ("tensorflow_version", _str), ("keras_version", _str), ("ray_version", _str),
        ("library_version", _str), ("cuda_version", _str), ("cudnn_version", _str),
        ("gpu_name", _str), ("driver_version", _str), ("ray_node_id", _str), ("worker_pid", _int),
    ]
)  # fmt: skip
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
CONFIG_FILE = "_config.yaml"


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows -> Arrow table in SCHEMA; a key outside the schema is a bug, not something to drop."""
    for row in rows:
        extra = set(row) - set(COLUMNS)
        if extra:
            raise KeyError(f"result row has columns outside the schema: {sorted(extra)}")
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def new_run_id() -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(3)}"


def run_dir(results_dir: str | Path, sweep: str, run_id: str) -> Path:
    return Path(results_dir) / sweep / run_id


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PartWriter:
    """Buffers rows and writes them as numbered part files, each atomically."""

    def __init__(self, directory: Path, rows_per_part: int = 50) -> None:
        self.directory = directory
        self.rows_per_part = rows_per_part
        self._token = secrets.token_hex(4)
        self._buffer: list[dict[str, Any]] = []
        self._parts = 0
        self.rows_written = 0

    def add(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_part:
            self.flush()

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        table = to_table(self._buffer)
        path = self.directory / f"part-{self._parts:05d}-{self._token}.parquet"
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self._parts += 1
        self.rows_written += len(self._buffer)
        self._buffer = []
        return path
