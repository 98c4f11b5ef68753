"""Values the schema's types allow but that make no sense, refused by name before any work.

`validate` is the entry point (`compose` calls it); the model checks live in
`bench.config.models`, the seed studies' (until, ensembles, seed picking, updates) in
`bench.config.studies`.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bench.config.models import validate_models, validate_search
from bench.config.schema import (
    KNOWN_CLASSES,
    RUN_ID,
    STACK_KERNELS,
    UINT32_MAX,
    ClusterKind,
    ConfigError,
    DatasetName,
    Device,
    Library,
    to_container,
)
from bench.config.studies import (
    validate_ensemble,
    validate_seed_picking,
    validate_until,
    validate_updates,
)


def check_cxx(prefix: str, hint: str = "") -> None:
    """Refuse, before any work, what torch.compile cannot run: it needs a C++ compiler."""
    from bench.fingerprint import cxx_compiler, cxx_name

    if not cxx_compiler():
        raise ConfigError(
            f"{prefix}: torch.compile needs the C++ compiler {cxx_name()!r} (g++, or the one $CXX "
            f"names), which is not on PATH{hint}"
        )


def validate(cfg: DictConfig, require_installed: bool = True) -> None:
    """Reject values the schema's types allow but that make no sense, naming the key. Model
    settings are checked once, for every model the run trains, by `validate_models`.
    `require_installed`: refuse a sweep whose libraries (or Ray) are not installed, naming the
    extra that installs them (bench.extras), before the checks that import them."""
    if OmegaConf.is_missing(cfg.sweep, "name"):
        raise ConfigError(
            "sweep: no sweep chosen; add +sweep=seeds (or +sweep=smoke, +experiment=heart)"
        )
    checks: list[tuple[str, bool, str]] = [
        ("seeds.n", cfg.seeds.n >= 1, "must be >= 1"),
        ("seeds.base", 0 <= cfg.seeds.base <= UINT32_MAX, f"must be in [0, {UINT32_MAX}]"),
        ("threads", cfg.threads >= 1, "must be >= 1"),
        ("libraries", len(cfg.libraries) >= 1, "must name at least one library"),
        ("sweep.varied", len(cfg.sweep.varied) >= 1, "must name at least one source"),
        ("dataset.test_size", 0.0 < cfg.dataset.test_size < 1.0, "must be in (0, 1)"),
        ("rows_per_part", cfg.rows_per_part >= 1, "must be >= 1"),
        ("retries", cfg.retries >= 0, "must be >= 0"),
        ("trial_timeout_s", cfg.trial_timeout_s is None or cfg.trial_timeout_s > 0, "must be > 0"),
        *(
            (f"faults.{k}", 0.0 <= cfg.faults[k] <= 1.0, "must be a fraction in [0, 1]")
            for k in ("raise_on", "kill_worker_on", "hang_on")
        ),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}, got {OmegaConf.select(cfg, key)}")
    if len(set(cfg.libraries)) != len(cfg.libraries):
        raise ConfigError(
            f"libraries: names a library twice: {[lib.value for lib in cfg.libraries]}"
        )
    if not RUN_ID.match(cfg.sweep.name):
        raise ConfigError(
            f"sweep.name: letters, digits, '.', '_' and '-' only, not first '.' or '_'; got {cfg.sweep.name!r}"
        )
    if cfg.run_id is not None and not RUN_ID.match(cfg.run_id):
        raise ConfigError(
            f"run_id: only letters, digits, '.', '_' and '-' allowed, got {cfg.run_id!r}"
        )
    if cfg.dataset.name == DatasetName.synthetic:
        d = cfg.dataset
        if not (d.n_classes >= 2 and 1 <= d.n_informative <= d.n_features and d.n_samples >= 10):
            raise ConfigError(
                "dataset: synthetic needs n_classes >= 2, 1 <= n_informative <= n_features, n_samples >= 10"
            )
        if 2 * d.n_classes > 2**d.n_informative:  # make_classification: 2 clusters per class
            raise ConfigError(
                f"dataset.n_informative: {d.n_informative} informative features cannot separate "
                f"{d.n_classes} classes (needs n_classes * 2 <= 2 ** n_informative)"
            )
    if cfg.dataset.name == DatasetName.images:
        from bench.data.images import check_settings

        check_settings(cfg.dataset)
    validate_flip(cfg.dataset)
    if cfg.sweep.threads is not None and not all(t >= 1 for t in cfg.sweep.threads):
        raise ConfigError(
            f"sweep.threads: every thread count must be >= 1, got {list(cfg.sweep.threads)}"
        )
    if cfg.sweep.cpu_isa is not None and len(set(cfg.sweep.cpu_isa)) != len(cfg.sweep.cpu_isa):
        raise ConfigError(
            f"sweep.cpu_isa: names a level twice: {[lvl.value for lvl in cfg.sweep.cpu_isa]}"
        )
    for key in ("max_group", "stacks_per_task"):
        if cfg.batching[key] < 1:
            raise ConfigError(f"batching.{key}: must be >= 1, got {cfg.batching[key]}")
    if cfg.batching.stacks_per_task != 1 and not cfg.batching.enabled:
        raise ConfigError(
            "batching.stacks_per_task: applies to stacked training only; add batching.enabled=true"
        )
    for key in STACK_KERNELS:
        if cfg.batching[key] and not cfg.batching.enabled:
            raise ConfigError(
                f"batching.{key}: applies to stacked training only; add batching.enabled=true"
            )
    if cfg.batching.enabled and cfg.batching.compile:
        check_cxx("batching.compile", "; install it or set batching.compile=false")
    if not 0.0 < cfg.hardware.gpu_fraction <= 1.0:
        raise ConfigError(
            f"hardware.gpu_fraction: must be in (0, 1], got {cfg.hardware.gpu_fraction}"
        )
    devices = list(cfg.sweep.devices) if cfg.sweep.devices else [cfg.device]
    if Device.cuda in devices and any(lib != Library.torch for lib in cfg.libraries):
        others = [lib.value for lib in cfg.libraries if lib != Library.torch]
        raise ConfigError(
            f"device: cuda runs torch only; drop {others} from libraries or use device=cpu"
        )
    if cfg.seeds.base + cfg.seeds.n - 1 > UINT32_MAX:
        raise ConfigError(f"seeds.n: base + n exceeds the uint32 seed range ({UINT32_MAX})")
    validate_cluster(cfg)
    plain = to_container(cfg)
    validate_until(plain)
    if require_installed:
        from bench.extras import missing

        gap = missing(plain)
        if gap:
            raise ConfigError(gap)
    validate_models(plain)
    validate_search(plain)
    if cfg.updates.enabled:
        validate_updates(plain["updates"])
    if cfg.ensemble.size is not None:
        validate_ensemble(cfg)
    if cfg.seed_picking.enabled:
        validate_seed_picking(plain["seed_picking"])


def validate_flip(dataset: DictConfig) -> None:
    """dataset.flip_class / flip_fraction: a fraction, and a class the dataset has (where its
    class count is known before reading it: `KNOWN_CLASSES`, synthetic's n_classes)."""
    fraction, cls = dataset.flip_fraction, dataset.flip_class
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"dataset.flip_fraction: must be a fraction in [0, 1], got {fraction}")
    if fraction > 0 and cls is None:
        raise ConfigError(
            "dataset.flip_class: needed when dataset.flip_fraction > 0 (the class whose "
            "training labels are flipped)"
        )
    if cls is None:
        return
    name = dataset.name.value
    known = dataset.n_classes if name == "synthetic" else KNOWN_CLASSES.get(name)
    if cls < 0 or (known is not None and cls >= known):
        top = f"0..{known - 1}" if known is not None else "0 or more"
        raise ConfigError(f"dataset.flip_class: {name} has classes {top}, got {cls}")


