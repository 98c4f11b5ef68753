"""Repeat until the answer is known (`seeds.until`): seeds in waves, per setup, until its interval
is narrow enough or a comparison has its verdict.

A *setup* is everything of a trial but its seeds (library, model, mode, device, varied source,
...). The first wave is the sweep as configured (`seeds.n` seeds per setup); each later wave adds
`seeds.until.wave` seed indices to the setups whose question is still open, up to
`seeds.until.max`. A trial with seed index i is the same trial (same spec, same key) whatever
wave it runs in, and its wave is a function of i (`Setup.wave_of`): rows record it, and the
stopping decisions are a pure function of the rows (`replay`). So a resumed run recomputes the
decisions of the waves it already ran from their rows and goes on where the killed one stopped,
and the summary and the report recompute them the same way.

The intervals are anytime-valid confidence sequences (bench.analysis.sequential): stopping on
the data leaves them valid, where a t interval checked after every wave would not be.

Waves go through `bench.runner.execute` (given as `run`), one wave after another in one Ray
session and one PartWriter, so a cluster, batching, retries and timeouts work as for any sweep.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis.sequential import (
    Interval,
    confidence_sequence,
    planned_t,
    verdict,
)
from bench.config import until_on
from bench.spec import TrialSpec
from bench.sweep import iter_specs

SEED_FIELDS = ("seed_split", "seed_order", "seed_init", "seed_cv", "repeat")
# The spec fields that an axis of seeds.until.compare moves (a mode sets init and order modes, a
# model its hyperparameters and grid): pairs of setups agree on every other field.
AXIS_FIELDS = {
    "library": ("library",),
    "model": ("model", "hparams", "search"),
    "mode": ("mode", "init_mode", "order_mode"),
    "device": ("device",),
    "deterministic": ("deterministic",),
    "threads": ("threads",),
    "cpu_isa": ("cpu_isa",),
}
LABEL_FIELDS = ("model", "mode", "library", "device", "deterministic", "threads", "cpu_isa")


@dataclass
class Setup:
    """One setup's trials by seed index (up to its cap: `seeds.until.max`, or less where
    `seeds.n_by_library` caps its library) and how many of them the first wave holds."""

    id: str
    fields: dict[str, Any]
    specs: list[TrialSpec]
    first: int
    wave: int
    label: str = ""

    def through(self, k: int) -> int:
        """Seeds scheduled by the end of wave k (0 before wave 1)."""
        return 0 if k < 1 else min(len(self.specs), self.first + (k - 1) * self.wave)

    def wave_of(self, i: int) -> int:
        return 1 if i < self.first else 2 + (i - self.first) // self.wave

    @property
    def cap(self) -> int:
        return len(self.specs)


@dataclass
class Plan:
    """Every setup of a sweep with seeds.until, and the pairs a comparison looks at."""

    until: dict[str, Any]
    setups: dict[str, Setup]  # in the sweep's order
    pairs: list[tuple[str, str]]  # (first, second) setup ids along until.compare
    where: dict[str, tuple[str, int]]  # trial key -> (setup id, seed index)

    @classmethod
    def of(cls, plain: dict[str, Any]) -> Plan:
        """The plan of a composed config (`to_container`, or a run's config.yaml loaded)."""
        until = plain["seeds"]["until"]
        first = {s.trial_key for s in iter_specs(plain)}
        most = copy.deepcopy(plain)
        most["seeds"]["n"], most["seeds"]["n_by_source"] = until["max"], {}
        setups: dict[str, Setup] = {}
        for spec in iter_specs(most):  # index i of a setup is its i-th trial (bench.sweep)
            fields = {k: v for k, v in spec.fields_dict().items() if k not in SEED_FIELDS}
            sid = json.dumps(fields, sort_keys=True)
            setup = setups.setdefault(sid, Setup(sid, fields, [], 0, until["wave"]))
            setup.first += spec.trial_key in first
            setup.specs.append(spec)
        setups = {k: s for k, s in setups.items() if s.first}  # left out by n_by_source=0
        where = {sp.trial_key: (s.id, i) for s in setups.values() for i, sp in enumerate(s.specs)}
        plan = cls(until, setups, _pairs(plain, setups, until.get("compare")), where)
        for setup in setups.values():
            setup.label = _label(setup, list(setups.values()))
        return plan

    def wave_specs(self, sid: str, k: int) -> list[TrialSpec]:
        setup = self.setups[sid]
        return setup.specs[setup.through(k - 1) : setup.through(k)]

    def wave_of(self, trial_key: str) -> int | None:
        sid, i = self.where.get(trial_key, (None, 0))
        return None if sid is None else self.setups[sid].wave_of(i)


def _pairs(plain: dict[str, Any], setups: dict[str, Setup], axis: str | None) -> list[tuple]:
    """(first, second) setup ids that differ only along `axis`, first = the axis value the
    config names first."""
    if axis is None:
        return []
    from bench.config import axis_values

    order = [str(v) for v in axis_values(plain, axis)]
    moved = AXIS_FIELDS[axis]
    groups: dict[str, list[Setup]] = {}
    for s in setups.values():
        rest = {k: v for k, v in s.fields.items() if k not in moved}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append(s)
    pairs = []
    for group in groups.values():
        if len(group) == 2:
            a, b = sorted(group, key=lambda s: order.index(str(s.fields[axis])))
            pairs.append((a.id, b.id))
    return pairs


def _label(setup: Setup, every: list[Setup]) -> str:
    """The setup's values of the fields that vary between setups (library and varied always)."""
    shown = [
        f for f in LABEL_FIELDS if f == "library" or len({str(s.fields[f]) for s in every}) > 1
    ]
    parts = [str(setup.fields[f]) if f not in ("deterministic", "threads") else
             f"{f}={setup.fields[f]}" for f in shown]  # fmt: skip
    return " ".join([*parts, setup.fields["varied"]])


# ---------------------------------------------------------------------------------------- replay


@dataclass
class SetupState:
    """A setup after the waves replayed: its last interval, when and why it stopped."""

    setup: Setup
    interval: Interval | None = None
    waves: int = 0
    width_done: bool = False
    answered: str = ""  # why the width question was answered, in words, at the wave it was
    stopped: bool = False
    reason: str = ""
    history: list[tuple[int, Interval]] = field(default_factory=list)  # (wave, interval)


@dataclass
class PairState:
    """A pair of setups compared along seeds.until.compare: first - second on paired seeds."""

    first: Setup
    second: Setup
    names: tuple[str, str]  # the axis values
    interval: Interval | None = None
    verdict: str | None = None
    wave: int = 0  # the wave that reached the verdict
    history: list[tuple[int, Interval]] = field(default_factory=list)

    @property
    def says(self) -> str:
        """The verdict in words."""
        if self.verdict == "first":
            return f"{self.names[0]} better"
        if self.verdict == "second":
            return f"{self.names[1]} better"
        return "equivalent" if self.verdict else "no verdict"


def replay(
    plan: Plan, values: dict[str, float], through: int | None = None
) -> tuple[dict[str, SetupState], list[PairState]]:
    """The stopping decisions of waves 1..`through` (all: None), from the ok values by trial key.
    Decisions are final: a setup stopped after wave k runs no more waves, whatever later rows of a
    killed earlier attempt say (the seeds of wave k+1 are then left out here too)."""
    until = plan.until
    target, margin, conf = until["ci_width"], until["margin"], until["confidence"]
    by_setup: dict[str, dict[int, float]] = {sid: {} for sid in plan.setups}
    for key, value in values.items():
        if key in plan.where:
            sid, i = plan.where[key]
            by_setup[sid][i] = value
    states = {sid: SetupState(s) for sid, s in plan.setups.items()}
    pairs = [
        PairState(plan.setups[a], plan.setups[b], _axis_names(plan, a, b)) for a, b in plan.pairs
    ]
    pairs_of: dict[str, list[PairState]] = {}
    for p in pairs:
        pairs_of.setdefault(p.first.id, []).append(p)
        pairs_of.setdefault(p.second.id, []).append(p)
    if through is None:  # every wave the rows hold
        through = max((plan.wave_of(key) or 0 for key in values), default=0)
    for k in range(1, through + 1):
        active = [st for st in states.values() if not st.stopped]
        for st in active:
            s = st.setup
            got = [v for i, v in by_setup[s.id].items() if i < s.through(k)]
            if not any(s.wave_of(i) == k for i in by_setup[s.id]):  # every trial failed
                st.stopped, st.reason = True, f"no ok trial in wave {k}"
                continue
            st.interval = confidence_sequence(got, conf, planned_t(s.first, s.cap))
            st.waves, st.history = k, [*st.history, (k, st.interval)]
            if not st.width_done and (target is None or st.interval.width < target):
                st.width_done = True  # final, like every decision: later waves do not undo it
                st.answered = (
                    "" if target is None else f"width {st.interval.width:.4f} < {target:g}"
                )
        for p in pairs:
            a, b = p.first, p.second
            if p.verdict or states[a.id].stopped or states[b.id].stopped:
                continue
            n = min(a.through(k), b.through(k))
            va, vb = by_setup[a.id], by_setup[b.id]
            diffs = [va[i] - vb[i] for i in range(n) if i in va and i in vb]
            t_star = planned_t(min(a.first, b.first), min(a.cap, b.cap))
            p.interval = confidence_sequence(diffs, conf, t_star, bounds=(-1.0, 1.0))
            p.history.append((k, p.interval))
            p.verdict = verdict(p.interval, margin)
            p.wave = k if p.verdict else 0
        live = [st for st in active if not st.stopped]
        # Setups that end now or before: a pair with one of them gets no more paired seeds.
        ended = {sid for sid, st in states.items() if st.stopped}
        ended |= {st.setup.id for st in live if st.setup.through(k) >= st.setup.cap}
        for st in live:
            s = st.setup
            mine = pairs_of.get(s.id, [])
            if st.width_done and all(p.verdict or {p.first.id, p.second.id} & ended for p in mine):
                st.stopped, st.reason = True, _reason(st, mine, s)
            elif s.id in ended:
                st.stopped, st.reason = True, f"max {s.cap} reached"
    return states, pairs


def _axis_names(plan: Plan, a: str, b: str) -> tuple[str, str]:
    axis = plan.until["compare"]
    return str(plan.setups[a].fields[axis]), str(plan.setups[b].fields[axis])


def _reason(st: SetupState, pairs: list[PairState], setup: Setup) -> str:
    parts = [st.answered] if st.answered else []
    for p in pairs:
        other = p.second if p.first is setup else p.first
        parts.append(f"verdict: {p.says}" if p.verdict else f"no verdict ({other.label} ended)")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------- running


def read_values(path: Path, plan: Plan) -> dict[str, float]:
    """The until metric of every ok row in the run folder, by trial key."""
    from bench.store import scan_parts

    metric = plan.until["metric"]
    out: dict[str, float] = {}
    for batch in scan_parts(path, ["trial_key", "status", metric]):
        columns = (batch.column(c).to_pylist() for c in ("trial_key", "status", metric))
        for key, status, value in zip(*columns, strict=True):
            if status == "ok" and value is not None:
                out[key] = value
    return out


@dataclass
class Waves:
    """The wave loop of one run; counts what it scheduled for the run's outcome."""

    plan: Plan
    path: Path
    n_trials: int = 0  # trials of every wave run, finished before a resume included
    n_done: int = 0  # of those, finished before this run started

    def run(
        self,
        execute: Callable[[list[TrialSpec], int], Iterator[Any]],
        done: set[str],
        runnable: Callable[[TrialSpec], bool],
    ) -> Iterator[Any]:
        """Run the waves: before each, the open setups from the rows of the waves before
        (`replay`), their trials of this wave that have no ok row yet through `execute(specs,
        wave)`; yields what `execute` yields."""
        setups = [s for s in self.plan.setups.values() if runnable(s.specs[0])]
        states: dict[str, SetupState] = {}
        k = 1
        while True:
            open_ = [s for s in setups if not (s.id in states and states[s.id].stopped)]
            open_ = [s for s in open_ if s.through(k) > s.through(k - 1)]
            if not open_:
                return
            specs = [sp for s in open_ for sp in self.plan.wave_specs(s.id, k)]
            todo = [sp for sp in specs if sp.trial_key not in done]
            self.n_trials += len(specs)
            self.n_done += len(specs) - len(todo)
            again = f" ({len(specs) - len(todo)} already done)" if len(todo) < len(specs) else ""
            print(
                f"wave {k}: {len(open_)} of {len(setups)} setups open, {len(specs)} trials{again}",
                file=sys.stderr,
            )
            if todo:
                yield from execute(todo, k)
            states, _ = replay(self.plan, read_values(self.path, self.plan), through=k)
            k += 1


def plan_of(plain: dict[str, Any]) -> Plan | None:
    """The run's plan, or None for a sweep without seeds.until."""
    return Plan.of(plain) if until_on(plain) else None


def summary_lines(plan: Plan, values: dict[str, float]) -> list[str]:
    """What the sweep prints at its end: per setup, seeds and waves, the interval and why it
    stopped; per compared pair, the difference and the verdict."""
    states, pairs = replay(plan, values)
    metric, conf = plan.until["metric"], plan.until["confidence"]
    lines = [f"seeds.until ({metric}, {conf:.0%} confidence sequence): seeds each setup needed"]
    for st in states.values():
        iv = st.interval
        if iv is None:
            lines.append(f"  {st.setup.label}: no ok trial")
            continue
        why = st.reason or "open (the run ended before its question was answered)"
        lines.append(
            f"  {st.setup.label}: {iv.n} seeds, {st.waves} wave(s), {metric} {iv.mean:.4f} "
            f"[{iv.low:.4f}, {iv.high:.4f}], width {iv.width:.4f}; stopped: {why}"
        )
    for p in pairs:
        if p.interval is None:
            continue
        iv = p.interval
        lines.append(
            f"  {p.first.label} - {p.second.label}: {iv.n} paired seeds, difference "
            f"{iv.mean:+.4f} [{iv.low:+.4f}, {iv.high:+.4f}]; verdict: {p.says}"
            + (f" (margin {plan.until['margin']:g})" if p.verdict == "equivalent" else "")
        )
    return lines
