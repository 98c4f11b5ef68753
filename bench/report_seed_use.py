"""Report sections on using several seeds: seed ensembles, and the cost of picking one seed.

Kept out of bench/report.py (which lists them in its builders) so that the sections, their
tables and their plots live beside each other. Each function takes the report's `Context` and
returns a `Section`, or None when the run lacks the data: ensembles need setups of at least 4
members that predicted the same test rows with stored probabilities (two ensembles of 2 for a
spread); seed picking needs setups of at least `bench.analysis.seed_picking.MIN_SEEDS` seeds
with stored test predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bench.analysis import ensemble as ens
from bench.analysis.plots import CYCLE
from bench.analysis.seed_picking import COLUMNS as PICK_COLUMNS
from bench.analysis.seed_picking import INTERVAL_SHARE, seed_picking, sentence

if TYPE_CHECKING:
    from bench.report import Context, Image, Section

MAX_LINES = 8  # setups drawn per plot; the tables have all


def guarded(build: Callable[..., Section | None], *args: Any) -> Section | None:
    """`build(*args)`, or on an exception a section that says in one line what failed: a
    section of these must never sink the whole report."""
    from bench.report import Section

    try:
        return build(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the section, the rest goes on
        title = {ensemble_section: "Seed ensembles: averaging seeds",
                 seed_picking_section: "The cost of picking a seed"}.get(build, build.__name__)  # fmt: skip
        s = Section(title)
        s.text(f"This section failed: {type(exc).__name__}: {' '.join(str(exc).split())}")
        return s


def _labels(table: pd.DataFrame, columns: list[str]) -> pd.Series:
    return table[columns].astype(str).agg(" / ".join, axis=1)


def ensemble_section(ctx: Context, run_dir: str | Path | None = None) -> Section | None:
    """Seed ensembles of sizes 2, 5, 10 and the run's own `ensemble.size`, where members allow."""
    from bench.report import Section

    k = ens.configured_size(run_dir)
    sizes = sorted({*ens.DEFAULT_SIZES, *([k] if k else [])})
    try:
        table = ens.ensembles(ctx.ok, sizes=sizes, metric=ctx.metric)
    except ValueError:  # a metric ensembles cannot compute from probabilities
        return None
    usable = table[(table["k"] >= 2) & (table["n_ensembles"] >= 2)]
    if usable.empty:
        return None
    labels = [c for c in table.columns if c not in ens.COLUMNS]
    s = Section("Seed ensembles: averaging seeds")
    s.text(
        f"Disjoint ensembles of k members of one setup (the same test rows, seeds varied), "
        f"soft voting (mean class probabilities), from the stored predictions: "
        f"`ensemble_sd` against `member_sd` of {ctx.metric} (`sd_ratio`; 1/sqrt(k) if the "
        "members erred independently), churn between ensembles against between members, and "
        f"`stops_paying`: the first k beyond which no larger size lowers the sd by "
        f"{ens.MIN_GAIN:.0%} of the members' sd or more (against the best larger size, not only "
        f"the next; sizes with {ens.MIN_ENSEMBLES}+ ensembles), even at the top of the gain's "
        f"uncertainty (`gain` +- {ens.Z} `gain_se`, a jackknife over members); a gain whose band "
        "straddles the threshold leaves it undecided (NaN, see `note`). Sds are averaged over "
        f"{ens.PARTITIONS} random disjoint partitions of the members; their intervals are "
        "approximate chi-square 95% intervals, wide where few ensembles fit."
        + (f" This run asked for `ensemble.size={k}`." if k else "")
    )
    cols = [*labels, "k", "n_members", "n_ensembles", "member_mean", "ensemble_mean",
            "member_sd", "ensemble_sd", "ensemble_sd_ci_low", "ensemble_sd_ci_high", "sd_ratio",
            "member_churn", "ensemble_churn", "gain", "gain_se", "stops_paying"]  # fmt: skip
    s.table(table[cols])
    for note in dict.fromkeys(n for n in table["note"] if n):
        s.text(f"- {note}")
    for why in table.attrs.get("left_out", []):
        s.text(f"- left out: {why}")
    s.blocks.append(ctx.save(ensemble_figure(table, labels, ctx.metric), "ensemble_sd.png",
                             "ensemble standard deviation against k"))  # fmt: skip
    return s


