"""expand(config) -> list[TrialSpec]: pure, no I/O, no imports of any training library.

For every library and every source in `sweep.varied`, `seeds.n` trials:
- `split` / `order` / `init`: that source takes seeds 0..n-1, the other two stay at index 0;
- `all`: all three sources take index i together;
- `none`: every seed at index 0, repeated n times, to expose implementation noise.
All of that once per model (`models`, or just `model`) and per mode (`modes`, or just `mode`),
models and modes outermost so that a single model and mode keep the order above.
"""

from __future__ import annotations

import itertools

from omegaconf import DictConfig

from bench import seeds
from bench.config import seed_modes, selected_models, selected_modes, to_container
from bench.spec import TrialSpec, canonical_json

# Settings that change a dataset's arrays, per dataset; where a file lives does not belong here.
_DATASET_KEYS = {
    "synthetic": ("n_samples", "n_features", "n_informative", "n_classes", "data_seed"),
    "heart": ("sha256",),
}


def dataset_key_params(dataset: dict) -> dict:
    """The dataset settings that enter the trial key: test size plus what shapes the data."""
    keys = ("test_size", *_DATASET_KEYS.get(dataset["name"], ()))
    return {k: dataset[k] for k in keys}


def _seed_indices(varied: str, i: int) -> dict[str, int]:
    if varied == "all":
        return dict.fromkeys(seeds.SOURCES, i)
    if varied == "none":
        return dict.fromkeys(seeds.SOURCES, 0)
    return {s: (i if s == varied else 0) for s in seeds.SOURCES}


def expand(cfg: DictConfig) -> list[TrialSpec]:
    plain = to_container(cfg)
    return [
        spec
        for _, model in selected_models(plain)
        for mode in selected_modes(plain)
        for spec in _expand_one(plain, model, mode)
    ]


def _expand_one(plain: dict, model: dict, mode: str) -> list[TrialSpec]:
    hparams = canonical_json({k: v for k, v in model.items() if k != "name"})
    init_mode, order_mode = seed_modes(mode, plain["init_mode"], plain["order_mode"])
    dataset = plain["dataset"]
    dataset_params = canonical_json(dataset_key_params(dataset))
    base = plain["seeds"]["base"]
    sweep = plain["sweep"]
    axes = itertools.product(
        plain["libraries"],
        sweep.get("devices") or [plain["device"]],
        sweep.get("deterministic") or [plain["deterministic"]],
        sweep.get("threads") or [plain["threads"]],
        sweep["varied"],
        range(plain["seeds"]["n"]),
    )
    specs = []
    for library, device, deterministic, threads, varied, i in axes:
        idx = _seed_indices(varied, i)
        specs.append(
            TrialSpec(
                sweep=plain["sweep"]["name"],
                library=library,
                model=model["name"],
                dataset=dataset["name"],
                device=device,
                varied=varied,
                seed_split=seeds.derive(base, "split", idx["split"]),
                seed_order=seeds.derive(base, "order", idx["order"]),
                seed_init=seeds.derive(base, "init", idx["init"]),
                repeat=i if varied == "none" else 0,
                deterministic=deterministic,
                threads=threads,
                init_mode=init_mode,
                order_mode=order_mode,
                hparams=hparams,
                dataset_params=dataset_params,
                mode=mode,
            )
        )
    return specs
