"""A result row's columns, and rows made and moved in bulk: one Arrow record batch per Ray task.

A stack of 256 trials returns one record batch, not 256 dicts: its prediction columns (test rows,
labels, scores, probabilities, weights) go from the stacked numpy arrays into Arrow list arrays
without passing through Python lists, and the driver journals and writes the batch as it is. A
one-by-one trial is a batch of one row, made by the same code. The schema is fixed so that error
rows (metrics all null) and ok rows always concatenate into the same column types.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

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
        ("wave", _int),  # seeds.until: the wave the trial's seed index belongs to (bench.waves)
        ("seed_sources", _str),  # sources that reached the training (bench.backends.seed_use)
        ("dataset_sha256", _str),  # dataset=table / images: the digest of the file / folder read
        ("code_sha256", _str),  # the user's own model code (bench.backends.user_code), else null
        ("accuracy", _float), ("balanced_accuracy", _float), ("f1", _float), ("roc_auc", _float),
        ("log_loss", _float), ("n_train", _int), ("n_test", _int), ("n_params", _int),
        ("cv_score", _float), ("best_params", _str),  # grid search: best mean CV score, its params
        ("fit_seconds", _float), ("predict_seconds", _float), ("total_seconds", _float),
        ("started_at", pa.timestamp("us", tz="UTC")),
        ("weights_sha256", _str), ("predictions_sha256", _str),
        ("predictions_dtype", _str),  # the scores' dtype in the hash (null: cast to float32)
        ("test_index", pa.list_(_int)), ("y_true", pa.list_(_int)), ("y_pred", pa.list_(_int)),
        ("y_score", pa.list_(_float)), ("y_proba", pa.list_(pa.list_(pa.float32()))),
        ("weights", pa.list_(_float)),  # keep_weights=true: final weights, flattened
        ("train_loss", pa.list_(_float)),  # per epoch (bench.backends.loss_curve); null: no epochs
        ("cpu_vendor", _str), ("cpu_flags", _str),  # the CPU, and its vector flags that matter
        ("torch_cpu_capability", _str), ("numpy_simd", _str), ("onednn_max_cpu_isa", _str),
        ("deterministic_in_force", _bool), ("torch_threads", _int), ("torch_interop_threads", _int),
        ("deterministic_warn_only", _bool),  # torch: warn-only (null in rows before the column)
        ("tf_intra_threads", _int), ("tf_inter_threads", _int), ("blas_threads", _int), ("blas", _str),
        ("determinism_env", _str), ("cudnn_deterministic", _bool), ("cudnn_benchmark", _bool),
        ("tf32_matmul", _bool), ("tf32_cudnn", _bool), ("tf_onednn", _str),
        ("nondeterministic_ops", _str), ("batched", _bool), ("group_size", _int),
        ("group_index", _int), ("group_key", _str),  # stacked: sha256 of the group's trial keys
        ("dry_run", _bool),  # dry_run=true: made without training (made-up probabilities)
        ("batch_fused_adam", _bool), ("batch_compiled", _bool),
        ("cxx_version", _str),  # compiled stacks only: the C++ compiler Inductor used
        ("host", _str), ("python_version", _str), ("platform", _str), ("cpu_model", _str),
        ("numpy_version", _str), ("sklearn_version", _str), ("torch_version", _str),
        ("tensorflow_version", _str), ("keras_version", _str), ("ray_version", _str),
        ("library_version", _str), ("cuda_version", _str), ("cudnn_version", _str),
        ("gpu_name", _str), ("driver_version", _str), ("ray_node_id", _str), ("worker_pid", _int),
        # Provenance (bench.provenance): the bench that ran the trial, its git commit and whether
        # that checkout had uncommitted changes (null outside a checkout), and the command line's
        # overrides (JSON list; null when run_sweep was called without them).
        ("bench_version", _str), ("bench_commit", _str), ("bench_dirty", _bool),
        ("overrides", _str),
        # save_models=true (bench.modelstore): the stored model and preprocessing, relative to
        # the run folder, with their sha256 and size; a scored run (bench.score) names the run
        # and trial whose model it scored.
        ("model_file", _str), ("model_sha256", _str), ("model_bytes", _int),
        ("preprocess_file", _str), ("preprocess_sha256", _str), ("preprocess_bytes", _int),
        ("scored_run_id", _str), ("scored_trial_key", _str),
    ]
)  # fmt: skip
# Raised with every change of SCHEMA (a column added, removed or retyped); each part file's
# metadata holds it (bench.store.part_metadata). Parts written before it have none.
# tests/test_provenance.py pins the schema each version stands for.
SCHEMA_VERSION = 4  # 2: train_loss; 3: stored models (model_file, ...), scored runs; 4: wave
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)
_COLUMN_SET = frozenset(COLUMNS)
# Per-row arrays: given to `to_batch` as numpy arrays, one per row (or None), never as lists.
LIST_COLUMNS = (
    "test_index", "y_true", "y_pred", "y_score", "y_proba", "weights", "train_loss",
)  # fmt: skip
_SCALARS = pa.schema([f for f in SCHEMA if f.name not in LIST_COLUMNS])
SCALAR_COLUMNS: tuple[str, ...] = tuple(_SCALARS.names)


def check_columns(row: dict[str, Any]) -> None:
    extra = row.keys() - _COLUMN_SET
    if extra:
        raise KeyError(f"result row has columns outside the schema: {sorted(extra)}")


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as dicts (list columns as Python lists) -> Arrow table in SCHEMA; a key outside the
    schema is a bug, not something to drop."""
    for row in rows:
        check_columns(row)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def list_array(values: Sequence[np.ndarray | None], type_: pa.DataType) -> pa.Array:
    """One list value per row from numpy arrays (1-D for list<x>, 2-D for list<list<x>>), None
    for a null: the values are concatenated once and wrapped with offsets."""
    present = [v for v in values if v is not None]
    inner = type_.value_type
    if isinstance(inner, pa.ListType):  # (n, k) per row: rows of k, then lists of n rows
        flat = np.concatenate([np.asarray(v).reshape(-1) for v in present]) if present else []
        widths = [np.asarray(v).shape[1] for v in present]
        lengths = [np.asarray(v).shape[0] for v in present]
        inner_ends = np.cumsum(np.repeat(widths, lengths).astype(np.int64))
        if len(inner_ends) and inner_ends[-1] >= 2**31:
            raise ValueError("result batch: too many values in one list column; use smaller stacks")
        inner_offsets = np.concatenate([[0], inner_ends]).astype(np.int32)
        inner_array = pa.ListArray.from_arrays(
            inner_offsets, pa.array(np.asarray(flat, dtype=inner.value_type.to_pandas_dtype()))
        )
        return _wrap([None if v is None else np.asarray(v).shape[0] for v in values], inner_array)
    dtype = inner.to_pandas_dtype()
    flat = (
        np.concatenate([np.asarray(v, dtype=dtype).reshape(-1) for v in present]) if present else []
    )
    return _wrap(
        [None if v is None else np.asarray(v).size for v in values],
        pa.array(np.asarray(flat, dtype=dtype), type=inner),
    )


