"""Compose conf/ the way `python -m bench` does: overrides rewritten where Hydra's habits need
it, keys outside the schema refused, values validated, errors turned into one line."""

from __future__ import annotations

import os
from dataclasses import fields, is_dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from bench import paths
from bench.config.schema import USER_MODELS, BenchConfig, ConfigError, ModelConfig
from bench.config.validate import validate

# bench/conf in an installed package, the checkout's conf/ otherwise (bench.paths).
CONF_DIR = Path(os.environ.get("BENCH_CONF_DIR") or paths.CONF_DIR)


def one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's multi-line messages as one line that starts with the key."""
    from hydra.errors import MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    seen: BaseException | None = exc
    while seen is not None:
        if (
            isinstance(seen, MissingConfigException)
            and seen.options is not None
            and seen.missing_cfg_file
        ):
            group, _, option = str(seen.missing_cfg_file).rpartition("/")
            return (
                f"{group}: unknown option {option!r}; available: {', '.join(sorted(seen.options))}"
            )
        if isinstance(seen, OmegaConfBaseException) and getattr(seen, "full_key", None):
            msg = str(seen.msg).split("full_key:")[0]
            return f"{seen.full_key}: {' '.join(msg.split())}"
        seen = seen.__cause__ or seen.__context__
    return " ".join(str(exc).split("Config search path:")[0].split())


def _keys_outside_schema(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> list[str]:
    """Keys that `+key=value` appended although no dataclass declares them.

    Hydra lets `+` add keys even to a structured config, so `+seeds.nn=5` would compose and be
    silently ignored. Only nodes typed by a dataclass are checked; free-form dicts (model_zoo) are not.
    """
    out: list[str] = []
    for key in cfg.keys():  # noqa: SIM118 - DictConfig's `in` is False for MISSING values
        path = f"{prefix}{key}"
        if key not in schema.keys():  # noqa: SIM118
            out.append(path)
            continue
        node, typed = cfg._get_node(key), schema._get_node(key)
        schema_type = OmegaConf.get_type(typed) if isinstance(typed, DictConfig) else None
        if isinstance(node, DictConfig) and schema_type is not None and is_dataclass(schema_type):
            out += _keys_outside_schema(node, typed, f"{path}.")
    return out


# Dicts whose keys the user names (a model, a seed source, a library, a parameter): Hydra's struct
# mode would refuse `search.grid.mlp.alpha=[...]` when `mlp` is not there yet, so such overrides
# are composed as `++` (add or replace); what they add is checked by `validate` like the rest.
FREE_FORM_DICTS = ("search.grid", "seeds.n_by_source", "seeds.n_by_library", "model.params")


def estimator_arguments(overrides: list[str]) -> list[str]:
    """With a model named by `_target_` (`model=sklearn_estimator`, `torch_module`,
    `keras_model`), `+model.n_estimators=200` is the callable's argument (Hydra's habit for a
    `_target_`'s arguments): it becomes `+model.params.n_estimators=200`. Keys of the model
    schema (`model.libraries`, `model._target_`, `model.epochs`, ...) stay as they are."""
    if not any(f"model={name}" in overrides for name in USER_MODELS):
        return overrides
    schema = {f.name for f in fields(ModelConfig)}
    out = []
    for override in overrides:
        key, eq, value = override.lstrip("+").partition("=")
        head, _, leaf = key.partition(".")
        if eq and head == "model" and leaf and "." not in leaf and leaf not in schema:
            override = f"+model.params.{leaf}={value}"
        out.append(override)
    return out


def free_form(override: str) -> str:
    """`search.grid.mlp.alpha=[...]` -> `++search.grid.mlp.alpha=[...]`; anything else unchanged."""
    key, eq, _ = override.partition("=")
    inside = key in FREE_FORM_DICTS or key.startswith(tuple(f"{d}." for d in FREE_FORM_DICTS))
    return "++" + override if eq and inside and override[:1] not in "+~" else override


def _whole_key(message: str, overrides: list[str]) -> str:
    """A key that `++` added is named by its last part alone (`alpha: ...`): name it whole."""
    for override in overrides:
        if free_form(override) != override:
            key = override.partition("=")[0]
            leaf = key.rsplit(".", 1)[-1]
            if message.startswith(f"{leaf}: "):
                return key + message[len(leaf) :]
    return message


def compose(overrides: list[str], require_installed: bool = True) -> DictConfig:
    """Compose conf/ with command-line overrides, exactly as `python -m bench` does, and validate.
    `require_installed=False` (`--cfg`) composes a sweep whose libraries are not installed."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from bench.overrides import check

    check(overrides)  # a sweep needs -m; a hydra.* key is honoured by -m or refused, never ignored
    GlobalHydra.instance().clear()
    overrides = estimator_arguments(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            cfg = hydra_compose(config_name="config", overrides=[free_form(o) for o in overrides])
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_whole_key(one_line(exc), overrides)) from exc
    unknown = _keys_outside_schema(cfg, OmegaConf.structured(BenchConfig))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a key of the config schema (bench/config/schema.py)")
    try:
        validate(cfg, require_installed)
    except OmegaConfBaseException as exc:  # e.g. an interpolation to a key that does not exist
        raise ConfigError(one_line(exc)) from exc
    return cfg
