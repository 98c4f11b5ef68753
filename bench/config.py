"""Typed configuration: Hydra composes `conf/`, these dataclasses make every key typed.

The schemas live in Hydra's ConfigStore and `conf/config.yaml` lists the schema first in its
defaults, so a typo (`modle.epochs=3`), a wrong type (`seeds.n=abc`) or an unknown enum value
(`libraries=[jax]`) fails while composing, before anything is imported or run. Checks that a
schema cannot express (ranges, combinations) live in `validate`, which also runs before any work.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

CONF_DIR = Path(os.environ.get("BENCH_CONF_DIR", Path(__file__).resolve().parent.parent / "conf"))
UINT32_MAX = 2**32 - 1


class Library(Enum):
    sklearn = "sklearn"
    torch = "torch"
    tensorflow = "tensorflow"


class DatasetName(Enum):
    breast_cancer = "breast_cancer"
    digits = "digits"
    synthetic = "synthetic"
    heart = "heart"


class ModelName(Enum):
    logreg = "logreg"
    mlp = "mlp"


class Varied(Enum):
    """Which seed source a group of trials varies; the others stay at the base seed."""

    split = "split"
    order = "order"
    init = "init"
    all = "all"
    none = "none"


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"


class InitMode(Enum):
    library = "library"  # each library's own initialiser, seeded from seed_init
    shared = "shared"  # numpy draws the initial weights; every library loads them


class OrderMode(Enum):
    library = "library"  # each library's own shuffling, seeded from seed_order
    shared = "shared"  # numpy draws every epoch's permutation; every library follows it


class Activation(Enum):
    relu = "relu"
    tanh = "tanh"
    logistic = "logistic"


@dataclass
class DatasetConfig:
    name: DatasetName = DatasetName.breast_cancer
    test_size: float = 0.2
    # heart: a file (or a folder holding processed.cleveland.data); null downloads into cache_dir.
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    cache_dir: str | None = None
    # synthetic (sklearn.datasets.make_classification); data_seed fixes the data, not a varied source.
    n_samples: int = 1000
    n_features: int = 20
    n_informative: int = 10
    n_classes: int = 2
    data_seed: int = 0


@dataclass
class ModelConfig:
    """Library-neutral hyperparameters; every backend reads the same values."""

    name: ModelName = ModelName.logreg
    hidden_sizes: list[int] = field(default_factory=list)
    activation: Activation = Activation.relu
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    # L2 on weights (not biases) as scikit-learn's MLP applies it: + alpha/2 * ||W||^2 / batch rows.
    alpha: float = 1e-4
    batch_size: int = 32
    epochs: int = 30


@dataclass
class SeedsConfig:
    base: int = 0
    n: int = 10


@dataclass
class SweepConfig:
    name: str = MISSING
    varied: list[Varied] = field(default_factory=lambda: list(Varied))


@dataclass
class ClusterConfig:
    name: str = "local"
    # null: start an embedded Ray on this machine; "auto" or "host:port": join that cluster.
    address: str | None = None
    num_cpus: int | None = None  # embedded Ray only; null = all CPUs of this machine
    num_gpus: int | None = None
    max_in_flight: int | None = None  # null = twice the cluster's CPUs
    include_dashboard: bool = False


@dataclass
class BenchConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    seeds: SeedsConfig = field(default_factory=SeedsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    libraries: list[Library] = field(default_factory=lambda: list(Library))
    device: Device = Device.cpu
    deterministic: bool = False
    threads: int = 1
    init_mode: InitMode = InitMode.library
    order_mode: OrderMode = OrderMode.library
    results_dir: str = "results"
    run_id: str | None = None
    progress: bool = True
    rows_per_part: int = 50


def register() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


class ConfigError(ValueError):
    """A bad value found before any work starts; the message names the key."""


_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def validate(cfg: DictConfig) -> None:
    """Reject values the schema's types allow but that make no sense, naming the key."""
    if OmegaConf.is_missing(cfg.sweep, "name"):
        raise ConfigError("sweep: no sweep chosen; add +sweep=seeds (or +sweep=smoke)")
    checks: list[tuple[str, bool, str]] = [
        ("seeds.n", cfg.seeds.n >= 1, "must be >= 1"),
        ("seeds.base", 0 <= cfg.seeds.base <= UINT32_MAX, f"must be in [0, {UINT32_MAX}]"),
        ("threads", cfg.threads >= 1, "must be >= 1"),
        ("libraries", len(cfg.libraries) >= 1, "must name at least one library"),
        ("sweep.varied", len(cfg.sweep.varied) >= 1, "must name at least one source"),
        ("dataset.test_size", 0.0 < cfg.dataset.test_size < 1.0, "must be in (0, 1)"),
        ("model.epochs", cfg.model.epochs >= 1, "must be >= 1"),
        ("model.batch_size", cfg.model.batch_size >= 1, "must be >= 1"),
        ("model.lr", cfg.model.lr > 0, "must be > 0"),
        ("model.alpha", cfg.model.alpha >= 0, "must be >= 0"),
        ("model.hidden_sizes", all(h >= 1 for h in cfg.model.hidden_sizes), "sizes must be >= 1"),
        ("rows_per_part", cfg.rows_per_part >= 1, "must be >= 1"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}, got {OmegaConf.select(cfg, key)}")
    if cfg.model.name == ModelName.mlp and not cfg.model.hidden_sizes:
        raise ConfigError("model.hidden_sizes: an mlp needs at least one hidden layer")
    if cfg.model.name == ModelName.logreg and cfg.model.hidden_sizes:
        raise ConfigError("model.hidden_sizes: logreg has no hidden layers; use model=mlp")
    if len(set(cfg.libraries)) != len(cfg.libraries):
        raise ConfigError(
            f"libraries: names a library twice: {[lib.value for lib in cfg.libraries]}"
        )
    if cfg.run_id is not None and not _RUN_ID.match(cfg.run_id):
        raise ConfigError(
            f"run_id: only letters, digits, '.', '_' and '-' allowed, got {cfg.run_id!r}"
        )
    if cfg.dataset.name == DatasetName.synthetic:
        d = cfg.dataset
        if not (d.n_classes >= 2 and d.n_informative <= d.n_features and d.n_samples >= 10):
            raise ConfigError(
                "dataset: synthetic needs n_classes >= 2, n_informative <= n_features, n_samples >= 10"
            )
    if cfg.device == Device.cuda and any(lib != Library.torch for lib in cfg.libraries):
        others = [lib.value for lib in cfg.libraries if lib != Library.torch]
        raise ConfigError(
            f"device: cuda runs torch only; drop {others} from libraries or use device=cpu"
        )
    if cfg.seeds.base + cfg.seeds.n - 1 > UINT32_MAX:
        raise ConfigError(f"seeds.n: base + n exceeds the uint32 seed range ({UINT32_MAX})")


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


def compose(overrides: list[str]) -> DictConfig:
    """Compose conf/ with command-line overrides, exactly as `python -m bench` does, and validate."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="bench"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(one_line(exc)) from exc
    validate(cfg)
    return cfg


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain dict with enums as their string values (for JSON, YAML and the result rows)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


register()
