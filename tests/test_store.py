"""Run folders written by older versions of bench stay readable by this one's tools.

A new version may add result columns; the parts an older version wrote lack them. Report, replay
and resume read those parts with the new columns null, and refuse (naming the part) only what they
cannot interpret: a column they do not know, or one whose type changed.
"""

from __future__ import annotations

from pathlib import Path

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
