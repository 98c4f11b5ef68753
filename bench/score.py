"""`python -m bench score RUN [--dataset FILE] [dataset.KEY=VALUE ...]`: last year's models on
today's data, without retraining.

Every ok trial of RUN that stored its model (`save_models=true`, bench.modelstore) predicts every
row of the new data through the preprocessing it was trained behind, and becomes one row of a new
run (`results/score/<run_id>/` unless `--out`), like any run's rows: the trial's spec and seeds,
`weights_sha256`, metrics on the new data, the predictions (`test_index` = the new rows' numbers),
`dataset_sha256` = the new data's digest, and `scored_run_id` / `scored_trial_key` naming what it
scored. So `python -m bench gate`, `report` and pandas read it as they read a run, and the models
of two runs scored on one file compare on the same rows.

The new data: `--dataset FILE` (CSV or Parquet with the training table's feature columns; its
label column, when present, is mapped to the training classes; without one the rows are
unlabelled: metrics null, `y_true` null, predictions still there), or, for a built-in dataset, the
run's own dataset config with `dataset.KEY=VALUE` changes (`dataset.data_seed=7`). Text columns
are coded with the training table's values (bench.modelstore's dataset.json).

Every model file is checked against its row's sha256 before anything is written: a missing or
altered file is refused by name, with nothing written.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench import modelstore
from bench.cli_common import RefusingParser, add_trust_option, write_atomic

# Columns a scored row takes over from the trial it scores.
_KEPT = (
    "library", "model", "dataset", "device", "varied", "seed_split", "seed_order", "seed_init",
    "repeat", "deterministic", "threads", "init_mode", "order_mode", "hparams", "dataset_params",
    "mode", "seed_cv", "search", "cpu_isa", "seed_sources", "weights_sha256", "code_sha256",
    "model_file", "model_sha256", "model_bytes", "preprocess_file", "preprocess_sha256",
    "preprocess_bytes", "n_train", "n_params", "best_params",
)  # fmt: skip
METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss")


class ScoreError(ValueError):
    """Bad input to `bench score`: one line, before anything is written."""


@dataclass(frozen=True)
class NewData:
    X: np.ndarray  # raw features, float64, the training table's columns in order
    y: np.ndarray | None  # class indices of the training classes, or None: unlabelled
    sha256: str
    source: str  # the file, or the dataset config, for messages and the config


def _table(path: Path, info: dict[str, Any], unlabelled: bool) -> NewData:
    import pandas as pd

    from bench.config import ConfigError
    from bench.data.table import _path, _read

    try:
        path = _path({"path": str(path)})
        data = path.read_bytes()
        frame = _read(path, data)
    except ConfigError as exc:
        raise ScoreError(str(exc).replace("dataset.path", "--dataset")) from None
    names = info["feature_names"]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ScoreError(f"--dataset: {path} lacks the training columns {missing[:5]}")
    target = (info.get("config") or {}).get("target")
    y = None
    if target in frame.columns and not unlabelled:
        frame = frame[frame[target].notna()]
        index = {c: i for i, c in enumerate(info["classes"])}
        labels = frame[target].astype(str)
        unknown = sorted(set(labels) - set(index))
        if unknown:
            raise ScoreError(
                f"--dataset: {path}: labels {unknown[:5]} in column {target!r} are not among "
                f"the training classes {info['classes']}"
            )
        y = labels.map(index).to_numpy(np.int64)
    columns = []
    categories = dict(zip(info["categorical"], info.get("categories") or [], strict=False))
    for i, name in enumerate(names):
        column = frame[name]
        if i in categories:  # the training table's codes; a value it never saw: missing
            codes = {v: k for k, v in enumerate(categories[i])}
            mapped = column.astype("string").map(lambda v, c=codes: c.get(v, np.nan))
            columns.append(pd.to_numeric(mapped, errors="coerce").to_numpy(np.float64))
        else:
            columns.append(pd.to_numeric(column, errors="coerce").to_numpy(np.float64))
    X = np.column_stack(columns) if columns else np.zeros((len(frame), 0))
    return NewData(X, y, hashlib.sha256(data).hexdigest(), str(path))


def _builtin(info: dict[str, Any], changes: list[str], unlabelled: bool) -> NewData:
    import yaml

    from bench.data import load

    cfg = dict(info.get("config") or {"name": info["name"]})
    for change in changes:
        key, sep, value = change.partition("=")
        if not sep or not key.startswith("dataset.") or len(key) <= len("dataset."):
            raise ScoreError(f"{change}: expected dataset.KEY=VALUE")
        cfg[key[len("dataset.") :]] = yaml.safe_load(value)
    try:
        raw = load(cfg)
    except Exception as exc:  # noqa: BLE001 - a loader's error, in one line
        raise ScoreError(f"dataset: {' '.join(str(exc).split())}") from None
    if list(raw.feature_names) != list(info["feature_names"]):
        raise ScoreError("dataset: its columns differ from the training data's")
    digest = raw.sha256 or hashlib.sha256(np.ascontiguousarray(raw.X).tobytes()).hexdigest()
    return NewData(raw.X, None if unlabelled else raw.y, digest, json.dumps(cfg, default=str))


def new_data(
    run_dir: Path, path: str | None, changes: list[str], unlabelled: bool = False
) -> NewData:
    """The data to score RUN's models on (see the module docstring)."""
    try:
        info = modelstore.read_dataset_info(run_dir)
    except modelstore.ModelFileError as exc:
        raise ScoreError(str(exc)) from None
    if path is not None:
        if changes:
            raise ScoreError("--dataset: give a file or dataset.KEY=VALUE changes, not both")
        return _table(Path(path), info, unlabelled)
    if info["name"] == "table" and not changes:
        raise ScoreError("--dataset: the run trained on a table; name the file to score")
    if info["name"] == "table":
        return _table(Path(str((info.get("config") or {}).get("path"))), info, unlabelled)
    return _builtin(info, changes, unlabelled)


