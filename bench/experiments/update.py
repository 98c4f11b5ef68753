"""`python -m bench +experiment=update`: a baseline, a few candidate updates, a drifting stream,
and what the seed-aware gate and monitor say next to what one seed each would have said.

The deployed-model question (docs/gate.md): is this update worse than retraining with new seeds
would be? The experiment makes it concrete on data whose answers are known:

1. a synthetic stream (bench.data.stream): `train.csv` from the reference distribution and a
   folder of batches that drift away from it;
2. the baseline: the configured sweep on `train.csv`, models stored (`save_models=true`);
3. each candidate in `updates.candidates`: the same sweep with the candidate's overrides
   (a no-op retrain with new seeds, a library or hyperparameter change, a harmful change such as
   flipped training labels), each its own run;
4. `bench gate` of every candidate against the baseline, and beside it the single-seed
   comparison (the first seed of each: higher, lower or equal accuracy), with the answer the
   candidate was built to have (`updates.expected`);
5. `bench monitor` of the baseline on the stream, labelled and unlabelled, and beside it one
   seed's model compared with its own test error.

Everything lands in `results_dir/update/<run_id>/`: `stream/`, `runs/<candidate>/<run_id>/` (plain
bench runs: `python -m bench report`, `gate` and `score` read them), and `report.md`. Run again
with the same `run_id=` to resume: finished trials are not run again.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bench.cli_common import markdown_table, write_atomic

EXPERIMENT = "+experiment=update"


@dataclass(frozen=True)
class Verdicts:
    name: str
    overrides: list[str]
    expected: str
    gate: str
    diff: float
    low: float
    high: float
    paired: bool
    flagged_classes: list[str]
    single_seed: str
    single_diff: float


def _sub_overrides(overrides: list[str], root: Path, train: Path, run_id: str) -> list[str]:
    """The user's overrides for one run of the experiment: its data, its folder, models kept."""
    keep = [
        o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("run_id", "results_dir")
    ]
    return [*keep, "updates.enabled=false", "dataset=table", f"dataset.path={train}",
            "dataset.target=target", "save_models=true", f"results_dir={root / 'runs'}",
            f"run_id={run_id}"]  # fmt: skip


def single_seed(
    base: pd.DataFrame, cand: pd.DataFrame, metric: str = "accuracy"
) -> tuple[str, float]:
    """What comparing one trial of each would conclude, as a paper or a CI job often compares:
    one trial picked the same way in both runs (repeat 0, then the lowest split and init seed
    values: seeds are hashed, so this is as good as a random pick)."""

    def first(df: pd.DataFrame) -> float:
        ok = df[df["status"] == "ok"].sort_values(["repeat", "seed_split", "seed_init"])
        return float(ok[metric].iloc[0])

    d = first(cand) - first(base)
    return ("better" if d > 0 else "worse" if d < 0 else "no change"), d


def _gate_row(name: str, overrides: list[str], expected: str, base: pd.DataFrame,
              cand: pd.DataFrame, margin: float, confidence: float) -> Verdicts:  # fmt: skip
    from bench.analysis.gate import gate

    result = gate(base, cand, ["accuracy"], margin=margin, confidence=confidence)
    item = result.metrics[0]
    flagged = [c.name for c in result.classes if c.verdict == "worse"]
    said, d = single_seed(base, cand)
    return Verdicts(name, overrides, expected, result.verdict, item.diff, item.low, item.high,
                    result.paired, flagged, said, d)  # fmt: skip


def _stream_rows(baseline_run: Path, batches: Path, alpha: float) -> pd.DataFrame:
    """The monitor's table for the labelled and the unlabelled reading of the stream, and beside
    each labelled batch what one seed's model says (its batch error against its test error)."""
    from bench.monitor import monitor
    from bench.score import new_data, predict, stored_rows

    labelled = monitor(baseline_run, batches, alpha=alpha, progress=False)
    unlabelled = monitor(baseline_run, batches, alpha=alpha, unlabelled=True, progress=False)
    rows = stored_rows(baseline_run)
    one = rows.sort_values(["repeat", "seed_split", "seed_init"]).iloc[[0]]
    single = []
    for name in labelled.table["batch"]:
        data = new_data(baseline_run, str(batches / name), [])
        error = float(np.mean(np.argmax(predict(baseline_run, one, data.X)[0], axis=1) != data.y))
        single.append("worse" if error > 1 - float(one["accuracy"].iloc[0]) else "not worse")
    out = pd.DataFrame(
        {
            "batch": labelled.table["batch"],
            "error": labelled.table["value"].map("{:.3f}".format),
            "error alarm": labelled.table["alarm"],
            "disagreement": unlabelled.table["value"].map("{:.3f}".format),
            "disagreement alarm": unlabelled.table["alarm"],
            "one seed's model says": single,
        }
    )
    out.attrs["rule"] = labelled.rule
    return out


