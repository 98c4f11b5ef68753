"""Each trial's fitted model, kept in a portable format and stored once per distinct model.

`save_models=true` writes, in the run's bookkeeping folder (`results/<sweep>/.<run_id>/models/`,
out of the way of Parquet readers), two kinds of file:

- **the model**, named by its row's `weights_sha256` (`models/<sha>.safetensors` or `.skops`), so
  trials whose models are identical (fixed-seed repeats, a replay, a resumed run) store it once:
  - PyTorch and Keras networks (bench's own and the user's): the weights in safetensors, the
    tensors in bench's canonical layout (or the module's `state_dict` order for a user's
    module), the fitted attributes (`classes_`, ...) beside them and the trial's spec in the
    file's metadata: enough to rebuild the estimator with `bench.trial.make_estimator` and load
    the weights, with no code from the file executed. Keras weights go to safetensors too,
    rather than the `.keras` zip: one format for every network, which the canonical layout
    makes loadable into either library;
  - scikit-learn estimators (and bench's scikit-learn MLP): skops, whose loader refuses types it
    was not told to trust. bench trusts skops' own list (scikit-learn's estimators) and exactly
    the types its own files hold (`BENCH_TYPES`), nothing by package prefix: a function type
    (numpy's, builtins') in a crafted file would let its loading call code. A user's estimator
    class is loaded only when named with `--trust`.
- **the preprocessing** the model was trained behind (the split's imputation, scaling, one-hot
  encoding): for all-numeric data the standard scaler's mean and scale in safetensors, otherwise
  the fitted scikit-learn transformer in skops; named by a digest of what fixes it (the data's
  digest, or a built-in dataset's settings, and the split seed), so the trials that share a
  split share one file.

Loading builds the estimator from the *row's* spec (bench.trial.make_estimator) and the file's
hyperparameters (a grid search's best ones), never from code the file names: a user's network
(`model=torch_module|keras_model`) is built only when its import path is named with `--trust`,
as the user's code is imported only when the command line or config names it (DESIGN.md).

The row records each file's path (relative to the bookkeeping folder), its sha256 and its size. A file
whose bytes no longer match the row is refused by `load` (bench.score checks every file before
it writes anything). Files are written to a temporary name and renamed: two workers saving the
same model leave one complete file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.cli_common import write_atomic
from bench.data import Split
from bench.data.datasets import RawDataset
from bench.spec import TrialSpec, canonical_json
from bench.store import run_files

# The types skops does not trust by default that bench's own files hold (measured over every
# model bench trains in scikit-learn, and both preprocessing paths): trusted by exact name.
BENCH_TYPES = frozenset({
    "bench.backends.sklearn.SklearnNeuralClassifier", "bench.backends.sklearn._HingeMLP",
    "bench.backends.sklearn._LoadableMLP", "bench.data.split._float32", "bench.models.NetSpec",
    "numpy.dtype", "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer", "sklearn.tree._tree.Tree",
})  # fmt: skip
USER_NETWORKS = ("torch_module", "keras_model")
# Fitted attributes rebuilt from the spec and the weights, not stored.
_REBUILT = {"model_", "module_", "estimator_", "net_", "loss_curve_"}


class ModelFileError(ValueError):
    """A stored model that is missing, altered or not loadable: the message names the file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_once(directory: Path, name: str, data: bytes) -> Path:
    """`directory/name` holding `data`, written whole (bench.cli_common.write_atomic) unless it
    is there already: content-addressed, an existing file already holds these bytes' model."""
    path = directory / name
    if path.exists():
        return path
    try:
        return write_atomic(path, data)
    except OSError as exc:  # a full disk, named: the driver stops the sweep only for its own
        from bench.diskfull import naming

        raise naming(exc, path) from exc


def _entry(path: Path, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}_file": f"{path.parent.name}/{path.name}",
        f"{prefix}_sha256": sha256_file(path),
        f"{prefix}_bytes": path.stat().st_size,
    }


