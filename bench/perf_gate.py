"""How often the gate cries wolf, and how often it catches a wolf: `python -m bench.perf_gate`.

The gate (`bench gate`, bench.analysis.gate) claims that a no-op update (baseline and candidate
differ only in their seeds) is called `worse` with probability at most alpha/2, alpha = 1 -
confidence. This measures it instead of asserting it, and measures the power beside it:

1. Pools of real trials (scikit-learn logistic regression, `mode=defaults`, all seeds varied):
   a baseline pool, and a harmful pool with the same seeds and `dataset.flip_class=0
   dataset.flip_fraction=F` (that share of class 0's training labels flipped: a regression made
   from config; the default 0.05 costs about 2 points of accuracy). Trials are made by `bench.trial.run_batch`, the function every Ray task runs,
   in this process (`run_inline`): a pool of hundreds costs seconds, not a Ray start per run.
2. `--repeats` gates on `--seeds` seeds per run, each run drawn from a pool:
   - no-op, unpaired: two disjoint sets of baseline seeds; the share called `worse` is the
     false-alarm rate (and the shares `not worse` / `inconclusive` say how often it passes);
   - regression, paired: the same seeds from both pools (the gate pairs them); regression,
     unpaired: disjoint seeds; the share called `worse` is the power;
   - no-op, paired: SGD logistic regression (its initial seed reaches the training), the same
     splits with other initial seeds (`other_init`), paired on `seed_split`: the paired
     interval's false alarms under seed noise (a rerun with the same seeds is bitwise the same,
     so it cannot be called worse at all);
   - label-free (`--unlabelled`; an SGD logistic regression whose initial seed varies over one
     fixed split, so every trial predicts the same rows): false alarms on disjoint halves of one
     pool, power against a flipped pool.
   Every rate comes with its Wilson interval (`bench.analysis.proportion_ci`).
3. Heart (`--heart DIR`, the UCI file; skipped when absent): the same for a regression of about
   2 points of accuracy, at growing seeds per run: how many seeds the gate needs to decide it.

Rates drawn from one pool share its trials, so they describe this pool's population of seeds;
`--pool` sets its size (default: enough for `--seeds` twice over, at least 200).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.spec import TrialSpec

BASE = ["+sweep=seeds", "libraries=[sklearn]", "model=logreg", "mode=defaults"]
SGD = [
    "+sweep=seeds", "libraries=[sklearn]", "model=sklearn_estimator",
    "model._target_=sklearn.linear_model.SGDClassifier", "+model.loss=log_loss",
]  # fmt: skip
HEART_DIR = Path(__file__).resolve().parents[2] / "shared/data/heart"


def run_inline(
    overrides: Sequence[str],
    results_dir: str | Path,
    run_id: str,
    edit: Callable[[list[TrialSpec]], list[TrialSpec]] | None = None,
    rows_per_part: int | None = None,
) -> Path:
    """Run a sweep in this process, without Ray: the run folder `python -m bench` would write
    (its config, part files, every row as the Ray task `bench.runner._execute` makes it). For
    benchmarks and tests that need many small runs; a sweep needing a GPU, a cluster or stacked
    training belongs to `python -m bench`. `edit` may change the trials before they run (their
    keys follow). `rows_per_part`: default, every row in one part."""
    from omegaconf import OmegaConf

    from bench import rundir, runner, store
    from bench.config import compose
    from bench.manifest import Manifest
    from bench.sweep import expand

    cfg = compose([*overrides, f"results_dir={results_dir}", f"run_id={run_id}"])
    raw = runner.load_checked(cfg)
    specs = expand(cfg) if edit is None else edit(expand(cfg))
    run_id, path, _, lock = rundir.prepare_run_dir(cfg)
    try:
        writer = store.PartWriter(
            path,
            rows_per_part or max(1, len(specs)),
            config=OmegaConf.to_yaml(cfg, resolve=True),
            staging=store.run_files(path).staging,
            manifest=Manifest.load(store.run_files(path).manifest),
        )
        predictions = OmegaConf.to_container(cfg, enum_to_str=True)["predictions"]
        for spec in specs:
            batch = runner._execute(
                [spec.fields_dict()], raw, None, None, run_id=run_id, predictions=predictions
            )
            writer.add_batch(batch)
        writer.close()
    finally:
        lock.release()
    return path


def load_ok(path: Path) -> pd.DataFrame:
    from bench.analysis import load

    rows = load(path)
    return rows[rows["status"] == "ok"].reset_index(drop=True)


def _pool(overrides: list[str], results: Path, run_id: str) -> pd.DataFrame:
    started = time.perf_counter()
    rows = load_ok(run_inline(overrides, results, run_id))
    print(f"  pool {run_id}: {len(rows)} trials in {time.perf_counter() - started:.1f} s")
    return rows


Outcome = tuple[str, int | None]  # a gate's verdict, and its seeds-per-run estimate


def _rate(verdicts: Counter, key: str, total: int) -> str:
    from bench.analysis import proportion_ci

    k = verdicts.get(key, 0)
    low, high = proportion_ci(k, total)
    return f"{k / total:6.1%} [{low:.1%}, {high:.1%}]"


def _report(name: str, outcomes: list[Outcome], main: str = "worse") -> float:
    """Print the share of `main` verdicts (Wilson 95% interval) and the other verdicts'."""
    total = len(outcomes)
    verdicts = Counter(v for v, _ in outcomes)
    others = ", ".join(
        f"{v} {verdicts.get(v, 0) / total:.0%}"
        for v in ("better", "not worse", "worse", "inconclusive")
        if v != main
    )
    print(f"  {name:<46} {main} {_rate(verdicts, main, total)}   ({others})", flush=True)
    return verdicts.get(main, 0) / total


