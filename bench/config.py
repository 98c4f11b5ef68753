"""Typed configuration: Hydra composes `conf/`, these dataclasses make every key typed.

The schemas live in Hydra's ConfigStore and `conf/config.yaml` lists the schema first in its
defaults, so a typo (`modle.epochs=3`), a wrong type (`seeds.n=abc`) or an unknown enum value
(`libraries=[jax]`) fails while composing, before anything is imported or run. Checks that a
schema cannot express (ranges, combinations) live in `validate`, which also runs before any work.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from bench import paths

# bench/conf in an installed package, the checkout's conf/ otherwise (bench.paths).
CONF_DIR = Path(os.environ.get("BENCH_CONF_DIR") or paths.CONF_DIR)
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
    table = "table"  # the user's CSV or Parquet file (bench.data.table)
    images = "images"  # the user's folder of images, a sub-folder per class (bench.data.images)


class ModelName(Enum):
    logreg = "logreg"
    mlp = "mlp"
    linear_svm = "linear_svm"  # hinge loss, no hidden layer
    cnn = "cnn"  # convolutions on image datasets (digits); torch and tensorflow only
    svm_rbf = "svm_rbf"  # sklearn.svm.SVC(kernel="rbf"); scikit-learn only
    decision_tree = "decision_tree"  # sklearn.tree.DecisionTreeClassifier; scikit-learn only
    sklearn_estimator = "sklearn_estimator"  # any scikit-learn classifier, by model._target_
    torch_module = "torch_module"  # any PyTorch module class, by model._target_; torch only
    keras_model = "keras_model"  # any function that builds a Keras model, by model._target_


# Models that exist only as scikit-learn estimators (no network, so no torch/Keras twin), and the
# constructor arguments `model.params` and `search.grid` may set for them. Neural models take the
# ModelConfig fields instead (NEURAL_SEARCHABLE).
SKLEARN_ONLY_PARAMS: dict[str, tuple[str, ...]] = {
    "svm_rbf": ("C", "gamma", "tol", "class_weight", "max_iter"),
    "decision_tree": (
        "max_depth", "min_samples_split", "min_samples_leaf", "criterion", "max_features",
        "class_weight", "ccp_alpha",
    ),
    "sklearn_estimator": (),  # the class's own get_params() (bench.backends.user_sklearn)
}  # fmt: skip


# The user's own networks (bench.backends.user_neural): the one library each runs in. They are
# trained by bench's loop, so of the neural fields they take the training ones (USER_TRAINING);
# their constructor's arguments are `model.params`, checked against its signature.
USER_NETWORKS: dict[str, str] = {"torch_module": "torch", "keras_model": "tensorflow"}
USER_TRAINING = ("lr", "beta1", "beta2", "eps", "alpha", "batch_size", "epochs")
USER_MODELS = ("sklearn_estimator", *USER_NETWORKS)  # named by model._target_


def sklearn_params(name: str, model: dict[str, Any] | None) -> tuple[str, ...]:
    """The constructor arguments `params` and `search.grid` may set for a scikit-learn-only
    model: its list, or for `sklearn_estimator` the named class's own (ValueError if it has
    none)."""
    if name != "sklearn_estimator":
        return SKLEARN_ONLY_PARAMS[name]
    from bench.backends.user_sklearn import SEED_PARAM, own_params

    return tuple(p for p in own_params((model or {}).get("_target_") or "") if p != SEED_PARAM)


NEURAL_SEARCHABLE = (
    "lr", "alpha", "epochs", "batch_size", "hidden_sizes", "activation", "beta1", "beta2", "eps",
)  # fmt: skip


class Varied(Enum):
    """Which seed source a group of trials varies; the others stay at the base seed."""

    split = "split"
    order = "order"
    init = "init"
    all = "all"
    none = "none"
    cv = "cv"  # the cross-validation folds of a grid search (needs search.enabled)


class Device(Enum):
    cpu = "cpu"
    cuda = "cuda"


class CpuIsa(Enum):
    """The CPU kernel level every library of a trial is capped at (bench.isa)."""

    native = "native"  # nothing set: each library picks the widest kernels this CPU has
    avx512 = "avx512"  # x86-64-v4
    avx2 = "avx2"  # x86-64-v3
    baseline = "baseline"  # x86-64-v2: PyTorch's `default` kernels, numpy's baseline


class InitMode(Enum):
    library = "library"  # each library's own initialiser, seeded from seed_init
    shared = "shared"  # numpy draws the initial weights; every library loads them


class OrderMode(Enum):
    library = "library"  # each library's own shuffling, seeded from seed_order
    shared = "shared"  # numpy draws every epoch's permutation; every library follows it


class Predictions(Enum):
    """Which per-row prediction arrays a row keeps (bench.outcomes)."""

    full = "full"  # test rows, labels, predictions, scores, probabilities
    compact = "compact"  # test rows, labels, predictions: churn and per-class accuracy
    none = "none"  # no arrays: metrics and hashes only


class RowsTo(Enum):
    """Who writes the Parquet parts (bench.runner)."""

    driver = "driver"  # rows travel to the driver, which journals and writes them
    workers = "workers"  # each task writes its own part; keys and statuses travel to the driver


class Mode(Enum):
    """How equal the libraries are made (bench.backends.base explains each)."""

    defaults = "defaults"  # each library's own default hyperparameters, initialiser, shuffling
    aligned = "aligned"  # every hyperparameter identical; each library's own RNG
    shared = "shared"  # aligned + shared initial weights + shared batch order


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
    # table: the label column, and columns to treat as categories (text columns always are).
    target: str | None = None
    categorical: list[str] | None = None
    # images: each image resized to size x size pixels, grayscale (channels=1) or RGB (3).
    size: int = 16
    channels: int = 1
    # Training-label corruption, to make a harmful update from config (the gate's power check,
    # docs/gate.md): this fraction of class `flip_class`'s training rows get another class, drawn
    # from the split seed after the split, so test labels stay clean. 0 (default): off, and the
    # trial key and every bit are as without these keys.
    flip_class: int | None = None
    flip_fraction: float = 0.0


# Classes of the datasets bench ships whose count is known without reading them (a flipped
# class out of range fails at compose time; table and images are checked once read).
KNOWN_CLASSES = {"breast_cancer": 2, "digits": 10, "heart": 2}


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
    # cnn only: one 'valid' kxk convolution (stride 1) per entry, then hidden_sizes, then output.
    conv_channels: list[int] = field(default_factory=list)
    kernel_size: int = 3
    # svm_rbf / decision_tree only: scikit-learn constructor arguments (SKLEARN_ONLY_PARAMS);
    # the neural fields above do not apply to them and are left out of their trials' hparams.
    params: dict[str, Any] = field(default_factory=dict)
    # Libraries this model runs in; null: the run's `libraries`. Lets one run train the MLP in
    # three libraries beside scikit-learn-only models (conf/experiment/heart.yaml).
    libraries: list[Library] | None = None
    # sklearn_estimator, torch_module, keras_model: the import path of the user's classifier class,
    # module class or model-building function (bench.backends.user_code), e.g. mypkg.nets.Net
    _target_: str | None = None


class UntilMetric(Enum):
    """Metrics bounded in [0, 1]: the only ones seeds.until stops on (its intervals are clipped
    to the metric's range; log loss has none)."""

    accuracy = "accuracy"
    balanced_accuracy = "balanced_accuracy"
    f1 = "f1"
    roc_auc = "roc_auc"


class CompareAxis(Enum):
    """Axes seeds.until.compare may name: each must take exactly two values in the sweep."""

    library = "library"
    model = "model"
    mode = "mode"
    device = "device"
    deterministic = "deterministic"
    threads = "threads"
    cpu_isa = "cpu_isa"


@dataclass
class UntilConfig:
    """Repeat until the answer is known (bench.waves): after a first wave of seeds.n seeds per
    setup, waves of `wave` more run for the setups whose question is still open, up to `max`.
    Off unless ci_width or compare is set; then a sweep runs exactly as without it."""

    ci_width: float | None = None  # stop a setup once its interval is narrower (metric units)
    # An axis with two values: stop each pair of setups differing only there at a verdict
    # (first better, second better, or equivalent within +-margin), on paired seeds.
    compare: CompareAxis | None = None
    margin: float = 0.01
    metric: UntilMetric = UntilMetric.accuracy
    wave: int = 10  # seeds per setup in each later wave
    max: int = 200  # seeds per setup at most
    confidence: float = 0.95


@dataclass
class SeedsConfig:
    base: int = 0
    n: int = 10
    until: UntilConfig = field(default_factory=UntilConfig)
    # Seeds per varied source where it should differ from n, e.g. {cv: 20, init: 20} beside 100
    # split seeds: the split is the question, the others only need enough draws for a variance.
    n_by_source: dict[str, int] = field(default_factory=dict)
    # At most this many seeds per source for a library, e.g. {tensorflow: 10}: a Keras fit costs
    # about ten times a torch fit on CPU, and a grid search multiplies the fits.
    n_by_library: dict[str, int] = field(default_factory=dict)


@dataclass
class UpdateStreamConfig:
    """The drifting stream the experiment trains on and monitors (bench.data.stream)."""

    batches: int = 8
    rows: int = 300
    shift: float = 1.5
    start: int = 3
    seed: int = 0
    train_rows: int = 1000


@dataclass
class UpdateConfig:
    """+experiment=update (bench.experiments.update): a baseline, candidate updates (each a list
    of overrides of the baseline's config), the verdict each was built to have, and the gate's
    and monitor's settings."""

    enabled: bool = False
    candidates: dict[str, list[str]] = field(default_factory=dict)
    expected: dict[str, str] = field(default_factory=dict)
    stream: UpdateStreamConfig = field(default_factory=UpdateStreamConfig)
    margin: float = 0.01
    confidence: float = 0.95
    alpha: float = 0.05


@dataclass
class SearchConfig:
    """Grid search with k-fold cross-validation inside every trial (any sweep, any model).

    The training part of the split is cut into `folds` stratified folds shuffled by the trial's
    `seed_cv` (its own seed source, `cv`), every combination of the model's grid is scored by
    cross-validation, and the best one is refit on the whole training part before the test set is
    touched. The row records `best_params` and `cv_score` beside the test metrics.
    """

    enabled: bool = False
    folds: int = 5
    scoring: str = "accuracy"  # a scikit-learn scorer name
    # model name -> parameter -> values; a model without an entry is only cross-validated.
    grid: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


@dataclass
class SweepConfig:
    name: str = MISSING
    varied: list[Varied] = field(
        default_factory=lambda: [v for v in Varied if v != Varied.cv]
    )  # cv only means something with search.enabled
    # Axes beyond the seeds; null means the single top-level value (deterministic, threads, device).
    deterministic: list[bool] | None = None
    threads: list[int] | None = None
    devices: list[Device] | None = None
    cpu_isa: list[CpuIsa] | None = None


@dataclass
class BatchingConfig:
    """Train trials that differ only in seeds as one stacked model (torch logreg/mlp, aligned or
    shared mode); every trial still gets its own row, with `batched=true` and its group size."""

    enabled: bool = False
    max_group: int = 256  # trials per stack
    # Stacks a task trains back to back: while one trains, a helper thread prepares the next and
    # finishes the last (bench.trial.run_group_batch), so the host work hides behind the
    # training. More than 1 pays where a task's host work is a visible share of its time (GPU
    # workers, big stacks) and a worker has a spare core for the helper.
    stacks_per_task: int = 1
    fused: bool = False  # torch's fused Adam kernel (one launch for all parameters)
    compile: bool = False  # torch.compile the stacked loss (Inductor; needs a C++ compiler)


# The BatchingConfig keys that choose a stack's kernels: they change its last bits, so a replay
# must use them again.
STACK_KERNELS = ("fused", "compile")


def stack_kernels(batching: Any) -> dict[str, bool]:
    """A `batching` config's kernel options, False where an older run's config has none."""
    batching = batching or {}
    return {key: bool(batching.get(key, False)) for key in STACK_KERNELS}


@dataclass
class HardwareConfig:
    gpu_fraction: float = 1.0  # share of one GPU a CUDA trial reserves in Ray: 0.25 packs four
    skip_unavailable: bool = False  # no GPU in the cluster: record CUDA trials as skipped rows


class ClusterKind(Enum):
    """Where trials run (conf/cluster/<name>.yaml)."""

    local = "local"  # an embedded Ray on this machine
    ray = "ray"  # join an existing Ray cluster by address
    slurm = "slurm"  # outside a job: write and sbatch a job; inside it: run on the job's Ray


@dataclass
class ClusterConfig:
    name: ClusterKind = ClusterKind.local
    # null: start an embedded Ray on this machine; "auto" or "host:port": join that cluster.
    address: str | None = None
    num_cpus: int | None = None  # embedded Ray only; null = all CPUs of this machine
    num_gpus: int | None = None
    max_in_flight: int | None = None  # null = twice the cluster's CPUs
    include_dashboard: bool = False
    # cluster=slurm only (bench.cluster.slurm writes them as #SBATCH lines).
    nodes: int = 1
    cpus_per_node: int = 2
    gpus_per_node: int = 0
    gpu_type: str | None = None  # gres=gpu:<gpu_type>:<n>, e.g. a100; null: any GPU
    partition: str | None = None  # null: the cluster's default partition
    time: str = "01:00:00"  # the job's time limit: [days-]hours:minutes:seconds or minutes
    account: str | None = None
    mem: str | None = None  # per node, e.g. 16G; null: the partition's default
    job_name: str = "bench"
    sbatch: list[str] = field(default_factory=list)  # extra options, e.g. ["--qos=short"]
    # where the job writes results: a path every node sees; null: results_dir, made absolute.
    results_dir: str | None = None
    python: str | None = None  # the interpreter the job runs; null: the one that submits
    wait: bool = False  # true: block until the job ends and exit with its exit status
    # Time limits and preemption (docs/clusters.md): SLURM signals the job signal_lead_s seconds
    # before its time limit (0: no warning); the job then requeues itself, at most max_requeues
    # times. stop_grace_s (any cluster): after SIGTERM or SIGUSR1 the driver waits this long for
    # the trials in flight before it writes what it has and exits 75 (resumable).
    signal_lead_s: int = 120
    max_requeues: int = 10
    stop_grace_s: float = 20.0


@dataclass
class FaultsConfig:
    """Fault injection for testing the harness (fractions of trials, chosen by trial key)."""

    raise_on: float = 0.0
    kill_worker_on: float = 0.0
    kill_always: bool = False  # false: a killed trial survives Ray's retry (a transient crash)
    hang_on: float = 0.0
    hang_seconds: float = 3600.0


@dataclass
class EnsembleConfig:
    """`ensemble.size=k`: after the sweep, average the class probabilities of k seed-varied
    members of each setup (disjoint ensembles, from the stored predictions: no retraining) and
    report the ensemble against its members (bench.analysis.ensemble). null: off."""

    size: int | None = None


@dataclass
class SeedPickingConfig:
    """+experiment=seed_picking (bench.experiments.seed_picking): one run per dataset, then the
    inflation of best-of-n seed picking (bench.analysis.seed_picking) in one report."""

    enabled: bool = False
    datasets: list[str] = field(default_factory=lambda: ["breast_cancer", "heart"])
    heart_path: str | None = None  # the UCI file or its folder; null: dataset=heart's download
    sizes: list[int] = field(default_factory=lambda: [1, 2, 5, 10, 20, 50, 100])
    n_resamples: int = 2000


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
    cpu_isa: CpuIsa = CpuIsa.native
    init_mode: InitMode = InitMode.library
    order_mode: OrderMode = OrderMode.library
    # mode=shared sets init_mode and order_mode to shared; mode=defaults needs both at library.
    mode: Mode = Mode.aligned
    # Several models / modes in one sweep; empty = just `model` / `mode`. Each name in `models`
    # takes its hyperparameters from model_zoo.<name> (+sweep=libraries loads every conf/model/).
    models: list[ModelName] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)
    model_zoo: dict[str, ModelConfig] = field(default_factory=dict)
    results_dir: str = "results"
    run_id: str | None = None
    progress: bool = True
    # Rows per Parquet part (a stacked group's rows all go into one); a part is also written once
    # its oldest row has waited 30 s. Larger parts write faster and read faster.
    rows_per_part: int = 1000
    # Store each trial's final weights (`weights`, flattened, float64) so that analysis can give the
    # largest weight difference between two settings, not only whether the hashes match.
    keep_weights: bool = False
    save_models: bool = False  # each trial's model in <run>/models/ (bench.modelstore)
    # Which per-row prediction arrays rows keep: full, compact (no scores or probabilities, the
    # largest part of a row), none (no churn). A sweep of millions of trials may not need them.
    predictions: Predictions = Predictions.full
    # Who writes the rows: the driver (default), or each Ray task into the run folder itself,
    # which must then be on storage every node sees. One driver takes about 30,000 rows/s; a
    # cluster of GPUs training stacks makes far more (docs/batching.md, "Rows in bulk").
    rows_to: RowsTo = RowsTo.driver
    # Make every row without training (real splits, metrics of made-up probabilities, `dry_run`
    # true in the row): for measuring bench itself at millions of trials, never for results.
    dry_run: bool = False
    report: bool = False  # write .<run_id>/report/report.md (+ .html, PNGs) at the end
    retries: int = 2  # Ray re-runs a trial whose worker process died, up to this many times
    trial_timeout_s: float | None = None  # a trial running longer becomes an error row
    faults: FaultsConfig = field(default_factory=FaultsConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    seed_picking: SeedPickingConfig = field(default_factory=SeedPickingConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    updates: UpdateConfig = field(default_factory=UpdateConfig)


def register() -> None:
    ConfigStore.instance().store(name="bench_schema", node=BenchConfig)


class ConfigError(ValueError):
    """A bad value found before any work starts; the message names the key."""


_RUN_ID = re.compile(r"^(?![._])[A-Za-z0-9_.-]+$")  # no leading dot: never "." or ".." as a folder


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
    if not _RUN_ID.match(cfg.sweep.name):
        raise ConfigError(
            f"sweep.name: letters, digits, '.', '_' and '-' only, not first '.' or '_'; got {cfg.sweep.name!r}"
        )
    if cfg.run_id is not None and not _RUN_ID.match(cfg.run_id):
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
        if name == "baseline" or not _RUN_ID.match(name):
            raise ConfigError(f"updates.candidates.{name}: not usable as a run's name")


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


def selected_models(plain: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(config key, model settings) of every model a run trains: `model`, or each of `models`."""
    if not plain.get("models"):
        return [("model", plain["model"])]
    zoo = plain.get("model_zoo") or {}
    out = []
    for name in plain["models"]:
        if name in zoo:
            out.append((f"model_zoo.{name}", zoo[name]))
        elif plain["model"]["name"] == name:
            out.append(("model", plain["model"]))
        else:
            raise ConfigError(
                f"models: no settings for {name!r}; use +sweep=libraries (loads every model) "
                f"or add +model@model_zoo.{name}={name}"
            )
    return out


def selected_modes(plain: dict[str, Any]) -> list[str]:
    return list(plain.get("modes") or [plain.get("mode", "aligned")])


def seed_modes(mode: str, init_mode: str, order_mode: str) -> tuple[str, str]:
    """(init_mode, order_mode) that a trial of `mode` actually runs with."""
    if mode == "shared":
        return "shared", "shared"
    return init_mode, order_mode


def model_libraries(plain: dict[str, Any], model: dict[str, Any]) -> list[str]:
    """The libraries a model runs in: its own `libraries`, else the run's."""
    return list(model.get("libraries") or plain["libraries"])


def _validate_sklearn_only(plain: dict[str, Any], key: str, m: dict[str, Any]) -> None:
    """svm_rbf and decision_tree exist in scikit-learn only; their params must be theirs."""
    name = m["name"]
    own = m.get("libraries")
    if own is not None and (not own or len(set(own)) != len(own)):
        raise ConfigError(f"{key}.libraries: must name each library once, got {own}")
    if name in USER_NETWORKS:
        return _validate_user_network(plain, key, m)
    if name not in SKLEARN_ONLY_PARAMS:
        if m.get("params"):
            raise ConfigError(
                f"{key}.params: only {' and '.join(SKLEARN_ONLY_PARAMS)} take params; "
                f"set {name}'s hyperparameters as {key}.<field>"
            )
        return
    others = [lib for lib in model_libraries(plain, m) if lib != "sklearn"]
    if others:
        where = f"{key}.libraries" if own else "libraries"
        raise ConfigError(
            f"{where}: {name} exists in scikit-learn only, got {others}; use {where}=[sklearn]"
        )
    if name == "sklearn_estimator" and not m.get("_target_"):
        raise ConfigError(
            f"{key}._target_: sklearn_estimator needs the classifier's import path, e.g. "
            f"{key}._target_=sklearn.ensemble.RandomForestClassifier"
        )
    try:
        allowed = sklearn_params(name, m)
    except ValueError as exc:
        raise ConfigError(f"{key}._target_: {exc}") from None
    unknown = sorted(set(m.get("params") or {}) - set(allowed))
    if unknown:
        raise ConfigError(f"{key}.params: {name} takes {', '.join(allowed)}; got {unknown}")


def _validate_user_network(plain: dict[str, Any], key: str, m: dict[str, Any]) -> None:
    """torch_module / keras_model: an import path that imports, params its callable takes, and
    the one library and mode it can run in. Importing the user's module here (and torch or Keras
    with it) is the price of refusing a typo before any work."""
    name, library = m["name"], USER_NETWORKS[m["name"]]
    libraries = model_libraries(plain, m)
    if libraries != [library]:
        where = f"{key}.libraries" if m.get("libraries") else "libraries"
        raise ConfigError(f"{where}: {name} runs in {library} only, got {libraries}")
    if not m.get("_target_"):
        raise ConfigError(
            f"{key}._target_: {name} needs the import path of your "
            f"{'module class' if library == 'torch' else 'model-building function'}, e.g. "
            f"{key}._target_=mypkg.nets.Net"
        )
    unused = {"hidden_sizes": [], "conv_channels": [], "activation": "relu", "kernel_size": 3}
    for sub, default in unused.items():  # bench's own networks' fields: not read for yours
        if m[sub] != default:
            raise ConfigError(
                f"{key}.{sub}: {name} is your own network; give it its arguments as "
                f"+model.params.<arg>=..."
            )
    from bench.backends.user_code import check_params
    from bench.data.images import image_shape

    try:
        image = image_shape(plain["dataset"]) is not None
        check_params(m["_target_"], m.get("params") or {}, image=image)
    except ValueError as exc:
        raise ConfigError(f"{key}._target_: {exc}") from None
    if set(selected_modes(plain)) != {"aligned"} or plain["init_mode"] != "library":
        raise ConfigError(
            f"mode: {name} has no defaults/shared variants (bench cannot share your network's "
            "initial weights); run it with mode=aligned and init_mode=library, the defaults"
        )
    batching = plain.get("batching") or {}
    if name == "torch_module" and batching.get("enabled") and batching.get("compile"):
        raise ConfigError(
            f"batching.compile: {name} is stacked with torch.func, not compiled; "
            "set batching.compile=false"
        )


def validate_search(plain: dict[str, Any]) -> None:
    """search.* and the per-source / per-library seed counts, naming the key."""
    search, seeds_cfg = plain["search"], plain["seeds"]
    for key, table, allowed in (
        ("seeds.n_by_source", seeds_cfg["n_by_source"], [v.value for v in Varied]),
        ("seeds.n_by_library", seeds_cfg["n_by_library"], [lib.value for lib in Library]),
    ):
        for name, n in table.items():
            if name not in allowed:
                raise ConfigError(f"{key}: unknown key {name!r}; expected one of {allowed}")
            if n < 1 or seeds_cfg["base"] + n - 1 > UINT32_MAX:
                raise ConfigError(f"{key}.{name}: must be >= 1 and fit the uint32 range, got {n}")
    # The grid is checked even while search is off: a typo in it must not wait for the day it is on.
    for model, grid in search["grid"].items():
        if model not in [n.value for n in ModelName]:
            raise ConfigError(f"search.grid: unknown model {model!r}")
        if model in USER_NETWORKS:
            allowed = USER_TRAINING
        elif model in SKLEARN_ONLY_PARAMS:
            settings = [m for _, m in selected_models(plain) if m["name"] == model]
            try:
                allowed = sklearn_params(model, settings[0] if settings else None)
            except ValueError:  # no estimator of that name in this run: nothing to check against
                allowed = tuple(grid)
        else:
            allowed = NEURAL_SEARCHABLE
        for param, values in grid.items():
            if param not in allowed:
                raise ConfigError(
                    f"search.grid.{model}.{param}: not a parameter of {model}; "
                    f"searchable: {', '.join(allowed)}"
                )
            if not values:
                raise ConfigError(f"search.grid.{model}.{param}: needs at least one value")
    if "cv" in plain["sweep"]["varied"] and not search["enabled"]:
        raise ConfigError(
            "sweep.varied: cv varies the cross-validation folds, which only a grid search has; "
            "set search.enabled=true or drop cv"
        )
    if not search["enabled"]:
        return
    if (plain.get("batching") or {}).get("enabled"):
        raise ConfigError(
            "batching.enabled: stacked training fits each model once, without the grid search "
            "that search.enabled asks for; set batching.enabled=false or search.enabled=false"
        )
    if search["folds"] < 2:
        raise ConfigError(f"search.folds: must be >= 2, got {search['folds']}")
    from sklearn.metrics import get_scorer_names

    if search["scoring"] not in get_scorer_names():
        raise ConfigError(
            f"search.scoring: not a scikit-learn scorer: {search['scoring']!r} (e.g. accuracy, roc_auc)"
        )


def validate_models(plain: dict[str, Any]) -> None:
    """Every model x mode x library x dataset combination a run would train must exist: an
    unsupported one is refused here, naming the key, never dropped from the sweep."""
    from bench.data.images import image_shape
    from bench.models import IMAGE_SHAPES, NetSpec

    for mode in selected_modes(plain):
        if mode == "defaults" and "shared" in (plain["init_mode"], plain["order_mode"]):
            raise ConfigError(
                "mode: defaults uses each library's own initialiser and shuffling; set "
                "init_mode=library order_mode=library, or use mode=aligned / mode=shared"
            )
    names = [m["name"] for _, m in selected_models(plain)]
    if len(set(names)) != len(names):
        raise ConfigError(f"models: names a model twice: {names}")
    if len(set(selected_modes(plain))) != len(selected_modes(plain)):
        raise ConfigError(f"modes: names a mode twice: {selected_modes(plain)}")
    dataset = plain["dataset"]["name"]
    for key, m in selected_models(plain):
        name = m["name"]
        for sub, ok, why in (
            ("epochs", m["epochs"] >= 1, "must be >= 1"),
            ("batch_size", m["batch_size"] >= 1, "must be >= 1"),
            ("lr", m["lr"] > 0, "must be > 0"),
            ("alpha", m["alpha"] >= 0, "must be >= 0"),
            ("eps", m["eps"] > 0, "must be > 0"),
            ("beta1", 0 <= m["beta1"] < 1, "must be in [0, 1)"),
            ("beta2", 0 <= m["beta2"] < 1, "must be in [0, 1)"),
            ("hidden_sizes", all(h >= 1 for h in m["hidden_sizes"]), "sizes must be >= 1"),
            ("conv_channels", all(c >= 1 for c in m["conv_channels"]), "sizes must be >= 1"),
            ("kernel_size", m["kernel_size"] >= 1, "must be >= 1"),
        ):
            if not ok:
                raise ConfigError(f"{key}.{sub}: {why}, got {m[sub]}")
        _validate_sklearn_only(plain, key, m)
        devices = plain["sweep"].get("devices") or [plain["device"]]
        not_torch = [lib for lib in model_libraries(plain, m) if lib != "torch"]
        if "cuda" in devices and not_torch:
            raise ConfigError(
                f"device: cuda runs torch only; {key} ({name}) would run in {not_torch} on the CPU"
            )
        if name in SKLEARN_ONLY_PARAMS and set(selected_modes(plain)) != {"aligned"}:
            raise ConfigError(
                f"modes: {name} has no defaults/aligned/shared variants (no Adam, no shared init or "
                f"order); run it with mode=aligned, the default"
            )
        if name == "mlp" and not m["hidden_sizes"]:
            raise ConfigError(f"{key}.hidden_sizes: an mlp needs at least one hidden layer")
        if name in ("logreg", "linear_svm") and m["hidden_sizes"]:
            raise ConfigError(f"{key}.hidden_sizes: {name} has no hidden layers; use model=mlp")
        if name != "cnn" and m["conv_channels"]:
            raise ConfigError(f"{key}.conv_channels: only a cnn has convolutions; use model=cnn")
        if name != "cnn":
            continue
        if not m["conv_channels"]:
            raise ConfigError(f"{key}.conv_channels: a cnn needs at least one convolution")
        where = "model.name" if key == "model" else "models"
        shape = image_shape(plain["dataset"])
        if shape is None:
            raise ConfigError(
                f"{where}: cnn needs an image dataset ({', '.join([*IMAGE_SHAPES, 'images'])}), "
                f"got dataset={dataset}"
            )
        if "sklearn" in model_libraries(plain, m):
            raise ConfigError(
                f"libraries: scikit-learn has no cnn; drop sklearn from libraries or cnn from {where}"
            )
        h, w, c = shape
        try:
            NetSpec(h * w * c, (), 2, conv_channels=tuple(m["conv_channels"]),
                    kernel_size=m["kernel_size"], image_shape=shape)  # fmt: skip
        except ValueError as exc:
            raise ConfigError(f"{key}.{exc}") from None


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
        raise ConfigError(f"{unknown[0]}: not a key of the config schema (bench/config.py)")
    try:
        validate(cfg, require_installed)
    except OmegaConfBaseException as exc:  # e.g. an interpolation to a key that does not exist
        raise ConfigError(one_line(exc)) from exc
    return cfg


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain dict with enums as their string values (for JSON, YAML and the result rows)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


register()
