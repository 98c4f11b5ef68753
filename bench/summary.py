"""What `python -m bench` prints when a sweep ends: tables computed from the run's rows.

The accuracy table per library and varied source always; the cross-library gap and churn per mode
when a run holds several modes or models; determinism, thread, device and CPU kernel level tables
when the sweep varies those. The full tables come from `bench.analysis`; these are their
terminal-sized views.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def summary_keys(df: pd.DataFrame) -> list[str]:
    """library x varied source, with model and mode in front when the run holds several."""
    return [c for c in ("model", "mode") if c in df and df[c].nunique() > 1] + ["library", "varied"]


def summary_table(df: pd.DataFrame):
    """n, mean, std, min, max of accuracy per `summary_keys` group."""
    ok = df[df["status"] == "ok"]
    table = (
        ok.groupby(summary_keys(df), sort=True)["accuracy"]
        .agg(["count", "mean", "std", "min", "max"])
        .rename(columns={"count": "n"})
    )
    errors = df[df["status"] == "error"].groupby("library").size().rename("errors")
    return table, errors


def library_gap_table(df):
    """Per model and mode: the cross-library gap in mean accuracy (max - min over libraries) and
    the mean pairwise prediction churn (share of test rows two libraries label differently, over
    trials with the same seeds and repeat), so `defaults` vs `aligned` vs `shared` shows how much
    of "library variance" is default values, RNG and kernels."""
    import itertools

    import numpy as np
    import pandas as pd

    ok = df[df["status"] == "ok"]
    if "mode" not in ok.columns:
        ok = ok.assign(mode="aligned")
    match = ["seed_split", "seed_order", "seed_init", "repeat", "varied"]
    rows = []
    for (model, mode), group in ok.groupby(["model", "mode"], sort=True):
        means = group.groupby("library")["accuracy"].mean()
        preds = {lib: g.set_index(match)["y_pred"] for lib, g in group.groupby("library")}
        churns = []
        for a, b in itertools.combinations(sorted(preds), 2):
            for key in preds[a].index.intersection(preds[b].index):
                pa, pb = np.asarray(preds[a][key]), np.asarray(preds[b][key])
                if pa.shape == pb.shape:
                    churns.append(float(np.mean(pa != pb)))
        rows.append(
            {
                "model": model,
                "mode": mode,
                "libraries": len(means),
                "gap": float(means.max() - means.min()) if len(means) else float("nan"),
                "churn": float(np.mean(churns)) if churns else float("nan"),
                "pairs": len(churns),
            }
        )
    return pd.DataFrame(rows, columns=["model", "mode", "libraries", "gap", "churn", "pairs"])


def print_library_gaps(df: pd.DataFrame, console) -> None:
    """The libraries sweep's table; printed only when a run holds several modes or models."""
    from rich.table import Table

    ok = df[df["status"] == "ok"]  # a model whose every trial failed has nothing to compare
    if "mode" not in ok.columns or (ok["mode"].nunique() < 2 and ok["model"].nunique() < 2):
        return
    gaps = library_gap_table(df)
    view = Table(title="across libraries: gap in mean accuracy and mean pairwise churn, per mode")
    for column in ("model", "mode", "libraries", "gap", "churn", "pairs"):
        view.add_column(column, justify="left" if column in ("model", "mode") else "right")
    for r in gaps.itertuples():
        view.add_row(
            r.model, r.mode, str(r.libraries), f"{r.gap:.4f}", f"{r.churn:.4f}", str(r.pairs)
        )
    console.print(view)