def repeat_gates(
    make_pair: Callable[[np.random.Generator], tuple[pd.DataFrame, pd.DataFrame]],
    repeats: int,
    rng: np.random.Generator,
    decide: Callable[[pd.DataFrame, pd.DataFrame], Outcome],
) -> list[Outcome]:
    """Outcomes of `repeats` gates on pairs of runs drawn by `make_pair`."""
    return [decide(*make_pair(rng)) for _ in range(repeats)]


def _labelled(
    confidence: float, margin: float, match: Sequence[str] | None = None
) -> Callable[[pd.DataFrame, pd.DataFrame], Outcome]:
    from bench.analysis.common import SEED_COLUMNS
    from bench.analysis.gate import gate

    def decide(b: pd.DataFrame, c: pd.DataFrame) -> Outcome:
        result = gate(b, c, margin=margin, confidence=confidence, match=match or SEED_COLUMNS)
        if match is not None:
            assert result.paired, result.pairing
        return result.verdict, result.seeds_needed

    return decide


def _unlabelled(confidence: float) -> Callable[[pd.DataFrame, pd.DataFrame], Outcome]:
    from bench.analysis.gate_churn import churn_gate
    from bench.analysis.pairing import pair_trials

    def decide(b: pd.DataFrame, c: pd.DataFrame) -> Outcome:
        result = churn_gate(b, c, pair_trials(b, c), confidence=confidence, n_resamples=999)
        return result.verdict, result.seeds_needed

    return decide


