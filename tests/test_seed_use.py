"""Seeds that reach the training, and only those, in the rows, the sweep and the analysis (issue 16).

The contract: for every library x model x mode, varying one seed source alone changes the trained
weights exactly when `bench.backends.seed_use` declares that source; merged sources share one
random state; the sweep leaves out trials that would measure nothing; rows say which sources
reached them; fixed-seed repeats of a stacked run are trained in separate stacks; and rows pair by
what the trials are, not by how they were executed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import analysis as ba
from bench.backends import LIBRARIES
from bench.backends.base import MODES, combined_seed
from bench.backends.seed_use import seed_groups, seed_sources, table
from bench.config import compose, seed_modes
from bench.data import load, split
from bench.sweep import expand, iter_specs, left_out, setups
from bench.trial import fitted_weights, make_estimator, run_batch, run_group_batch
from bench.units import stack_totals, stream_units

pytestmark = pytest.mark.usefixtures("single_threaded")

DESIGN_PAGE = Path(__file__).resolve().parents[1] / "docs" / "design.md"
SKLEARN_ONLY = ("svm_rbf", "decision_tree")


@functools.cache
def _base(model: str):
    """One composed trial per model (Hydra's compose is the slow part of a case)."""
    overrides = ["+sweep=seeds", f"model={model}", "seeds.n=1", "sweep.varied=[all]"]
    if model in SKLEARN_ONLY:
        overrides += ["libraries=[sklearn]"]
    else:
        overrides += ["libraries=[torch]", "model.epochs=1"]
    if model == "cnn":
        overrides += ["dataset=digits"]
    return expand(compose(overrides))[0]


def _spec(model: str, mode: str, library: str):
    """The trial of `model` in `library` and `mode`, as the sweep would make it."""
    init_mode, order_mode = seed_modes(mode, "library", "library")
    return dataclasses.replace(
        _base(model), library=library, mode=mode, init_mode=init_mode, order_mode=order_mode
    )


def _hash(estimator) -> str:
    digest = hashlib.sha256()
    for w in fitted_weights(estimator):
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def _cases():
    for library in LIBRARIES:
        for model in ("logreg", "mlp", "linear_svm", "cnn"):
            if model == "cnn" and library == "sklearn":
                continue
            for mode in MODES:
                yield library, model, mode
    for model in SKLEARN_ONLY:
        yield "sklearn", model, "defaults"


@pytest.fixture(scope="module")
def data():
    """digits (64 features, 10 classes, images for the CNN), a few hundred rows: the tree has
    ties to break, the linear SVM more rows than features (the primal solver, seed_use)."""
    raw = load({"name": "digits"})
    return split(raw, 7, 0.9)


@pytest.mark.parametrize(("library", "model", "mode"), list(_cases()))
def test_each_source_moves_the_weights_exactly_when_declared(library, model, mode, data) -> None:
    if library == "tensorflow":
        pytest.importorskip("keras")
    spec = _spec(model, mode, library)
    declared = {s for g in seed_groups(library, model, mode) for s in g}
    base = make_estimator(spec).fit(data.X_train, data.y_train)
    for source in ("order", "init"):
        field = f"seed_{source}"
        moved = dataclasses.replace(spec, **{field: getattr(spec, field) + 1})
        other = make_estimator(moved).fit(data.X_train, data.y_train)
        changed = _hash(other) != _hash(base)
        assert changed == (source in declared), (
            f"{library} {model} ({mode}): seed_{source} "
            f"{'changed' if changed else 'left'} the weights "
            f"{'' if changed else 'un'}changed; declared {seed_sources(library, model, mode)}"
        )


def test_merged_sources_share_one_random_state_and_separate_ones_do_not(data) -> None:
    merged = _spec("mlp", "defaults", "sklearn")
    assert seed_groups("sklearn", "mlp", "defaults") == (("split",), ("order", "init"))
    state = make_estimator(merged).fit(data.X_train, data.y_train).estimator_.random_state
    assert state == combined_seed(merged.seed_init, merged.seed_order)
    separate = _spec("mlp", "aligned", "sklearn")
    fitted = make_estimator(dataclasses.replace(separate, seed_order=separate.seed_order + 1))
    assert fitted.fit(data.X_train, data.y_train).estimator_.random_state == separate.seed_init


def test_the_docs_hold_the_generated_table() -> None:
    assert table() in DESIGN_PAGE.read_text(), "run `python -m bench.backends.seed_use`, paste it"


def test_the_sweep_leaves_out_what_cannot_move_the_model_and_says_why() -> None:
    cfg = compose(["+sweep=seeds", "model=logreg", "mode=defaults", "libraries=[sklearn,torch]",
                   "sweep.varied=[split,order,init]", "seeds.n=3"])  # fmt: skip
    specs = list(iter_specs(cfg))
    kept = {(s.library, s.varied) for s in specs}
    assert kept == {("sklearn", "split"), ("torch", "split"), ("torch", "order"), ("torch", "init")}
    assert len(specs) == 12 and sum(n for _, n in setups(cfg)) == 12
    assert {(e["library"], e["varied"], e["n"]) for e in left_out(cfg)} == {
        ("sklearn", "order", 3), ("sklearn", "init", 3)
    }  # fmt: skip
    merged = compose(["+sweep=seeds", "model=mlp", "mode=defaults", "libraries=[sklearn]",
                      "sweep.varied=[order,init]", "seeds.n=2"])  # fmt: skip
    assert {s.varied for s in iter_specs(merged)} == {"order"}
    (entry,) = left_out(merged)
    assert entry["varied"] == "init" and "merged with order" in entry["reason"]


def test_rows_record_the_sources_that_reached_them() -> None:
    cfg = compose(["+sweep=seeds", "model=mlp", "mode=defaults", "libraries=[sklearn]",
                   "seeds.n=1", "sweep.varied=[order]", "model.epochs=2"])  # fmt: skip
    (spec,) = expand(cfg)
    row = run_batch(spec).to_pylist()[0]
    assert row["status"] == "ok" and row["seed_sources"] == "split,order+init"
    searched = compose(["+experiment=heart", "dataset=breast_cancer", "seeds.n=1"])
    tree = next(s for s in iter_specs(searched) if s.model == "decision_tree")
    assert tree.seed_sources == "split,init,cv"


def test_fixed_seed_repeats_of_a_stacked_run_train_in_stacks_of_their_own() -> None:
    cfg = compose(["+sweep=seeds", "libraries=[torch]", "model=mlp", "batching.enabled=true",
                   "seeds.n=4", "sweep.varied=[split,none]"])  # fmt: skip
    units = list(stream_units(iter_specs(cfg), 256, stack_totals(setups(cfg))))
    repeats = [u for u, _ in units if any(s.varied == "none" for s in u)]
    assert len(repeats) == 4  # one stack per repeat, each of the same size
    assert all(len(u) == 1 and u[0].varied == "none" for u in repeats)
    assert sorted(u[0].repeat for u in repeats) == [0, 1, 2, 3]
    (main,) = [u for u, _ in units if u[0].varied == "split"]
    assert len(main) == 4 and {s.varied for s in main} == {"split"}


@pytest.fixture(scope="module")
def stacked_and_one_by_one() -> pd.DataFrame:
    """Real rows: three split seeds of the torch MLP stacked, and of scikit-learn one by one."""
    common = ["+sweep=seeds", "model=mlp", "seeds.n=3", "sweep.varied=[split]", "model.epochs=3"]
    torch_specs = expand(compose([*common, "libraries=[torch]"]))
    sklearn_specs = expand(compose([*common, "libraries=[sklearn]"]))
    raw = load({"name": "breast_cancer"})
    batches = [run_group_batch(torch_specs, raw=raw, fused=False, compile=False)]
    batches += [run_batch(s, raw=raw) for s in sklearn_specs]
    return pd.concat([b.to_pandas() for b in batches], ignore_index=True)


def test_a_stacked_torch_run_pairs_with_one_by_one_sklearn_rows(stacked_and_one_by_one) -> None:
    df = stacked_and_one_by_one
    assert (df["status"] == "ok").all()
    assert df.loc[df["library"] == "torch", "batched"].all()
    pairs = ba.matched_pairs(df, "library", "sklearn", "torch")
    assert len(pairs) == 3 and set(pairs["batched_b"]) == {True}
    assert set(pairs["batched_a"]) == {False}
    assert ba.unpaired_reason(df, "library", "sklearn", "torch") is None
    (result,) = ba.compare(df, "library", "sklearn", "torch").to_dict("records")
    assert result["paired"] and result["n_pairs"] == 3
    churn = ba.matched_churn(df, "library", "sklearn", "torch")
    assert int(churn["n_pairs"].sum()) == 3


def test_when_no_pairs_form_the_api_says_why(stacked_and_one_by_one) -> None:
    df = stacked_and_one_by_one.copy()
    df.loc[df["library"] == "torch", "hparams"] = '{"other": 1}'
    assert ba.matched_pairs(df, "library", "sklearn", "torch").empty
    reason = ba.unpaired_reason(df, "library", "sklearn", "torch")
    assert reason is not None and "hparams" in reason
    (result,) = ba.compare(df, "library", "sklearn", "torch").to_dict("records")
    assert (
        not result["paired"] and "unpaired:" in result["reason"] and "hparams" in result["reason"]
    )


def test_execution_is_an_axis_of_its_own(stacked_and_one_by_one) -> None:
    """Stacked vs one by one compares like with like: torch rows of both kinds, same seeds."""
    df = stacked_and_one_by_one
    raw = load({"name": "breast_cancer"})
    plain = [
        run_batch(s, raw=raw).to_pandas()
        for s in expand(
            compose(
                [
                    "+sweep=seeds",
                    "model=mlp",
                    "seeds.n=3",
                    "sweep.varied=[split]",
                    "model.epochs=3",
                    "libraries=[torch]",
                ]
            )
        )  # fmt: skip
    ]
    both = pd.concat([df, *plain], ignore_index=True)
    torch_rows = both[both["library"] == "torch"]
    pairs = ba.matched_pairs(torch_rows, "batched", True, False)
    assert len(pairs) == 3
    np.testing.assert_array_equal(pairs["accuracy_a"], pairs["accuracy_b"])
    # Against scikit-learn, where torch ran both ways, the one-by-one torch rows pair (like with
    # like); alone, the stacked ones did (the test above).
    pairs = ba.matched_pairs(both, "library", "sklearn", "torch")
    assert len(pairs) == 3 and not pairs["batched_b"].any()


def test_stacked_rows_pair_per_trial_when_other_models_ran_one_by_one(
    stacked_and_one_by_one,
) -> None:
    """A run with a stackable model (torch MLP, stacked) and one that is not (here the same rows
    relabelled linear_svm, one by one in both libraries): each model's trials pair on their own,
    the stacked MLP with scikit-learn's one-by-one MLP."""
    df = stacked_and_one_by_one
    other = df.assign(model="linear_svm", batched=False)
    both = pd.concat([df, other], ignore_index=True)
    pairs = ba.matched_pairs(both, "library", "sklearn", "torch")
    assert sorted(pairs.groupby("model").size().items()) == [("linear_svm", 3), ("mlp", 3)]
    churn = ba.matched_churn(both, "library", "sklearn", "torch", by=["model"])
    assert set(churn["model"]) == {"linear_svm", "mlp"} and (churn["n_pairs"] == 3).all()


def test_a_merged_group_is_kept_through_the_member_the_sweep_varies() -> None:
    """scikit-learn's defaults MLP merges order and init: a sweep that varies only init keeps
    its init trials (they vary the joint state), it does not drop them for an absent order."""
    cfg = compose(["+sweep=seeds", "model=mlp", "mode=defaults", "libraries=[sklearn]",
                   "sweep.varied=[split,init]", "seeds.n=2"])  # fmt: skip
    assert {s.varied for s in iter_specs(cfg)} == {"split", "init"} and not left_out(cfg)


def test_building_a_sweep_imports_no_training_library() -> None:
    """The driver expands, checks and counts a sweep, seed declarations included, without
    scikit-learn, torch or TensorFlow (bench.backends is lazy for this)."""
    import subprocess
    import sys

    code = (
        "import sys; from bench.config import compose; "
        "from bench.sweep import iter_specs, left_out, setups; "
        "cfg = compose(['+sweep=seeds', 'libraries=[sklearn,torch,tensorflow]', 'model=mlp', "
        "'mode=defaults']); specs = list(iter_specs(cfg)); left_out(cfg); setups(cfg); "
        "[s.seed_sources for s in specs]; "
        "print(sorted(m for m in ('sklearn', 'torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_runs_before_the_column_get_the_declared_sources_when_loaded(tmp_path: Path) -> None:
    """A 0.5.0 part has no `seed_sources`: `ba.load` fills in the declaration, so an old
    scikit-learn logreg (defaults) run shows its order and init seeds as without effect too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    old = pa.table(
        {
            "trial_key": ["a", "b", "c"],
            "status": ["ok"] * 3,
            "library": ["sklearn", "sklearn", "torch"],
            "model": ["logreg", "mlp", "mlp"],
            "mode": ["defaults", "defaults", "aligned"],
            "search": pa.array([None, None, None], pa.string()),
        }
    )
    pq.write_table(old, tmp_path / "part-0.parquet")
    df = ba.load(tmp_path).set_index("trial_key")
    assert df["seed_sources"].to_dict() == {
        "a": "split", "b": "split,order+init", "c": "split,order,init"
    }  # fmt: skip
