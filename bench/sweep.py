"""expand(config) -> list[TrialSpec]: pure, no I/O, no imports of any training library.

`iter_specs` yields the same trials one at a time, so that a sweep of millions never holds them
all; `setups` gives one representative trial per setting (everything but the seeds) with its trial
count, which is all the driver's checks need.

For every library and every source in `sweep.varied`, `seeds.n` trials:
- `split` / `order` / `init`: that source takes seeds 0..n-1, the other two stay at index 0;
- `all`: all three sources take index i together;
- `none`: every seed at index 0, repeated n times, to expose implementation noise;
- `cv` (with search.enabled): the cross-validation fold seed takes 0..n-1, the others index 0;
  `repeat` holds the index, as for `none`.
`seeds.n_by_source` and `seeds.n_by_library` change n for one source or cap it for one library;
a model's own `libraries` replaces the run's for that model (scikit-learn-only models).
All of that once per model (`models`, or just `model`) and per mode (`modes`, or just `mode`),
models and modes outermost so that a single model and mode keep the order above; within them,
once per device, thread count and CPU kernel level (`sweep.devices`, `sweep.threads`,
`sweep.cpu_isa`, or the single top-level value).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig

from bench import seeds
from bench.backends.seed_use import leave_out, seed_groups
from bench.config import (
    SKLEARN_ONLY_PARAMS,
    USER_NETWORKS,
    USER_TRAINING,
    model_libraries,
    seed_modes,
    selected_models,
    selected_modes,
    to_container,
)
from bench.spec import TrialSpec, canonical_json

# Settings that change a dataset's arrays, per dataset; where a file lives does not belong here.
_DATASET_KEYS = {
    "synthetic": ("n_samples", "n_features", "n_informative", "n_classes", "data_seed"),
    "heart": ("sha256",),
    "table": ("sha256", "target", "categorical"),  # the file's digest: always in the rows too
    "images": ("sha256", "size", "channels"),  # the folder's digest: always in the rows too
}


def dataset_key_params(dataset: dict) -> dict:
    """The dataset settings that enter the trial key: test size plus what shapes the data, and
    the training-label flip when it is on (off, the keys stay those of runs before it)."""
    keys = ("test_size", *_DATASET_KEYS.get(dataset["name"], ()))
    if dataset.get("flip_fraction", 0.0) > 0:
        keys = (*keys, "flip_class", "flip_fraction")
    return {k: dataset[k] for k in keys}


def _seed_indices(varied: str, i: int) -> dict[str, int]:
    if varied == "all":
        return dict.fromkeys(seeds.SOURCES, i)
    if varied == "none":
        return dict.fromkeys(seeds.SOURCES, 0)
    return {s: (i if s == varied else 0) for s in seeds.SOURCES}


def expand(cfg: DictConfig) -> list[TrialSpec]:
    return list(iter_specs(cfg))


def iter_specs(cfg: DictConfig | dict) -> Iterator[TrialSpec]:
    """The sweep's trials in `expand`'s order, made one at a time (`cfg` composed, or plain as
    `to_container` gives it: bench.waves expands a copy with more seeds)."""
    plain = cfg if isinstance(cfg, dict) else to_container(cfg)
    for _, model in selected_models(plain):
        for mode in selected_modes(plain):
            yield from _expand_one(plain, model, mode)


def setups(cfg: DictConfig) -> list[tuple[TrialSpec, int]]:
    """One trial per setting of the sweep (its first seed index), and how many trials share that
    setting: a setting is everything but the seeds, so whatever the driver checks before a run
    (CPU levels, worker environments, resources, GPUs) it can check on these."""
    plain = to_container(cfg)
    return [
        (spec, n)
        for _, model in selected_models(plain)
        for mode in selected_modes(plain)
        for spec, n in _expand_one(plain, model, mode, first_only=True)
    ]


def _leave_out(
    plain: dict, library: str, model: dict, mode: str, search: str | None, varied: str
) -> str | None:
    """Why this library's trials of `varied` are left out (its seed never reaches the training,
    or shares one random state with another swept source), or None (bench.backends.seed_use)."""
    groups = seed_groups(library, model["name"], mode, search is not None, model.get("_target_"))
    return leave_out(varied, groups, plain["sweep"]["varied"])


def left_out(cfg: DictConfig) -> list[dict[str, Any]]:
    """The trials the sweep leaves out, one entry per library, model, mode and source: how many
    and why. The driver prints them before the run and the summary after it."""
    plain = to_container(cfg)
    out: dict[tuple, dict[str, Any]] = {}
    per_setting = len(_deterministic_modes(plain))
    for _, model in selected_models(plain):
        search = _search_json(plain, model)
        for mode in selected_modes(plain):
            for library, _, _, _, varied in _axes(plain, model):  # the settings _expand_one skips
                reason = _leave_out(plain, library, model, mode, search, varied)
                n = n_seeds(plain, library, varied) * per_setting
                if reason and n:
                    entry = out.setdefault(
                        (library, model["name"], mode, varied),
                        {"library": library, "model": model["name"], "mode": mode,
                         "varied": varied, "n": 0, "reason": reason},
                    )  # fmt: skip
                    entry["n"] += n
    return list(out.values())


def describe_left_out(entries: list[dict[str, Any]]) -> list[str]:
    """One line per left-out entry, for the console."""
    return [
        f"left out {e['n']} trial(s) of {e['library']} {e['model']} ({e['mode']}), "
        f"varied={e['varied']}: {e['reason']}"
        for e in entries
    ]


def model_hparams(model: dict) -> dict:
    """What a trial of `model` is trained with. scikit-learn-only models take `params` alone (the
    neural fields have no effect on them); neural models their fields, without `libraries` (an
    axis, not a hyperparameter) and without an empty `params`, so their trial keys stay as before."""
    if model["name"] == "sklearn_estimator":  # which class is part of what the trial trains
        return {"_target_": model["_target_"], **(model.get("params") or {})}
    if model["name"] in SKLEARN_ONLY_PARAMS:
        return dict(model.get("params") or {})
    if model["name"] in USER_NETWORKS:  # the network, its arguments, bench's training settings
        training = {k: model[k] for k in USER_TRAINING}
        return {"_target_": model["_target_"], "params": model.get("params") or {}, **training}
    return {
        k: v
        for k, v in model.items()
        if k not in ("name", "libraries", "_target_") and not (k == "params" and not v)
    }


def n_seeds(plain: dict, library: str, varied: str) -> int:
    """Seeds for one library and source: seeds.n_by_source or seeds.n, capped by n_by_library."""
    n = plain["seeds"].get("n_by_source", {}).get(varied, plain["seeds"]["n"])
    return min(n, plain["seeds"].get("n_by_library", {}).get(library, n))


def _search_json(plain: dict, model: dict) -> str | None:
    search = plain.get("search") or {}
    if not search.get("enabled"):
        return None
    grid = (search.get("grid") or {}).get(model["name"], {})
    return canonical_json({"folds": search["folds"], "scoring": search["scoring"], "grid": grid})


def _axes(plain: dict, model: dict) -> Iterator[tuple]:
    """(library, device, threads, cpu_isa, varied) of every setting of a model, in queue order."""
    sweep = plain["sweep"]
    return itertools.product(
        model_libraries(plain, model),
        sweep.get("devices") or [plain["device"]],
        sweep.get("threads") or [plain["threads"]],
        sweep.get("cpu_isa") or [plain.get("cpu_isa", "native")],
        sweep["varied"],
    )


def _deterministic_modes(plain: dict) -> list[bool]:
    # Innermost, so that on and off alternate in the queue: a worker warming up, or a machine
    # getting busier during the sweep, then slows both modes alike and not one of them.
    return plain["sweep"].get("deterministic") or [plain["deterministic"]]


def _expand_one(plain: dict, model: dict, mode: str, first_only: bool = False) -> Iterator[Any]:
    sweep = plain["sweep"]
    axes = _axes(plain, model)
    modes = _deterministic_modes(plain)
    init_mode, order_mode = seed_modes(mode, plain["init_mode"], plain["order_mode"])
    search = _search_json(plain, model)
    # What every trial of this model and mode shares, computed once.
    common = {
        "sweep": sweep["name"],
        "model": model["name"],
        "dataset": plain["dataset"]["name"],
        "init_mode": init_mode,
        "order_mode": order_mode,
        "hparams": canonical_json(model_hparams(model)),
        "dataset_params": canonical_json(dataset_key_params(plain["dataset"])),
        "mode": mode,
        "search": search,
    }
    base = plain["seeds"]["base"]
    for library, device, threads, cpu_isa, varied in axes:
        if _leave_out(plain, library, model, mode, search, varied):
            continue
        n = n_seeds(plain, library, varied)
        if first_only:
            for deterministic in modes:
                if n:
                    spec = _spec(common, base, library, device, deterministic, threads, cpu_isa,
                                 varied, 0)  # fmt: skip
                    yield spec, n
            continue
        for i in range(n):
            for deterministic in modes:
                yield _spec(
                    common, base, library, device, deterministic, threads, cpu_isa, varied, i
                )


def _spec(
    common: dict,
    base: int,
    library: str,
    device: str,
    deterministic: bool,
    threads: int,
    cpu_isa: str,
    varied: str,
    i: int,
) -> TrialSpec:
    """Seed index i of source `varied` for one library and setting of a model and mode."""
    idx = _seed_indices(varied, i)
    return TrialSpec(
        **common,
        library=library,
        device=device,
        varied=varied,
        seed_split=seeds.derive(base, "split", idx["split"]),
        seed_order=seeds.derive(base, "order", idx["order"]),
        seed_init=seeds.derive(base, "init", idx["init"]),
        # cv trials differ only in seed_cv, which tables that identify a trial by its three
        # classic seeds, `varied` and `repeat` do not read: the index keeps them apart there.
        repeat=i if varied in ("none", "cv") else 0,
        deterministic=deterministic,
        threads=threads,
        cpu_isa=cpu_isa,
        seed_cv=seeds.derive(base, "cv", idx["cv"]) if common["search"] is not None else None,
    )
