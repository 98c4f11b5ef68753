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
0..C-1, as `bench.metrics` has them). Runs with `predictions=compact` store none. A run that kept
only `y_score` is rebuilt as [1 - s, s] only when it is verifiably binary: every member's
`y_pred` is the argmax of [1 - s, s], every label is 0 or 1, and a stored `n_classes` (if any)
says 2; the labels alone cannot tell, since a multiclass test set may lack a class. Otherwise
(`y_score` is then the top probability, which cannot be averaged) the setup is left out with the
reason.

**Ensembles.** Soft voting: the mean of the k members' probabilities, then the metric of that
mean (`bench.metrics.classification_metrics_many`, the trials' own metric code). Ties (an even k
of members that output 0/1, 0.5 against 0.5) go to a seeded random class, drawn once per test
row (a jitter below 1e-9 on every probability), not always to class 0 as a bare argmax would:
always-class-0 shifts the ensemble's accuracy by the tied share times the class imbalance, and
an odd-k-only rule would refuse sizes users ask for; one draw per row keeps identical
probabilities giving identical predictions (no churn from the tie-break itself).

The members are cut into floor(N / k) *disjoint* blocks: ensembles that share members are
correlated, and their spread would understate the spread of independent ensembles. One cut is
noisy (40 members give four ensembles of 10), so the statistics of each k are averaged over
`PARTITIONS` (200) seeded random partitions (fewer where one already holds many ensembles): the
within-partition sample variance of the k-ensembles' metric is an unbiased estimate of the
variance of independent k-ensembles, and so is its average over partitions, which uses every
member (the N mod k left over differ from partition to partition). `ensemble_sd` is the square
root of that average, `ensemble_mean` the mean over all partitions' ensembles (like `member_mean`,
a mean over all N members), `ensemble_churn` the mean pairwise churn within a partition, averaged.
The 95% interval of `ensemble_sd` is *approximate*: the chi-square interval with floor(N/k) - 1
degrees of freedom of one partition, around the averaged variance; averaging over partitions
only lowers the estimate's variance, so the interval is, if anything, wide, but it assumes
roughly normal ensemble scores. k = N gives one ensemble (its mean, no spread).

**Columns** (one row per setup and k; k = 1 is the members themselves): `member_mean`,
`member_sd`, `ensemble_mean`, `ensemble_sd` (+ CI), `sd_ratio` = ensemble_sd / member_sd,
`variance_ratio` = its square (1/k if the members' errors were independent, which seeds never
quite are: the distance from 1/k says how correlated they are), `member_churn` and
`ensemble_churn`, `churn_ratio`, `gain` and `gain_se` (below), and `stops_paying`.

**Stops paying** (the same value on every row of a setup). The gain beyond k is how much the
best larger computed size lowers the ensemble sd, in member sds:
(sd(k) - min over k' > k of sd(k')) / sd(1); against the best larger size, not only the next,
so one noisy step up does not end the search; in member-sd units, because a relative rule keeps
"paying" for ever on an sd that is already negligible. `gain_se` is its grouped-jackknife
standard error (the members cut into 20 seeded groups, each left out in turn). Walking up the
computed sizes (k = 1 included; sizes with fewer than 3 ensembles do not count), the verdict is
the first k whose gain is below `min_gain` (default 0.10) even at gain + 1.645 se; a k whose
gain is above `min_gain` even at gain - 1.645 se pays, and the walk goes on; a gain whose band
straddles `min_gain` ends the walk undecided. Undecided and "still paying at the largest k" give
NaN, and `note` says which. Members that agree exactly (sd 0 and churn 0) stop at k = 1; members
with sd 0 but churn > 0 give NaN (the sd cannot see what averaging buys).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2

from bench.analysis.common import SEED_COLUMNS, SETUP_COLUMNS, as_list, ok_rows, present, varying

