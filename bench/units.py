"""Which trials share a Ray task: trials that differ only in their seeds form stacks
(bench.backends.torch_batched), cut from the stream of trials as they fill; the rest run one by
one. Pure: no Ray, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

from bench.spec import TrialSpec


def batchable(spec: TrialSpec) -> bool:
    return (
        spec.library == "torch"
        and spec.model in ("logreg", "mlp", "torch_module")
        and spec.mode != "defaults"
        and spec.search is None  # a grid search fits many models per trial: one by one
    )


Unit = tuple[list[TrialSpec], bool]  # the trials of one Ray task, and whether they are stacked


def stack_key(spec: TrialSpec) -> tuple:
    """What trials that share one stacked model have in common: everything but their seeds.

    Fixed-seed repeats (`varied=none`) never share a stack (stream_units): trained side by side,
    "one hash across repeats" would hold by construction, not be measured. Each is a stack of
    one, so every repeat of a setting runs the same stacked arithmetic at the same size."""
    fields = spec.fields_dict()
    return tuple(v for k, v in fields.items() if k not in _SEED_FIELDS)


_SEED_FIELDS = frozenset(("varied", "repeat", "seed_split", "seed_order", "seed_init"))


def stream_units(
    specs: Iterable[TrialSpec], max_group: int | None, totals: dict[tuple, int] | None = None
) -> Iterator[Unit]:
    """Ray tasks as the trials come: trials that may share one stacked model (same everything but
    seeds, and the bookkeeping fields `varied` and `repeat`) in stacked groups of at most
    `max_group` (a group of one included, so that every trial of a setup runs the stacked
    arithmetic), each yielded once full, the partial ones at the end; the rest one by one
    (`max_group=None`: everything one by one). Holds at most one unfinished group per setting,
    so a sweep of millions streams. `totals` (trials per `stack_key`, where known) evens the
    groups out: 5,000 trials are 20 stacks of 250, not 19 of 256 and one of 136 that a worker
    would train alone at the end."""
    groups: dict[tuple, list[TrialSpec]] = {}
    for spec in specs:
        if max_group is None or not batchable(spec):
            yield [spec], False
            continue
        if spec.varied == "none":  # a fixed-seed repeat: a stack of its own, at once
            yield [spec], True
            continue
        key = stack_key(spec)
        group = groups.setdefault(key, [])
        group.append(spec)
        if len(group) >= _even(max_group, (totals or {}).get(key)):
            yield group, True
            groups[key] = []
    for group in groups.values():
        if group:
            yield group, True


def _even(max_group: int, total: int | None) -> int:
    """The size of each of the ceil(total / max_group) groups that `total` trials make."""
    if not total:
        return max_group
    return math.ceil(total / math.ceil(total / max_group))


def stack_totals(specs: Iterable[tuple[TrialSpec, int]]) -> dict[tuple, int]:
    """Trials per `stack_key`, from (trial, count) pairs (bench.sweep.setups)."""
    totals: dict[tuple, int] = {}
    for spec, n in specs:
        if batchable(spec) and spec.varied != "none":  # repeats: stacks of one (stream_units)
            totals[stack_key(spec)] = totals.get(stack_key(spec), 0) + n
    return totals


def group_specs(specs: list[TrialSpec], max_group: int) -> list[Unit]:
    """`stream_units` of a list, with its groups evened out."""
    return list(stream_units(specs, max_group, stack_totals((s, 1) for s in specs)))
