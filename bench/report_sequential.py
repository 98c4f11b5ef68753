"""The report's section for a run with `seeds.until` (bench.waves): seeds per setup, why each
stopped, the verdicts of a comparison, and the confidence sequences narrowing wave by wave.

Recomputed from the rows and the run's config.yaml with the same `bench.waves.replay` the sweep
used, so the report says what the run decided even for a run resumed after a kill. A module of
its own: report.py only lists it among its sections.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from matplotlib.figure import Figure

if TYPE_CHECKING:  # report.py imports this module: Section comes in at call time
    from bench.report import Context, Section

PANELS = 12  # setups drawn; the table has all


def sequential_section(ctx: Context, run_dir: Path) -> Section | None:
    """The section, or None for a run without seeds.until (or without its config)."""
    from omegaconf import OmegaConf

    from bench import waves
    from bench.config import to_container, until_on
    from bench.report import Section
    from bench.store import run_files

    config = run_files(run_dir).config
    if not config.is_file():
        return None
    plain = to_container(OmegaConf.load(config))
    if "until" not in plain.get("seeds", {}) or not until_on(plain):
        return None
    plan = waves.Plan.of(plain)
    until, metric = plan.until, plan.until["metric"]
    # The sweep's own reading of the rows (NaN dropped, error rows seen), not ctx.ok: the
    # report says what the run decided.
    states, pairs = waves.replay(plan, waves.read_values(run_dir, plan))
    s = Section("Repeat until the answer is known (seeds.until)")
    asked = []
    if until["ci_width"] is not None:
        asked.append(f"an interval of {metric} narrower than {until['ci_width']:g}")
    if until["compare"] is not None:
        asked.append(
            f"a verdict between the two values of {until['compare']} (better, or equivalent "
            f"within +-{until['margin']:g})"
        )
    s.text(
        f"Seeds ran in waves (first `seeds.n`, then {until['wave']} per wave, at most "
        f"{until['max']}) until each setup had {' and '.join(asked)}. Intervals are "
        f"{until['confidence']:.0%} anytime-valid confidence sequences (Waudby-Smith et al., "
        "Ann. Statist. 2024), which stay valid although the data decided when to stop; a t "
        "interval would not (docs/repeat-until.md)."
    )
    rows = [
        {
            "setup": st.setup.label, "seeds": st.interval.n if st.interval else 0,
            "waves": st.waves, "mean": st.interval.mean if st.interval else None,
            "low": st.interval.low if st.interval else None,
            "high": st.interval.high if st.interval else None,
            "width": st.interval.width if st.interval else None,
            "stopped": st.reason,
        }
        for st in states.values()
    ]  # fmt: skip
    s.table(pd.DataFrame(rows), f"{metric} per setup: the interval at the last wave")
    if pairs:
        verdicts = [
            {
                "first": p.first.label, "second": p.second.label,
                "pairs": p.interval.n if p.interval else 0, "wave": p.wave or None,
                "difference": p.interval.mean if p.interval else None,
                "low": p.interval.low if p.interval else None,
                "high": p.interval.high if p.interval else None, "verdict": p.says,
            }
            for p in pairs
        ]  # fmt: skip
        s.table(pd.DataFrame(verdicts), f"{metric} first - second, on paired seeds")
    drawn = [st for st in states.values() if st.history][:PANELS]
    if drawn:
        fig = _narrowing(drawn, metric, until["ci_width"])
        s.blocks.append(ctx.save(fig, "repeat_until.png", "confidence sequence per setup by wave"))
    if len(states) > PANELS:
        s.text(f"Plots of the first {PANELS} of {len(states)} setups; the table has all.")
    return s


def _narrowing(states: list, metric: str, target: float | None) -> Figure:
    """One panel per setup: the confidence sequence's interval after each wave, against seeds."""
    cols = min(4, len(states))
    n_rows = -(-len(states) // cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * n_rows + 0.4), layout="constrained")
    # Own y per panel: setups sit at different levels of the metric, and a shared axis would
    # squash each interval to a line.
    axes = fig.subplots(n_rows, cols, squeeze=False)
    for ax, st in zip(axes.flat, states, strict=False):
        seeds = [iv.n for _, iv in st.history]
        ax.fill_between(seeds, [iv.low for _, iv in st.history],
                        [iv.high for _, iv in st.history], alpha=0.3, step=None)  # fmt: skip
        means = [iv.mean for _, iv in st.history]
        spans = [[m - iv.low for m, (_, iv) in zip(means, st.history, strict=True)],
                 [iv.high - m for m, (_, iv) in zip(means, st.history, strict=True)]]  # fmt: skip
        ax.errorbar(seeds, means, yerr=spans, marker="o", ms=3, capsize=3)  # one wave: a bar
        if target is not None:  # the width to reach, centred on the last mean
            for edge in (means[-1] - target / 2, means[-1] + target / 2):
                ax.axhline(edge, color="grey", ls="--", lw=0.8)
        ax.set_title(st.setup.label, fontsize=9)
        ax.set_xlabel("seeds")
    for ax in list(axes.flat)[len(states) :]:
        ax.set_visible(False)
    axes[0][0].set_ylabel(metric)
    width = f" (dashed: target width {target:g} around the last mean)" if target is not None else ""
    fig.suptitle(f"{metric}: confidence sequence after each wave{width}", fontsize=10)
    return fig
