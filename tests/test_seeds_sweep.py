"""Seed derivation and sweep expansion: counts, independence of the three sources, stable keys.

The property that matters is isolation: a trial that varies one source must hold the other two at
exactly the values every other group uses, and a seed must not move when an unrelated setting does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from collections import defaultdict

import pytest

from bench import seeds
from bench.config import compose
from bench.spec import TrialSpec
from bench.sweep import expand

SOURCES = ("split", "order", "init")


def specs_for(overrides: list[str]) -> list[TrialSpec]:
    return expand(compose(overrides))


def by_group(specs: list[TrialSpec]) -> dict[tuple[str, str], list[TrialSpec]]:
    groups: dict[tuple[str, str], list[TrialSpec]] = defaultdict(list)
    for spec in specs:
        groups[(spec.library, spec.varied)].append(spec)
    return groups


def seed_of(spec: TrialSpec, source: str) -> int:
    return getattr(spec, f"seed_{source}")


# --- derive ---------------------------------------------------------------------------------------


def test_derive_is_a_uint32_and_deterministic() -> None:
    values = [seeds.derive(b, s, i) for b in (0, 7) for s in SOURCES for i in range(20)]
    assert all(0 <= v < 2**32 for v in values)
    assert values == [seeds.derive(b, s, i) for b in (0, 7) for s in SOURCES for i in range(20)]
    assert len(set(values)) == len(values), "collisions between sources, bases or indices"


def test_derive_is_the_same_in_another_process() -> None:
    """sha256, not Python's salted hash: a fresh interpreter must derive the same seeds."""
    code = (
        "import json; from bench import seeds; "
        "print(json.dumps([seeds.derive(3, s, i) for s in ('split','order','init') for i in range(5)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == [seeds.derive(3, s, i) for s in SOURCES for i in range(5)]


def test_derive_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="source"):
        seeds.derive(0, "dropout", 0)
    with pytest.raises(ValueError, match="non-negative"):
        seeds.derive(-1, "split", 0)
    with pytest.raises(ValueError, match="non-negative"):
        seeds.derive(0, "split", -1)


# --- expansion counts -----------------------------------------------------------------------------


def test_seeds_sweep_count() -> None:
    """libraries x 5 sources x seeds.n: 3 x 5 x 10 = 150 with the defaults."""
    specs = specs_for(["+sweep=seeds"])
    assert len(specs) == 3 * 5 * 10
    groups = by_group(specs)
    assert set(groups) == {
        (lib, v)
        for lib in ("sklearn", "torch", "tensorflow")
        for v in ("split", "order", "init", "all", "none")
    }
    assert all(len(group) == 10 for group in groups.values())


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+sweep=seeds", "seeds.n=3"], 3 * 5 * 3),
        (["+sweep=seeds", "libraries=[torch]", "seeds.n=4"], 1 * 5 * 4),
        (
            [
                "+sweep=seeds",
                "dataset=digits",
                "model=mlp",
                "libraries=[torch,tensorflow]",
                "seeds.n=20",
            ],
            2 * 5 * 20,
        ),
        (["+sweep=seeds", "sweep.varied=[split,none]", "seeds.n=2"], 3 * 2 * 2),
        (["+sweep=smoke"], 12),
    ],
)
def test_expansion_counts(overrides: list[str], expected: int) -> None:
    assert len(specs_for(overrides)) == expected


@pytest.mark.parametrize("sweep", ["seeds", "smoke"])
def test_trial_keys_are_unique(sweep: str) -> None:
    specs = specs_for([f"+sweep={sweep}"])
    assert len({s.trial_key for s in specs}) == len(specs)


def test_specs_carry_the_config() -> None:
    specs = specs_for(["+sweep=seeds", "model=mlp", "dataset=digits", "threads=2"])
    assert {s.sweep for s in specs} == {"seeds"}
    assert {s.model for s in specs} == {"mlp"}
    assert {s.dataset for s in specs} == {"digits"}
    assert {s.threads for s in specs} == {2}
    assert {s.device for s in specs} == {"cpu"}
    hparams = specs[0].hparams_dict()
    assert hparams["hidden_sizes"] == [64] and hparams["epochs"] == 30
    assert specs[0].dataset_dict() == {"test_size": 0.2}


# --- one source at a time -------------------------------------------------------------------------


@pytest.mark.parametrize("varied", SOURCES)
def test_varying_one_source_holds_the_other_two(varied: str) -> None:
    n, base = 6, 0
    groups = by_group(specs_for(["+sweep=seeds", f"seeds.n={n}"]))
    for library in ("sklearn", "torch", "tensorflow"):
        group = groups[(library, varied)]
        assert [seed_of(s, varied) for s in group] == [
            seeds.derive(base, varied, i) for i in range(n)
        ]
        assert len({seed_of(s, varied) for s in group}) == n
        for other in SOURCES:
            if other != varied:
                assert {seed_of(s, other) for s in group} == {seeds.derive(base, other, 0)}
        assert {s.repeat for s in group} == {0}


def test_all_varies_every_source_and_none_varies_nothing() -> None:
    n = 5
    groups = by_group(specs_for(["+sweep=seeds", f"seeds.n={n}"]))
    everything = groups[("torch", "all")]
    for source in SOURCES:
        assert [seed_of(s, source) for s in everything] == [
            seeds.derive(0, source, i) for i in range(n)
        ]
    nothing = groups[("torch", "none")]
    for source in SOURCES:
        assert {seed_of(s, source) for s in nothing} == {seeds.derive(0, source, 0)}
    assert [s.repeat for s in nothing] == list(range(n))


