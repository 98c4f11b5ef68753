"""`python -m bench +experiment=seed_picking`: what reporting the best of n seeds costs, on
breast_cancer and on the UCI heart data.

1. One plain bench run per dataset in `seed_picking.datasets` (a cheap scikit-learn logistic
   regression, `seeds.n` seeds, every seed varied: `varied=all`). `all` rather than `init`,
   because a seed-picker's one `random_state` usually fixes the split and the model together,
   and the split is the largest source of spread (docs/heart.md); rather than `split` alone,
   because a seed that moved only the split would leave the model's own luck out. Each trial's
   test rows are then cut into two fixed halves (bench.analysis.seed_picking), so picking and
   checking never use the same rows and no new data split is needed.
2. `bench.analysis.seed_picking` on each run: the exact expected inflation of best-of-n for n in
   `seed_picking.sizes` (up to the seeds run), with bootstrap intervals over seeds.
3. `report.md` / `report.html` with a table, a plot and the quotable sentence per dataset.

Everything lands in `results_dir/seed_picking/<run_id>/`: `runs/<dataset>/<run_id>/` (plain
runs: `python -m bench report` reads them) and the report. The same `run_id=` resumes.
The heart file is read where `seed_picking.heart_path` points (never copied into the results).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from bench.cli_common import write_atomic

EXPERIMENT = "+experiment=seed_picking"
DROPPED = ("run_id", "results_dir", "dataset", "seed_picking.datasets", "seed_picking.heart_path")


def sub_overrides(overrides: list[str], root: Path, dataset: str, heart_path: str | None,
                  run_id: str) -> list[str]:  # fmt: skip
    """The user's overrides for one dataset's run: its data, its folder, the experiment off."""
    keep = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in DROPPED]
    data = [f"dataset={dataset}"]
    if dataset == "heart" and heart_path:
        data.append(f"dataset.path={Path(heart_path).expanduser().resolve()}")
    return [*keep, "seed_picking.enabled=false", *data, f"sweep.name={dataset}",
            f"results_dir={root / 'runs'}", f"run_id={run_id}"]  # fmt: skip


def write(root: Path, tables: dict[str, pd.DataFrame], metric: str = "accuracy") -> Path:
    """report.md and report.html (with one PNG per dataset) in `root`."""
    from bench.report import DPI, Image, Section, render_html, render_markdown
    from bench.report_seed_use import picking_section

    def save(fig, name: str, alt: str) -> Image:
        fig.savefig(root / name, dpi=DPI)
        return Image(name, alt)

    intro = Section("What was run")
    intro.text(
        "Per dataset, a scikit-learn logistic regression trained with every seed varied (split, "
        "data order, initialisation). Each trial's test rows are split into two fixed halves; a "
        "seed-picker keeps the best of n seeds on one half and reports it there. Expectations "
        "are exact over all subsets of n seeds (bench.analysis.seed_picking)."
    )
    for dataset, table in tables.items():
        first = table.iloc[0] if len(table) else None
        n = int(first["n_seeds"]) if first is not None else 0
        intro.text(f"- **{dataset}**: {n} seeds. {_quote(table, metric)}")
    sections = [intro]
    for dataset, table in tables.items():
        if table.empty:
            continue
        sections.append(picking_section(Section(dataset), table, metric, save))
    title = "The cost of picking a seed"
    write_atomic(root / "report.html", render_html(title, sections))
    return write_atomic(root / "report.md", render_markdown(title, sections))


def _quote(table: pd.DataFrame, metric: str) -> str:
    from bench.analysis.seed_picking import sentence

    if table.empty or table["n"].max() < 2:
        return "Too few seeds for a pick (" + "; ".join(table.attrs.get("left_out", [])) + ")."
    return sentence(table, metric)


def run_seed_picking(cfg: DictConfig, overrides: list[str]) -> int:
    """Run the experiment (module docstring); 0 when every run finished without error rows."""
    from bench import store
    from bench.analysis import load
    from bench.analysis.seed_picking import seed_picking
    from bench.cluster.connect import connect_for
    from bench.config import ConfigError, compose
    from bench.runner import run_sweep

    sp = OmegaConf.to_container(cfg.seed_picking, resolve=True)
    assert isinstance(sp, dict)
    run_id = cfg.run_id or store.new_run_id()
    root = Path(cfg.results_dir) / "seed_picking" / run_id
    plans = []  # every run composed and checked before the first one starts
    for dataset in sp["datasets"]:
        args = sub_overrides(overrides, root, dataset, sp["heart_path"], run_id)
        try:
            plans.append((dataset, args, compose(args)))
        except ConfigError as exc:
            raise ConfigError(f"seed_picking.datasets: {dataset}: {exc}") from None
    errors = 0
    started = connect_for(plans[0][2])  # one Ray for every run
    try:
        for dataset, args, sub in plans:
            print(f"seed_picking: {dataset}", file=sys.stderr)
            errors += run_sweep(sub, overrides=args).n_error
    finally:
        if started:
            import ray

            ray.shutdown()
    tables = {}
    for dataset, _, sub in plans:
        rows = load(store.run_dir(sub.results_dir, dataset, run_id))
        tables[dataset] = seed_picking(rows, sp["sizes"], n_resamples=int(sp["n_resamples"]))
    path = write(root, tables)
    for dataset, table in tables.items():
        print(f"{dataset}: {_quote(table, 'accuracy')}")
    print(f"report: {path}")
    return 0 if errors == 0 else 1
