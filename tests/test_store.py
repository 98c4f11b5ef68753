"""Run folders written by older versions of bench stay readable by this one's tools.

A new version may add result columns; the parts an older version wrote lack them. Report, replay
and resume read those parts with the new columns null, and refuse (naming the part) only what they
cannot interpret: a column they do not know, or one whose type changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import store

NEW = ["batch_fused_adam", "batch_compiled", "cxx_version"]  # added in bench 0.3.0


def _part(directory: Path, name: str, rows: list[dict], drop: list[str] = ()) -> Path:
    table = store.to_table(rows).drop_columns(list(drop))
    path = directory / name
    pq.write_table(table, path)
    return path


def test_parts_without_newer_columns_read_with_nulls(tmp_path: Path) -> None:
    _part(
        tmp_path,
        "part-00000-old.parquet",
        [{"trial_key": "a", "status": "ok", "accuracy": 0.5}],
        NEW,
    )
    df = store.read_results(tmp_path)
    assert list(df.columns) == list(store.COLUMNS)
    assert df.loc[0, "trial_key"] == "a" and df.loc[0, "accuracy"] == 0.5
    assert df[NEW].isna().all().all()


def test_resume_compacts_old_and_new_parts_into_this_versions_schema(tmp_path: Path) -> None:
    _part(tmp_path, "part-00000-old.parquet", [{"trial_key": "a", "status": "ok"}], NEW)
    _part(tmp_path, "part-00001-old.parquet", [{"trial_key": "b", "status": "error"}], NEW)
    new = {"trial_key": "c", "status": "ok", "batched": True, "batch_fused_adam": True}
    _part(tmp_path, "part-00002-new.parquet", [new])
    assert store.compact_for_resume(tmp_path) == {"a", "c"}
    (part,) = store.part_files(tmp_path)
    assert pq.read_schema(part).names == list(store.COLUMNS)
    df = store.read_results(tmp_path).set_index("trial_key")
    assert df.loc["c", "batch_fused_adam"] == True  # noqa: E712 - a nullable column
    assert df.loc["a", NEW].isna().all()


def test_an_unknown_column_is_refused_naming_the_part_and_the_column(tmp_path: Path) -> None:
    table = store.to_table([{"trial_key": "a", "status": "ok"}])
    table = table.append_column("from_the_future", pa.array([1]))
    pq.write_table(table, tmp_path / "part-00000-new.parquet")
    with pytest.raises(
        store.CorruptPartError, match=r"part-00000-new\.parquet: columns \['from_the_future'\]"
    ):
        store.read_results(tmp_path)


def test_a_column_whose_type_changed_is_refused(tmp_path: Path) -> None:
    table = store.to_table([{"trial_key": "a", "status": "ok"}])
    i = table.schema.get_field_index("accuracy")
    table = table.set_column(i, "accuracy", pa.array(["high"]))
    pq.write_table(table, tmp_path / "part-00000-odd.parquet")
    with pytest.raises(store.CorruptPartError, match=r"\['accuracy'\] have types other"):
        store.read_results(tmp_path)


def test_a_run_before_kernel_levels_reads_as_native(tmp_path: Path) -> None:
    """bench 0.4.0 added the kernel level and what the CPU ran; an older run's rows lack them
    and read as native, so they pair with new native rows."""
    from bench.analysis import load

    added = [
        "cpu_isa", "weights", "cpu_vendor", "cpu_flags", "torch_cpu_capability", "numpy_simd",
        "onednn_max_cpu_isa", "group_key",
    ]  # fmt: skip
    _part(tmp_path, "part-00000-old.parquet", [{"trial_key": "a", "status": "ok"}], added)
    _part(
        tmp_path, "part-00001-new.parquet", [{"trial_key": "b", "status": "ok", "cpu_isa": "avx2"}]
    )
    assert store.read_results(tmp_path).set_index("trial_key").loc["a", added].isna().all()
    df = load(tmp_path).set_index("trial_key")
    assert df.loc["a", "cpu_isa"] == "native" and df.loc["b", "cpu_isa"] == "avx2"


def test_scanning_parts_gives_this_versions_types_and_nulls_for_older_columns(
    tmp_path: Path,
) -> None:
    """`scan_parts` (the end-of-sweep summary's reader): an older part without a column, a part
    whose strings are dictionary-encoded (as bench writes them), and an empty part."""
    _part(tmp_path, "part-00000-old.parquet",
          [{"trial_key": "a", "status": "ok", "library": "torch", "accuracy": 0.5}],
          ["cpu_isa"])  # fmt: skip
    table = store.to_table([{"trial_key": "b", "status": "error", "library": "sklearn"}])
    i = table.schema.get_field_index("library")
    pq.write_table(
        table.set_column(i, "library", table.column("library").dictionary_encode()),
        tmp_path / "part-00001-dict.parquet",
    )
    pq.write_table(store.to_table([]), tmp_path / "part-00002-empty.parquet")
    columns = ["trial_key", "status", "library", "accuracy", "cpu_isa"]
    batches = list(store.scan_parts(tmp_path, columns))
    got = pa.Table.from_batches(batches)
    assert got.schema == pa.schema([store.SCHEMA.field(c) for c in columns])
    assert got.to_pydict() == {"trial_key": ["a", "b"], "status": ["ok", "error"],
                               "library": ["torch", "sklearn"], "accuracy": [0.5, None],
                               "cpu_isa": [None, None]}  # fmt: skip


def test_a_run_before_warn_only_and_predictions_dtype_reads_with_nulls(tmp_path: Path) -> None:
    """`deterministic_warn_only` and `predictions_dtype` came with issue 16: a run written before
    them reads with both null, beside a new run's values, through store and analysis alike."""
    from bench.analysis import load

    added = ["deterministic_warn_only", "predictions_dtype"]
    old = {"trial_key": "a", "status": "ok", "library": "sklearn", "predictions_sha256": "x"}
    _part(tmp_path, "part-00000-old.parquet", [old], added)
    new = {"trial_key": "b", "status": "ok", "library": "torch", "deterministic_warn_only": True,
           "predictions_dtype": "float32"}  # fmt: skip
    _part(tmp_path, "part-00001-new.parquet", [new])
    for df in (store.read_results(tmp_path), load(tmp_path)):
        df = df.set_index("trial_key")
        assert df.loc["a", added].isna().all()
        assert df.loc["b", "deterministic_warn_only"] == True  # noqa: E712 - a nullable column
        assert df.loc["b", "predictions_dtype"] == "float32"


def _replayed(y_pred: np.ndarray, proba: np.ndarray, **extra) -> dict:
    """A replay's fresh row as the runner returns it (y_proba: the float32 list column)."""
    from bench import fingerprint

    return {
        "status": "ok", "trial_key": "k", "weights_sha256": "w",
        "predictions_sha256": fingerprint.predictions_sha256(y_pred, proba),
        "predictions_dtype": proba.dtype.name, "y_pred": y_pred.tolist(),
        "y_proba": proba.astype(np.float32).tolist(), **extra,
    }  # fmt: skip


def _stored(y_pred: np.ndarray, proba: np.ndarray, dtype: float | str) -> dict:
    """A stored row: `dtype` NaN is a row written before `predictions_dtype`, hashed as float32."""
    from bench import fingerprint

    old = isinstance(dtype, float)
    hashed = fingerprint.predictions_sha256_as_float32 if old else fingerprint.predictions_sha256
    return {
        "trial_key": "k", "library": "sklearn", "device": "cpu", "deterministic": False,
        "accuracy": 1.0, "weights_sha256": "w", "predictions_sha256": hashed(y_pred, proba),
        "predictions_dtype": dtype,
    }  # fmt: skip


def test_replay_compares_an_old_rows_predictions_hash_with_the_same_scheme() -> None:
    """A float64 output hashed as float32 by an older bench is compared with the replay's
    output hashed the same way; a float32 output's hash never changed; a new row compares
    hashes as they are. Where the old way cannot be computed (no y_proba), the verdict says the
    scheme changed rather than NOT REPRODUCED."""
    from bench.replay import compare

    y_pred = np.array([1, 0, 1])
    p64 = np.array([[0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]) + 1e-12
    p32 = p64.astype(np.float32)
    nan = float("nan")
    assert compare(_stored(y_pred, p64, nan), _replayed(y_pred, p64))["verdict"] == "reproduced"
    assert compare(_stored(y_pred, p32, nan), _replayed(y_pred, p32))["verdict"] == "reproduced"
    assert compare(_stored(y_pred, p64, "float64"), _replayed(y_pred, p64))["verdict"] == (
        "reproduced"
    )
    moved = p64 + np.array([[0.0, 0.0], [0.0, 0.0], [0.1, -0.1]])  # other scores, same labels
    line = compare(_stored(y_pred, p64, nan), _replayed(y_pred, moved))
    assert not line["predictions_equal"] and line["verdict"].startswith("NOT REPRODUCED")
    line = compare(_stored(y_pred, p64, nan), _replayed(y_pred, p64, y_proba=None))
    assert not line["predictions_equal"]
    assert line["verdict"] == "differs; environment changed"
    assert "hashed as float32 by the stored row, as float64 now" in line["environment_diff"]
