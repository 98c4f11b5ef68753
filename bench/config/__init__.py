"""Typed configuration: Hydra composes `conf/`, dataclasses make every key typed, checks refuse
what a type cannot, all before any work.

`schema` (the dataclasses in Hydra's ConfigStore) -> `compose` (conf/ plus overrides, as
`python -m bench` does) -> `validate` (ranges and combinations; `models` for the models a run
trains, `studies` for seeds.until, ensembles, seed picking and updates). Import from here.
"""

from bench.config.compose import (
    CONF_DIR,
    compose,
    estimator_arguments,
    free_form,
    one_line,
)
from bench.config.models import (
    model_libraries,
    seed_modes,
    selected_models,
    selected_modes,
    validate_models,
    validate_search,
)
from bench.config.schema import (
    KNOWN_CLASSES,
    NEURAL_SEARCHABLE,
    SKLEARN_ONLY_PARAMS,
    UINT32_MAX,
    USER_MODELS,
    USER_NETWORKS,
    USER_TRAINING,
    Activation,
    BenchConfig,
    ClusterKind,
    CompareAxis,
    ConfigError,
    CpuIsa,
    DatasetName,
    Device,
    InitMode,
    Library,
    Mode,
    ModelConfig,
    ModelName,
    OrderMode,
    Predictions,
    RowsTo,
    UntilMetric,
    Varied,
    register,
    sklearn_params,
    stack_kernels,
    to_container,
)
from bench.config.studies import VERDICTS, axis_values, until_on
from bench.config.validate import check_cxx, cpu_isa_key, validate, validate_cluster

__all__ = [
    "CONF_DIR", "KNOWN_CLASSES", "NEURAL_SEARCHABLE", "SKLEARN_ONLY_PARAMS", "UINT32_MAX",
    "USER_MODELS", "USER_NETWORKS", "USER_TRAINING", "VERDICTS", "Activation", "BenchConfig",
    "ClusterKind", "CompareAxis", "ConfigError", "CpuIsa", "DatasetName", "Device", "InitMode",
    "Library", "Mode", "ModelConfig", "ModelName", "OrderMode", "Predictions", "RowsTo",
    "UntilMetric", "Varied", "axis_values", "check_cxx", "compose", "cpu_isa_key",
    "estimator_arguments", "free_form", "model_libraries", "one_line", "register", "seed_modes",
    "selected_models", "selected_modes", "sklearn_params", "stack_kernels", "to_container",
    "until_on", "validate", "validate_cluster", "validate_models", "validate_search",
]  # fmt: skip
