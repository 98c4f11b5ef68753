"""Every Parquet reader reads a results tree as bench does (issue 18, point 4).

A real run (sklearn trials on embedded Ray: some fail, are resumed and leave superseded rows;
workers write their own parts), replayed and reported, plus a second run in the same sweep. Then
pandas, pyarrow.dataset, polars and DuckDB read one run folder and the whole results tree, as
docs/reading-results.md shows, and must get exactly the rows `bench.analysis.load` gets: the
bookkeeping (config, version, lock, journals, superseded rows, replays, report) is in the hidden
sibling folder `.<run_id>/`, and nothing there is named `*.parquet`, since polars and DuckDB glob
into hidden folders. A run written with the earlier layout (bookkeeping inside the run folder)
still loads, resumes and replays in place. One Ray start for the module.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from bench import analysis, store
from bench.cluster.connect import connect
from bench.config import compose
from bench.replay import replay
from bench.report import write_report
from bench.runner import run_sweep

pytestmark = pytest.mark.slow

BASE = ["+sweep=smoke", "libraries=[sklearn]", "seeds.n=3", "progress=false"]


@dataclass(frozen=True)
class Tree:
    results: Path
    run: Path  # replayed, reported, resumed
    legacy: Path  # a run in the layout before bookkeeping moved out of the run folder
    legacy_replay: pd.DataFrame
    legacy_rows: int


def _legacy_copy(run: Path, dest: Path, drop: int) -> int:
    """`run` as an earlier bench laid it out (`_config.yaml`, `_bench_version` and `_lock` in the
    run folder), less `drop` rows, which a resume then trains again; returns the rows kept."""
    dest.mkdir(parents=True)
    files = store.run_files(run)
    shutil.copy(files.config, dest / "_config.yaml")
    shutil.copy(files.version, dest / "_bench_version")
    (dest / "_lock").touch()
    table = pa.concat_tables(store.read_part(p) for p in store.part_files(run))
    kept = table.slice(drop)
    pq.write_table(kept, dest / "part-00000-0123abcd.parquet")
    return kept.num_rows


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    import ray

    results = tmp_path_factory.mktemp("results")
    base = [*BASE, f"results_dir={results}"]
    connect({"num_cpus": 2})  # one Ray for every sweep and replay below
    try:
        failed = run_sweep(compose([*base, "run_id=r1", "faults.raise_on=0.4", "rows_to=workers"]))
        assert failed.n_error > 0 and failed.n_ok > 0
        resumed = run_sweep(compose([*base, "run_id=r1"]))  # error rows -> superseded
        assert resumed.n_ok == resumed.n_trials and resumed.n_resumed == failed.n_ok
        run = resumed.path
        assert (replay(run, progress=False)["verdict"] == "reproduced").all()
        write_report(run, n_resamples=50)
        assert run_sweep(compose([*base, "run_id=r2", "dry_run=true"])).n_ok > 0

        legacy_results = tmp_path_factory.mktemp("legacy") / "results"
        legacy = legacy_results / "smoke" / "old"
        kept = _legacy_copy(run, legacy, drop=2)
        again = run_sweep(compose([*BASE, f"results_dir={legacy_results}", "run_id=old"]))
        assert again.n_resumed == kept > 0 and again.n_ok == again.n_trials
        legacy_replay = replay(legacy, progress=False)
    finally:
        ray.shutdown()
    return Tree(results, run, legacy, legacy_replay, kept)


def _keys(frame) -> Counter:
    column = frame["trial_key"]
    return Counter(column.to_list() if hasattr(column, "to_list") else column.to_pylist())


def _readers(run: Path, results: Path) -> dict[str, Counter]:
    """What each reader returns, one run folder and the whole tree, the way the docs write it."""
    sql = "SELECT trial_key FROM read_parquet('{}')"
    return {
        "pandas run": _keys(pd.read_parquet(run)),
        "pandas tree": _keys(pd.read_parquet(results)),
        "pyarrow.dataset run": _keys(ds.dataset(run).to_table()),
        "pyarrow.dataset tree": _keys(ds.dataset(results).to_table()),
        "polars run": _keys(pl.read_parquet(run)),
        "polars run glob": _keys(pl.read_parquet(f"{run}/*.parquet")),
        "polars sweep glob": _keys(pl.read_parquet(f"{results}/smoke/*/*.parquet")),
        "polars tree": _keys(pl.scan_parquet(f"{results}/**/*.parquet").collect()),
        "duckdb run": _keys(duckdb.sql(sql.format(f"{run}/*.parquet")).df()),
        "duckdb tree": _keys(duckdb.sql(sql.format(f"{results}/**/*.parquet")).df()),
    }


def test_every_reader_reads_exactly_the_rows_bench_loads(tree: Tree) -> None:
    run_rows = _keys(analysis.load(tree.run))
    tree_rows = _keys(analysis.load(tree.results))
    assert sum(run_rows.values()) == 6 and set(run_rows.values()) == {1}  # one row per trial
    assert sum(tree_rows.values()) == 12  # and as many from the dry run beside it
    for name, got in _readers(tree.run, tree.results).items():
        want = run_rows if name.endswith(("run", "run glob")) else tree_rows
        assert got == want, f"{name}: {sum(got.values())} rows, bench loads {sum(want.values())}"


def test_a_run_folder_holds_parts_and_its_bookkeeping_is_beside_it(tree: Tree) -> None:
    parts = store.part_files(tree.run)
    assert parts and sorted(tree.run.iterdir()) == parts
    assert store.run_dirs(tree.results / "smoke") == [tree.run, tree.results / "smoke" / "r2"]
    files = store.run_files(tree.run)
    assert files.meta == tree.results / "smoke" / ".r1" and not files.legacy
    assert files.config.is_file() and files.version.is_file() and files.lock.is_file()
    assert {p.name for p in files.meta.iterdir()} == {
        "config.yaml", "bench_version", "lock", "manifest.jsonl", "superseded", "replay", "report",
    }  # fmt: skip
    # Rows that are not results are Parquet that no `*.parquet` glob takes for results.
    superseded = pd.read_parquet(files.superseded)
    assert len(superseded) > 0 and (superseded["status"] == "error").all()
    (replayed,) = files.replays.iterdir()
    assert len(pd.read_parquet(replayed)) == 6
    assert (files.report / "report.md").is_file() and list(files.report.glob("*.png"))
    assert sorted(tree.results.rglob("*.parquet")) == sorted(
        [*parts, *store.part_files(tree.results / "smoke" / "r2")]
    )
    assert not list(files.meta.rglob(".*"))  # no journal or half-written part left behind


def test_a_run_in_the_earlier_layout_loads_resumes_and_replays_in_place(tree: Tree) -> None:
    files = store.run_files(tree.legacy)
    assert files.legacy and files.meta == tree.legacy and files.config.name == "_config.yaml"
    assert not (tree.legacy.parent / ".old").exists()  # nothing moved beside it
    rows = analysis.load(tree.legacy)
    assert len(rows) == 6 and rows["trial_key"].is_unique and (rows["status"] == "ok").all()
    assert (tree.legacy_replay["verdict"] == "reproduced").all() and len(tree.legacy_replay) == 6
    (replayed,) = files.replays.iterdir()
    assert files.replays == tree.legacy / "_replay" and len(pd.read_parquet(replayed)) == 6
    # What this version added to it is out of readers' way: no new `*.parquet` but its parts.
    assert sorted(tree.legacy.rglob("*.parquet")) == store.part_files(tree.legacy)
    assert not list(tree.legacy.glob(".*"))
