"""Matplotlib figures for the report (and for notebooks): each function returns a Figure.

Figures are built with `matplotlib.figure.Figure` and never touch pyplot's global state, so they
render with the Agg backend in a worker, a test or a sweep's driver, and display as usual in a
notebook. Save one with `fig.savefig(path, dpi=...)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

SOURCE_COLORS = {"split": "#4C72B0", "order": "#DD8452", "init": "#55A868"}
CYCLE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def metric_by_group(
    df: pd.DataFrame,
    metric: str = "accuracy",
    x: str = "varied",
    hue: str = "library",
    title: str | None = None,
    seed: int = 0,
) -> Figure:
    """Box plot per (x, hue) cell with every trial drawn on top as a jittered point."""
    xs = sorted(df[x].dropna().unique().tolist(), key=str)
    hues = sorted(df[hue].dropna().unique().tolist(), key=str)
    width = 0.8 / max(len(hues), 1)
    fig = Figure(
        figsize=(max(6.0, 1.2 * len(xs) * max(len(hues), 1) * 0.6 + 2), 4.5), layout="constrained"
    )
    ax = fig.add_subplot()
    rng = np.random.default_rng(seed)
    for j, h in enumerate(hues):
        color = CYCLE[j % len(CYCLE)]
        positions, data = [], []
        for i, xv in enumerate(xs):
            vals = df.loc[(df[x] == xv) & (df[hue] == h), metric].dropna().to_numpy(float)
            if len(vals) == 0:
                continue
            pos = i + (j - (len(hues) - 1) / 2) * width
            positions.append(pos)
            data.append(vals)
            jitter = rng.uniform(-width * 0.3, width * 0.3, len(vals))
            ax.scatter(pos + jitter, vals, s=12, color=color, alpha=0.7, zorder=3, linewidths=0)
        if data:
            ax.boxplot(
                data,
                positions=positions,
                widths=width * 0.8,
                showfliers=False,
                patch_artist=True,
                boxprops={"facecolor": color, "alpha": 0.25, "edgecolor": color},
                medianprops={"color": color},
                whiskerprops={"color": color},
                capprops={"color": color},
            )
        ax.scatter([], [], color=color, label=str(h))
    ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(f"{x} (seed source varied)" if x == "varied" else x)
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} by {hue} and {x}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title=hue, fontsize="small", loc="best")
    return fig


def variance_shares(table: pd.DataFrame, group: str = "group", title: str | None = None) -> Figure:
    """Grouped bars: for each group, the variance of each source varied alone (a merged group such
    as `order+init` as one source) as a share of the variance with all sources varied (the dashed
    line at 1). A source without effect on the training is labelled "no effect", not drawn as 0."""
    data = table[~table["source"].isin(["sum_of_sources", "all", "none"])]
    sources = list(dict.fromkeys(data["source"].tolist()))
    groups = list(dict.fromkeys(data[group].tolist()))
    fig = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / max(len(sources), 1)
    for k, source in enumerate(sources):
        color = SOURCE_COLORS.get(source, CYCLE[(k + 3) % len(CYCLE)])
        sub = data[data["source"] == source].set_index(group)
        heights = [float(sub["share_of_all"].get(g, np.nan)) for g in groups]
        notes = [str(sub["note"].get(g, "")) if "note" in sub else "" for g in groups]
        pos = np.arange(len(groups)) + (k - (len(sources) - 1) / 2) * width
        ax.bar(pos, np.nan_to_num(heights), width=width * 0.95, color=color, label=source)
        for p, h, note, g in zip(pos, heights, notes, groups, strict=True):
            if g not in sub.index:
                continue  # this group has no such source (a merged group, named otherwise)
            no_effect = note.startswith("no effect")
            ax.annotate(
                f"{h:.2f}" if np.isfinite(h) else "no effect" if no_effect else "n/a",
                (p, h if np.isfinite(h) else 0),
                ha="center",
                va="bottom",
                fontsize=8,
                rotation=90 if no_effect else 0,
            )
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="all varied = 1")
    ax.set_xticks(range(len(groups)), [str(g) for g in groups])
    ax.set_ylabel("Var(source alone) / Var(all varied)")
    ax.set_title(title or "variance share per seed source")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


def churn_heatmap(
    matrix: pd.DataFrame, title: str | None = None, counts: pd.DataFrame | None = None
) -> Figure:
    """Heatmap of a level-by-level churn matrix (`churn_between_levels`), cells in percent.

    `counts` (`churn_between_levels(..., counts=True)`) puts under each cell the number of pairs
    of trials it averages, so a cell from 3 pairs does not read like one from 300."""
    values = matrix.to_numpy(float) * 100
    pairs = None if counts is None else counts.reindex(matrix.index, columns=matrix.columns)
    k = len(matrix)
    fig = Figure(figsize=(max(1.3 * k + 3, 6.5), 1.1 * k + 2.4), layout="constrained")
    ax = fig.add_subplot()
    finite = np.isfinite(values).any()
    top = float(np.nanmax(values)) if finite else 0.0
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=max(top, 1e-9))
    labels = [str(v) for v in matrix.index]
    ax.set_xticks(range(k), labels, rotation=30, ha="right")
    ax.set_yticks(range(k), labels)
    for i in range(k):
        for j in range(k):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.1f}%"
            if pairs is not None:
                n = int(pairs.iat[i, j]) if pd.notna(pairs.iat[i, j]) else 0
                text += f"\n{n} pair{'' if n == 1 else 's'}"
            color = "black" if np.isfinite(v) and v > 0.6 * top else "white"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=9)
    fig.colorbar(image, ax=ax, label="churn (% of test rows predicted differently)")
    ax.set_title(
        title or "churn on shared test rows: diagonal = between seeds, off = same seeds",
        fontsize=9,
    )
    return fig


def matched_scatter(
    pairs: Mapping[tuple[str, str], pd.DataFrame],
    metric: str = "accuracy",
    color_by: str | None = "varied",
    title: str | None = None,
) -> Figure:
    """One panel per (a, b) level pair: metric of a against metric of b for matched trials (same
    seeds); marker area grows with the number of identical points; the diagonal is a == b."""
    keys: Sequence[tuple[str, str]] = list(pairs)
    fig = Figure(figsize=(4.2 * len(keys) + 0.5, 4.4), layout="constrained")
    for n, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), n + 1)
        data = pairs[key].dropna(subset=[f"{metric}_a", f"{metric}_b"])
        cats = (
            sorted(data[color_by].dropna().unique().tolist(), key=str)
            if color_by and color_by in data
            else [None]
        )
        for c, cat in enumerate(cats):
            sub = data if cat is None else data[data[color_by] == cat]
            counts = sub.groupby([f"{metric}_a", f"{metric}_b"]).size().reset_index(name="count")
            ax.scatter(
                counts[f"{metric}_b"],
                counts[f"{metric}_a"],
                s=18 * counts["count"].to_numpy(),
                color=CYCLE[c % len(CYCLE)],
                alpha=0.6,
                label=None if cat is None else str(cat),
                linewidths=0,
            )
        lo = float(np.nanmin(data[[f"{metric}_a", f"{metric}_b"]].to_numpy())) if len(data) else 0
        hi = float(np.nanmax(data[[f"{metric}_a", f"{metric}_b"]].to_numpy())) if len(data) else 1
        pad = (hi - lo) * 0.05 + 1e-3
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="gray", linestyle="--", lw=1)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal")
        ax.set_xlabel(f"{metric}: {key[1]}")
        ax.set_ylabel(f"{metric}: {key[0]}")
        ax.set_title(f"{key[0]} vs {key[1]} ({len(data)} matched)", fontsize=10)
        ax.grid(alpha=0.3)
        if cats != [None]:
            ax.legend(title=color_by, fontsize="x-small")
    if title:
        fig.suptitle(title)
    return fig


def loss_curves(
    panels: Mapping[str, np.ndarray], ylabel: str = "training loss", title: str | None = None
) -> Figure:
    """One panel per setup: every seed's curve ((trials, epochs) per panel) as a thin line, their
    median in bold, on one y scale (log when the losses span more than a factor of 20), so that
    how far the seeds fan out reads the same in every panel."""
    names = list(panels)
    cols = min(len(names), 3)
    rows = -(-len(names) // cols) if names else 1
    fig = Figure(figsize=(4.2 * max(cols, 1) + 0.6, 3.4 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, max(cols, 1), sharey=True, squeeze=False).ravel()
    finite = np.concatenate([c[np.isfinite(c)].ravel() for c in panels.values()] or [np.ones(1)])
    log = finite.size and finite.min() > 0 and finite.max() / finite.min() > 20
    for k, (ax, name) in enumerate(zip(axes, names, strict=False)):
        c = panels[name]
        epochs = np.arange(1, c.shape[1] + 1)
        color = CYCLE[k % len(CYCLE)]
        for row in c:
            ax.plot(epochs, row, color=color, alpha=0.35, linewidth=0.8)
        ax.plot(epochs, np.nanmedian(c, axis=0), color="black", linewidth=1.8, label="median")
        ax.set_title(f"{name} ({len(c)} seeds)", fontsize="medium")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if log:
            ax.set_yscale("log")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize="small", loc="upper right")
    fig.suptitle(title or "training loss per epoch, one line per trial")
    return fig
