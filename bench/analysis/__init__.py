"""bench.analysis: turn the results table into answers. DataFrame in, DataFrame out.

```python
import pandas as pd
from bench import analysis as ba

df = pd.read_parquet("results/seeds/<run_id>")
ba.spread(df, by=["library", "varied"])           # n, mean, std, percentiles, bootstrap CIs
ba.variance_by_source(df, by="library")           # share of split / order / init vs all varied
ba.pairwise_churn(df, by=["library", "varied"])   # how many predictions move between seeds
ba.matched_churn(df, "library", "torch", "tensorflow")  # same seeds, two libraries
ba.compare(df[df.varied == "all"], "library", "torch", "sklearn")  # beyond seed noise?
ba.determinism_summary(df)                        # distinct hashes per repeated fixed-seed spec
ba.threshold_probability(df, 0.95)                # P(accuracy >= 0.95) with a Wilson CI
ba.gate(baseline_df, candidate_df)                # candidate worse than baseline beyond seed noise?
ba.churn_gate(baseline_df, candidate_df)          # the same from predictions alone (no labels)
ba.ensembles(df[df.varied == "init"], sizes=(2, 5))  # seed ensembles against their members
ba.seed_picking(df[df.varied == "all"])           # inflation of reporting the best of n seeds
```

Every function takes the grouping columns as an argument, counts only rows with status `ok`, and
documents its estimator in its module's docstring.

`bench.analysis.monitor` works on arrays instead (`python -m bench monitor`): a new batch's error,
or its seed models' disagreement, against the baseline's held-out rows, and the alarm rules.
"""

from bench.analysis.bootstrap import ci as bootstrap_ci
from bench.analysis.churn import (
    churn,
    churn_matrix,
    matched_churn,
    matched_pairs,
    pairwise_churn,
    unpaired_reason,
)
from bench.analysis.common import load, ok_rows, parse_seed_sources
from bench.analysis.compare import EXCEEDS, WITHIN, compare, compare_levels, compare_samples
from bench.analysis.curves import curve_summary
from bench.analysis.determinism import determinism_cost, determinism_summary, repeat_groups
from bench.analysis.ensemble import ensembles
from bench.analysis.gate import gate
from bench.analysis.gate_churn import churn_gate
from bench.analysis.levels import churn_between_levels
from bench.analysis.pairing import pair_trials
from bench.analysis.per_class import per_class_accuracy, per_class_spread
from bench.analysis.seed_picking import seed_picking
from bench.analysis.spread import describe, spread
from bench.analysis.threshold import proportion_ci, threshold_probability
from bench.analysis.variance import (
    factorial_check,
    variance_by_source,
    variance_ci,
    variance_components,
)

__all__ = [
    "EXCEEDS",
    "WITHIN",
    "bootstrap_ci",
    "churn",
    "churn_between_levels",
    "churn_gate",
    "churn_matrix",
    "compare",
    "compare_levels",
    "compare_samples",
    "curve_summary",
    "describe",
    "ensembles",
    "determinism_cost",
    "determinism_summary",
    "factorial_check",
    "gate",
    "load",
    "matched_churn",
    "matched_pairs",
    "ok_rows",
    "pair_trials",
    "pairwise_churn",
    "per_class_accuracy",
    "per_class_spread",
    "proportion_ci",
    "repeat_groups",
    "seed_picking",
    "parse_seed_sources",
    "spread",
    "threshold_probability",
    "unpaired_reason",
    "variance_by_source",
    "variance_ci",
    "variance_components",
]