# #SBATCH values go to sbatch's own option parser: a plain token keeps them one option each.
_SBATCH_TOKEN = re.compile(r"^[A-Za-z0-9_.,:+@%/=-]+$")
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^(infinite|unlimited)$", re.IGNORECASE)
_SBATCH_OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=\S.*)?$")
# Options bench sets itself in a generated job (where its output goes, where it runs).
_SBATCH_OWN = (
    "--output", "--error", "--chdir", "--wait", "--wrap", "--parsable", "--export", "--signal",
    "--requeue", "--no-requeue", "--open-mode",
)  # fmt: skip


def validate_cluster(cfg: DictConfig) -> None:
    """cluster.*: ranges, and SLURM values that must stay one #SBATCH option each."""
    c = cfg.cluster
    checks: list[tuple[str, bool, str]] = [
        ("cluster.num_cpus", c.num_cpus is None or c.num_cpus >= 1, "must be >= 1"),
        ("cluster.num_gpus", c.num_gpus is None or c.num_gpus >= 0, "must be >= 0"),
        ("cluster.max_in_flight", c.max_in_flight is None or c.max_in_flight >= 1, "must be >= 1"),
        ("cluster.nodes", c.nodes >= 1, "must be >= 1"),
        ("cluster.cpus_per_node", c.cpus_per_node >= 1, "must be >= 1"),
        ("cluster.gpus_per_node", c.gpus_per_node >= 0, "must be >= 0"),
        (
            "cluster.time",
            bool(_SLURM_TIME.match(c.time)),
            "must be a SLURM time limit such as 90, 02:00:00 or 1-12:00:00",
        ),
        (
            "cluster.mem",
            c.mem is None or bool(re.match(r"^\d+[KMGT]?$", c.mem)),
            "must be a size such as 16G",
        ),
        (
            "cluster.results_dir",
            c.results_dir is None or c.results_dir.strip() != "",
            "must not be empty",
        ),
        ("cluster.python", c.python is None or c.python.strip() != "", "must not be empty"),
        ("cluster.signal_lead_s", 0 <= c.signal_lead_s <= 65535, "must be 0 to 65535 seconds"),
        ("cluster.max_requeues", c.max_requeues >= 0, "must be >= 0"),
        ("cluster.stop_grace_s", c.stop_grace_s >= 0, "must be >= 0"),
    ]
    for key in ("job_name", "partition", "account", "gpu_type"):
        value = c[key]
        checks.append(
            (
                f"cluster.{key}",
                value is None or bool(_SBATCH_TOKEN.match(value)),
                "only letters, digits and _ . , : + @ % / = - allowed",
            )
        )
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key}: {why}, got {OmegaConf.select(cfg, key)!r}")
    for line in c.sbatch:
        if not _SBATCH_OPTION.match(line) or "\n" in line or "\r" in line:
            raise ConfigError(
                f"cluster.sbatch: each entry must be one long option such as --qos=short, got {line!r}"
            )
        if line.split("=", 1)[0] in _SBATCH_OWN:
            raise ConfigError(
                f"cluster.sbatch: bench sets {line.split('=', 1)[0]} itself in the job it writes, got {line!r}"
            )
    if c.name == ClusterKind.slurm and cfg.device == Device.cuda and c.gpus_per_node == 0:
        raise ConfigError(
            "cluster.gpus_per_node: device=cuda needs GPUs in the job; set cluster.gpus_per_node=1 or more"
        )


def cpu_isa_key(cfg: DictConfig | dict[str, Any]) -> str:
    """The key that chose a run's kernel levels, for messages about them."""
    return "sweep.cpu_isa" if (cfg.get("sweep") or {}).get("cpu_isa") else "cpu_isa"