def noop(pool: pd.DataFrame, n: int) -> Callable:
    """Two disjoint sets of `n` trials of one pool: baseline and candidate differ in seeds only."""

    def draw(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        picked = rng.choice(len(pool), 2 * n, replace=False)
        return pool.iloc[picked[:n]], pool.iloc[picked[n:]]

    return draw


def regression(pool: pd.DataFrame, harmful: pd.DataFrame, n: int, paired: bool) -> Callable:
    """`n` baseline trials and `n` harmful ones: the same seeds (paired) or disjoint ones; the
    two pools hold the same seeds in the same order."""

    def draw(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        picked = rng.choice(len(pool), n if paired else 2 * n, replace=False)
        return pool.iloc[picked[:n]], harmful.iloc[picked[-n:]]

    return draw


def other_init(specs: list[TrialSpec]) -> list[TrialSpec]:
    """The same trials with the initial (and order) seeds of `seeds.base=1`: a paired no-op
    with seed noise (same splits, other random states), which no seeds.base override makes."""
    from dataclasses import replace

    from bench.seeds import derive

    return [
        replace(s, seed_init=derive(1, "init", i), seed_order=derive(1, "order", i))
        for i, s in enumerate(specs)
    ]


def paired_noop(pool: pd.DataFrame, other: pd.DataFrame, n: int) -> Callable:
    """`n` trials of `pool` and the same splits' trials of `other` (`other_init`)."""

    def draw(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
        picked = rng.choice(len(pool), n, replace=False)
        return pool.iloc[picked], other.iloc[picked]

    return draw


def mean_drop(pool: pd.DataFrame, harmful: pd.DataFrame, metric: str = "accuracy") -> float:
    merged = pool.merge(harmful, on="seed_split", suffixes=("_b", "_c"))
    return float((merged[f"{metric}_c"] - merged[f"{metric}_b"]).mean())


def _heart(ns: argparse.Namespace, results: Path, rng: np.random.Generator, decide) -> None:
    """Power against a ~2-point regression on the heart data at growing seeds per run, and the
    fewest seeds that decide it 4 times in 5, paired and unpaired."""
    print("heart, logistic regression (scikit-learn defaults), every seed varied:")
    sizes = [int(x) for x in ns.heart_seeds.split(",")]
    n = max(ns.pool or 200, 2 * max(sizes))
    heart = [
        *BASE,
        "dataset=heart",
        f"dataset.path={ns.heart}",
        "sweep.varied=[all]",
        f"seeds.n={n}",
    ]
    base = _pool(heart, results, "heart")
    harm = _pool([*heart, "dataset.flip_class=1", f"dataset.flip_fraction={ns.heart_flip}"],
                 results, "heart-harm")  # fmt: skip
    print(f"  regression: flip_fraction {ns.heart_flip} on class 1: accuracy "
          f"{mean_drop(base, harm):+.4f} (mean over paired seeds); seed-to-seed SD of "
          f"accuracy {base['accuracy'].std():.4f}")  # fmt: skip
    decided: dict[bool, int | None] = {True: None, False: None}
    for size in sizes:
        noop_outcomes = repeat_gates(noop(base, size), ns.repeats, rng, decide)
        _report(f"no-op, unpaired, {size} seeds: false alarms", noop_outcomes)
        for paired in (True, False):
            name = f"regression, {'paired' if paired else 'unpaired'}, {size} seeds: power"
            outcomes = repeat_gates(regression(base, harm, size, paired), ns.repeats, rng, decide)
            power = _report(name, outcomes)
            estimates = [e for v, e in outcomes if v == "inconclusive" and e is not None]
            if estimates:
                print(f"    inconclusive gates' own estimate of seeds per run needed: median "
                      f"{int(np.median(estimates))}")  # fmt: skip
            if power >= 0.8 and decided[paired] is None:
                decided[paired] = size
    for paired, size in decided.items():
        kind = "paired (same seeds)" if paired else "unpaired (other seeds)"
        found = f"{size} seeds per run" if size else f"more than {max(sizes)} seeds per run"
        print(f"  a ~2-point regression is caught 80% of the time, {kind}, from {found}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.perf_gate", description=__doc__.split("\n")[0]
    )
    p.add_argument("--seeds", type=int, default=10, help="seeds per run in each gate (default 10)")
    p.add_argument("--repeats", type=int, default=400, help="gates per rate (default 400)")
    p.add_argument("--pool", type=int, help="trials per pool (default max(200, 4 x seeds))")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--margin", type=float, default=0.01)
    p.add_argument(
        "--flip-fraction", type=float, default=0.05, help="breast_cancer regression (~2 points)"
    )
    p.add_argument("--heart", type=Path, default=HEART_DIR, help="folder of the UCI heart file")
    p.add_argument("--heart-flip", type=float, default=0.12, help="heart regression (~2 points)")
    p.add_argument("--heart-seeds", default="3,5,10,20,40", help="seeds per run to try on heart")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws from the pools")
    ns = p.parse_args(argv)
    pool_n = ns.pool or max(200, 4 * ns.seeds)
    rng = np.random.default_rng(ns.seed)
    alpha = 1 - ns.confidence
    print(
        f"bench.perf_gate: {ns.repeats} gates a rate, {ns.seeds} seeds a run, pools of "
        f"{pool_n}, confidence {ns.confidence} (alpha {alpha:.3g}: a no-op is called worse with "
        f"probability <= alpha/2 = {alpha / 2:.3g}), margin {ns.margin}; rates with Wilson 95% "
        "intervals"
    )
    labelled = _labelled(ns.confidence, ns.margin)
    n = ns.seeds
    with tempfile.TemporaryDirectory(prefix="bench-perf-gate-") as tmp:
        results = Path(tmp)
        seeds = ["sweep.varied=[all]", f"seeds.n={pool_n}"]
        flip = ["dataset.flip_class=0", f"dataset.flip_fraction={ns.flip_fraction}"]
        print("breast_cancer, logistic regression (scikit-learn defaults), every seed varied:")
        base = _pool([*BASE, *seeds], results, "base")
        harm = _pool([*BASE, *seeds, *flip], results, "harm")
        print(f"  regression: flip_fraction {ns.flip_fraction} on class 0: accuracy "
              f"{mean_drop(base, harm):+.4f}, balanced accuracy "
              f"{mean_drop(base, harm, 'balanced_accuracy'):+.4f} (mean over paired seeds)")  # fmt: skip
        _report("no-op, unpaired: false alarms", repeat_gates(noop(base, n), ns.repeats, rng, labelled))  # fmt: skip
        for paired in (True, False):
            name = f"regression, {'paired' if paired else 'unpaired'}: power"
            _report(name, repeat_gates(regression(base, harm, n, paired), ns.repeats, rng, labelled))  # fmt: skip

        print("paired no-op: SGD logistic regression, the same splits, other initial seeds "
              "(paired on seed_split: bench.analysis.gate(match=...)):")  # fmt: skip
        sgd_all = _pool([*SGD, *seeds], results, "sgd-all")
        sgd_other = run_inline([*SGD, *seeds], results, "sgd-other", edit=other_init)
        sgd_other = load_ok(sgd_other)
        on_split = _labelled(ns.confidence, ns.margin, match=("seed_split",))
        draw = paired_noop(sgd_all, sgd_other, n)
        _report("no-op, paired: false alarms", repeat_gates(draw, ns.repeats, rng, on_split))

        print("label-free (--unlabelled): SGD logistic regression, init seed varied, one split:")
        fixed = ["sweep.varied=[init]", f"seeds.n={pool_n}"]
        sgd = _pool([*SGD, *fixed], results, "sgd")
        sgd_harm = _pool([*SGD, *fixed, *flip], results, "sgd-harm")
        free = _unlabelled(ns.confidence)
        _report("no-op: false alarms", repeat_gates(noop(sgd, n), ns.repeats, rng, free))
        _report("regression, unpaired: power", repeat_gates(regression(sgd, sgd_harm, n, False), ns.repeats, rng, free))  # fmt: skip

        if not (ns.heart / "processed.cleveland.data").is_file():
            print(f"heart: skipped (no processed.cleveland.data in {ns.heart}; --heart DIR)")
            return 0
        _heart(ns, results, rng, labelled)
    return 0


if __name__ == "__main__":
    sys.exit(main())