def stored_rows(run_dir: Path):
    """RUN's ok rows that stored a model, after checking every file they name (nothing is
    written before this passes)."""
    from bench.analysis import load
    from bench.store import results_path

    df = load(results_path(run_dir))
    if "model_file" not in df.columns or df["model_file"].isna().all():
        raise ScoreError(f"{run_dir}: no stored models (run the sweep with save_models=true)")
    df = df[(df["status"] == "ok") & df["model_file"].notna()].reset_index(drop=True)
    checked: set[str] = set()
    for row in df.itertuples():
        for what, file, sha in (("model", row.model_file, row.model_sha256),
                                ("preprocessing", row.preprocess_file, row.preprocess_sha256)):  # fmt: skip
            if file not in checked:
                modelstore.checked_path(run_dir, file, sha, what)
                checked.add(file)
    return df


def predict(
    run_dir: Path, rows, X: np.ndarray, progress: bool = False, trust: Sequence[str] = ()
) -> list[np.ndarray]:
    """Each row's (n, k) class scores on raw features X; a model stored once is run once.
    `trust`: the user's own types or network import paths the models may load (--trust)."""
    from bench.spec import TrialSpec
    from bench.trial import test_scores

    preps: dict[str, np.ndarray] = {}
    by_model: dict[tuple[str, str], np.ndarray] = {}
    out = []
    bar = _bar(progress, len(rows))
    for row in rows.to_dict("records"):
        key = (row["model_file"], row["preprocess_file"])
        if key not in by_model:
            if row["preprocess_file"] not in preps:
                path = modelstore.checked_path(
                    run_dir, row["preprocess_file"], None, "preprocessing"
                )
                preps[row["preprocess_file"]] = modelstore.load_preprocessing(path).transform(X)
            spec = TrialSpec.from_dict(row)  # the row's spec columns
            path = modelstore.checked_path(run_dir, row["model_file"], None, "model")
            model = modelstore.load_model(path, spec, trust)
            by_model[key] = np.asarray(test_scores(model, preps[row["preprocess_file"]])[0])
        out.append(by_model[key])
        bar.advance()
    bar.close()
    return out


