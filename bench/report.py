"""`python -m bench report RUN_DIR [--out DIR]`: a readable report of one results folder.

Reads the run's Parquet table, runs `bench.analysis` on it and writes `report.md`, `report.html`
and the PNG plots they show into `report/` of the run's bookkeeping folder (the hidden sibling
`results/<sweep>/.<run_id>/report/`; `RUN_DIR/_report/` for runs written before that layout), or
`--out DIR`. Not inside the run folder: polars reads every file under a folder it is given and
fails on one that is not Parquet, so the run folder holds part files only.

A section appears only when the data supports it: the variance split needs a seeds sweep, a
comparison or a matched churn needs two levels of the compared column (two libraries, cpu and cuda,
deterministic on and off, two modes), the determinism table needs repeated fixed-seed trials, and
the time ratio needs both deterministic settings. The first section states the seeds, versions and
hardware the report summarises.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench import analysis as ba
from bench import report_seed_use
from bench.analysis import plots
from bench.analysis.common import SEED_COLUMNS, SOURCES, groups, ok_rows, present, varying
from bench.report_sequential import sequential_section

REPORT_DIR = "report"  # in the run's bookkeeping folder (bench.store.RunFiles.report)
METRICS = ("accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss", "cv_score")  # per-trial
DPI = 110
# Columns two groups of trials can be compared along (pairs match on everything else).
AXES = (
    "library", "device", "deterministic", "mode", "threads", "cpu_isa", "init_mode", "order_mode",
    "model",
)  # fmt: skip
STRATA = ("dataset",)  # grouped by when they vary, never compared with each other
MAX_FIGURES = 4  # per kind of figure, so a large sweep does not write hundreds of PNGs


@dataclass
class Text:
    text: str


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Image:
    file: str
    alt: str


@dataclass
class Section:
    title: str
    blocks: list[Text | Table | Image] = field(default_factory=list)

    def text(self, text: str) -> None:
        self.blocks.append(Text(text))

    def table(self, frame: pd.DataFrame, caption: str = "") -> None:
        self.blocks.append(Table(frame, caption))


@dataclass
class Context:
    """What varies in the data, decided once: the columns sections group and compare by."""

    ok: pd.DataFrame
    out: Path
    metric: str
    n_resamples: int
    axes: list[str]  # compared columns with at least two levels in the data
    strata: list[str]  # grouping-only columns with at least two levels
    has_varied: bool

    @property
    def group(self) -> list[str]:
        """library, the other varying axes and strata, then the varied source."""
        cols = present(self.ok, ["library"]) + [a for a in self.axes if a != "library"]
        return cols + self.strata + (["varied"] if self.has_varied else [])

    def others(self, axis: str) -> list[str]:
        """Columns to hold fixed while comparing along `axis`: every other grouping column."""
        cols = dict.fromkeys([*present(self.ok, ["library"]), *self.axes, *self.strata])
        return [c for c in cols if c != axis]

    def draws(self) -> tuple[pd.DataFrame, str, list[str]]:
        """Rows that are random draws of the seeds, a label for them, and extra grouping columns.

        `varied == all` when the sweep has it; else the trials of each varied source, per source.
        Fixed-seed repeats (`none`) draw no seed, so their spread is not seed noise: they are left
        out unless they are all there is.
        """
        if not self.has_varied:
            return self.ok, "all trials", []
        kinds = set(self.ok["varied"].dropna())
        if "all" in kinds:
            return self.ok[self.ok["varied"] == "all"], "trials with all seeds varied", []
        if kinds - {"none"}:
            rows = self.ok[self.ok["varied"] != "none"]
            return rows, "trials with a varied seed source, per source", ["varied"]
        return self.ok, "fixed-seed repeats only (implementation noise, not seed noise)", []

    def save(self, fig, name: str, alt: str) -> Image:
        fig.savefig(self.out / name, dpi=DPI)
        return Image(name, alt)


def report_dir(run_dir: str | Path) -> Path:
    """Where a run's report goes by default: `report/` of its bookkeeping folder."""
    from bench.store import run_files

    return run_files(run_dir).report


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    metric: str = "accuracy",
    thresholds: Sequence[float] | None = None,
    n_resamples: int = 2000,
) -> Path:
    """Write report.md, report.html and PNGs for the results in `run_dir`; return report.md."""
    import pandas as pd

    from bench.store import results_path

    run_dir = results_path(run_dir)
    df = ba.load(run_dir)
    numeric = metric in df.columns and pd.api.types.is_numeric_dtype(df[metric])
    if not numeric or pd.api.types.is_bool_dtype(df[metric]):
        raise ValueError(
            f"--metric: {metric!r} is not a numeric column of these results; use one of "
            f"{', '.join(METRICS)}"
        )
    out = Path(out_dir) if out_dir is not None else report_dir(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    ok = ok_rows(df, metric)
    ctx = Context(
        ok=ok,
        out=out,
        metric=metric,
        n_resamples=n_resamples,
        axes=varying(ok, AXES),
        strata=varying(ok, STRATA),
        has_varied="varied" in ok.columns,
    )
    builders = [
        lambda: _overview(df, run_dir, ctx),
        lambda: _errors(df),
        lambda: _spread(ctx),
        lambda: _variance(ctx),
        lambda: _curves(ctx),
        lambda: _churn(ctx),
        lambda: _comparisons(ctx),
        lambda: _determinism(ctx),
        lambda: _threshold(ctx, thresholds),
        lambda: _tuned(ctx, thresholds),
        lambda: report_seed_use.guarded(sequential_section, ctx, run_dir),
        lambda: report_seed_use.guarded(report_seed_use.ensemble_section, ctx, run_dir),
        lambda: report_seed_use.guarded(report_seed_use.seed_picking_section, ctx),
    ]
    sections = [s for s in (build() for build in builders) if s is not None and s.blocks]
    title = f"bench report: {run_dir.name}"
    (out / "report.md").write_text(render_markdown(title, sections))
    (out / "report.html").write_text(render_html(title, sections))
    return out / "report.md"


# ---------------------------------------------------------------------------------------- sections


def _values(df: pd.DataFrame, column: str) -> str:
    if column not in df.columns:
        return ""
    vals = sorted({str(v) for v in df[column].dropna().unique() if str(v) != ""})
    return ", ".join(vals)


def _overview(df: pd.DataFrame, run_dir: Path, ctx: Context) -> Section:
    s = Section("What this report summarises")
    n_ok = int((df["status"] == "ok").sum()) if "status" in df else len(df)
    rows: list[tuple[str, str]] = [
        ("results folder", str(run_dir)),
        ("sweep", _values(df, "sweep")),
        ("run id", _values(df, "run_id")),
        ("trials", f"{len(df)} ({n_ok} ok, {len(df) - n_ok} not ok)"),
    ]
    if {"library", "library_version"} <= set(df.columns):
        pairs = df[["library", "library_version"]].drop_duplicates().dropna(subset=["library"])
        libs = ", ".join(
            f"{r.library} {r.library_version or ''}".strip()
            for r in pairs.sort_values("library").itertuples()
        )
        rows.append(("libraries", libs))
    rows.append(("bench", _bench_code(df)))
    for label, col in [
        ("models", "model"),
        ("datasets", "dataset"),
        ("devices", "device"),
        ("modes", "mode"),
        ("deterministic", "deterministic"),
        ("threads per trial", "threads"),
        ("CPU kernel level asked for", "cpu_isa"),
        ("init mode", "init_mode"),
        ("order mode", "order_mode"),
    ]:
        rows.append((label, _values(df, col)))
    if "varied" in df.columns:
        counts = df["varied"].value_counts().sort_index()
        rows.append(("varied sources", ", ".join(f"{k} ({v} trials)" for k, v in counts.items())))
    seeds = [f"{c}: {df[c].nunique()} distinct" for c in SEED_COLUMNS if c in df.columns]
    config = _config(run_dir)
    if config:
        seeds.insert(0, config)
    rows.append(("seeds", "; ".join(seeds)))
    for label, col in [
        ("model hyperparameters", "hparams"),
        ("hosts", "host"),
        ("CPU", "cpu_model"),
        ("CPU vendor", "cpu_vendor"),
        ("CPU vector flags", "cpu_flags"),
        ("PyTorch CPU kernels", "torch_cpu_capability"),
        ("numpy SIMD targets", "numpy_simd"),
        ("oneDNN ISA limit", "onednn_max_cpu_isa"),
        ("BLAS", "blas"),
        ("GPU", "gpu_name"),
        ("GPU driver", "driver_version"),
        ("CUDA", "cuda_version"),
        ("cuDNN", "cudnn_version"),
        ("platform", "platform"),
        ("Python", "python_version"),
        ("numpy", "numpy_version"),
        ("scikit-learn", "sklearn_version"),
        ("torch", "torch_version"),
        ("tensorflow", "tensorflow_version"),
        ("keras", "keras_version"),
        ("ray", "ray_version"),
    ]:
        rows.append((label, _values(df, col)))
    rows.append(("command-line overrides", _overrides(df)))
    table = pd.DataFrame([r for r in rows if r[1]], columns=["item", "value"])
    s.table(table)
    s.text(
        f"Metric: `{ctx.metric}`. Statistics count finished trials only. Confidence intervals are "
        "95% bootstrap (BCa) intervals from `scipy.stats.bootstrap` where a section names no "
        "other method (variances: chi-square; the fit-time ratio: percentile); with fewer than "
        "about 10 trials in a group they are too narrow (resamples only recombine the few values "
        "seen), so read them as rough."
    )
    return s


def _bench_code(df: pd.DataFrame) -> str:
    """Each bench that ran trials: its version, and its git commit (12 digits) with "+
    uncommitted changes" when its checkout had them; empty for runs before these columns."""
    if "bench_version" not in df.columns:
        return ""
    columns = [c for c in ("bench_version", "bench_commit", "bench_dirty") if c in df.columns]
    seen = set()
    for r in df[columns].drop_duplicates().dropna(subset=["bench_version"]).to_dict("records"):
        commit, dirty = r.get("bench_commit"), r.get("bench_dirty")
        text = str(r["bench_version"])
        if isinstance(commit, str):
            dirty = isinstance(dirty, bool | np.bool_) and bool(dirty)
            text += f" at {commit[:12]}" + (" + uncommitted changes" if dirty else "")
        seen.add(text)
    return ", ".join(sorted(seen))


def _overrides(df: pd.DataFrame) -> str:
    """The command lines (their overrides) the rows were made with, one per resume."""
    if "overrides" not in df.columns:
        return ""
    lines = [" ".join(json.loads(text)) or "(none)" for text in df["overrides"].dropna().unique()]
    return "; ".join(sorted(lines))


def _config(run_dir: Path) -> str:
    from bench.store import run_files

    path = run_files(run_dir).config
    if not path.exists():
        return ""
    try:
        from omegaconf import OmegaConf

        cfg = OmegaConf.load(path)
        text = f"base seed {cfg.seeds.base}, {cfg.seeds.n} seeds per source"
        extra = {**(cfg.seeds.get("n_by_source") or {}), **(cfg.seeds.get("n_by_library") or {})}
        return text + (f" (except {dict(extra)})" if extra else "")
    except Exception:
        return ""


def _errors(df: pd.DataFrame) -> Section | None:
    if "status" not in df.columns or (df["status"] == "ok").all():
        return None
    bad = df[df["status"] != "ok"]
    by = present(bad, ["library", "status"])
    table = (
        bad.groupby(by, dropna=False)
        .agg(
            trials=("status", "size"),
            first_error=(
                "error",
                lambda e: str(e.dropna().iloc[0])[:200] if e.notna().any() else "",
            ),
        )
        .reset_index()
    )
    s = Section("Trials that did not finish")
    s.text("These rows are left out of every statistic below; their `error` column says why.")
    s.table(table)
    return s


def _spread(ctx: Context) -> Section | None:
    if ctx.ok.empty:
        return None
    s = Section(f"Spread of {ctx.metric}")
    table = ba.spread(ctx.ok, ctx.group, ctx.metric, n_resamples=ctx.n_resamples)
    s.text(
        "Per group: n, mean, standard deviation, range, 5th/95th percentiles, and 95% bootstrap "
        "CIs for the mean and the standard deviation."
    )
    s.table(table.drop(columns=["metric"]))
    hue_cols = [c for c in ctx.group if c != "varied"]
    data = ctx.ok.assign(_hue=_label(ctx.ok, hue_cols))
    x = "varied" if ctx.has_varied else hue_cols[0] if hue_cols else "_hue"
    fig = plots.metric_by_group(
        data, ctx.metric, x=x, hue="_hue", title=f"{ctx.metric} by {' / '.join(hue_cols)} and {x}"
    )
    fig.axes[0].get_legend().set_title(" / ".join(hue_cols))
    s.blocks.append(ctx.save(fig, f"{ctx.metric}_by_group.png", f"{ctx.metric} by group"))
    return s


def _label(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    if not columns:
        return pd.Series("all", index=df.index)
    parts = [df[c].astype(str) for c in columns]
    out = parts[0]
    for p in parts[1:]:
        out = out + " / " + p
    return out


def _variance(ctx: Context) -> Section | None:
    if not ctx.has_varied:
        return None
    kinds = set(ctx.ok["varied"].unique())
    if "all" not in kinds or not kinds & set(SOURCES):
        return None
    by = [c for c in ctx.group if c != "varied"]
    table = ba.variance_by_source(ctx.ok, by, ctx.metric)
    s = Section("Variance by seed source")
    s.text(
        "Each source varied alone (the other seeds fixed) against all three varied together: "
        "`share_of_all` = Var(source alone) / Var(all varied). With independent, additive sources "
        "the shares sum to about 1 (`sum_of_sources`); `none` is the implementation noise "
        "of repeated fixed-seed runs, contained in every other row. Sources merged into one "
        "random state (`seed_sources`, e.g. `order+init`) are one row; a source that does not "
        "reach the training says *no effect*. A sample variance from n seeds has a relative "
        "standard error of about sqrt(2/(n-1)): its 95% CI is the chi-square interval for "
        "normal data, wide at small n (NaN when every trial gave the same value)."
    )
    cols = [
        *by,
        "source",
        "n",
        "std",
        "variance",
        "variance_ci_low",
        "variance_ci_high",
        "share_of_all",
        "note",
    ]
    s.table(table[cols])
    shares = table.assign(group=_label(table, by))
    fig = plots.variance_shares(
        shares, title=f"variance of {ctx.metric}: source alone / all varied"
    )
    s.blocks.append(ctx.save(fig, "variance_share.png", "variance share per seed source"))
    factors = [c for c in SEED_COLUMNS if c in ctx.ok.columns]
    comps = ba.variance_components(ctx.ok, factors, ctx.metric, by)
    if comps["identifiable"].fillna(False).astype(bool).any():
        s.text("Random-effects ANOVA (main effects, balanced full factorial) variance components:")
        s.table(comps.drop(columns=["metric"]))
    else:
        note = comps["note"].dropna().iloc[0] if comps["note"].notna().any() else ""
        s.text(
            "A factorial decomposition (random-effects ANOVA over the three seeds) is not "
            f"identifiable from this design: {note}."
        )
    return s


def _curves(ctx: Context) -> Section | None:
    """The seeds' training-loss curves of each setup on one plot (models trained in epochs)."""
    from bench.analysis.curves import curves, with_curves

    rows, label, extra = ctx.draws()
    rows = with_curves(rows)
    if rows.empty:
        return None
    by = [*ctx.group, *(c for c in extra if c not in ctx.group)]
    s = Section("Training loss per epoch")
    s.text(
        f"Each trial's training loss after every epoch ({label}): the mean over the epoch's rows "
        "of the minibatch objective, L2 term included (`train_loss`). Curves that fan out and meet "
        "again: the seed changes when training converges; curves that stay apart: where."
    )
    s.table(ba.curve_summary(rows, by))
    names = {}
    for key, sub in groups(rows, by):
        names[" / ".join(str(v) for v in key) or "all"] = curves(sub)
    for i in range(0, min(len(names), MAX_FIGURES * 6), 6):  # six setups per figure
        chunk = dict(list(names.items())[i : i + 6])
        fig = plots.loss_curves(chunk, title=f"training loss per epoch ({' / '.join(by)})")
        name = f"loss_curves_{i // 6 + 1}.png" if len(names) > 6 else "loss_curves.png"
        s.blocks.append(ctx.save(fig, name, "training loss per epoch, one line per seed"))
    if len(names) > MAX_FIGURES * 6:
        s.text(f"Plots of the first {MAX_FIGURES * 6} of {len(names)} setups; the table has all.")
    return s


def _churn(ctx: Context) -> Section | None:
    if ctx.ok.empty or "y_pred" not in ctx.ok.columns:
        return None
    s = Section("Churn: predictions that change")
    s.text(
        "Churn of two trials = share of the test rows both predicted whose predicted class "
        "differs (rows matched by `test_index`; trials with different split seeds share only "
        "part of their test sets, `n_common_mean`)."
    )
    s.text("**Between every two trials of a group** (different seeds):")
    s.table(ba.pairwise_churn(ctx.ok, ctx.group))
    for axis in ctx.axes:
        levels = sorted(ctx.ok[axis].dropna().unique().tolist(), key=str)
        by = [c for c in ctx.others(axis)] + (["varied"] if ctx.has_varied else [])
        tables = [
            ba.matched_churn(ctx.ok, axis, a, b, by=by, metric=ctx.metric)
            for a, b in itertools.combinations(levels, 2)
        ]
        tables = [t for t in tables if len(t)]  # models with different hparams never match
        table = pd.concat(tables, ignore_index=True) if tables else None
        if table is None or table.empty or table["n_pairs"].sum() == 0:
            reasons = {
                ba.unpaired_reason(ctx.ok, axis, a, b) for a, b in itertools.combinations(levels, 2)
            }
            s.text(
                f"**Between {axis} levels**: no pairs with the same seeds and settings "
                f"({'; '.join(sorted(r for r in reasons if r)) or 'none formed'})."
            )
            continue
        table = table[table["n_pairs"] > 0]
        s.text(
            f"**Between {axis} levels, same seeds and settings** (`diff_mean` = {ctx.metric} of "
            f"the first minus the second):"
        )
        s.table(table.drop(columns=["churn_min"]))
        _heatmaps(s, ctx, axis)
    per_class = ba.per_class_spread(ctx.ok, ctx.group)
    if not per_class.empty:
        s.text("**Accuracy per true class** (recall) across the trials of each group:")
        s.table(per_class.drop(columns=["metric", "p05", "p95"]))
    return s


def _heatmaps(s: Section, ctx: Context, axis: str) -> None:
    """Churn heatmaps over pairs of trials that predicted the same test rows
    (`churn_between_levels` keeps only those): trials with other split seeds share only part of
    their test sets, and their churn on a few shared rows is no between-seed churn."""
    rows, label = ctx.ok, "pairs that share their test rows"
    strata = [c for c in ctx.others(axis) if c in rows.columns]
    count = 0
    for key, sub in rows.groupby(strata, dropna=False) if strata else [((), rows)]:
        if sub[axis].nunique() < 2 or count >= MAX_FIGURES:
            continue
        key = key if isinstance(key, tuple) else (key,)
        suffix = "_".join(_slug(k) for k in key)
        name = f"churn_{axis}{'_' + suffix if suffix else ''}.png"
        where = ", ".join(f"{c}={v}" for c, v in zip(strata, key, strict=True))
        matrix, pairs = ba.churn_between_levels(sub, axis, counts=True)
        title = "\n".join(
            [f"churn by {axis}: {label}", *([where] if where else []),
             "diagonal: other seeds, same level; off-diagonal: same seeds"]
        )  # fmt: skip
        figure = plots.churn_heatmap(matrix, title, counts=pairs)
        s.blocks.append(ctx.save(figure, name, f"churn by {axis}"))
        count += 1


def _slug(value: object) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(value)).strip("-")


def _comparisons(ctx: Context) -> Section | None:
    if not ctx.axes:
        return None
    draws, rows_label, extra = ctx.draws()
    s = Section("Comparisons against seed noise")
    s.text(
        f"Rows used: {rows_label}. `diff` = mean(a) - mean(b) with a 95% bootstrap CI (paired "
        "by seeds when the two groups match one-to-one); `prob_a_better` = P(a > b) on a random "
        "draw of seeds (`prob_tie`: exact ties); `noise_std` = pooled seed-to-seed standard "
        "deviation of one run. Verdict: *exceeds seed noise* when the CI excludes 0 and |diff| > "
        "noise_std, else *within seed noise*."
    )
    for axis in ctx.axes:
        by = ctx.others(axis) + extra
        table = ba.compare_levels(draws, axis, ctx.metric, by=by, n_resamples=ctx.n_resamples)
        if table.empty:
            continue
        s.text(f"**{axis}**:")
        cols = [
            "a",
            "b",
            *by,
            "n_a",
            "n_b",
            "mean_a",
            "mean_b",
            "diff",
            "diff_ci_low",
            "diff_ci_high",
            "paired",
            "prob_a_better",
            "prob_tie",
            "noise_std",
            "verdict",
        ]
        s.table(table[cols])
        for r in table.to_dict("records"):
            where = ", ".join(f"{c}={_fmt(r[c])}" for c in by)
            s.text(
                f"- {axis} {_fmt(r['a'])} vs {_fmt(r['b'])}{' (' + where + ')' if where else ''}: "
                f"**{r['verdict']}**; {r['reason']}."
            )
        _scatter(s, ctx, axis)
    return s


def _scatter(s: Section, ctx: Context, axis: str) -> None:
    levels = sorted(ctx.ok[axis].dropna().unique().tolist(), key=str)
    pairs = {}
    for a, b in itertools.combinations(levels, 2):
        p = ba.matched_pairs(ctx.ok, axis, a, b, metric=ctx.metric)
        if len(p):
            pairs[(str(a), str(b))] = p
        if len(pairs) >= MAX_FIGURES:
            break
    if not pairs:
        return
    fig = plots.matched_scatter(
        pairs,
        ctx.metric,
        color_by="varied" if ctx.has_varied else None,
        title=f"{ctx.metric}, same seeds: {axis} against {axis}",
    )
    s.blocks.append(ctx.save(fig, f"scatter_{axis}.png", f"{ctx.metric} {axis} vs {axis}"))


def _determinism(ctx: Context) -> Section | None:
    if ctx.ok.empty or "weights_sha256" not in ctx.ok.columns:
        return None
    by = present(ctx.ok, ["library", "device", "deterministic"]) + [
        c for c in ctx.axes + ctx.strata if c not in ("library", "device", "deterministic")
    ]
    summary = ba.determinism_summary(ctx.ok, by, ctx.metric)
    if summary.empty:
        return None
    s = Section("Determinism: repeated fixed-seed trials")
    s.text(
        "A setup is repeated when trials agree on library, model, data, device, settings and all "
        "three seeds. `setups_repeatable`: setups whose repeats gave one weight hash (bitwise "
        "identical); more prediction hashes or a metric range above 0 mean the repeats disagree "
        "on test predictions too."
    )
    s.table(summary)
    if "deterministic" in ctx.axes:
        cost = ba.determinism_cost(
            ctx.ok, [c for c in by if c != "deterministic"], n_resamples=ctx.n_resamples
        )
        if not cost.empty:
            s.text(
                "Fit time with deterministic mode on / off: `ratio_median` = median time on / "
                "median time off, with a 95% percentile bootstrap CI of that ratio of medians "
                "(NaN when the resamples give a single value)."
            )
            s.table(cost)
    return s


def _tuned(ctx: Context, thresholds: Sequence[float] | None) -> Section | None:
    """Runs with a grid search in every trial (`cv_score`, e.g. +experiment=heart): whether the
    claimed accuracy (the first --threshold, else 80%) holds; bench.experiments.heart_report."""
    if "cv_score" not in ctx.ok.columns or ctx.ok["cv_score"].isna().all():
        return None
    from bench.experiments import heart_report

    claim = float(thresholds[0]) if thresholds else heart_report.CLAIM
    return heart_report.section(ctx, claim)


def _threshold(ctx: Context, thresholds: Sequence[float] | None) -> Section | None:
    if ctx.ok.empty:
        return None
    draws, rows_label, extra = ctx.draws()
    x = draws[ctx.metric].to_numpy(float)
    if thresholds is None:
        thresholds = sorted(
            {float(np.floor(np.percentile(x, q) * 100) / 100) for q in (25, 50, 75)}
        )
    by = [c for c in ctx.group if c != "varied"] + extra
    table = ba.threshold_probability(draws, thresholds, by, ctx.metric)
    s = Section(f"Threshold probability: P({ctx.metric} >= t)")
    s.text(
        f"P({ctx.metric} >= t) over {rows_label}: the share of trials that reach t, with a 95% "
        "Wilson score interval (`scipy.stats.binomtest`). Choose thresholds with "
        "`python -m bench report RUN --threshold T`."
    )
    s.table(table.drop(columns=["metric", "method"]))
    return s


# --------------------------------------------------------------------------------------- rendering


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return "n/a"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if 1e-3 <= abs(v) < 1e4:
            return f"{v:.4f}"
        return f"{v:.3g}"
    if value is pd.NA:
        return "n/a"
    return str(value)


def _cells(frame: pd.DataFrame) -> list[list[str]]:
    return [[_fmt(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def markdown_table(frame: pd.DataFrame) -> str:
    header = [str(c) for c in frame.columns]
    esc = [[c.replace("|", "\\|") for c in row] for row in _cells(frame)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in esc]
    return "\n".join(lines)


def render_markdown(title: str, sections: Sequence[Section]) -> str:
    parts = [f"# {title}", ""]
    for section in sections:
        parts += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                parts += [block.text, ""]
            elif isinstance(block, Table):
                parts += [markdown_table(block.frame), ""]
            else:
                parts += [f"![{block.alt}]({block.file})", ""]
    return "\n".join(parts)


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


_CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}
table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1em}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}img{max-width:100%}code{background:#f4f4f4}"""


def render_html(title: str, sections: Sequence[Section]) -> str:
    parts = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Text):
                if block.text.startswith("- "):
                    parts.append(f"<ul><li>{_inline(block.text[2:])}</li></ul>")
                else:
                    parts.append(f"<p>{_inline(block.text)}</p>")
            elif isinstance(block, Table):
                head = "".join(f"<th>{html.escape(str(c))}</th>" for c in block.frame.columns)
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in _cells(block.frame)
                )
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                alt = html.escape(block.alt)
                parts.append(f"<p><img src='{html.escape(block.file)}' alt='{alt}'></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


# -------------------------------------------------------------------------------------------- CLI


def report_after_sweep(run_dir: Path) -> Path | None:
    """`report=true`: write the report and print its path. A failure here must not hide the
    sweep's own outcome (its rows are on disk), so it is printed with the command to retry."""
    try:
        path = write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - reported, and the sweep's exit code stands
        print(
            f"bench: report failed ({type(exc).__name__}: {exc}); retry with: "
            f"python -m bench report {run_dir}",
            file=sys.stderr,
        )
        return None
    print(f"report: {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description="Write report.md, report.html and PNG plots for one results folder.",
    )
    parser.add_argument("run_dir", help="results/<sweep>/<run_id>")
    parser.add_argument(
        "--out", help=f"output folder (default: results/<sweep>/.<run_id>/{REPORT_DIR})"
    )
    parser.add_argument("--metric", default="accuracy", help="metric column (default: accuracy)")
    parser.add_argument(
        "--threshold",
        type=float,
        action="append",
        help="threshold for P(metric >= t); repeat for several (default: from the data)",
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        path = write_report(args.run_dir, args.out, args.metric, args.threshold)
    except (FileNotFoundError, KeyError, ValueError, OSError) as exc:
        print(f"bench report: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {path} (and {path.with_suffix('.html').name}, PNGs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
