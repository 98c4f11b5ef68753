"""Provenance in the data: which bench made each row (version, git commit, uncommitted changes),
the command line's overrides, and each part file's metadata (schema version, composed config).

A change of bench's own code is an environment change to replay and a comparable level to the
analysis, as a library version is.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

import bench
from bench import provenance, replay, rows, runner, store, trial
from bench.config import compose
from bench.store import run_dirs
from bench.sweep import expand

PROVENANCE = ["bench_version", "bench_commit", "bench_dirty", "overrides"]
CHECKOUT = (Path(bench.__file__).resolve().parent.parent / ".git").exists()
HEX40 = re.compile(r"[0-9a-f]{40}")


def _spec():
    return expand(compose(["+sweep=smoke", "libraries=[sklearn]", "seeds.n=1"]))[0]


def test_schema_version_is_raised_with_every_schema_change() -> None:
    """Adding, removing or retyping a column without raising SCHEMA_VERSION fails here: update
    both (the fingerprint is that of the new schema)."""
    fingerprint = hashlib.sha256(
        "\n".join(f"{f.name}:{f.type}" for f in rows.SCHEMA).encode()
    ).hexdigest()[:16]
    assert (rows.SCHEMA_VERSION, fingerprint) == (4, "746808f3307c758b")


# ------------------------------------------------------------------------------- rows' provenance


def test_a_trial_row_names_the_bench_that_ran_it() -> None:
    row = trial.run(_spec())
    assert row["status"] == "ok", row["error"]
    assert row["bench_version"] == bench.__version__
    if not CHECKOUT:
        pytest.skip("bench is not imported from a git checkout here")
    assert HEX40.fullmatch(row["bench_commit"])
    head = subprocess.run(
        ["git", "-C", str(provenance.PACKAGE_DIR), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert row["bench_commit"] == head
    assert isinstance(row["bench_dirty"], bool)
    assert row["overrides"] is None  # the runner adds the run's command line


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(cwd), *args],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout laid out as bench's: a package folder, conf/, other files; committed."""
    root = tmp_path / "repo"
    for name in ("bench/__init__.py", "bench/runner.py", "conf/config.yaml", "README.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x = 1\n")
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    return root


def test_dirty_means_a_tracked_file_under_the_package_or_conf_differs(checkout: Path) -> None:
    package = checkout / "bench"
    commit, dirty = provenance.checkout_state(package)
    assert HEX40.fullmatch(commit) and dirty is False
    (checkout / "README.md").write_text("changed\n")  # outside bench/ and conf/: not bench's code
    (package / "new_module.py").write_text("y = 2\n")  # untracked: runs only if imported
    assert provenance.checkout_state(package) == (commit, False)
    (checkout / "conf/config.yaml").write_text("x: 2\n")
    assert provenance.checkout_state(package) == (commit, True)
    _git(checkout, "add", "conf/config.yaml")  # staged, not committed: still dirty
    assert provenance.checkout_state(package) == (commit, True)
    _git(checkout, "commit", "-qm", "second")
    new_commit, dirty = provenance.checkout_state(package)
    assert new_commit != commit and dirty is False
    assert not (checkout / ".git/index.lock").exists()


