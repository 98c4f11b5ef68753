"""`python -m bench gate BASELINE_RUN CANDIDATE_RUN`: does the candidate regress, beyond seed noise?

For a CI pipeline that retrains a deployed model: two results folders (the deployed setup and
the update: a new config, a library upgrade, another data snapshot, a code change), each several
seeds of one setup. The statistics and the verdict rule are `bench.analysis.gate` (labelled) and
`bench.analysis.gate_churn` (label-free); this module reads the runs, refuses what cannot be
compared, and prints the answer (`bench.gate_format`). docs/gate.md is the user's guide.

Exit codes: 0 pass (`better` or `not worse`), 1 fail (`worse`), 3 `inconclusive` (more seeds
would decide), 2 bad input: one line on stderr, before any statistics are computed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bench.analysis.common import SEED_COLUMNS, SETUP_COLUMNS
from bench.analysis.gate import BAD_INPUT, CONFIDENCE, MARGIN, METRICS
from bench.cli_common import RefusingParser, check_writable, write_atomic

PROG = "python -m bench gate"
# Metrics the gate compares: columns where higher is better (log_loss is not: left out).
GATE_METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc")
# A run must hold one setup: these columns take one value in the rows the gate compares.
ONE_SETUP = tuple(c for c in SETUP_COLUMNS if c not in (*SEED_COLUMNS, "seed_cv"))
COLUMNS = (
    "trial_key", "run_id", "status", "varied", "repeat", "seed_sources", "dataset_sha256",
    "n_test", "test_index", "y_true", "y_pred", *ONE_SETUP, *SEED_COLUMNS, *GATE_METRICS,
)  # fmt: skip


class BadInput(Exception):
    """Input the gate cannot compare: one line, exit 2."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value == value or value < 0:  # NaN or negative
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _confidence(text: str) -> float:
    value = _fraction(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), e.g. 0.95; got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = RefusingParser(
        refusal=BadInput,
        prog=PROG,
        description="Compare a candidate run with its baseline over their seeds; exit 0 pass "
        "(better / not worse), 1 worse, 3 inconclusive, 2 bad input (docs/gate.md).",
    )
    p.add_argument("baseline", metavar="BASELINE_RUN", help="results/<sweep>/<run_id>")
    p.add_argument("candidate", metavar="CANDIDATE_RUN", help="results/<sweep>/<run_id>")
    p.add_argument(
        "--metric",
        action="append",
        choices=GATE_METRICS,
        help=f"metric to compare, repeatable (default: {' and '.join(METRICS)})",
    )
    p.add_argument(
        "--margin",
        type=_fraction,
        default=MARGIN,
        help=f"the drop tolerated, in metric units (default {MARGIN}: one point of accuracy)",
    )
    p.add_argument(
        "--confidence",
        type=_confidence,
        default=CONFIDENCE,
        help=f"interval level (default {CONFIDENCE}); a no-op update is called worse with "
        "probability at most (1 - confidence) / 2",
    )
    labels = p.add_mutually_exclusive_group()
    labels.add_argument(
        "--labelled", action="store_true", help="compare metrics (refused on runs without labels)"
    )
    labels.add_argument(
        "--unlabelled",
        action="store_true",
        help="compare predictions only (churn against the seed-noise band), labels or not",
    )
    p.add_argument(
        "--varied",
        metavar="SOURCE",
        help="rows of this varied seed source (default: `all` where a run has it)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="keep rows with this value in both runs, repeatable (e.g. library=torch)",
    )
    p.add_argument("--unpaired", action="store_true", help="never pair trials by their seeds")
    p.add_argument(
        "--format", choices=("text", "markdown", "json"), default="text", help="stdout format"
    )
    p.add_argument(
        "--markdown", metavar="FILE", help="also write a pull-request comment (markdown) here"
    )
    return p


@dataclass(frozen=True)
class Run:
    """One side of the comparison: its folder, its rows (ok, selected) and what was dropped."""

    path: Path
    rows: pd.DataFrame
    varied: str | None
    n_failed: int  # rows whose status is not ok


def read_run(path: str, what: str) -> pd.DataFrame:
    """A run's rows, the columns the gate uses (not the scores and probabilities)."""
    from bench.analysis.common import load
    from bench.store import results_path

    try:
        folder = results_path(path)
    except FileNotFoundError as exc:
        raise BadInput(f"{what}: {exc}") from None
    return load(folder, columns=COLUMNS)


def _where(df: pd.DataFrame, conditions: Sequence[str], what: str) -> pd.DataFrame:
    for condition in conditions:
        column, sep, value = condition.partition("=")
        if not sep or not column:
            raise BadInput(f"--where: expected COLUMN=VALUE, got {condition!r}")
        if column not in df.columns:
            raise BadInput(f"--where: no column {column!r} in the {what} run's rows")
        df = df[df[column].astype(str).str.lower() == value.lower()]
    return df


def _varied(df: pd.DataFrame, asked: str | None, what: str) -> tuple[pd.DataFrame, str | None]:
    """The rows of one varied seed source: the one asked for, else `all` (every seed changes,
    as in a retrain), else the run's only one. Fixed-seed repeats (`none`) have no seed noise."""
    if "varied" not in df or df["varied"].isna().all():
        return df, None  # rows that do not say (bench score's): all of them
    values = sorted(df["varied"].dropna().unique())
    if asked is not None:
        if asked not in values:
            raise BadInput(f"--varied {asked}: the {what} run varies {', '.join(values)}")
        return df[df["varied"] == asked], asked
    if "all" in values:
        return df[df["varied"] == "all"], "all"
    seeded = [v for v in values if v != "none"]
    if not seeded:
        raise BadInput(f"the {what} run has only fixed-seed repeats (varied=none): no seed noise")
    if len(seeded) > 1:
        raise BadInput(
            f"the {what} run varies {', '.join(seeded)} separately; choose one with --varied"
        )
    return df[df["varied"] == seeded[0]], seeded[0]


