"""The config's schema: every key typed by a dataclass in Hydra's ConfigStore.

`conf/config.yaml` lists the schema first in its defaults, so a typo (`modle.epochs=3`), a wrong
type (`seeds.n=abc`) or an unknown enum value (`libraries=[jax]`) fails while composing, before
anything is imported or run. Ranges and combinations a type cannot express are checked by
`bench.config.validate`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

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


RUN_ID = re.compile(r"^(?![._])[A-Za-z0-9_.-]+$")  # no leading dot: never "." or ".." as a folder


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Plain dict with enums as their string values (for JSON, YAML and the result rows)."""
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # type: ignore[return-value]


register()
