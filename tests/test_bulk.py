"""Rows in bulk equal rows made one trial at a time.

A stack's host work (splits, preprocessing, metrics, hashes) runs as array operations over all its
members; these tests hold every piece to its per-trial definition: splits bitwise equal to
scikit-learn's `train_test_split` + `ColumnTransformer` on every dataset bench knows, metrics within
1e-12 of scikit-learn's own functions on binary and multiclass data with tied scores and a class
missing from the test rows, and a stacked group's rows equal to the same group computed member by
member. Then the rows' way to disk: Arrow batches, a journal that survives a cut-off last batch,
and the `predictions` setting. Seeds are drawn at random per run: the equalities hold for any.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from bench import rows, store
from bench.config import compose, to_container
from bench.data import load, split_many
from bench.data.split import split_sklearn
from bench.metrics import classification_metrics_many, sklearn_metrics

SEEDS = [int(s) for s in np.random.default_rng().integers(0, 2**32, size=12)] + [0, 2**32 - 1]
FIELDS = ("X_train", "y_train", "X_test", "y_test", "test_index")


def _raw(*overrides: str):
    return load(to_container(compose(["+sweep=smoke", *overrides]).dataset))


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # breast_cancer: binary, numeric
        ["dataset=digits"],  # ten classes, constant pixel columns (left unscaled)
        ["dataset=synthetic", "dataset.n_classes=3", "dataset.n_samples=101"],
    ],
    ids=["breast_cancer", "digits", "synthetic3"],
)
@pytest.mark.parametrize("test_size", [0.2, 0.33])
def test_bulk_splits_are_bitwise_scikit_learns(overrides: list[str], test_size: float) -> None:
    raw = _raw(*overrides)
    many = split_many(raw, [*SEEDS, SEEDS[0]], test_size)  # a repeated seed shares its split
    assert sorted(many) == sorted(set(SEEDS))
    for seed in SEEDS:
        reference = split_sklearn(raw, seed, test_size)
        for field in FIELDS:
            a, b = getattr(reference, field), getattr(many[seed], field)
            assert a.dtype == b.dtype and np.array_equal(a, b), (seed, field)


def test_data_with_missing_values_and_categories_takes_scikit_learns_path(
    heart_dir: Path,
) -> None:
    raw = _raw("dataset=heart", f"dataset.path={heart_dir}")
    many = split_many(raw, SEEDS[:3], 0.2)
    for seed in SEEDS[:3]:
        reference = split_sklearn(raw, seed, 0.2)
        assert all(np.array_equal(getattr(reference, f), getattr(many[seed], f)) for f in FIELDS)


def _cases(k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """16 members' labels and float32 probabilities: half with scores rounded to quarters (ties),
    and a class missing from some members' test rows."""
    y = rng.integers(0, k, size=(16, 40))
    y[::3] = np.where(y[::3] == k - 1, 0, y[::3])  # members 0, 3, ...: the last class absent
    p = rng.random((16, 40, k)).astype(np.float32)
    p[::2] = np.round(p[::2] * 4) / 4 + np.float32(0.01)
    return y, (p / p.sum(axis=2, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_bulk_metrics_equal_scikit_learns_functions(k: int) -> None:
    y, p = _cases(k, np.random.default_rng())
    many = classification_metrics_many(y, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn's own warnings for the missing class
        for i in range(len(y)):
            for name, value in sklearn_metrics(y[i], p[i]).items():
                got = many[name][i]
                if np.isnan(value):
                    assert np.isnan(got), (i, name)
                else:
                    assert abs(got - value) <= 1e-12, (i, name, got, value)
    assert np.isnan(many["roc_auc"][0])  # the absent class: undefined, never 0 or 0.5


def test_a_stacked_groups_rows_equal_its_members_computed_one_by_one() -> None:
    """The bulk outcome columns of a group against the same members through the per-trial
    definitions (scikit-learn's split and metrics, the hash functions), on a real stacked run."""
    from bench import fingerprint, trial
    from bench.sweep import expand

    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]",
                   "seeds.n=5", "model.epochs=2", "batching.enabled=true"])  # fmt: skip
    specs = expand(cfg)
    raw = load(to_container(cfg.dataset))
    got = trial.run_group(specs, raw=raw)
    for spec, row in zip(specs, got, strict=True):
        assert row["status"] == "ok", row["error"]
        data = split_sklearn(raw, spec.seed_split, 0.2)
        proba = np.asarray(row["y_proba"], dtype=np.float32)
        assert row["test_index"] == data.test_index.tolist()
        assert row["y_true"] == data.y_test.tolist()
        for name, value in sklearn_metrics(data.y_test, proba).items():
            assert abs(row[name] - value) <= 1e-12, name
        y_pred = np.argmax(proba, axis=1)
        assert row["y_pred"] == y_pred.tolist()
        assert row["predictions_sha256"] == fingerprint.predictions_sha256(y_pred, proba)