DEFAULT_SIZES: tuple[int, ...] = (2, 5, 10)
MIN_GAIN = 0.10
MIN_ENSEMBLES = 3  # sizes with fewer ensembles do not enter the stops-paying rule
PARTITIONS = 200  # random disjoint partitions averaged per k
MAX_ENSEMBLES = 4000  # fewer partitions where each holds many ensembles (large N, small k)
JACKKNIFE_GROUPS = 20  # member groups left out in turn for the gain's standard error
Z = 1.645  # the gain must clear min_gain by Z standard errors either way (90% two-sided)
TIE_JITTER = 1e-9  # below any real difference of averaged probabilities
ORDER = (*SEED_COLUMNS, "seed_cv", "repeat", "trial_key")
LABELS = ("library", "model", "dataset", "varied")  # always shown, the rest only when they vary
COLUMNS = (
    "k", "n_members", "n_ensembles", "member_mean", "member_sd", "ensemble_mean", "ensemble_sd",
    "ensemble_sd_ci_low", "ensemble_sd_ci_high", "sd_ratio", "variance_ratio", "member_churn",
    "ensemble_churn", "churn_ratio", "gain", "gain_se", "stops_paying", "note",
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
        if len({len(s) for s in scores}) != 1:
            return None, "members' y_score arrays differ in length"
        s = np.stack(scores)
        proba = np.stack([1.0 - s, s], axis=-1)
        if _verifiably_binary(sub, s):
            return proba, ""
        return None, (
            "only y_score is stored and the run is not verifiably binary (y_score is the top "
            "class probability for more than 2 classes, which cannot be averaged)"
        )
    return None, "no probabilities stored (predictions=compact or none)"


def _verifiably_binary(sub: pd.DataFrame, s: np.ndarray) -> bool:
    """y_score is P(class 1) of a 2-class problem: every member's y_pred is the argmax of
    [1 - s, s] (s = 0.5 either way), every label is 0 or 1, and a stored class count says 2.
    The labels alone cannot tell: a multiclass test set may lack a class."""
    if "n_classes" in sub.columns and not (pd.to_numeric(sub["n_classes"]) == 2).all():
        return False
    if "y_pred" not in sub.columns or sub["y_pred"].isna().any():
        return False
    try:
        y_pred = np.stack([np.asarray(p) for p in sub["y_pred"]]).astype(np.int64)
        y_true = np.stack([np.asarray(t) for t in sub["y_true"]]).astype(np.int64)
    except (ValueError, TypeError):
        return False
    if y_pred.shape != s.shape or not np.isin(y_true, (0, 1)).all():
        return False
    return bool(((y_pred == (s > 0.5)) | (s == 0.5)).all())


def same_test_rows(sub: pd.DataFrame) -> bool:
    """Every member predicted the same test rows, with the same labels, in the same order."""
    for column in ("test_index", "y_true"):
        if column in sub.columns:
            first = np.asarray(sub[column].iloc[0])
            if not all(np.array_equal(np.asarray(v), first) for v in sub[column]):
                return False
    return True


def _metric(y_true: np.ndarray, proba: np.ndarray, metric: str) -> np.ndarray:
    """The metric of each of a stack of probability tables on the same labels (ties already
    broken by `_tie_break`)."""
    if metric in ("accuracy", "balanced_accuracy"):  # fast path, the same values as below
        hit = np.argmax(proba, axis=2) == y_true
        if metric == "accuracy":
            return hit.mean(axis=1)
        return np.mean([hit[:, y_true == c].mean(axis=1) for c in np.unique(y_true)], axis=0)
    from bench.metrics import classification_metrics_many

    labels = np.broadcast_to(y_true, proba.shape[:2])
    values = classification_metrics_many(labels, proba)
    if metric not in values:
        raise ValueError(f"metric {metric!r}: ensembles compute one of {', '.join(values)}")
    return np.asarray(values[metric], dtype=float)


def _churn(pred: np.ndarray) -> float:
    """Mean pairwise churn (share of rows predicted differently, over all pairs) of a stack of
    predictions (tables x rows), as `bench.analysis.churn.pairwise_churn` computes it."""
    m = len(pred)
    if m < 2:
        return float("nan")
    counts = np.stack([(pred == c).sum(axis=0) for c in np.unique(pred)])  # classes x rows
    differing = (m * m - (counts.astype(float) ** 2).sum(axis=0)) / 2.0
    return float((differing / (m * (m - 1) / 2.0)).mean())


def _sd(x: np.ndarray) -> float:
    """Sample sd of the finite values (NaN with fewer than 2), as `variance_ci` drops NaNs."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    return float(np.std(x, ddof=1)) if len(x) >= 2 else float("nan")


def _sizes_for(n: int, sizes: Iterable[int]) -> list[int]:
    return sorted({1, *(int(k) for k in sizes if 2 <= int(k) <= n)})


def _tie_break(proba: np.ndarray, seed: int) -> np.ndarray:
    """`proba` plus a seeded jitter below TIE_JITTER, drawn once per test row and class: a tie
    (an even k of 0/1 members, 0.5 against 0.5) goes to a random class, not always to class 0
    (argmax), and identical probabilities still give identical predictions."""
    jitter = np.random.default_rng(seed).random(proba.shape[-2:]) * TIE_JITTER
    return proba + jitter


def _partition_stats(
    y_true: np.ndarray, proba: np.ndarray, k: int, perms: np.ndarray, metric: str
) -> tuple[float, float, float]:
    """(mean metric, mean within-partition variance, mean churn) of the disjoint k-ensembles of
    each partition (one row of `perms` each: a member order cut into floor(n / k) blocks)."""
    n = perms.shape[1]
    blocks = n // k
    idx = perms[:, : blocks * k].reshape(len(perms), blocks, k)
    ensembles = proba[idx].mean(axis=2)  # partitions x blocks x rows x classes
    values = _metric(y_true, ensembles.reshape(-1, *proba.shape[1:]), metric).reshape(
        len(perms), blocks
    )
    var = np.var(values, axis=1, ddof=1) if blocks >= 2 else np.full(len(perms), np.nan)
    pred = np.argmax(ensembles, axis=3)
    churn = [_churn(p) for p in pred] if blocks >= 2 else [np.nan]
    return float(values.mean()), float(np.mean(var)), float(np.mean(churn))


def _partitions(n: int, k: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random member orders (fewer where each already holds many ensembles)."""
    count = max(1, min(count, MAX_ENSEMBLES // max(n // k, 1)))
    return np.stack([rng.permutation(n) for _ in range(count)])


def one_setup(
    y_true: np.ndarray,
    proba: np.ndarray,
    sizes: Iterable[int],
    metric: str,
    min_gain: float,
    partitions: int = PARTITIONS,
    seed: int = 0,
) -> list[dict]:
    """The rows of one setup: `proba` is members x rows x classes (module docstring)."""
    n = len(proba)
    proba = _tie_break(proba, seed)
    ks = _sizes_for(n, sizes)
    rng = np.random.default_rng([seed, 1])
    perms = {k: _partitions(n, k, 1 if k == 1 else partitions, rng) for k in ks}
    stats_ = {k: _partition_stats(y_true, proba, k, perms[k], metric) for k in ks}
    member_mean, member_var, member_churn = stats_[1]
    member_sd = float(np.sqrt(member_var))
    rows = []
    for k in ks:
        mean, var, churn = stats_[k]
        sd, blocks = float(np.sqrt(var)), n // k
        low = high = float("nan")
        if blocks >= 2 and var > 0:  # approximate: chi-square of one partition (docstring)
            dof = blocks - 1
            low, high = (float(np.sqrt(dof * var / chi2.ppf(q, dof))) for q in (0.975, 0.025))
        ratio = sd / member_sd if member_sd > 0 else float("nan")
        rows.append({
            "k": k, "n_members": n, "n_ensembles": blocks, "member_mean": member_mean,
            "member_sd": member_sd, "ensemble_mean": mean, "ensemble_sd": sd,
            "ensemble_sd_ci_low": low, "ensemble_sd_ci_high": high, "sd_ratio": ratio,
            "variance_ratio": ratio**2, "member_churn": member_churn, "ensemble_churn": churn,
            "churn_ratio": churn / member_churn if member_churn > 0 else float("nan"),
        })  # fmt: skip
    _gains(rows, y_true, proba, perms, metric, seed)
    stop, note = stops_paying(rows, min_gain)
    for row in rows:
        row["stops_paying"], row["note"] = stop, note
    return rows


def _gain_values(rows: Sequence[dict], sds: dict[int, float]) -> dict[int, float]:
    """Gain beyond k in member sds: (sd(k) - min over usable k' > k of sd(k')) / sd(1)."""
    usable = [r["k"] for r in rows if _usable(r)]
    out = {}
    for i, k in enumerate(usable[:-1]):
        out[k] = (sds[k] - min(sds[j] for j in usable[i + 1 :])) / sds[1] if sds[1] > 0 else np.nan
    return out


def _gains(
    rows: list[dict], y_true: np.ndarray, proba: np.ndarray, perms: dict, metric: str, seed: int
) -> None:
    """`gain`, `gain_se` per row: the gain beyond k (`_gain_values`) and its grouped-jackknife
    standard error (members cut into up to JACKKNIFE_GROUPS seeded groups, one left out at a
    time, each replicate with its own partitions of the remaining members)."""
    n = len(proba)
    full = _gain_values(rows, {r["k"]: r["ensemble_sd"] for r in rows})
    groups = np.array_split(
        np.random.default_rng([seed, 2]).permutation(n), min(n, JACKKNIFE_GROUPS)
    )
    replicates = []
    for out in groups:
        keep = np.setdiff1d(np.arange(n), out)
        sds = {}
        for r in rows:
            k = r["k"]
            use = perms[k][: max(1, len(perms[k]) // 4)]
            sub = np.stack([p[np.isin(p, keep)] for p in use])  # the same orders, less the group
            sub = np.searchsorted(keep, sub)
            if len(keep) // k < 2:
                sds[k] = np.nan
                continue
            sds[k] = np.sqrt(_partition_stats(y_true, proba[keep], k, sub, metric)[1])
        replicates.append(_gain_values(rows, sds))
    g = len(groups)
    for r in rows:
        k = r["k"]
        r["gain"] = full.get(k, np.nan)
        values = np.array([rep.get(k, np.nan) for rep in replicates], dtype=float)
        r["gain_se"] = (
            float(np.sqrt((g - 1) / g * ((values - values.mean()) ** 2).sum()))
            if k in full and g >= 2 else np.nan
        )  # fmt: skip


def _usable(r: dict) -> bool:
    return r["n_ensembles"] >= MIN_ENSEMBLES and bool(np.isfinite(r["ensemble_sd"]))


def stops_paying(rows: Sequence[dict], min_gain: float = MIN_GAIN) -> tuple[float, str]:
    """(k, "") for the first size whose gain beyond it is below `min_gain` member sds even at
    the top of its uncertainty (module docstring), or (NaN, why)."""
    usable = [r for r in rows if _usable(r)]
    if len(usable) < 2:
        return float("nan"), f"fewer than 2 sizes with {MIN_ENSEMBLES}+ ensembles"
    member_sd = usable[0]["member_sd"]
    if not member_sd > 0:
        if usable[0].get("member_churn", 0.0) == 0:
            return float(usable[0]["k"]), "members agree exactly: nothing to average away"
        return float("nan"), (
            "members score the same but predict differently (churn > 0): the sd cannot "
            "measure what averaging buys; see the churn columns"
        )
    for i, here in enumerate(usable[:-1]):
        gain = here.get("gain")
        if gain is None or not np.isfinite(gain):
            best_later = min(r["ensemble_sd"] for r in usable[i + 1 :])
            gain = (here["ensemble_sd"] - best_later) / member_sd
        se = here.get("gain_se", 0.0)
        se = 0.0 if se is None else se
        if not np.isfinite(se):
            return float("nan"), f"no uncertainty for the gain beyond k={here['k']}"
        if gain + Z * se < min_gain:
            return float(here["k"]), ""
        if gain - Z * se < min_gain:
            return float("nan"), (
                f"undecided at k={here['k']}: the gain beyond it, {gain:.2f} member sds "
                f"(+-{Z * se:.2f}), straddles {min_gain:g}; more members would tell"
            )
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