def scan_accuracy(path: Path) -> tuple[pd.DataFrame, pd.Series, dict[str, Any]]:
    """`summary_table` streamed over the run's parts a batch at a time (count, mean and M2 merged
    with Chan's formulas, min, max), with what decides the other tables: the driver's memory stays
    flat however many trials the run holds. Returns the table, errors per library, and `seen`
    (distinct values of the axis columns among ok rows, whether any ok row is a `varied=none`
    repeat or a dry run)."""
    from bench.store import scan_parts

    keys = ["model", "mode", "library", "varied"]
    stats: dict[tuple, list[float]] = {}  # key -> [n, mean, M2, min, max]
    errors: dict[str, int] = {}
    axes = ("model", "mode", "deterministic", "threads", "device", "cpu_isa")
    seen: dict[str, Any] = {c: set() for c in axes} | {"none": False, "dry_run": False}
    for batch in scan_parts(Path(path), list(BASIC_COLUMNS)):
        df = batch.to_pandas()
        for library, n in df.loc[df["status"] == "error", "library"].value_counts().items():
            errors[library] = errors.get(library, 0) + int(n)
        ok = df[df["status"] == "ok"]
        for c in axes:
            seen[c].update(ok[c].dropna().unique().tolist())
        seen["none"] |= bool(ok["varied"].eq("none").any())
        seen["dry_run"] |= bool(ok["dry_run"].eq(True).any())
        agg = ok.groupby(keys, dropna=False)["accuracy"].agg(["count", "mean", "var", "min", "max"])
        for key, (n, mean, var, lo, hi) in agg.iterrows():
            if not n:
                continue
            part = [n, mean, (var if n > 1 else 0.0) * (n - 1), lo, hi]
            stats[key] = _merge(stats[key], part) if key in stats else part
    shown = [c for c in ("model", "mode") if len(seen[c]) > 1] + ["library", "varied"]
    merged: dict[tuple, list[float]] = {}
    for key, part in stats.items():
        short = tuple(v for k, v in zip(keys, key, strict=True) if k in shown)
        merged[short] = _merge(merged[short], part) if short in merged else part
    rows = [
        {**dict(zip(shown, key, strict=True)), "n": n, "mean": mean,
         "std": (m2 / (n - 1)) ** 0.5 if n > 1 else float("nan"), "min": lo, "max": hi}
        for key, (n, mean, m2, lo, hi) in sorted(merged.items())
    ]  # fmt: skip
    table = pd.DataFrame(rows, columns=[*shown, "n", "mean", "std", "min", "max"]).set_index(shown)
    return table, pd.Series(errors, dtype="int64"), seen


def _merge(a: list[float], b: list[float]) -> list[float]:
    """Chan et al.'s pairwise update of (n, mean, M2), and min and max."""
    n = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * b[0] / n
    m2 = a[2] + b[2] + delta * delta * a[0] * b[0] / n
    return [n, mean, m2, min(a[3], b[3]), max(a[4], b[4])]


def print_summary(path: Path, outcome) -> None:
    """Everything printed at the end of a sweep, from the rows as they were written: the accuracy
    table streamed over the parts; the other tables, which compare models, modes or levels of an
    axis, from the rows they need, read only for the runs that print them."""
    from rich.console import Console
    from rich.table import Table

    from bench.analysis import load
    from bench.rows import SCALAR_COLUMNS

    console = Console(stderr=False)
    table, errors, seen = scan_accuracy(path)
    keys = list(table.index.names)
    view = Table(
        title=f"accuracy by {', '.join(keys)} ({outcome.n_ok} ok, {outcome.n_error} errors"
        + (f", {outcome.n_skipped} skipped)" if outcome.n_skipped else ")")
    )
    for column in (*keys, "n", "mean", "std", "min", "max"):
        view.add_column(column, justify="left" if column in keys else "right")
    for index, r in table.iterrows():
        labels = index if isinstance(index, tuple) else (index,)
        view.add_row(
            *map(str, labels),
            str(int(r["n"])),
            *(f"{r[c]:.4f}" for c in ("mean", "std", "min", "max")),
        )
    console.print(view)
    if any(len(seen[c]) > 1 for c in ("model", "mode", "deterministic", "threads", "device",
                                      "cpu_isa")):  # fmt: skip
        df = load(path)  # churn and weight differences need the per-row arrays
    elif seen["none"]:
        df = load(path, columns=SCALAR_COLUMNS)  # fixed-seed repeats: whole setups, hashes
    else:
        df = None
    if df is not None:
        print_library_gaps(df, console)
        print_axis_summaries(df, console)
    for library, n in errors.items():
        console.print(f"[red]{library}: {n} trial(s) failed[/red]; see the 'error' column")
    for line in getattr(outcome, "left_out", ()):
        console.print(f"[yellow]{line}[/yellow]")
    from bench.analysis.ensemble import run_summary

    try:  # ensemble.size=k (bench.analysis.ensemble); the sweep's own outcome stands regardless
        lines = run_summary(path)
    except Exception as exc:  # noqa: BLE001
        lines = [f"ensemble: not computed ({type(exc).__name__}: {exc})"]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    if seen["dry_run"]:
        console.print("[yellow]dry run: these rows were made without training[/yellow]")
    console.print(f"results: {path}")
    console.print(f'read with: pandas.read_parquet("{path}")')


