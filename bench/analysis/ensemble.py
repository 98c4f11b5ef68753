"""Seed ensembles from stored predictions: how much averaging k seeds shrinks seed variance and
churn, and at what k it stops paying. No retraining: the rows already hold every member's class
probabilities.

**Members.** Finished trials of one setup (every `SETUP_COLUMNS` column but the seeds, plus
`varied`) that predicted the *same test rows*: the sweeps that vary init, order, cv or nothing
(`none`). A trial whose split seed varies predicts other test rows than its neighbours, so its
probabilities cannot be averaged row by row; such setups are left out with the reason, never
silently (`ensembles(...).attrs["left_out"]`). Setups are checked by their data (identical
`test_index` and `y_true`), not by the name of the varied source.

**Probabilities.** `y_proba` (one probability per class, the columns are the class labels
0..C-1, as `bench.metrics` has them). Runs with `predictions=compact` store none; a binary run
that kept `y_score` (P(class 1) for two classes) is rebuilt as [1 - s, s]. For more classes
`y_score` is the top probability only, which cannot be averaged: left out with the reason.

**Ensembles.** Soft voting: the mean of the k members' probabilities, then the metric of that
mean (`bench.metrics.classification_metrics_many`, the trials' own metric code). The members are
put in a fixed order (by their seeds, then `trial_key`: seeds are hashes, so this order is as
good as a random draw and never depends on the order Ray returned the rows) and cut into
floor(N / k) *disjoint* blocks. Disjoint, because ensembles that share members are correlated,
and their spread would understate the spread of independent ensembles; the price is few
ensembles at large k (40 members give four ensembles of 10), so the ensemble standard deviation
carries a chi-square 95% interval (`bench.analysis.variance.variance_ci`) and k = N gives one
ensemble (its mean, no spread). Members left over (N mod k) take part in no ensemble of size k.

**Columns** (one row per setup and k; k = 1 is the members themselves): `member_mean`,
`member_sd`, `ensemble_mean`, `ensemble_sd` (+ CI), `sd_ratio` = ensemble_sd / member_sd,
`variance_ratio` = its square (1/k if the members' errors were independent, which seeds never
quite are: the distance from 1/k says how correlated they are), `member_churn` and
`ensemble_churn` (mean pairwise churn, `bench.analysis.churn.pairwise_churn`, between members and
between the disjoint ensembles), `churn_ratio`, and `stops_paying`.

**Stops paying** (the same value on every row of a setup): the smallest size k, of those
computed (k = 1 included), beyond which no larger computed size lowers the ensemble standard
deviation by `min_gain` (default 0.10) of the members' standard deviation or more:
sd(k) - min over k' > k of sd(k') < min_gain * sd(1). Absolute in member-sd units, not relative
to sd(k), because a relative rule keeps "paying" for ever on an sd that is already negligible;
against the best larger size, not only the next one, because an sd from a few ensembles is noisy
and one step that happens to go up must not end the search (40 members gave sd 0.0063, 0.0059,
0.0031, 0.0044 at k = 1, 2, 5, 10: the next-step rule would stop at k = 1, this one at k = 5).
Sizes with fewer than 3 ensembles are too noisy to enter the rule; when every size still pays,
the column is NaN and `note` says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bench.analysis.churn import pairwise_churn
from bench.analysis.common import SEED_COLUMNS, SETUP_COLUMNS, as_list, ok_rows, present, varying
from bench.analysis.variance import variance_ci

DEFAULT_SIZES: tuple[int, ...] = (2, 5, 10)
MIN_GAIN = 0.10
MIN_ENSEMBLES = 3  # sizes with fewer ensembles do not enter the stops-paying rule
ORDER = (*SEED_COLUMNS, "seed_cv", "repeat", "trial_key")
LABELS = ("library", "model", "dataset", "varied")  # always shown, the rest only when they vary
COLUMNS = (
    "k", "n_members", "n_ensembles", "member_mean", "member_sd", "ensemble_mean", "ensemble_sd",
    "ensemble_sd_ci_low", "ensemble_sd_ci_high", "sd_ratio", "variance_ratio", "member_churn",
    "ensemble_churn", "churn_ratio", "stops_paying", "note",
)  # fmt: skip


def setup_columns(df: pd.DataFrame) -> list[str]:
    """Everything that says "the same training setup" except the seeds, plus `varied`."""
    skip = {*SEED_COLUMNS, "seed_cv"}
    return [c for c in present(df, (*SETUP_COLUMNS, "varied")) if c not in skip]


def probabilities(sub: pd.DataFrame) -> tuple[np.ndarray | None, str]:
    """(members x rows x classes probabilities, "") or (None, why) for one setup's rows."""
    if "y_proba" in sub.columns and sub["y_proba"].notna().all():
        try:
            return np.stack([np.stack(list(p)).astype(np.float64) for p in sub["y_proba"]]), ""
        except ValueError:
            return None, "members' probability arrays differ in shape"
    if "y_score" in sub.columns and sub["y_score"].notna().all():
        scores = [np.asarray(s, dtype=np.float64) for s in sub["y_score"]]
        classes = max(int(np.max(np.asarray(t))) for t in sub["y_true"]) + 1
        if classes == 2 and len({len(s) for s in scores}) == 1:
            s = np.stack(scores)
            return np.stack([1.0 - s, s], axis=-1), ""
        return None, "only y_score (the top class probability) is stored for more than 2 classes"
    return None, "no probabilities stored (predictions=compact or none)"