def test_every_library_sees_the_same_seeds() -> None:
    """Library is an axis of its own: the seeds of a group must not depend on it."""
    groups = by_group(specs_for(["+sweep=seeds", "seeds.n=4"]))
    for varied in ("split", "order", "init", "all", "none"):
        seen = {
            tuple((s.seed_split, s.seed_order, s.seed_init) for s in groups[(lib, varied)])
            for lib in ("sklearn", "torch", "tensorflow")
        }
        assert len(seen) == 1, varied


def test_more_seeds_keep_the_first_ones() -> None:
    """Raising seeds.n extends each group; the trials already run keep their seeds and keys."""
    small = specs_for(["+sweep=seeds", "seeds.n=3"])
    large = specs_for(["+sweep=seeds", "seeds.n=6"])
    assert {s.trial_key for s in small} <= {s.trial_key for s in large}


def test_changing_base_changes_every_seed() -> None:
    a = specs_for(["+sweep=seeds", "seeds.n=3"])
    b = specs_for(["+sweep=seeds", "seeds.n=3", "seeds.base=1"])
    for source in SOURCES:
        assert {seed_of(s, source) for s in a}.isdisjoint({seed_of(s, source) for s in b})
    assert {s.trial_key for s in a}.isdisjoint({s.trial_key for s in b})


def test_unrelated_settings_leave_seeds_alone() -> None:
    """Model, dataset and library choices must not move any seed."""
    a = specs_for(["+sweep=seeds", "seeds.n=3", "libraries=[torch]"])
    b = specs_for(["+sweep=seeds", "seeds.n=3", "libraries=[torch]", "model=mlp", "dataset=digits"])
    assert [(s.seed_split, s.seed_order, s.seed_init) for s in a] == [
        (s.seed_split, s.seed_order, s.seed_init) for s in b
    ]


# --- trial_key ------------------------------------------------------------------------------------


def test_trial_key_is_stable_across_compositions() -> None:
    first = [s.trial_key for s in specs_for(["+sweep=seeds"])]
    second = [s.trial_key for s in specs_for(["+sweep=seeds"])]
    assert first == second


def test_trial_key_is_stable_across_processes() -> None:
    code = (
        "import json; from bench.config import compose; from bench.sweep import expand; "
        "print(json.dumps([s.trial_key for s in expand(compose(['+sweep=smoke']))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        s.trial_key for s in specs_for(["+sweep=smoke"])
    ]


def test_trial_key_ignores_how_the_sweep_is_run() -> None:
    """Where results go, the run id and the progress bar do not change what a trial is."""
    plain = [s.trial_key for s in specs_for(["+sweep=smoke"])]
    other = specs_for(["+sweep=smoke", "results_dir=/elsewhere", "run_id=x1", "progress=false"])
    assert [s.trial_key for s in other] == plain


def test_trial_key_follows_hyperparameters_and_data() -> None:
    base = {s.trial_key for s in specs_for(["+sweep=smoke"])}
    for change in ("model.lr=0.02", "model.epochs=6", "dataset.test_size=0.3", "dataset=digits"):
        changed = {s.trial_key for s in specs_for(["+sweep=smoke", change])}
        assert base.isdisjoint(changed), change


def _other_value(value: object) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str) and value.startswith("{"):
        data = json.loads(value)
        data["_changed"] = 1
        return json.dumps(data, sort_keys=True, separators=(",", ":"))
    return f"{value}-changed"


def test_trial_key_changes_with_every_field() -> None:
    spec = specs_for(["+sweep=smoke"])[0]
    for field in dataclasses.fields(TrialSpec):
        changed = dataclasses.replace(spec, **{field.name: _other_value(getattr(spec, field.name))})
        assert changed.trial_key != spec.trial_key, field.name


def test_spec_round_trips_through_json() -> None:
    """The spec travels to Ray workers as a dict and back; the key must survive the trip."""
    for spec in specs_for(["+sweep=smoke"]):
        again = TrialSpec.from_dict(json.loads(spec.to_json()))
        assert again == spec and again.trial_key == spec.trial_key


def test_native_trials_keep_the_keys_bench_0_3_0_gave_them() -> None:
    """`cpu_isa=native` (the default) is left out of the key, so older runs resume and replay
    with their keys; another level is a trial of its own; a row written before the column
    existed (null) reads back as native."""
    keys = [s.trial_key for s in specs_for(["+sweep=smoke"])]
    digest = hashlib.sha256(" ".join(keys).encode()).hexdigest()
    assert digest == "86049d0d43673f9f8445e2f5f7bfa8d9655cd561c7eebf4d9048acaed95e844d"  # 0.3.0
    spec = specs_for(["+sweep=smoke"])[0]
    assert spec.cpu_isa == "native" and "cpu_isa" not in json.loads(spec.to_json())
    row = {**dataclasses.asdict(spec), "cpu_isa": float("nan")}  # pandas' null
    assert TrialSpec.from_dict(row).trial_key == spec.trial_key
    baseline = specs_for(["+sweep=smoke", "cpu_isa=baseline"])
    assert {s.cpu_isa for s in baseline} == {"baseline"}
    assert set(keys).isdisjoint(s.trial_key for s in baseline)
    swept = specs_for(["+sweep=smoke", "sweep.cpu_isa=[native,baseline]"])
    assert {s.trial_key for s in swept} == set(keys) | {s.trial_key for s in baseline}
