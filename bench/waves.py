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
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.analysis.sequential import (
    Interval,
    confidence_sequence,
    narrow_enough,
    planned_t,
    sd_floor,
    verdict,
)
from bench.config import ConfigError, until_on
from bench.spec import TrialSpec, canonical_json
from bench.sweep import iter_specs

# A setup's spec fields are all but these. Not bench.units._SEED_FIELDS: a stack there groups
# the sources of a setting together (it drops `varied`) and keeps grid-search folds apart (it
# keeps `seed_cv`), while a setup here is one varied source, cv folds included. Nor
# bench.analysis.common.SETUP_COLUMNS: those are row columns (batched, versions), not spec fields.
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
    cap_key: str = "seeds.until.max"  # the setting that set `cap`

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
    unpaired: dict[str, str] = field(default_factory=dict)  # setup id -> why it has no partner

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
            sid = canonical_json(fields)
            setup = setups.setdefault(sid, Setup(sid, fields, [], 0, until["wave"]))
            setup.first += spec.trial_key in first
            setup.specs.append(spec)
        setups = {k: s for k, s in setups.items() if s.first}  # left out by n_by_source=0
        where = {sp.trial_key: (s.id, i) for s in setups.values() for i, sp in enumerate(s.specs)}
        by_library = plain["seeds"].get("n_by_library") or {}
        for setup in setups.values():
            setup.label = _label(setup, list(setups.values()))
            library = setup.fields["library"]
            if setup.cap < until["max"] and by_library.get(library) == setup.cap:
                setup.cap_key = f"seeds.n_by_library.{library}"
        pairs, unpaired = _pairs(plain, setups, until.get("compare"))
        return cls(until, setups, pairs, where, unpaired)

    def notes(self) -> list[str]:
        """Lines to print before the run: the setups a comparison cannot pair."""
        then = "at its width" if self.until["ci_width"] is not None else "after its first wave"
        return [
            f"seeds.until: {self.setups[sid].label}: {why}; it stops {then}"
            for sid, why in self.unpaired.items()
        ]

    def wave_specs(self, sid: str, k: int) -> list[TrialSpec]:
        setup = self.setups[sid]
        return setup.specs[setup.through(k - 1) : setup.through(k)]

    def wave_of(self, trial_key: str) -> int | None:
        sid, i = self.where.get(trial_key, (None, 0))
        return None if sid is None else self.setups[sid].wave_of(i)