def same_test_rows(sub: pd.DataFrame) -> bool:
    """Every member predicted the same test rows, with the same labels, in the same order."""
    for column in ("test_index", "y_true"):
        if column in sub.columns:
            first = np.asarray(sub[column].iloc[0])
            if not all(np.array_equal(np.asarray(v), first) for v in sub[column]):
                return False
    return True


def _metric(y_true: np.ndarray, proba: np.ndarray, metric: str) -> np.ndarray:
    """The metric of each of a stack of probability tables on the same labels."""
    from bench.metrics import classification_metrics_many

    labels = np.broadcast_to(y_true, proba.shape[:2])
    values = classification_metrics_many(labels, proba)
    if metric not in values:
        raise ValueError(f"metric {metric!r}: ensembles compute one of {', '.join(values)}")
    return np.asarray(values[metric], dtype=float)


def _churn(proba: np.ndarray) -> float:
    """Mean pairwise churn of the argmax predictions of a stack of probability tables."""
    if len(proba) < 2:
        return float("nan")
    frame = pd.DataFrame({"y_pred": list(np.argmax(proba, axis=2))})
    return float(pairwise_churn(frame, by=None)["churn_mean"].iloc[0])


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) >= 2 else float("nan")


def _sizes_for(n: int, sizes: Iterable[int]) -> list[int]:
    return sorted({1, *(int(k) for k in sizes if 2 <= int(k) <= n)})