def _plain(value: Any) -> Any:
    """A pandas cell as the row wants it: NaN (pandas' null) as None, numpy scalars as Python's."""
    if isinstance(value, float | np.floating) and np.isnan(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


class _bar:
    def __init__(self, enabled: bool, total: int) -> None:
        self.progress = None
        if enabled:
            from rich.progress import Progress

            self.progress = Progress(transient=True)
            self.progress.start()
            self.task = self.progress.add_task("scoring", total=total)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def score(
    run_dir: str | Path,
    dataset: str | None = None,
    changes: Sequence[str] = (),
    out: str | Path = "results",
    unlabelled: bool = False,
    progress: bool = False,
    trust: Sequence[str] = (),
) -> Path:
    """Score RUN's stored models on new data; the new run's folder."""
    from bench import fingerprint, store
    from bench.data import Split
    from bench.outcomes import outcomes
    from bench.rows import to_batch

    run_dir = Path(run_dir)
    rows = stored_rows(run_dir)
    data = new_data(run_dir, dataset, list(changes), unlabelled)
    n = len(data.X)
    if n == 0:
        raise ScoreError(f"--dataset: {data.source} has no rows")
    scores = predict(run_dir, rows, data.X, progress, trust)
    run_id = store.new_run_id()
    path = store.run_dir(out, "score", run_id)
    labelled = data.y is not None
    y = data.y if labelled else np.zeros(n, dtype=np.int64)
    splits = [Split(np.zeros((0, data.X.shape[1]), np.float32), np.zeros(0, np.int64), np.zeros(0),
                    y, np.arange(n), len(s[0]) if len(s) else 2) for s in scores]  # fmt: skip
    k = [np.arange(s.shape[1]) for s in scores]
    made, lists = outcomes(splits, scores, k, [[] for _ in scores], 0.0, 0.0, [])
    if not labelled:
        lists["y_true"] = [None] * len(scores)
    env = fingerprint.environment(rows["library"].iloc[0], "cpu")
    out_rows = []
    for row, outcome in zip(rows.to_dict("records"), made, strict=True):
        new = {c: _plain(row.get(c)) for c in _KEPT if c in row}
        new.update(outcome)
        if not labelled:
            new.update({m: None for m in METRICS})
        key = hashlib.sha256(f"{row['trial_key']}:{data.sha256}".encode()).hexdigest()
        new.update(
            env, trial_key=key, run_id=run_id, sweep="score", status="ok", error=None,
            dataset_sha256=data.sha256, scored_run_id=row["run_id"],
            scored_trial_key=row["trial_key"], weights_sha256=row["weights_sha256"],
        )  # fmt: skip
        out_rows.append(new)
    batch = to_batch(out_rows, lists)  # made before anything is written: a failure leaves nothing
    config = json.dumps({"scored": str(run_dir), "dataset": data.source, "labelled": labelled})
    files = store.run_files(path)
    path.mkdir(parents=True, exist_ok=True)
    write_atomic(files.config, f"sweep:\n  name: score\nscore: {config}\n")
    store.write_version(path)
    from bench import __version__
    from bench.manifest import Manifest

    manifest = Manifest.create(files.manifest, files.config, __version__)
    writer = store.PartWriter(path, max(1, len(out_rows)), config=files.config.read_text(),
                              staging=files.staging, manifest=manifest)  # fmt: skip
    writer.add_batch(batch)
    writer.close()
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = RefusingParser(
        prog="python -m bench score",
        description="Score a run's stored models (save_models=true) on new data, without "
        "retraining; write the rows as a new run.",
        refusal=ScoreError,
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="results/<sweep>/<run_id>")
    parser.add_argument("changes", nargs="*", metavar="dataset.KEY=VALUE",
                        help="changes to a built-in dataset's config (dataset.data_seed=7)")  # fmt: skip
    parser.add_argument("--dataset", metavar="FILE", help="a CSV or Parquet table to score")
    parser.add_argument("--unlabelled", action="store_true",
                        help="ignore the label column even if the file has one")  # fmt: skip
    parser.add_argument("--out", default="results", metavar="DIR",
                        help="results folder for the new run (default: results)")  # fmt: skip
    add_trust_option(parser)
    parser.add_argument("--no-progress", action="store_true")
    try:
        parsed = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        path = score(parsed.run_dir, parsed.dataset, parsed.changes, parsed.out,
                     parsed.unlabelled, not parsed.no_progress, parsed.trust)  # fmt: skip
    except (ScoreError, modelstore.ModelFileError, OSError, pa.ArrowException) as exc:
        print(f"bench score: error: {exc}", file=sys.stderr)
        return 2
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