def _pairs(
    plain: dict[str, Any], setups: dict[str, Setup], axis: str | None
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(first, second) setup ids that differ only along `axis`, first = the axis value the
    config names first; and the setups with no partner, with why. Refuses (ConfigError) a
    comparison where no setup has one."""
    if axis is None:
        return [], {}
    from bench.config import axis_values

    order = [str(v) for v in axis_values(plain, axis)]
    moved = AXIS_FIELDS[axis]
    groups: dict[str, list[Setup]] = {}
    for s in setups.values():
        rest = {k: v for k, v in s.fields.items() if k not in moved}
        groups.setdefault(canonical_json(rest), []).append(s)
    pairs, unpaired = [], {}
    for group in groups.values():
        if len(group) == 2:
            a, b = sorted(group, key=lambda s: order.index(str(s.fields[axis])))
            pairs.append((a.id, b.id))
            continue
        for s in group:
            other = [v for v in order if v != str(s.fields[axis])]
            unpaired[s.id] = (
                f"no partner on {axis} (the sweep has no {axis}={'/'.join(other)} setup with "
                "its other settings: left out by the sweep or by seeds.n_by_source)"
            )
    if not pairs:
        raise ConfigError(
            f"seeds.until.compare: no two setups differ only in {axis}, so nothing can be "
            f"compared (a source left out for one {axis} value, or different sources per value)"
        )
    return pairs, unpaired


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
    margin: float = 0.0
    interval: Interval | None = None
    verdict: str | None = None
    wave: int = 0  # the wave that reached the verdict
    history: list[tuple[int, Interval]] = field(default_factory=list)

    @property
    def says(self) -> str:
        """The verdict in words: both claims where both hold ("sklearn better, within margin
        0.01")."""
        if not self.verdict:
            return "no verdict"
        if self.verdict == "equivalent":
            return "equivalent"
        better = self.names[0] if self.verdict.startswith("first") else self.names[1]
        within = self.verdict.endswith("within margin")
        return f"{better} better" + (f", within margin {self.margin:g}" if within else "")


@dataclass
class Rows:
    """What `replay` reads of a run's rows (`read_values`)."""

    values: dict[str, float]  # the until metric of every ok row that has one (not NaN), by key
    tried: set[str] = field(default_factory=set)  # keys with a row of any status
    n_test: dict[str, int] = field(default_factory=dict)  # test rows of each ok row, by key

    @classmethod
    def of(cls, rows: Rows | dict[str, float]) -> Rows:
        """Rows as they are, or made-up values by key (the tests): every key tried."""
        return rows if isinstance(rows, Rows) else cls(dict(rows), set(rows))


def _floor(setups: list[Setup], values: list[float], rows: Rows) -> float:
    """The sd floor (bench.analysis.sequential.sd_floor) for values of `setups`: none for
    fixed-seed repeats (`varied=none`) whose values are all identical, where a spread of 0 is
    the truth; half a test row otherwise (none where the rows do not say n_test)."""
    if all(s.fields["varied"] == "none" for s in setups) and len(set(values)) <= 1:
        return 0.0
    sizes = [rows.n_test[sp.trial_key] for s in setups for sp in s.specs
             if sp.trial_key in rows.n_test]  # fmt: skip
    return sd_floor(min(sizes)) if sizes else 0.0


def replay(
    plan: Plan, rows: Rows | dict[str, float], through: int | None = None
) -> tuple[dict[str, SetupState], list[PairState]]:
    """The stopping decisions of waves 1..`through` (all the rows tried: None), from the rows
    (`read_values`, or ok values by trial key). Decisions are final: a setup stopped after wave k
    runs no more waves, whatever later rows of a killed earlier attempt say (the seeds of wave
    k+1 are then left out here too). A setup none of whose trials of a wave were tried (the run
    was killed) stays open: `SetupState.reason` says "open (interrupted in wave k)"."""
    rows = Rows.of(rows)
    until = plan.until
    target, margin, conf = until["ci_width"], until["margin"], until["confidence"]
    by_setup: dict[str, dict[int, float]] = {sid: {} for sid in plan.setups}
    for key, value in rows.values.items():
        if key in plan.where:
            sid, i = plan.where[key]
            by_setup[sid][i] = value
    tried: dict[str, set[int]] = {sid: set() for sid in plan.setups}  # waves with a row
    for key in rows.tried | set(rows.values):
        if key in plan.where:
            sid, i = plan.where[key]
            tried[sid].add(plan.setups[sid].wave_of(i))
    states = {sid: SetupState(s) for sid, s in plan.setups.items()}
    pairs = [
        PairState(plan.setups[a], plan.setups[b], _axis_names(plan, a, b), margin)
        for a, b in plan.pairs
    ]
    pairs_of: dict[str, list[PairState]] = {}
    for p in pairs:
        pairs_of.setdefault(p.first.id, []).append(p)
        pairs_of.setdefault(p.second.id, []).append(p)
    if through is None:  # every wave the rows hold, of any status
        through = max((w for ws in tried.values() for w in ws), default=0)
    halted: dict[str, int] = {}  # setup id -> the wave it never got to (a killed run)
    for k in range(1, through + 1):
        active = [st for st in states.values() if not st.stopped and st.setup.id not in halted]
        for st in active:
            s = st.setup
            if k not in tried[s.id]:  # none of its trials of wave k ran
                halted[s.id] = k
                continue
            if not any(s.wave_of(i) == k for i in by_setup[s.id]):  # every trial failed
                st.stopped, st.reason = True, f"no ok trial in wave {k}"
                continue
            got = [v for i, v in by_setup[s.id].items() if i < s.through(k)]
            t_star = planned_t(s.first, s.cap)
            st.interval = confidence_sequence(got, conf, t_star, floor=_floor([s], got, rows))
            st.waves, st.history = k, [*st.history, (k, st.interval)]
            if not st.width_done and narrow_enough(st.interval, target):
                st.width_done = True  # final, like every decision: later waves do not undo it
                st.answered = (
                    "" if target is None else f"width {st.interval.width:.4f} < {target:g}"
                )
        for p in pairs:
            a, b = p.first, p.second
            if p.verdict or states[a.id].stopped or states[b.id].stopped:
                continue
            if a.id in halted or b.id in halted:
                continue
            n = min(a.through(k), b.through(k))
            va, vb = by_setup[a.id], by_setup[b.id]
            diffs = [va[i] - vb[i] for i in range(n) if i in va and i in vb]
            t_star = planned_t(min(a.first, b.first), min(a.cap, b.cap))
            floor = _floor([a, b], diffs, rows)
            p.interval = confidence_sequence(diffs, conf, t_star, (-1.0, 1.0), floor)
            p.history.append((k, p.interval))
            p.verdict = verdict(p.interval, margin)
            p.wave = k if p.verdict else 0
        live = [st for st in active if not st.stopped and st.setup.id not in halted]
        # Setups that end now or before: a pair with one of them gets no more paired seeds.
        ended = {sid for sid, st in states.items() if st.stopped}
        ended |= {st.setup.id for st in live if st.setup.through(k) >= st.setup.cap}
        for st in live:
            s = st.setup
            mine = pairs_of.get(s.id, [])
            if st.width_done and all(p.verdict or {p.first.id, p.second.id} & ended for p in mine):
                st.stopped, st.reason = True, _reason(st, mine, s, plan)
            elif s.id in ended:
                by = "" if s.cap_key == "seeds.until.max" else f" ({s.cap_key})"
                st.stopped, st.reason = True, f"max {s.cap} reached{by}"
    for sid, st in states.items():
        if not st.stopped:
            st.reason = f"open (interrupted in wave {halted.get(sid, st.waves + 1)})"
    return states, pairs


def _axis_names(plan: Plan, a: str, b: str) -> tuple[str, str]:
    axis = plan.until["compare"]
    return str(plan.setups[a].fields[axis]), str(plan.setups[b].fields[axis])


def _reason(st: SetupState, pairs: list[PairState], setup: Setup, plan: Plan) -> str:
    parts = [st.answered] if st.answered else []
    if setup.id in plan.unpaired:
        parts.append(plan.unpaired[setup.id])
    for p in pairs:
        other = p.second if p.first is setup else p.first
        parts.append(f"verdict: {p.says}" if p.verdict else f"no verdict ({other.label} ended)")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------- running


def read_values(path: Path, plan: Plan) -> Rows:
    """The rows `replay` reads: the until metric of every ok row that has one (NaN and null
    dropped: here, for the sweep and the report alike), by trial key; every key with a row of
    any status; the test rows of the ok ones."""
    from bench.store import scan_parts

    metric = plan.until["metric"]
    out = Rows({})
    names = ("trial_key", "status", metric, "n_test")
    for batch in scan_parts(path, list(names)):
        columns = (batch.column(c).to_pylist() for c in names)
        for key, status, value, n_test in zip(*columns, strict=True):
            out.tried.add(key)
            if status == "ok" and value is not None and not math.isnan(value):
                out.values[key] = value
                if n_test:
                    out.n_test[key] = n_test
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
        for line in self.plan.notes():
            print(line, file=sys.stderr)
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


def trials_phrase(plan: Plan | Any, n: int) -> str:
    """The words "N trials", or with seeds.until "N trials in the first wave, up to M" (M: every setup
    run to its cap), for the lines that announce a run. `plan`: `plan_of`'s, or the config."""
    if plan is not None and not isinstance(plan, Plan):
        from bench.config import to_container

        plan = plan_of(to_container(plan))
    if plan is None:
        return f"{n} trials"
    most = sum(s.cap for s in plan.setups.values())
    return f"{n} trials in the first wave, up to {most}"


def summary_lines(plan: Plan, values: Rows | dict[str, float]) -> list[str]:
    """What the sweep prints at its end: per setup, seeds and waves, the interval and why it
    stopped; per compared pair, the difference and the verdict."""
    states, pairs = replay(plan, values)
    metric, conf = plan.until["metric"], plan.until["confidence"]
    lines = [f"seeds.until ({metric}, {conf:.0%} confidence sequence): seeds each setup needed"]
    for st in states.values():
        iv = st.interval
        if iv is None:
            lines.append(f"  {st.setup.label}: no ok trial; stopped: {st.reason}")
            continue
        why = st.reason
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