# --- saving ---------------------------------------------------------------------------------------
def _fitted_attributes(estimator: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A network wrapper's fitted attributes other than the library model: arrays and plain
    values (JSON), for rebuilding it around stored weights."""
    arrays: dict[str, np.ndarray] = {}
    plain: dict[str, Any] = {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_") or name in _REBUILT:
            continue
        if isinstance(value, np.ndarray) and value.dtype != object:
            arrays[name] = value
        elif isinstance(value, (bool, int, float, str, type(None))):
            plain[name] = value
        elif isinstance(value, (np.integer, np.floating, np.bool_)):
            plain[name] = value.item()
    return arrays, plain


def network_bytes(
    spec: TrialSpec,
    weights: list[np.ndarray],
    classes: np.ndarray,
    n_features: int,
    attributes: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
) -> bytes:
    """A network's safetensors file: weights `w0000`..., fitted arrays `attr.<name>`, metadata
    with the spec, the estimator's hyperparameters as fitted (`params`: a grid search's best
    ones), the feature count and the plain fitted attributes."""
    from safetensors.numpy import save

    arrays, plain = attributes or ({}, {})
    tensors = {f"w{i:04d}": np.ascontiguousarray(w) for i, w in enumerate(weights)}
    tensors.update({f"attr.{k}": np.ascontiguousarray(v) for k, v in arrays.items()})
    tensors["attr.classes_"] = np.ascontiguousarray(np.asarray(classes))
    meta = {
        "format": "bench.network/1",
        "spec": spec.to_json(),  # what trained it (informative: loading builds from the row's)
        "params": json.dumps(params or {}, sort_keys=True, default=str),
        "n_features": str(int(n_features)),
        "n_weights": str(len(weights)),
        "attributes": json.dumps(plain, sort_keys=True),
    }
    return save(tensors, metadata=meta)


def _hyperparameters(estimator: Any) -> dict[str, Any]:
    """bench's own network's constructor arguments as fitted (a grid search sets its best ones on
    the refitted estimator), plain JSON values; a user's network keeps its spec's."""
    from bench.backends.base import NeuralClassifier

    if not isinstance(estimator, NeuralClassifier):
        return {}
    plain = (bool, int, float, str, type(None))
    return {
        k: list(v) if isinstance(v, tuple) else v
        for k, v in estimator.get_params(deep=False).items()
        if isinstance(v, plain) or (isinstance(v, tuple) and all(isinstance(x, plain) for x in v))
    }


def sklearn_bytes(estimator: Any) -> bytes:
    """skops, deflated: its zip holds a JSON schema and many small .npy members, which compress
    about six-fold (a scikit-learn MLP of 31 weights: 60 kB stored, 9.5 kB deflated)."""
    import zipfile

    import skops.io as sio

    return sio.dumps(estimator, compression=zipfile.ZIP_DEFLATED, compresslevel=9)


def save_model(
    run_dir: Path, spec: TrialSpec, weights_sha256: str, data: bytes, suffix: str
) -> dict[str, Any]:
    path = _write_once(run_files(run_dir).models, f"{weights_sha256}{suffix}", data)
    return _entry(path, "model")


def save_estimator(
    run_dir: Path, spec: TrialSpec, estimator: Any, weights_sha256: str
) -> dict[str, Any]:
    """One-by-one trials: the fitted estimator (bench's wrapper, a user's, or scikit-learn's)."""
    if spec.library == "sklearn" or not hasattr(estimator, "_weights"):
        return save_model(run_dir, spec, weights_sha256, sklearn_bytes(estimator), ".skops")
    data = network_bytes(
        spec, estimator._weights(), estimator.classes_, estimator.n_features_in_,
        _fitted_attributes(estimator), _hyperparameters(estimator),
    )  # fmt: skip
    return save_model(run_dir, spec, weights_sha256, data, ".safetensors")


def _split_digest(raw: RawDataset, spec: TrialSpec) -> str:
    what = {"data": raw.sha256 or spec.dataset_dict(), "seed_split": spec.seed_split}
    return hashlib.sha256(canonical_json(what).encode()).hexdigest()


def save_preprocessing(
    run_dir: Path, raw: RawDataset, spec: TrialSpec, data: Split, fitted: Any = None
) -> dict[str, Any]:
    """The split's preprocessing: `fitted` (a grid search's, fitted on the training rows) or the
    one `bench.data.split` applied, fitted again here on the split's training rows."""
    from bench.data.split import preprocessing, takes_sklearn_path, train_index

    name = f"prep-{_split_digest(raw, spec)[:40]}"
    directory = run_files(run_dir).models
    if fitted is None and not takes_sklearn_path(raw):
        path = directory / f"{name}.safetensors"
        if not path.exists():
            from safetensors.numpy import save

            rows = raw.X[train_index(raw, data)]
            scaler = preprocessing(raw).fit(rows)[0].named_transformers_["num"][-1]
            tensors = {"mean": scaler.mean_, "scale": scaler.scale_}
            meta = {"format": "bench.standardize/1", "columns": json.dumps(raw.feature_names)}
            _write_once(directory, path.name, save(tensors, metadata=meta))
        return _entry(path, "preprocess")
    path = directory / f"{name}.skops"
    if not path.exists():
        if fitted is None:
            fitted = preprocessing(raw).fit(raw.X[train_index(raw, data)])
        _write_once(directory, path.name, sklearn_bytes(fitted))
    return _entry(path, "preprocess")


DATASET_INFO = "dataset.json"


def write_dataset_info(run_dir: Path, raw: RawDataset, dataset_cfg: dict[str, Any]) -> Path:
    """What scoring new data needs from the training data (bench.score): the feature columns in
    order, which are categorical and their values in code order, the class names in index order,
    and the dataset's config (its name, target column, loader options)."""
    info = {
        "name": raw.name,
        "feature_names": list(raw.feature_names),
        "categorical": list(raw.categorical),
        "categories": [list(c) for c in raw.categories],
        "classes": list(raw.classes) or [str(i) for i in range(raw.n_classes)],
        "n_classes": raw.n_classes,
        "config": dataset_cfg,
        "sha256": raw.sha256,
    }
    data = json.dumps(info, indent=1, sort_keys=True, default=str).encode()
    return write_atomic(run_files(run_dir).models / DATASET_INFO, data)


def read_dataset_info(run_dir: Path) -> dict[str, Any]:
    path = run_files(run_dir).models / DATASET_INFO
    if not path.is_file():
        raise ModelFileError(f"{path}: missing (the run was not made with save_models=true)")
    return json.loads(path.read_text())


# --- loading --------------------------------------------------------------------------------------
def checked_path(run_dir: Path, relative: str | None, sha256: str | None, what: str) -> Path:
    """The stored file, after checking it exists and its bytes are the ones the row recorded."""
    if not relative:
        raise ModelFileError(f"{run_dir}: a row has no {what} file (run it with save_models=true)")
    path = run_files(run_dir).models.parent / relative
    if not path.is_file():
        raise ModelFileError(f"{path}: {what} file missing")
    if sha256 and sha256_file(path) != sha256:
        raise ModelFileError(f"{path}: checksum mismatch ({what} file altered or corrupt)")
    return path


def _trusted(path: Path, trust: Sequence[str]) -> list[str]:
    """The types to trust in a skops file: bench's own (`BENCH_TYPES`) and those the user named;
    any other is refused by name before anything is loaded."""
    import skops.io as sio

    types = sio.get_untrusted_types(file=path)
    refused = [t for t in types if t not in BENCH_TYPES and t not in trust]
    if refused:
        raise ModelFileError(
            f"{path}: refusing to load types bench did not write: {', '.join(refused)} "
            "(--trust TYPE for a class of yours)"
        )
    return types


@dataclass
class Preprocessing:
    """Raw rows in, the float32 features the model was trained on out."""

    kind: str
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    transformer: Any = None

    def transform(self, X: np.ndarray) -> np.ndarray:
        if self.kind == "standardize":
            return ((X - self.mean) / self.scale).astype(np.float32)
        return np.ascontiguousarray(self.transformer.transform(X), dtype=np.float32)


def load_preprocessing(path: Path) -> Preprocessing:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        t = load_file(path)
        return Preprocessing("standardize", mean=t["mean"], scale=t["scale"])
    import skops.io as sio

    try:
        return Preprocessing("sklearn", transformer=sio.load(path, trusted=_trusted(path, ())))
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged file says so in one line
        raise ModelFileError(f"{path}: not a readable skops file ({exc})") from None


def _network(path: Path, spec: TrialSpec, trust: Sequence[str]) -> Any:
    """The network stored at `path`, built for the row's `spec` (see the module docstring)."""
    from safetensors import safe_open

    if spec.model in USER_NETWORKS:
        target = spec.hparams_dict().get("_target_") or spec.hparams_dict().get("target")
        if target not in trust:
            raise ModelFileError(
                f"{path}: the model is your code ({target}); bench imports it only when you "
                f"name it: --trust {target}"
            )
    try:
        with safe_open(path, "np") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a dict
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != "bench.network/1":
        raise ModelFileError(f"{path}: not a bench model file (format {meta.get('format')!r})")
    weights = [tensors[f"w{i:04d}"] for i in range(int(meta["n_weights"]))]
    from bench.trial import make_estimator

    est = make_estimator(spec)
    params = json.loads(meta.get("params") or "{}")
    known = est.get_params(deep=False)
    est.set_params(**{k: v for k, v in params.items() if k in known})
    if "device" in known:  # scored where it is loaded: on the CPU (a GPU run's model included)
        est.set_params(device="cpu")
    for key, value in tensors.items():
        if key.startswith("attr."):
            setattr(est, key[5:], value)
    for key, value in json.loads(meta["attributes"]).items():
        setattr(est, key, value)
    n_features = int(meta["n_features"])
    est.n_features_in_ = n_features
    try:
        _rebuild(est, weights, n_features)
    except (ValueError, RuntimeError, KeyError) as exc:  # shapes that do not fit the spec
        raise ModelFileError(f"{path}: does not fit its trial's model ({exc})") from None
    return est


def _rebuild(est: Any, weights: list[np.ndarray], n_features: int) -> None:
    """Put stored weights into a fresh estimator, as each wrapper's unpickling does."""
    from bench.backends.base import NeuralClassifier

    if isinstance(est, NeuralClassifier):
        est.init_mode_, est.order_mode_ = est._resolved_modes()
        est.net_ = est._netspec(n_features, len(est.classes_))
        est._restore(weights)
        return
    if est.library == "torch":
        import torch

        module = est.construct(n_features).to(torch.device(est.device))
        names = list(module.state_dict())
        state = {n: torch.from_numpy(np.array(w)) for n, w in zip(names, weights, strict=True)}
        module.load_state_dict(state)
        module.eval()
        est.module_ = module
        return
    model = est.build(n_features)
    model(np.zeros((1, n_features), np.float32), training=False)
    model.set_weights(weights)
    est.model_ = model


def load_model(path: Path, spec: TrialSpec, trust: Sequence[str] = ()) -> Any:
    """The fitted estimator stored at `path` for the trial `spec` (its row's); `trust`: the user's
    own types (skops) or network import paths it may load (see the module docstring)."""
    if path.suffix == ".safetensors":
        return _network(path, spec, trust)
    import skops.io as sio

    try:
        return sio.load(path, trusted=_trusted(path, trust))
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"{path}: not a readable skops file ({exc})") from None


