"""Checks of the studies built on seeds: `seeds.until` (bench.waves), `ensemble.size`,
`+experiment=seed_picking` and `+experiment=update`'s candidates, each naming the key."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from bench.config.models import selected_models, selected_modes
from bench.config.schema import RUN_ID, UINT32_MAX, ConfigError, DatasetName, Predictions


def validate_ensemble(cfg: DictConfig) -> None:
    """ensemble.size: at least 2 and at most the members of the smallest setup whose members
    share their test rows (sources other than split and all), counted by the sweep's own
    expansion (bench.sweep.setups), so n_by_source and n_by_library are taken into account."""
    from bench.sweep import setups

    k = cfg.ensemble.size
    if k < 2:
        raise ConfigError(f"ensemble.size: an ensemble needs at least 2 members, got {k}")
    predictions = getattr(cfg.predictions, "value", cfg.predictions)
    if predictions != Predictions.full.value:
        raise ConfigError(
            f"ensemble.size: ensembles average the stored class probabilities, which only "
            f"predictions=full keeps; got predictions={predictions}"
        )
    members = [
        (n, f"{spec.library}/{spec.model}, varied={spec.varied}", _count_key(cfg, spec, n))
        for spec, n in setups(cfg)
        if spec.varied not in ("split", "all")
    ]
    if not members:
        raise ConfigError(
            "ensemble.size: the sweep varies only split or all, whose trials predict different "
            "test rows; ensembles need sweep.varied with init, order, cv or none"
        )
    n, where, key = min(members)
    if k > n:
        raise ConfigError(f"ensemble.size: {k} is more than the {n} members of {where} ({key})")


def _count_key(cfg: DictConfig, spec: Any, n: int) -> str:
    """The setting that decided a setup's seed count, for the hint in an error message."""
    library = str(getattr(spec.library, "value", spec.library))
    varied = str(getattr(spec.varied, "value", spec.varied))
    seeds = cfg["seeds"]  # a DictConfig or a plain dict
    by_library = dict(seeds["n_by_library"] or {})
    by_source = dict(seeds["n_by_source"] or {})
    if by_library.get(library) == n:
        return f"seeds.n_by_library.{library}"
    if varied in by_source:
        return f"seeds.n_by_source.{varied}"
    return "seeds.n" if n == seeds["n"] else "seeds.n and the sweep's repeats"


def validate_seed_picking(sp: dict[str, Any]) -> None:
    known = {d.value for d in DatasetName}
    for name in sp["datasets"]:
        if name not in known:
            raise ConfigError(f"seed_picking.datasets: unknown dataset {name!r}")
    if not sp["datasets"]:
        raise ConfigError("seed_picking.datasets: name at least one dataset")
    if not all(n >= 1 for n in sp["sizes"]):
        raise ConfigError(f"seed_picking.sizes: every n must be >= 1, got {sp['sizes']}")
    if sp["n_resamples"] < 100:
        raise ConfigError(f"seed_picking.n_resamples: must be >= 100, got {sp['n_resamples']}")


def until_on(plain: dict[str, Any]) -> bool:
    """Whether seeds.until is in force: a target width or a comparison is set."""
    until = plain["seeds"].get("until") or {}
    return until.get("ci_width") is not None or until.get("compare") is not None


def axis_values(plain: dict[str, Any], axis: str) -> list[Any]:
    """The values an axis takes in the sweep, in the order the config names them."""
    sweep = plain["sweep"]
    return {
        "library": lambda: plain["libraries"],
        "model": lambda: [m["name"] for _, m in selected_models(plain)],  # as specs hold it
        "mode": lambda: selected_modes(plain),
        "device": lambda: sweep.get("devices") or [plain["device"]],
        "deterministic": lambda: sweep.get("deterministic") or [plain["deterministic"]],
        "threads": lambda: sweep.get("threads") or [plain["threads"]],
        "cpu_isa": lambda: sweep.get("cpu_isa") or [plain.get("cpu_isa", "native")],
    }[axis]()


def validate_until(plain: dict[str, Any]) -> None:
    """seeds.until's values, naming the key, before any work (bench.waves)."""
    from bench.analysis.sequential import MIN_FIRST
    from bench.sweep import _expand_one

    until, seeds = plain["seeds"]["until"], plain["seeds"]
    if not until_on(plain):
        return
    # The first wave of every setup the plan gets (n_by_source and n_by_library included), and
    # the key that set each count.
    counts = [
        (n, _count_key(plain, spec, n))
        for _, model in selected_models(plain)
        for mode in selected_modes(plain)
        for spec, n in _expand_one(plain, model, mode, first_only=True)
    ] or [(seeds["n"], "seeds.n")]
    first, first_key = max(counts)
    checks = [
        ("ci_width", until["ci_width"] is None or until["ci_width"] > 0, "must be > 0"),
        ("margin", until["margin"] > 0, "must be > 0"),
        ("wave", until["wave"] >= 1, "must be >= 1"),
        ("confidence", 0 < until["confidence"] < 1, "must be in (0, 1)"),
        ("max", until["max"] >= first, f"must be >= the first wave ({first_key}: {first})"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"seeds.until.{key}: {why}, got {until[key]}")
    least, least_key = min(counts)
    if least < MIN_FIRST:
        raise ConfigError(
            f"{least_key}: seeds.until needs a first wave of >= {MIN_FIRST} seeds per setup "
            f"(fewer give an unreliable spread; docs/repeat-until.md), got {least}"
        )
    if seeds["base"] + until["max"] - 1 > UINT32_MAX:
        raise ConfigError("seeds.until.max: base + max exceeds the uint32 seed range")
    axis = until["compare"]
    if axis is not None:
        values = axis_values(plain, axis)
        if len(set(map(str, values))) != 2:
            raise ConfigError(
                f"seeds.until.compare: {axis} must take exactly two values in the sweep to "
                f"compare them, got {values}"
            )


VERDICTS = ("better", "not worse", "worse", "inconclusive")


def validate_updates(up: dict[str, Any]) -> None:
    """+experiment=update's block: what each candidate was built to be is a gate verdict, the
    rates are rates; each candidate's overrides are composed (and refused by name) when it runs."""
    if not up["candidates"]:
        raise ConfigError("updates.candidates: no candidate update to compare with the baseline")
    for name, expected in up["expected"].items():
        if name not in up["candidates"]:
            raise ConfigError(f"updates.expected.{name}: no candidate {name!r}")
        if expected not in VERDICTS:
            raise ConfigError(
                f"updates.expected.{name}: {expected!r} is not one of {', '.join(VERDICTS)}"
            )
    for key in ("confidence", "alpha"):
        if not 0 < up[key] < 1:
            raise ConfigError(f"updates.{key}: must be in (0, 1), got {up[key]}")
    if up["margin"] < 0:
        raise ConfigError(f"updates.margin: must be >= 0, got {up['margin']}")
    for name in up["candidates"]:
        if name == "baseline" or not RUN_ID.match(name):
            raise ConfigError(f"updates.candidates.{name}: not usable as a run's name")