# What the accuracy table needs, and what says whether more is needed: a seed sweep of a million
# trials is summarised from these alone (its strings, hashes and arrays would be gigabytes).
BASIC_COLUMNS = ("status", "library", "varied", "model", "mode", "accuracy", "deterministic",
                 "threads", "device", "cpu_isa", "dry_run")  # fmt: skip


def _present_by(df, *columns: str) -> list[str]:
    """Group by library, plus the other columns only where they take several values."""
    return [c for c in columns if c == "library" or df[c].nunique() > 1]


# The level every other one is compared with, where a column has a natural one.
REFERENCE = {"cpu_isa": "native"}


def axis_summaries(df) -> dict[str, Any]:
    """The tables a determinism, threads or hardware sweep is run for, where its data has them."""
    from bench import analysis

    ok = df[df["status"] == "ok"]
    out: dict[str, Any] = {}
    if ok["deterministic"].nunique() > 1 or ok["varied"].eq("none").any():
        by = _present_by(ok, "library", "device", "deterministic", "threads", "cpu_isa")
        out["fixed-seed repeats: distinct hashes per setup"] = analysis.determinism_summary(
            ok, by=by
        )
    for column, by in (
        ("deterministic", ("library", "device")),
        ("threads", ("library", "device")),
        ("device", ("library", "deterministic")),
        ("cpu_isa", ("library", "device")),
    ):
        if column not in ok:
            continue
        levels = sorted(ok[column].dropna().unique(), key=lambda v: (v != REFERENCE.get(column), v))
        for b in levels[1:]:  # the first level (cpu_isa: native) against each other one
            a = levels[0]
            out[f"{column}: {a} vs {b}, same seeds"] = analysis.matched_churn(
                ok, column, a, b, by=_present_by(ok, *by)
            )
    if ok["deterministic"].nunique() > 1:
        out["fit time, deterministic / non-deterministic"] = analysis.determinism_cost(
            ok, by=_present_by(ok, "library", "device", "threads", "cpu_isa")
        )
    return out


def _frame_table(title: str, frame):
    from rich.table import Table

    view = Table(title=title)
    for column in frame.columns:
        view.add_column(str(column), justify="left" if frame[column].dtype == object else "right")
    for row in frame.itertuples(index=False):
        view.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return view


# Short headings for the columns worth a terminal line; the full tables come from bench.analysis.
_SHORT = {
    "library": "library", "device": "device", "deterministic": "det", "threads": "threads",
    "cpu_isa": "level",
    "n_runs": "runs", "max_distinct_weights": "weight hashes",
    "max_distinct_predictions": "prediction hashes", "max_metric_range": "acc range",
    "n_pairs": "pairs", "churn_mean": "churn mean", "churn_max": "churn max",
    "same_weights_share": "same weights", "max_weight_diff": "max |Δw|",
    "diff_mean": "acc a-b",
    "median_deterministic": "det s", "median_nondeterministic": "non-det s",
    "ratio_median": "ratio of medians", "ratio_median_ci_low": "ratio of medians ci low",
    "ratio_median_ci_high": "ratio of medians ci high",
}  # fmt: skip


def print_axis_summaries(df: pd.DataFrame, console) -> None:
    for title, frame in axis_summaries(df).items():
        if len(frame):
            kept = [c for c in frame.columns if c in _SHORT]
            if "max_weight_diff" in frame and frame["max_weight_diff"].isna().all():
                kept.remove("max_weight_diff")  # the run kept no weights (keep_weights=false)
            console.print(_frame_table(title, frame[kept].rename(columns=_SHORT)))