def ensemble_figure(table: pd.DataFrame, labels: list[str], metric: str) -> Figure:
    """Sd of the metric and churn against k, one line per setup, 1/sqrt(k) for reference."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    sd_ax, churn_ax = fig.subplots(1, 2)
    names = _labels(table, labels)
    for i, name in enumerate(list(dict.fromkeys(names))[:MAX_LINES]):
        sub = table[names == name]
        color = CYCLE[i % len(CYCLE)]
        sd_ax.plot(sub["k"], sub["ensemble_sd"], "o-", color=color, label=name)
        lows = (sub["ensemble_sd"] - sub["ensemble_sd_ci_low"]).clip(lower=0)
        highs = (sub["ensemble_sd_ci_high"] - sub["ensemble_sd"]).clip(lower=0)
        sd_ax.errorbar(sub["k"], sub["ensemble_sd"], yerr=[lows.fillna(0), highs.fillna(0)],
                       fmt="none", color=color, alpha=0.4, capsize=3)  # fmt: skip
        member_sd = float(sub["member_sd"].iloc[0])
        grid = np.linspace(1, sub["k"].max(), 50)
        sd_ax.plot(grid, member_sd / np.sqrt(grid), ":", color=color, alpha=0.7)
        churn_ax.plot(sub["k"], sub["ensemble_churn"], "o-", color=color)
    sd_ax.set(xlabel="ensemble size k (1 = single seeds)", ylabel=f"sd of {metric}",
              title="spread across ensembles (dotted: member sd / sqrt(k))")  # fmt: skip
    churn_ax.set(xlabel="ensemble size k", ylabel="mean pairwise churn",
                 title="predictions that change between ensembles")  # fmt: skip
    sd_ax.legend(fontsize=7)
    return fig


def seed_picking_section(ctx: Context) -> Section | None:
    """The optimism of reporting the best of n seeds, on the halves of each trial's test rows."""
    from bench.report import Section

    if ctx.metric not in ("accuracy", "balanced_accuracy"):
        return None
    table = seed_picking(ctx.ok, metric=ctx.metric, n_resamples=ctx.n_resamples)
    if table.empty or table["n"].max() < 2:
        return None
    return picking_section(Section("The cost of picking a seed"), table, ctx.metric, ctx.save)


def picking_section(
    s: Section, table: pd.DataFrame, metric: str, save: Callable[[Figure, str, str], Image]
) -> Section:
    """Text, table, sentences and plot of a seed-picking table (the report's and the
    experiment's); `save(figure, name, alt)` writes the PNG and returns its Image block."""
    labels = [c for c in table.columns if c not in PICK_COLUMNS]
    s.text(
        "Each trial's test rows are cut into two fixed halves (by a hash of the row number). A "
        "seed-picker trains n seeds, keeps the best on one half and reports that half's score "
        "(`reported`); `picked_heldout` is the same seed on the other half, `honest` a random "
        "seed's score. Exact expectations over all subsets of n of the run's seeds, both halves "
        "taking each role; `inflation` = reported - picked_heldout, `heldout_gain` = "
        "picked_heldout - honest, `same_half_inflation` = reported - honest; 95% percentile "
        f"bootstrap intervals over seeds, only for n <= N/{INTERVAL_SHARE} (beyond, the "
        "bootstrap undercovers: point estimates only). Setups whose seeds do not vary are left out."
    )
    cols = [*labels, "n", "n_seeds", "reported", "picked_heldout", "honest", "inflation",
            "inflation_ci_low", "inflation_ci_high", "heldout_gain", "heldout_gain_ci_low",
            "heldout_gain_ci_high", "same_half_inflation", "half_rows", "note"]  # fmt: skip
    s.table(table[cols])
    names = _labels(table, labels)
    for name in dict.fromkeys(names):
        s.text(f"- **{name}**: {sentence(table[names == name], metric)}")
    for why in table.attrs.get("left_out", []):
        s.text(f"- left out: {why}")
    slug = "_".join(str(v) for v in table[labels].iloc[0]) if len(set(names)) == 1 else "all"
    name = f"seed_picking_{''.join(c if c.isalnum() else '-' for c in slug)}.png"
    s.blocks.append(save(picking_figure(table, labels, metric), name, "seed-picking inflation"))
    return s


def picking_figure(table: pd.DataFrame, labels: list[str], metric: str) -> Figure:
    """Inflation and held-out gain against n (log scale) with their intervals, per setup."""
    fig = Figure(figsize=(10, 4.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    names = _labels(table, labels)
    for i, name in enumerate(list(dict.fromkeys(names))[:MAX_LINES]):
        sub = table[names == name]
        color = CYCLE[i % len(CYCLE)]
        for ax, column, prefix in ((left, "inflation", "inflation"),
                                   (right, "heldout_gain", "heldout_gain")):  # fmt: skip
            ax.plot(sub["n"], 100 * sub[column], "o-", color=color, label=name)
            ax.fill_between(sub["n"], 100 * sub[f"{prefix}_ci_low"],
                            100 * sub[f"{prefix}_ci_high"], color=color, alpha=0.15)  # fmt: skip
    for ax in (left, right):
        ax.set_xscale("log")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("seeds tried, n (best on one half kept)")
    left.set(ylabel=f"{metric}, points", title="reported minus held-out score of the pick")
    right.set(ylabel=f"{metric}, points", title="held-out score of the pick minus a random seed")
    left.legend(fontsize=7)
    return fig