def _wrap(lengths: list[int | None], values: pa.Array) -> pa.Array:
    ends = np.cumsum(np.array([n or 0 for n in lengths], dtype=np.int64))
    if len(ends) and ends[-1] >= 2**31:  # a list column's offsets are int32
        raise ValueError(f"result batch: {ends[-1]} values in one list column; use smaller stacks")
    offsets = pa.array(np.concatenate([[0], ends]).astype(np.int32))
    mask = pa.array([n is None for n in lengths]) if any(n is None for n in lengths) else None
    return pa.ListArray.from_arrays(offsets, values, mask=mask)


def to_batch(
    rows: list[dict[str, Any]], lists: dict[str, Sequence[np.ndarray | None]] | None = None
) -> pa.RecordBatch:
    """A record batch in SCHEMA from each row's scalar columns (`rows`) and its list columns as
    numpy arrays (`lists`: column -> one array or None per row). A list column given in a row as
    a Python list (rows the driver makes itself) is accepted too."""
    lists = lists or {}
    for row in rows:
        check_columns(row)
    in_rows = [c for c in LIST_COLUMNS if c not in lists and any(c in r for r in rows)]
    schema = pa.schema([*_SCALARS, *(SCHEMA.field(c) for c in in_rows)])
    scalars = pa.RecordBatch.from_pylist(rows, schema=schema)
    arrays = []
    for field in SCHEMA:
        if field.name in lists:
            arrays.append(list_array(lists[field.name], field.type))
        elif field.name in schema.names:
            arrays.append(scalars.column(field.name))
        else:
            arrays.append(pa.nulls(len(rows), field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)