def storage(run_dir: Path, rows: Any) -> dict[str, float]:
    """Bytes on disk against bytes without deduplication: what `models/` holds, what one file per
    trial would hold, and their ratio (the rows' model and preprocessing sizes, summed)."""
    directory = run_files(run_dir).models
    on_disk = (
        sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
        if directory.is_dir()
        else 0
    )
    kept = rows[rows["model_file"].notna()] if "model_file" in rows else rows.iloc[:0]
    per_trial = float(kept["model_bytes"].sum() + kept["preprocess_bytes"].sum())
    files = len(set(kept["model_file"])) + len(set(kept["preprocess_file"].dropna()))
    return {
        "trials": float(len(kept)),
        "files": float(files),
        "bytes_on_disk": float(on_disk),
        "bytes_without_dedup": per_trial,
        "bytes_per_model": float(kept["model_bytes"].mean()) if len(kept) else 0.0,
        "dedup_ratio": per_trial / on_disk if on_disk else float("nan"),
    }


def storage_line(run_dir: Path) -> str:
    """The run's stored models in one line, for the end of a sweep: what deduplication saved."""
    from bench.analysis import load

    columns = ["status", "model_file", "model_bytes", "preprocess_file", "preprocess_bytes"]
    use = storage(run_dir, load(run_dir, columns=columns))
    return (
        f"models: {int(use['trials'])} trials in {int(use['files'])} files, "
        f"{use['bytes_on_disk'] / 1e6:.2f} MB stored ({use['bytes_without_dedup'] / 1e6:.2f} MB "
        f"as one file per trial; {use['bytes_per_model'] / 1e3:.1f} kB a model) in "
        f"{run_files(run_dir).models}"
    )