def test_no_checkout_no_git_or_an_untracked_copy_give_nulls(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "site-packages/bench"
    plain.mkdir(parents=True)
    (plain / "__init__.py").write_text("")
    assert provenance.checkout_state(plain) == (None, None)
    # an installed copy inside some project's checkout (a virtualenv there) is not its code
    venv = checkout / ".venv/lib/site-packages/bench"
    venv.mkdir(parents=True)
    (venv / "__init__.py").write_text("")
    assert provenance.checkout_state(venv) == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no git at all: never an error
    assert provenance.checkout_state(checkout / "bench") == (None, None)


def test_rows_the_driver_makes_carry_the_run_and_the_drivers_bench() -> None:
    row = runner.driver_row(_spec(), "boom", "run-1", '["a=1"]')
    assert row["run_id"] == "run-1" and row["overrides"] == '["a=1"]'
    assert row["bench_version"] == bench.__version__
    assert rows.to_batch([row]).num_rows == 1


# ------------------------------------------------------------------- a sweep's rows and part files


def _metadata(part: Path) -> dict[bytes, bytes]:
    return pq.read_metadata(part).metadata


def test_a_sweep_records_its_overrides_and_parts_hold_schema_version_and_config(
    smoke_run,
) -> None:
    """The session's smoke sweep (conftest.py), run with overrides that change its config."""
    args = smoke_run.args
    assert "report=true" in args and "progress=false" in args
    proc = smoke_run.proc
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(smoke_run.results_dir / "smoke")
    df = store.read_results(run_dir)
    assert len(df) == 12 and (df["status"] == "ok").all()
    assert [json.loads(v) for v in df["overrides"]] == [args] * 12
    assert (df["bench_version"] == bench.__version__).all()
    if CHECKOUT:
        assert all(HEX40.fullmatch(c) for c in df["bench_commit"])
        assert df["bench_dirty"].map(type).eq(bool).all()
    saved = store.run_files(run_dir).config.read_text()
    parts = store.part_files(run_dir)
    assert parts
    for part in parts:
        meta = _metadata(part)
        assert meta[b"bench.schema_version"] == str(rows.SCHEMA_VERSION).encode()
        assert meta[b"bench.config"].decode() == saved
        config = OmegaConf.create(meta[b"bench.config"].decode())
        assert config.report is True and config.progress is False  # the overrides, not defaults


def test_a_workers_own_part_holds_the_run_columns_and_metadata(tmp_path: Path) -> None:
    """rows_to=workers: the task body writes its part itself (run here without Ray)."""
    from bench.data import load

    spec = _spec()
    config = "model:\n  epochs: 3\n"
    receipt = runner._execute(
        [spec.fields_dict()], load({"name": spec.dataset}), None, None, run_id="r1",
        part_dir=str(tmp_path), overrides='["seeds.n=1"]', config=config,
    )  # fmt: skip
    assert receipt.column("status").to_pylist() == ["ok"]
    (part,) = store.part_files(tmp_path)
    assert _metadata(part)[b"bench.config"].decode() == config
    row = store.read_part(part).to_pylist()[0]
    assert row["run_id"] == "r1" and row["overrides"] == '["seeds.n=1"]'
    assert row["bench_version"] == bench.__version__


def test_driver_parts_and_resume_compaction_keep_the_metadata(tmp_path: Path) -> None:
    writer = store.PartWriter(tmp_path, rows_per_part=1, config="seeds:\n  n: 2\n")
    writer.add({"trial_key": "a", "status": "ok"})
    writer.add({"trial_key": "b", "status": "error"})
    writer.close()
    for part in store.part_files(tmp_path):
        assert _metadata(part)[b"bench.config"] == b"seeds:\n  n: 2\n"
    assert store.compact_for_resume(tmp_path, config="seeds:\n  n: 3\n") == {"a"}
    (part,) = store.part_files(tmp_path)
    assert _metadata(part)[b"bench.config"] == b"seeds:\n  n: 3\n"
    assert _metadata(part)[b"bench.schema_version"] == str(rows.SCHEMA_VERSION).encode()


def test_an_old_part_without_the_columns_reads_them_as_null(tmp_path: Path) -> None:
    from bench.analysis import load

    table = store.to_table([{"trial_key": "a", "status": "ok", "accuracy": 0.5}])
    pq.write_table(table.drop_columns(PROVENANCE), tmp_path / "part-00000-old.parquet")
    df = store.read_results(tmp_path)
    assert list(df.columns) == list(store.COLUMNS)
    assert df[PROVENANCE].isna().all().all()
    assert load(tmp_path)[PROVENANCE].isna().all().all()


# ------------------------------------------------------------ replay, comparisons and the report


def _row(**extra) -> dict:
    return {
        "trial_key": "k", "library": "sklearn", "device": "cpu", "deterministic": False,
        "accuracy": 0.9, "weights_sha256": "w", "predictions_sha256": "p", "status": "ok",
        "predictions_dtype": "float64", "bench_version": "0.6.0", "bench_commit": "a" * 40,
        "bench_dirty": False, **extra,
    }  # fmt: skip


def test_replay_under_another_bench_commit_says_the_environment_changed() -> None:
    stored, now = _row(), _row(bench_commit="b" * 40, weights_sha256="other")
    line = replay.compare(stored, now)
    assert line["verdict"] == "differs; environment changed"
    assert line["environment_diff"] == f"bench_commit: {'a' * 40} -> {'b' * 40}"
    line = replay.compare(stored, _row(bench_dirty=True, weights_sha256="other"))
    assert line["environment_diff"] == "bench_dirty: False -> True"
    line = replay.compare(stored, _row(bench_commit=None, weights_sha256="other"))
    assert "bench_commit" in line["environment_diff"]  # a wheel: the code is not known the same
    # the same bits under another commit: reproduced, and the change still shown
    line = replay.compare(stored, _row(bench_commit="b" * 40))
    assert line["verdict"] == "reproduced" and "bench_commit" in line["environment_diff"]


def test_replay_of_rows_before_the_columns_compares_the_runs_version_only() -> None:
    old = {k: v for k, v in _row().items() if not k.startswith("bench_")}
    old = {**old, "bench_version": None, "bench_commit": None, "bench_dirty": None}
    stored = replay.with_bench(old, "0.6.0")
    line = replay.compare(stored, replay.with_bench(_row(weights_sha256="x"), "0.6.0"))
    assert line["environment_diff"] == ""
    assert line["verdict"].startswith("NOT REPRODUCED")
    stored = replay.with_bench(old, "0.5.0")  # the run's _bench_version
    line = replay.compare(stored, _row(weights_sha256="x"))
    assert line["environment_diff"] == "bench_version: 0.5.0 -> 0.6.0"


def test_replay_from_dirty_checkouts_at_one_commit_fails_and_says_the_code_may_differ() -> None:
    stored = _row(bench_dirty=True)
    line = replay.compare(stored, _row(bench_dirty=True, weights_sha256="x"))
    assert line["verdict"] == "NOT REPRODUCED on the same environment" + replay.DIRTY_BOTH
    assert line["environment_diff"] == ""
    assert replay.compare(stored, _row(bench_dirty=True))["verdict"] == "reproduced"


def test_comparisons_pair_trials_across_bench_commits_as_across_library_versions() -> None:
    from bench import analysis as ba

    data = []
    for commit, shift in (("a" * 40, 0.0), ("b" * 40, 0.01)):
        for i in range(6):
            data.append({
                "trial_key": f"{commit[0]}{i}", "status": "ok", "library": "torch",
                "seed_split": i, "seed_order": i, "seed_init": i, "bench_commit": commit,
                "bench_version": "0.6.0", "bench_dirty": False, "torch_version": "2.13.0",
                "accuracy": 0.8 + 0.01 * i + shift,
            })  # fmt: skip
    df = pd.DataFrame(data)
    row = ba.compare(df, "bench_commit", "b" * 40, "a" * 40, n_resamples=200).iloc[0]
    assert row["paired"] and row["n_pairs"] == 6 and row["diff"] == pytest.approx(0.01)
    # the same frame, compared along a library's version, pairs the same way
    df2 = df.assign(torch_version=df["bench_commit"].map({"a" * 40: "2.12", "b" * 40: "2.13"}))
    row2 = ba.compare(df2, "torch_version", "2.13", "2.12", n_resamples=200).iloc[0]
    assert row2["paired"] and row2["diff"] == pytest.approx(row["diff"])


def test_report_names_the_bench_and_the_command_line(tmp_path: Path) -> None:
    from bench.report import write_report

    base = {"run_id": "r", "sweep": "seeds", "status": "ok", "library": "sklearn",
            "model": "logreg", "dataset": "synthetic", "device": "cpu", "varied": "split",
            "seed_order": 0, "seed_init": 0, "repeat": 0, "deterministic": False, "threads": 1,
            "bench_version": "0.6.0", "overrides": '["+sweep=seeds", "seeds.n=3"]'}  # fmt: skip
    data = [
        {**base, "trial_key": f"k{i}", "seed_split": i, "accuracy": 0.9 + i / 100,
         "bench_commit": "c" * 40, "bench_dirty": i == 2}
        for i in range(3)
    ]  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    pq.write_table(store.to_table(data), run / "part-00000-x.parquet")
    text = write_report(run).read_text()
    line = next(line for line in text.splitlines() if line.startswith("| bench |"))
    assert f"0.6.0 at {'c' * 12}" in line and f"0.6.0 at {'c' * 12} + uncommitted changes" in line
    assert "| command-line overrides | +sweep=seeds seeds.n=3 |" in text


def test_provenance_is_computed_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    provenance.code()
    calls = []
    monkeypatch.setattr(provenance, "checkout_state", lambda p: calls.append(p) or (None, None))
    provenance.code()
    assert not calls