def _group_batch(n: int = 3, **options) -> pa.RecordBatch:
    from bench import trial
    from bench.sweep import expand

    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]",
                   f"seeds.n={n}", "model.epochs=1"])  # fmt: skip
    return trial.run_group_batch(expand(cfg), raw=load(to_container(cfg.dataset)), **options)


def test_compact_and_no_predictions_keep_what_they_say_and_the_rest_equal() -> None:
    full, compact, none = (_group_batch(predictions=p) for p in ("full", "compact", "none"))
    for batch in (full, compact, none):
        assert batch.schema.equals(rows.SCHEMA)
    assert full.column("y_proba").null_count == 0
    assert compact.column("y_proba").null_count == compact.num_rows
    assert compact.column("y_score").null_count == compact.num_rows
    assert compact.column("y_pred").equals(full.column("y_pred"))
    assert compact.column("test_index").equals(full.column("test_index"))
    for column in set(rows.LIST_COLUMNS) - {"train_loss"}:  # the curve is kept whatever
        assert none.column(column).null_count == none.num_rows
    assert none.column("train_loss").equals(full.column("train_loss"))
    assert none.column("train_loss").null_count == 0
    for column in ("accuracy", "roc_auc", "weights_sha256", "predictions_sha256"):
        assert none.column(column).equals(full.column(column))


def test_dry_run_rows_are_marked_and_have_real_shapes() -> None:
    batch = _group_batch(n=4, dry_run=True)
    table = batch.to_pydict()
    assert table["dry_run"] == [True] * 4 and set(table["status"]) == {"ok"}
    assert all(len(p) == n for p, n in zip(table["y_proba"], table["n_test"], strict=True))
    assert table["fit_seconds"] == [0.0] * 4


def test_a_task_of_several_stacks_gives_each_stack_the_rows_it_gets_alone() -> None:
    """Stacks trained back to back with their host work on a helper thread (the pipeline of
    `batching.stacks_per_task`) give each stack bitwise the rows it gets as a task of its own."""
    from bench import trial
    from bench.sweep import expand

    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]",
                   "seeds.n=10", "model.epochs=2", "batching.enabled=true"])  # fmt: skip
    specs = expand(cfg)
    raw = load(to_container(cfg.dataset))
    together = trial.run_group_batch(specs, raw=raw, fused=True, stack_size=4)
    stacks = trial.stacks_of(specs, 4)
    assert [len(s) for s in stacks] == [4, 3, 3]
    alone = pa.concat_batches([trial.run_group_batch(s, raw=raw, fused=True) for s in stacks])
    assert together.schema.equals(rows.SCHEMA)
    assert together.column("status").to_pylist() == ["ok"] * 10
    for column in ("trial_key", "weights_sha256", "predictions_sha256", "accuracy", "log_loss",
                   "group_key", "group_size", "group_index", "y_proba", "test_index"):  # fmt: skip
        assert together.column(column).equals(alone.column(column)), column
    assert len(set(together.column("group_key").to_pylist())) == 3


