"""The gate's answer as a terminal table, a pull-request comment (markdown) or JSON.

Every format says the same things: the verdict and its exit code, the seeds each run used,
whether the trials were paired and why, the confidence and margin, one line per metric (and per
class: recall) with both means, the difference and its interval, and, when inconclusive, about
how many more seeds per run would decide.
"""

from __future__ import annotations

import json as _json
import math
from dataclasses import asdict
from typing import TYPE_CHECKING

from bench.analysis.gate import INCONCLUSIVE, WORSE, Difference, GateResult
from bench.analysis.gate_churn import ChurnGate
from bench.cli_common import json_plain, markdown_table

if TYPE_CHECKING:
    from bench.gate import Run

MARKS = {"better": "✅", "not worse": "✅", "worse": "❌", "inconclusive": "⚠️"}
RULE = (
    "better: interval's lower bound > 0; not worse: lower bound > -margin; worse: the drop is "
    "beyond seed noise (one-sided, Holm over metrics and classes, false-alarm rate <= "
    "(1 - confidence) / 2) and not shown to be within the margin; else inconclusive"
)
RULE_FREE = (
    "worse: the candidate's predictions differ from the baseline's more than the baseline's "
    "seeds differ among themselves (one-sided permutation test, false-alarm rate <= "
    "(1 - confidence) / 2); else not worse"
)


def _num(x: float, sign: bool = False) -> str:
    if not math.isfinite(x):
        return "-inf" if x == -math.inf else "+inf" if x == math.inf else "n/a"
    return f"{x:+.4f}" if sign else f"{x:.4f}"


def _seeds(result: GateResult | ChurnGate, base: Run, cand: Run) -> str:
    def one(run: Run, n: int) -> str:
        varied = f", varied={run.varied}" if run.varied else ""
        failed = f", {run.n_failed} failed rows left out" if run.n_failed else ""
        return f"{run.path} ({n} seeds{varied}{failed})"

    return (
        f"baseline {one(base, result.n_baseline)}\n"
        f"candidate {one(cand, result.n_candidate)}\n"
        f"{'paired' if result.paired else 'unpaired'}: {result.pairing}"
    )


def _decide(result: GateResult | ChurnGate) -> str:
    """The line that says what more seeds would do, for an inconclusive answer."""
    if result.verdict != INCONCLUSIVE:
        return ""
    if result.more_seeds is None:
        return (
            "more seeds needed: the spread is unknown (fewer than 2 seeds in a run) or no "
            "number of seeds would decide (no difference and margin 0); run more seeds"
        )
    return (
        f"more seeds needed: about {result.more_seeds} more per run ({result.seeds_needed} per "
        "run in all) would decide, if the difference and spread stay as seen"
    )


def _level(confidence: float) -> str:
    """0.95 -> "95%", 0.999 -> "99.9%"."""
    return f"{confidence * 100:.10g}%"


def _rows(items: list[Difference]) -> list[list[str]]:
    return [
        [
            x.name,
            _num(x.mean_baseline),
            _num(x.mean_candidate),
            _num(x.diff, sign=True),
            f"{_num(x.low, True)} to {_num(x.high, True)}",
            f"{x.p_adjusted:.3g}",
            x.verdict + (" (flagged)" if x.name.startswith("class") and x.verdict == WORSE else ""),
        ]
        for x in items
    ]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(line.rstrip() for line in lines)


def _header(level: str) -> list[str]:
    return [
        "",
        "baseline",
        "candidate",
        "difference",
        f"{level} interval",
        "p drop (Holm)",
        "verdict",
    ]


def text(result: GateResult | ChurnGate, base: Run, cand: Run) -> str:
    """The terminal form."""
    level = _level(result.confidence)
    out = [f"bench gate: {result.verdict} (exit {result.exit_code})", _seeds(result, base, cand)]
    if isinstance(result, ChurnGate):
        out += [
            f"label-free: {result.n_rows} input rows, {level} confidence",
            _churn_lines(result),
            f"rule: {RULE_FREE}",
        ]
    else:
        out.append(f"{level} confidence, margin {result.margin:g} (candidate - baseline)")
        out.append(_table(_header(level), _rows(result.metrics)))
        if result.classes:
            out.append("per class (recall):")
            out.append(_table(_header(level), _rows(result.classes)))
        for c in result.flagged:
            out.append(
                f"flagged: {c.name}: recall {_num(c.mean_baseline)} -> {_num(c.mean_candidate)} "
                f"({_num(c.diff, True)}), a drop beyond seed noise"
            )
        out.append(f"rule: {RULE}")
    decide = _decide(result)
    if decide:
        out.append(decide)
    out.append(f"verdict: {result.verdict} (exit {result.exit_code})")
    return "\n".join(out) + "\n"


def _churn_lines(r: ChurnGate) -> str:
    matched = f"; matched pairs {_num(r.matched)}" if r.paired else ""
    return (
        f"churn within baseline seeds (seed noise): mean {_num(r.within)} "
        f"(5-95% of pairs {_num(r.within_low)} to {_num(r.within_high)})\n"
        f"churn baseline vs candidate: mean {_num(r.cross)}{matched}\n"
        f"churn within candidate seeds: mean {_num(r.candidate_within)}\n"
        f"excess churn {_num(r.excess, True)}, permutation p = {r.p_value:.3g} "
        f"(alarm below {(1 - r.confidence) / 2:.3g}; smallest possible p {r.min_p:.2g})"
    )


def markdown(result: GateResult | ChurnGate, base: Run, cand: Run) -> str:
    """A pull-request comment."""
    level = _level(result.confidence)
    mark = MARKS[result.verdict]
    pairing = "paired" if result.paired else "unpaired"
    out = [
        f"### bench gate: {mark} {result.verdict} (exit {result.exit_code})",
        "",
        f"Baseline `{base.path}`: {result.n_baseline} seeds; candidate `{cand.path}`: "
        f"{result.n_candidate} seeds. **{pairing}**: {result.pairing}. "
        + (
            f"{level} confidence, margin {result.margin:g}."
            if isinstance(result, GateResult)
            else f"Label-free, {result.n_rows} input rows, {level} confidence."
        ),
        "",
    ]
    if isinstance(result, ChurnGate):
        rows = [
            ["within baseline seeds (seed noise)", _num(result.within)],
            ["baseline vs candidate", _num(result.cross)],
            ["within candidate seeds", _num(result.candidate_within)],
            ["excess", _num(result.excess, True)],
            ["permutation p", f"{result.p_value:.3g}"],
        ]
        out += [markdown_table(["churn", "mean"], rows), "", f"Rule: {RULE_FREE}."]
    else:
        header = ["metric", *_header(level)[1:]]
        out += [markdown_table(header, _rows(result.metrics))]
        if result.classes:
            header = ["class (recall)", *_header(level)[1:]]
            out += ["", markdown_table(header, _rows(result.classes))]
        for c in result.flagged:
            out += ["", f"**Flagged: {c.name}**: recall {_num(c.diff, True)}, beyond seed noise."]
        out += ["", f"Rule: {RULE}."]
    decide = _decide(result)
    if decide:
        out += ["", decide[0].upper() + decide[1:] + "."]
    return "\n".join(out) + "\n"


def json(result: GateResult | ChurnGate, base: Run, cand: Run) -> str:
    """Every number, for tools."""
    data = asdict(result)
    data.update(
        exit_code=result.exit_code,
        more_seeds=result.more_seeds,
        baseline=str(base.path),
        candidate=str(cand.path),
        varied=base.varied,
    )
    return _json.dumps(json_plain(data), indent=2) + "\n"
