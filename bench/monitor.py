"""`python -m bench monitor BASELINE_RUN BATCH_DIR`: is each new batch beyond the baseline's
seed-noise band, with a false-alarm rate over the whole sequence that is stated?

BASELINE_RUN is a run that stored its models (`save_models=true`) and trained on a table
(`dataset=table`): its seed models are the noise band. BATCH_DIR holds the new batches, one table
file each (`*.csv`, `*.parquet`), taken in the order of their names, each with the training
table's feature columns, and with or without its label column:

- a labelled batch is judged by the seed models' error on it;
- an unlabelled one (or every one, with `--unlabelled`) by how often the seed models disagree on it.

Each statistic is compared with its value on the baseline's own held-out test rows, and each batch
is tested at a level chosen so that the chance of any false alarm over the sequence is at most
`--alpha` (bench.analysis.monitor has the statistics, the test and the rules). The models predict
every batch through their stored preprocessing (bench.score), all batches in one pass.

Output: the rule and the rate it guarantees, a table (batch, rows, labels, statistic, value,
the seed models' band on the batch, reference, the value above which it alarms, p-value, alarm),
the first alarmed batch; `--markdown FILE` writes the same as markdown.

Exit status: 0 no alarm, 1 an alarm, 2 bad input (one line `bench monitor: error: ...`, before any
model runs: a baseline without stored models or test predictions, a missing folder, a folder
without batch files, a batch without the training columns, `--alpha` outside (0, 1)).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bench import modelstore
from bench.analysis import monitor as stats
from bench.cli_common import (
    RefusingParser,
    add_trust_option,
    check_writable,
    markdown_table,
    write_atomic,
)

EXIT_OK, EXIT_ALARM, EXIT_INPUT = 0, 1, 2
BATCH_SUFFIXES = (".csv", ".parquet")
COLUMNS = ("batch", "rows", "labels", "statistic", "value", "seed band", "reference",
           "alarm above", "p-value", "alarm")  # fmt: skip


class MonitorError(ValueError):
    """Bad input to `bench monitor`: one line, exit 2, before any model runs."""


@dataclass(frozen=True)
class Baseline:
    run_dir: Path
    rows: pd.DataFrame  # one per distinct stored model
    reference: stats.Reference
    source: str  # the training table, for the header


def load_baseline(run_dir: str | Path) -> Baseline:
    """The baseline's distinct seed models (rows that stored the same model file count once) and
    their held-out test rows."""
    from bench.score import ScoreError, stored_rows

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MonitorError(f"BASELINE_RUN {run_dir}: no such folder")
    try:
        rows = stored_rows(run_dir)
        info = modelstore.read_dataset_info(run_dir)
    except (ScoreError, modelstore.ModelFileError, FileNotFoundError, pa.ArrowException) as exc:
        raise MonitorError(f"BASELINE_RUN {' '.join(str(exc).split())}") from None
    if info.get("name") != "table":
        raise MonitorError(
            f"BASELINE_RUN {run_dir}: trained on dataset={info.get('name')}; batch files need a "
            "baseline trained on a table (dataset=table dataset.path=FILE dataset.target=COLUMN)"
        )
    lists = ("test_index", "y_true", "y_pred")
    if any(c not in rows or rows[c].isna().any() for c in lists):
        raise MonitorError(
            f"BASELINE_RUN {run_dir}: no test predictions to compare with (run it with "
            "predictions=full or compact)"
        )
    rows = rows.drop_duplicates(["model_file", "preprocess_file"]).reset_index(drop=True)
    reference = stats.Reference.from_test_sets(
        *(list(rows[c].map(np.asarray)) for c in lists), n_classes=int(info["n_classes"])
    )
    table = (info.get("config") or {}).get("path")
    return Baseline(run_dir, rows, reference, Path(str(table)).name)


def batch_files(batch_dir: str | Path) -> list[Path]:
    folder = Path(batch_dir)
    if not folder.is_dir():
        raise MonitorError(f"BATCH_DIR {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in BATCH_SUFFIXES)
    if not files:
        raise MonitorError(f"BATCH_DIR {folder}: no batch files (*.csv or *.parquet)")
    return files


def read_batches(baseline: Baseline, files: Sequence[Path], unlabelled: bool) -> list:
    """Each file as bench.score.NewData: the training columns in order, labels as class indices
    (None: unlabelled). A file that lacks a column or has no rows is refused by name."""
    from bench.score import ScoreError, new_data

    batches = []
    for path in files:
        try:
            data = new_data(baseline.run_dir, str(path), [], unlabelled)
        except ScoreError as exc:
            raise MonitorError(f"batch {str(exc).removeprefix('--dataset: ')}") from None
        if len(data.X) == 0:
            raise MonitorError(f"batch {path}: no rows")
        batches.append(data)
    if any(b.y is None for b in batches) and baseline.reference.disagreement.n_rows == 0:
        raise MonitorError(
            f"BASELINE_RUN {baseline.run_dir}: no test row held out by two distinct models; "
            "unlabelled batches are judged by how often seed models disagree, against how often "
            "they do on such rows (a run with sweep.varied=[all] and seeds.n=8 has them)"
        )
    return batches


@dataclass(frozen=True)
class Outcome:
    table: pd.DataFrame  # one row per batch, COLUMNS (numbers as numbers)
    header: list[str]
    rule: str
    first_alarm: str | None

    @property
    def exit_code(self) -> int:
        return EXIT_ALARM if self.first_alarm else EXIT_OK


def _band(rate: stats.Rate) -> str:
    low, high = rate.band
    return f"{low:.3f}-{high:.3f}" if np.isfinite(low) else "n/a"


def monitor(
    baseline_run: str | Path,
    batch_dir: str | Path,
    alpha: float = 0.05,
    unlabelled: bool = False,
    rule: str = "bonferroni",
    progress: bool = False,
    trust: Sequence[str] = (),
) -> Outcome:
    """Test every batch of `batch_dir` against `baseline_run` (module docstring)."""
    from bench.score import predict

    if not 0 < alpha < 1:
        raise MonitorError(f"--alpha {alpha:g}: expected a number strictly between 0 and 1")
    baseline = load_baseline(baseline_run)
    files = batch_files(batch_dir)
    batches = read_batches(baseline, files, unlabelled)
    ends = np.cumsum([len(b.X) for b in batches])
    X = np.vstack([b.X for b in batches])
    try:
        scores = predict(baseline.run_dir, baseline.rows, X, progress, trust)
    except modelstore.ModelFileError as exc:
        raise MonitorError(f"BASELINE_RUN {exc}") from None
    classes = np.vstack([np.argmax(s, axis=1) for s in scores])  # (models, all batch rows)
    ref = baseline.reference
    levels = stats.levels(len(files), alpha, rule)
    rows, first = [], None
    for path, data, end, level in zip(files, batches, ends, levels, strict=True):
        y_pred = classes[:, end - len(data.X) : end]
        labelled = data.y is not None
        if labelled:
            batch, reference = stats.batch_errors(ref, y_pred, data.y), ref.errors
        else:
            batch, reference = stats.batch_disagreement(ref, y_pred), ref.disagreement
        test = stats.exceeds(batch, reference, level)
        alarm = test.p_value <= level
        if alarm and first is None:
            first = f"{path.name} ({'error' if labelled else 'disagreement'} "
            first += f"{batch.rate.value:.3f} > {test.threshold:.3f}, p = {test.p_value:.2g})"
        rows.append([path.name, len(data.X), "yes" if labelled else "no",
                     "error" if labelled else "disagreement", batch.rate.value, _band(batch.rate),
                     reference.value, test.threshold, test.p_value, "ALARM" if alarm else "no"])  # fmt: skip
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    models = ", ".join(sorted(set(baseline.rows["library"] + " " + baseline.rows["model"])))
    header = [
        f"baseline: {baseline.run_dir} ({ref.n_models} distinct seed models: {models}; "
        f"trained on {baseline.source})",
        f"batches: {len(files)} files in {batch_dir}",
    ]
    if (table["labels"] == "yes").any():
        e = ref.errors
        header.append(f"reference error {e.value:.3f} on {e.n_rows} held-out test rows "
                      f"(seed band {_band(e)} over {ref.n_models} models)")  # fmt: skip
    if (table["labels"] == "no").any():
        d = ref.disagreement
        header.append(
            f"reference disagreement {d.value:.3f} on {d.n_rows} rows held out by two or more "
            f"models (seed band {_band(d)} over {len(d.unit_rates)} pairs)"
        )
    return Outcome(table, header, stats.rule_text(len(files), alpha, rule), first)


def _cells(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for c in ("value", "reference"):
        out[c] = out[c].map(lambda v: f"{v:.3f}")
    out["alarm above"] = out["alarm above"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "never")
    out["p-value"] = out["p-value"].map(lambda v: f"{v:.2g}")
    return out


def _conclusion(outcome: Outcome) -> str:
    return f"first alarm: {outcome.first_alarm}" if outcome.first_alarm else "no alarm"


def render_text(outcome: Outcome) -> str:
    lines = [*outcome.header, f"alarm rule: {outcome.rule}", ""]
    lines += [_cells(outcome.table).to_string(index=False), "", _conclusion(outcome)]
    return "\n".join(lines)


def render_markdown(outcome: Outcome) -> str:
    cells = _cells(outcome.table)
    lines = ["# bench monitor", "", *(f"- {h}" for h in outcome.header)]
    lines += [f"- alarm rule: {outcome.rule}", ""]
    lines += [markdown_table(cells.columns, cells.itertuples(index=False))]
    lines += ["", f"**{_conclusion(outcome)}**", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = RefusingParser(
        refusal=MonitorError,
        prog="python -m bench monitor",
        description="Test each new batch against a baseline run's seed-noise band: error on "
        "labelled batches, disagreement between seed models on unlabelled ones; the chance of "
        "any false alarm over the sequence is at most --alpha.",
        epilog="exit status: 0 no alarm, 1 an alarm, 2 bad input",
    )
    parser.add_argument("baseline", metavar="BASELINE_RUN",
                        help="results/<sweep>/<run_id> made with save_models=true on dataset=table")  # fmt: skip
    parser.add_argument("batch_dir", metavar="BATCH_DIR",
                        help="a folder of *.csv / *.parquet batches, taken in name order")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=0.05,
                        help="false-alarm rate over the whole sequence (default 0.05)")  # fmt: skip
    parser.add_argument("--rule", choices=stats.RULES, default="bonferroni",
                        help="bonferroni: alpha/N per batch; spending: alpha/(k(k+1)) for "
                        "batch k, for a folder that keeps growing")  # fmt: skip
    parser.add_argument("--unlabelled", action="store_true",
                        help="judge every batch by disagreement, even one with labels")  # fmt: skip
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as markdown")
    add_trust_option(parser)
    parser.add_argument("--no-progress", action="store_true")
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.markdown:
            check_writable(args.markdown, "--markdown")
        outcome = monitor(args.baseline, args.batch_dir, args.alpha, args.unlabelled,
                          args.rule, not args.no_progress, args.trust)  # fmt: skip
    except (MonitorError, OSError) as exc:
        print(f"bench monitor: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    print(render_text(outcome))
    if args.markdown:
        write_atomic(args.markdown, render_markdown(outcome))
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