def test_a_fault_in_one_stack_of_a_task_fails_that_stack_alone() -> None:
    from bench import faults, trial
    from bench.sweep import expand

    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]",
                   "seeds.n=12", "model.epochs=1", "batching.enabled=true"])  # fmt: skip
    specs = expand(cfg)
    stacks = trial.stacks_of(specs, 3)
    injected = {"raise_on": 0.2}
    hit = [any(faults.chosen(s.trial_key, 0.2, "raise") for s in stack) for stack in stacks]
    assert any(hit) and not all(hit), hit  # the fixed seeds make a mix: some stacks fail
    batch = trial.run_group_batch(
        specs, raw=load(to_container(cfg.dataset)), faults=injected, stack_size=3
    )
    table = batch.to_pydict()
    for k in range(len(stacks)):
        got = table["status"][3 * k : 3 * k + 3]
        assert got == (["error"] * 3 if hit[k] else ["ok"] * 3), (k, got)
        if hit[k]:
            assert all("InjectedFault" in e for e in table["error"][3 * k : 3 * k + 3])
            assert table["y_proba"][3 * k : 3 * k + 3] == [None] * 3
        else:
            assert all(p is not None for p in table["y_proba"][3 * k : 3 * k + 3])
    dry = trial.run_group_batch(specs, raw=load(to_container(cfg.dataset)), dry_run=True,
                                stack_size=5)  # fmt: skip
    assert dry.column("dry_run").to_pylist() == [True] * 12
    assert sorted(set(dry.column("group_size").to_pylist())) == [4]


@pytest.mark.parametrize("phase", ["_prepare", "_finish"])
def test_a_stack_whose_host_work_fails_on_the_helper_thread_fails_alone(
    phase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The helper thread's failures (preparing or finishing a stack) become that stack's error
    rows; run_group_batch never raises, and the other stacks keep their rows."""
    from bench import trial
    from bench.sweep import expand

    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "sweep.varied=[all]",
                   "seeds.n=6", "model.epochs=1", "batching.enabled=true"])  # fmt: skip
    specs = expand(cfg)
    doomed = specs[2].trial_key  # in the second of three stacks
    real = getattr(trial, phase)

    def failing(stack, *args):
        if any(s.trial_key == doomed for s in stack):
            raise MemoryError(f"{phase} failed for this stack")
        return real(stack, *args)

    monkeypatch.setattr(trial, phase, failing)
    batch = trial.run_group_batch(specs, raw=load(to_container(cfg.dataset)), stack_size=2)
    table = batch.to_pydict()
    assert table["status"] == ["ok", "ok", "error", "error", "ok", "ok"]
    assert all(f"MemoryError: {phase} failed" in e for e in table["error"][2:4])
    assert len(set(table["group_key"])) == 3


def test_the_journal_keeps_every_whole_batch_of_a_cut_off_stream(tmp_path: Path) -> None:
    """A driver killed mid-append leaves a journal whose last batch is cut short: every batch
    before it reads back whole, and resume turns them into a part."""
    batch = _group_batch(n=3, predictions="compact")
    journal = store.Journal(tmp_path / ".journal-cut-00000.arrows")
    journal.append(batch)
    journal.append(batch.slice(0, 1))
    journal.close()
    whole = journal.path.read_bytes()
    journal.path.write_bytes(whole[: len(whole) - 40])  # the second batch, cut short
    table = store.read_journal(journal.path)
    assert (
        table.num_rows == 3
        and table.column("trial_key").to_pylist() == batch.column("trial_key").to_pylist()
    )
    journal.path.write_bytes(whole[:20])  # cut inside the schema: nothing to read, no error
    assert store.read_journal(journal.path).num_rows == 0


def test_part_writer_writes_every_batch_once_and_removes_its_journals(tmp_path: Path) -> None:
    batch = _group_batch(n=3)
    writer = store.PartWriter(tmp_path, rows_per_part=5)
    for k in range(4):
        keys = pa.array([f"{k}-{j}" for j in range(3)])
        writer.add_batch(batch.set_column(0, "trial_key", keys))
    writer.flush()  # two parts of 6 rows; their journals gone, a fresh empty one open
    assert len(store.part_files(tmp_path)) == 2
    (journal,) = tmp_path.glob(store.JOURNAL_GLOB)
    assert store.read_journal(journal).num_rows == 0
    writer.close()
    df = store.read_results(tmp_path)
    assert sorted(df["trial_key"]) == sorted(f"{k}-{j}" for k in range(4) for j in range(3))
    assert not list(tmp_path.glob(store.JOURNAL_GLOB))


def test_a_batch_outside_the_schema_is_refused(tmp_path: Path) -> None:
    writer = store.PartWriter(tmp_path)
    with pytest.raises(ValueError, match="schema"):
        writer.add_batch(pa.record_batch({"trial_key": ["a"]}))
    writer.close()