def one_setup(
    y_true: np.ndarray, proba: np.ndarray, sizes: Iterable[int], metric: str, min_gain: float
) -> list[dict]:
    """The rows of one setup: `proba` is members x rows x classes, in the fixed member order."""
    n = len(proba)
    member_values = _metric(y_true, proba, metric)
    member_sd, member_churn = _sd(member_values), _churn(proba)
    rows = []
    for k in _sizes_for(n, sizes):
        blocks = proba[: (n // k) * k].reshape(n // k, k, *proba.shape[1:]).mean(axis=1)
        values = member_values if k == 1 else _metric(y_true, blocks, metric)
        churn = member_churn if k == 1 else _churn(blocks)
        sd = _sd(values)
        low, high = np.sqrt(variance_ci(values)) if len(values) >= 2 else (np.nan, np.nan)
        ratio = sd / member_sd if member_sd > 0 else float("nan")
        rows.append({
            "k": k, "n_members": n, "n_ensembles": len(values), "member_mean":
            float(member_values.mean()), "member_sd": member_sd, "ensemble_mean":
            float(values.mean()), "ensemble_sd": sd, "ensemble_sd_ci_low": float(low),
            "ensemble_sd_ci_high": float(high), "sd_ratio": ratio, "variance_ratio": ratio**2,
            "member_churn": member_churn, "ensemble_churn": churn,
            "churn_ratio": churn / member_churn if member_churn > 0 else float("nan"),
        })  # fmt: skip
    stop, note = stops_paying(rows, min_gain)
    for row in rows:
        row["stops_paying"], row["note"] = stop, note
    return rows


def stops_paying(rows: Sequence[dict], min_gain: float = MIN_GAIN) -> tuple[float, str]:
    """(k, "") for the first size beyond which no larger size gains `min_gain` member sds
    (module docstring), or (NaN, why)."""
    usable = [
        r for r in rows if r["n_ensembles"] >= MIN_ENSEMBLES and np.isfinite(r["ensemble_sd"])
    ]
    if len(usable) < 2:
        return float("nan"), f"fewer than 2 sizes with {MIN_ENSEMBLES}+ ensembles"
    member_sd = usable[0]["member_sd"]
    if not member_sd > 0:
        return float(usable[0]["k"]), "members agree exactly: nothing to average away"
    for i, here in enumerate(usable[:-1]):
        best_later = min(r["ensemble_sd"] for r in usable[i + 1 :])
        if here["ensemble_sd"] - best_later < min_gain * member_sd:
            return float(here["k"]), ""
    return float("nan"), f"still paying at k={usable[-1]['k']}: more members would tell"


def ensembles(
    df: pd.DataFrame,
    sizes: Iterable[int] = DEFAULT_SIZES,
    metric: str = "accuracy",
    min_gain: float = MIN_GAIN,
    by: str | Iterable[str] | None = None,
) -> pd.DataFrame:
    """Seed ensembles of every setup whose members share their test rows (module docstring).

    One row per setup and k (k = 1 and each of `sizes` up to the setup's member count). The
    setup is shown by `by` (default: library, model, dataset, varied, and every other setup
    column that varies in the data). `attrs["left_out"]` lists the setups left out and why.
    """
    data = ok_rows(df)
    setup = setup_columns(data)
    shown = as_list(by) or [c for c in setup if c in LABELS or c in varying(data, setup)]
    rows, left_out = [], []
    for key, sub in data.groupby(setup, sort=True, dropna=False) if setup else [((), data)]:
        key = key if isinstance(key, tuple) else (key,)
        where = dict(zip(setup, key, strict=True))
        label = ", ".join(f"{c}={where[c]}" for c in shown if c in where)
        if len(sub) < 2:
            left_out.append(f"{label}: one member, nothing to average")
            continue
        if not same_test_rows(sub):
            left_out.append(
                f"{label}: members predict different test rows (the split seed "
                "varies), so their probabilities cannot be averaged row by row"
            )
            continue
        sub = sub.sort_values(present(sub, ORDER), kind="stable")
        proba, why = probabilities(sub)
        if proba is None:
            left_out.append(f"{label}: {why}")
            continue
        y_true = np.asarray(sub["y_true"].iloc[0])
        for row in one_setup(y_true, proba, sizes, metric, min_gain):
            rows.append({**{c: where[c] for c in shown if c in where}, **row})
    out = pd.DataFrame(rows, columns=[*shown, *COLUMNS])
    out.attrs["left_out"] = left_out
    return out


def summary_line(table: pd.DataFrame, k: int, metric: str = "accuracy") -> list[str]:
    """One line per setup for the console: the k-ensemble against its members."""
    lines = []
    labels = [c for c in table.columns if c not in COLUMNS]
    for _, r in table[table["k"] == k].iterrows():
        where = " / ".join(str(r[c]) for c in labels)
        stop = "" if pd.isna(r["stops_paying"]) else f"; stops paying at k={int(r['stops_paying'])}"
        lines.append(
            f"ensemble of {k} ({where}): {metric} {r['ensemble_mean']:.4f} (sd {r['ensemble_sd']:.4f},"
            f" {r['n_ensembles']} ensembles) vs members {r['member_mean']:.4f} (sd "
            f"{r['member_sd']:.4f}); sd x{r['sd_ratio']:.2f}, churn {r['member_churn']:.3f} -> "
            f"{r['ensemble_churn']:.3f}{stop}"
        )
    return lines


def configured_size(run_dir: str | Path | None) -> int | None:
    """The run's `ensemble.size` from its stored config (None when unset or unreadable)."""
    if run_dir is None:
        return None
    from bench.store import run_files

    path = run_files(run_dir).config
    try:
        from omegaconf import OmegaConf

        size = OmegaConf.load(path).get("ensemble", {}).get("size") if path.is_file() else None
    except Exception:  # noqa: BLE001 - an older or hand-edited config: no configured size
        return None
    return int(size) if size is not None else None


def run_summary(run_dir: str | Path, metric: str = "accuracy") -> list[str]:
    """The lines the end of a sweep prints when `ensemble.size` is set (empty otherwise)."""
    k = configured_size(run_dir)
    if k is None:
        return []
    from bench.analysis.common import load

    table = ensembles(load(run_dir), sizes=sorted({k, *DEFAULT_SIZES}), metric=metric)
    lines = summary_line(table, k, metric)
    if not lines:
        lines = [f"ensemble of {k}: no setup has {k} members that share their test rows"]
    return lines + [f"ensemble: {why}" for why in table.attrs.get("left_out", [])]
