"""Which trials of two runs pair up: the same seeds and the same test rows.

Two runs of one sweep with the same `seeds.base` (a library upgrade, a code change) trained trial
i of each on the same split with the same random states, so what differs within a pair is the
update alone; comparing pairs takes the split's luck, shared by both, out of the comparison
(`bench.analysis.gate`, `bench.analysis.gate_churn`). The pairing itself is
`bench.analysis.churn.matched_pairs` on the seed columns, accepted only when it is one-to-one over
the smaller run and every pair predicted identical test rows (`test_index`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.analysis.churn import INDEX, matched_pairs, unpaired_reason
from bench.analysis.common import SEED_COLUMNS

RUN = "_run"  # the column that tells the two runs apart in a combined frame


@dataclass(frozen=True)
class Pairing:
    """How the two runs' trials line up: `pairs` (baseline and candidate trial keys, in pair
    order) when paired, else None and `reason` says why not."""

    paired: bool
    reason: str
    pairs: pd.DataFrame | None = None
    left_out: int = 0  # trials of the larger run without a partner


def pair_trials(
    baseline: pd.DataFrame,
    candidate: pd.DataFrame,
    match: Sequence[str] = SEED_COLUMNS,
    metric: str = "accuracy",
) -> Pairing:
    """Pair the runs' trials when every trial of the smaller run has exactly one partner in the
    other that agrees on the `match` columns (the three seeds) and predicted the same test rows
    (`bench.analysis.churn.matched_pairs`); otherwise unpaired, with the reason."""
    match = [c for c in match if c in baseline.columns and c in candidate.columns]
    if not match:
        return Pairing(False, "the runs record no seeds to match on")
    seeds_b = set(baseline[match].itertuples(index=False, name=None))
    if seeds_b.isdisjoint(candidate[match].itertuples(index=False, name=None)):
        return Pairing(
            False, f"no trial of one run has the seeds ({', '.join(match)}) of one of the other"
        )
    both = pd.concat(
        [baseline.assign(**{RUN: "baseline"}), candidate.assign(**{RUN: "candidate"})],
        ignore_index=True,
    )
    pairs = matched_pairs(both, RUN, "baseline", "candidate", match=match, metric=metric)
    n_small = min(len(baseline), len(candidate))
    how = f"matched on {', '.join(match)}"
    if pairs.empty:
        why = unpaired_reason(both, RUN, "baseline", "candidate", match) or "no pairs"
        return Pairing(False, f"no trial of one run has the seeds of one of the other ({why})")
    one_to_one = pairs["trial_key_a"].is_unique and pairs["trial_key_b"].is_unique
    if not one_to_one or len(pairs) < n_small or n_small < 2:
        return Pairing(
            False,
            f"{len(pairs)} trials {how}, not one-to-one over the smaller run's {n_small}",
        )
    if INDEX not in both.columns:
        return Pairing(False, f"{how}, but the rows keep no test_index to compare test rows")
    n_test = {
        (run, key): len(rows) if rows is not None else -1
        for run, key, rows in zip(both[RUN], both["trial_key"], both[INDEX], strict=True)
    }
    same_rows = [
        n == n_test[("baseline", a)] == n_test[("candidate", b)]
        for a, b, n in zip(
            pairs["trial_key_a"], pairs["trial_key_b"], pairs["n_common"], strict=True
        )
    ]
    if not all(same_rows):
        k = len(same_rows) - sum(same_rows)
        return Pairing(False, f"{how}, but {k} of {len(pairs)} pairs have different test rows")
    left_out = max(len(baseline), len(candidate)) - len(pairs)
    note = f" ({left_out} trials of the larger run have no partner, left out)" if left_out else ""
    text = f"{len(pairs)} pairs {how} and identical test rows{note}"
    return Pairing(True, text, pairs[["trial_key_a", "trial_key_b"]].copy(), left_out)