def select(df: pd.DataFrame, args: argparse.Namespace, what: str, path: str) -> Run:
    """The rows of `df` the gate compares, or BadInput naming what is wrong with them."""
    df = _where(df, args.where, what)
    ok = df[df["status"] == "ok"]
    if ok.empty:
        raise BadInput(f"the {what} run {path} has no finished (ok) trials to compare")
    ok, varied = _varied(ok, args.varied, what)
    several = {c: ok[c].unique() for c in ONE_SETUP if c in ok and ok[c].nunique() > 1}
    if several:
        shown = "; ".join(f"{c}: {', '.join(map(str, v[:3]))}" for c, v in several.items())
        raise BadInput(
            f"the {what} run holds several setups ({shown}); pick one with --where COLUMN=VALUE"
        )
    if not ok["trial_key"].is_unique:
        raise BadInput(f"the {what} run holds some trials twice (repeated trial_key)")
    if ok["y_pred"].isna().any():
        raise BadInput(
            f"the {what} run {path} kept no per-row predictions (predictions=none); the gate "
            "needs them (per-class recall, churn): run it with predictions=compact or full"
        )
    return Run(Path(path), ok, varied, int((df["status"] != "ok").sum()))


def _labelled(run: Run) -> bool:
    """Whether every trial of the run kept its test labels (`bench score` of an unlabelled file
    writes none)."""
    return bool(run.rows["y_true"].notna().all())


def check_pair(base: Run, cand: Run, metrics: Sequence[str], args: argparse.Namespace) -> bool:
    """Whether to compare labelled (else label-free), or BadInput when the two runs cannot be
    compared at all."""
    datasets = [r.rows["dataset"].iloc[0] for r in (base, cand)]
    if datasets[0] != datasets[1]:
        raise BadInput(
            f"the runs are of different datasets (baseline {datasets[0]}, candidate "
            f"{datasets[1]}): not the same task"
        )
    if base.varied != cand.varied:
        raise BadInput(
            f"the runs vary different seeds (baseline {base.varied}, candidate {cand.varied}); "
            "choose one with --varied"
        )
    labelled = [_labelled(r) for r in (base, cand)]
    if args.labelled and not all(labelled):
        what = "baseline" if not labelled[0] else "candidate"
        raise BadInput(
            f"--labelled: the {what} run has no labels (y_true null: predictions of unlabelled "
            "inputs); drop --labelled to compare its predictions label-free"
        )
    if all(labelled) and not args.unlabelled:
        for run, what in ((base, "baseline"), (cand, "candidate")):
            empty = [m for m in metrics if run.rows[m].isna().all()]
            if empty:
                raise BadInput(f"--metric {empty[0]}: no values in the {what} run's rows")
    if args.unlabelled or not all(labelled):
        digests = [r.rows["dataset_sha256"].iloc[0] for r in (base, cand)]
        same_digest = (pd.isna(digests[0]) and pd.isna(digests[1])) or digests[0] == digests[1]
        if not same_digest:
            raise BadInput(
                "label-free comparison needs predictions of the same input file: the runs' "
                f"dataset digests differ ({str(digests[0])[:12]} vs {str(digests[1])[:12]})"
            )
        return False
    return True


def compare(args: argparse.Namespace):
    """Read, check and compare the two runs: (result, baseline, candidate)."""
    from bench.analysis.gate import gate
    from bench.analysis.gate_churn import churn_gate
    from bench.analysis.pairing import Pairing, pair_trials

    metrics = list(dict.fromkeys(args.metric or METRICS))
    frames = [
        read_run(p, w) for p, w in ((args.baseline, "baseline"), (args.candidate, "candidate"))
    ]
    base = select(frames[0], args, "baseline", args.baseline)
    cand = select(frames[1], args, "candidate", args.candidate)
    labelled = check_pair(base, cand, metrics, args)
    if labelled:
        pairing = "unpaired" if args.unpaired else "auto"
        result = gate(
            base.rows, cand.rows, metrics, margin=args.margin, confidence=args.confidence,
            pairing=pairing,
        )  # fmt: skip
    else:
        how = Pairing(False, "unpaired as asked")
        if not args.unpaired:
            how = pair_trials(base.rows, cand.rows, metric=metrics[0])
        try:
            result = churn_gate(base.rows, cand.rows, how, confidence=args.confidence)
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    return result, base, cand


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        if args.markdown:  # before any work: a verdict is never printed and then refused
            check_writable(args.markdown, "--markdown")
        result, base, cand = compare(args)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (BadInput, OSError) as exc:
        print(f"bench gate: error: {exc}", file=sys.stderr)
        return BAD_INPUT
    from bench import gate_format

    shown = {"text": gate_format.text, "markdown": gate_format.markdown, "json": gate_format.json}
    print(shown[args.format](result, base, cand), end="")
    if args.markdown:
        write_atomic(args.markdown, gate_format.markdown(result, base, cand))
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