def _markdown(table: pd.DataFrame) -> str:
    return markdown_table(table.columns, table.itertuples(index=False))


def report(root: Path, verdicts: list[Verdicts], stream: pd.DataFrame, shifts: list[float],
           margin: float, confidence: float) -> Path:  # fmt: skip
    table = pd.DataFrame({
        "candidate": [v.name for v in verdicts],
        "change": ["`" + " ".join(v.overrides) + "`" for v in verdicts],
        "built to be": [v.expected for v in verdicts],
        "gate (all seeds)": [v.gate + (f" (classes {', '.join(v.flagged_classes)})"
                                       if v.flagged_classes else "") for v in verdicts],
        "accuracy change [CI]": [f"{v.diff:+.4f} [{v.low:+.4f}, {v.high:+.4f}]" for v in verdicts],
        "paired": ["yes" if v.paired else "no" for v in verdicts],
        "one seed each says": [f"{v.single_seed} ({v.single_diff:+.4f})" for v in verdicts],
    })  # fmt: skip
    stream = stream.assign(shift=[f"{s:.2f}" for s in shifts])
    right = sum(v.gate == v.expected or (v.expected == "not worse" and v.gate in
                ("not worse", "better")) for v in verdicts)  # fmt: skip
    lines = [
        "# Model updates: the seed-aware gate against one seed each", "",
        f"Gate: {confidence:.0%} intervals over every seed, non-inferiority margin "
        f"{margin:g} (docs/gate.md). {right} of {len(verdicts)} candidates got the verdict they "
        "were built to have.", "",
        _markdown(table), "",
        "## A drifting stream", "",
        f"The baseline's seed models on each batch ({stream.attrs.get('rule', '')}).", "",
        _markdown(stream), "",
    ]  # fmt: skip
    return write_atomic(root / "report.md", "\n".join(lines))


def run_update(cfg: DictConfig, overrides: list[str]) -> int:
    """Run the experiment (module docstring); 0 when every run finished without error rows."""
    import json

    from bench import store
    from bench.analysis import load
    from bench.cluster.connect import connect_for
    from bench.config import ConfigError, compose
    from bench.data.stream import write_stream
    from bench.runner import run_sweep

    up = OmegaConf.to_container(cfg.updates, resolve=True)
    assert isinstance(up, dict)
    run_id = cfg.run_id or store.new_run_id()
    root = Path(cfg.results_dir) / "update" / run_id
    stream = root / "stream"
    if not (stream / "stream.json").is_file():
        write_stream(stream, **up["stream"], force=True)
    shifts = json.loads((stream / "stream.json").read_text()).get("batch_shift", [])
    args = _sub_overrides(overrides, root, stream / "train.csv", run_id)
    plans: list[tuple[str, list[str], str]] = [("baseline", [], "")]
    plans += [
        (name, list(o), up["expected"].get(name, "?")) for name, o in up["candidates"].items()
    ]
    configs = []  # every run composed and checked before the first one starts
    for name, extra, _ in plans:
        try:
            configs.append(compose([*args, f"sweep.name={name}", *extra]))
        except ConfigError as exc:
            raise ConfigError(f"updates.candidates.{name}: {exc}") from None
    errors = 0
    runs: dict[str, Path] = {}
    started = connect_for(configs[0])  # one Ray for every run, as a multirun's runs would share one
    try:
        for (name, extra, _), sub in zip(plans, configs, strict=True):
            print(f"update: {name}", file=sys.stderr)
            outcome = run_sweep(sub, overrides=[*args, f"sweep.name={name}", *extra])
            errors += outcome.n_error
            runs[name] = store.run_dir(sub.results_dir, name, run_id)
    finally:
        if started:
            import ray

            ray.shutdown()
    base = load(runs["baseline"])
    margin, confidence = float(up["margin"]), float(up["confidence"])
    verdicts = [_gate_row(name, extra, expected, base, load(runs[name]), margin, confidence)
                for name, extra, expected in plans[1:]]  # fmt: skip
    table = _stream_rows(runs["baseline"], stream / "batches", float(up["alpha"]))
    path = report(root, verdicts, table, shifts, margin, confidence)
    print(path.read_text())
    print(f"report: {path}")
    return 0 if errors == 0 else 1
