"""TrialSpec: everything that determines one trial, as plain, frozen, JSON-serialisable data.

The spec is the unit that travels from the driver to a worker and back into the result row. Its
`trial_key` (sha256 of the canonical JSON) is stable across processes and machines, so resume and
joins between runs can rely on it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from dataclasses import MISSING, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrialSpec:
    sweep: str
    library: str
    model: str
    dataset: str
    device: str
    varied: str  # split | order | init | all | none
    seed_split: int
    seed_order: int
    seed_init: int
    repeat: int
    deterministic: bool
    threads: int
    init_mode: str
    order_mode: str
    hparams: str  # canonical JSON of the model's hyperparameters
    dataset_params: (
        str  # canonical JSON of the dataset's settings (test size, synthetic shape, ...)
    )
    # defaults | aligned | shared (bench.backends.base); init_mode/order_mode hold what it implies
    mode: str = "aligned"
    # Grid search with cross-validation (search.enabled): the fold seed and canonical JSON of
    # {folds, scoring, grid}. None when the trial has no search; then they are left out of the
    # JSON, so trials without a search keep the trial keys they had before these fields existed.
    seed_cv: int | None = None
    search: str | None = None
    # The CPU kernel level the libraries are capped at (bench.isa); "native" sets nothing and is
    # left out of the JSON, so trials that predate the field keep their keys.
    cpu_isa: str = "native"

    @functools.cached_property
    def trial_key(self) -> str:  # cached: a sweep of 10^6 trials asks for each key several times
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    def fields_dict(self) -> dict[str, Any]:
        """The fields as a flat dict: `asdict` without its deep copy (every field is a scalar)."""
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    @functools.cached_property
    def seed_sources(self) -> str:
        """The seed sources that reach this trial's training (bench.backends.seed_use); a
        property, not a field: it follows from the fields, so it stays out of the key."""
        from bench.backends.seed_use import seed_sources

        target = self.hparams_dict().get("_target_") if self.model == "sklearn_estimator" else None
        return seed_sources(self.library, self.model, self.mode, self.search is not None, target)

    def row_fields(self) -> dict[str, Any]:
        """The identity and spec columns of a result row: all an error row needs."""
        return {
            "trial_key": self.trial_key,
            **self.fields_dict(),
            "seed_sources": self.seed_sources,
        }

    def to_json(self) -> str:
        data = self.fields_dict()
        for name, default in _OMIT_WHEN_DEFAULT.items():
            if data[name] == default:
                del data[name]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """From a result row or a dict: Parquet's nulls (NaN in pandas) become None again and numpy
        scalars plain Python values, so the key recomputes to the stored one. A null in a field
        with a default other than None (a column older runs lack) takes that default."""
        defaults = {f.name: f.default for f in fields(cls)}
        plain = {k: _plain(v) for k, v in data.items() if k in defaults}
        return cls(
            **{k: v for k, v in plain.items() if v is not None or defaults[k] in (None, MISSING)}
        )

    def hparams_dict(self) -> dict[str, Any]:
        return json.loads(self.hparams)

    def dataset_dict(self) -> dict[str, Any]:
        return json.loads(self.dataset_params)

    def search_dict(self) -> dict[str, Any] | None:
        return json.loads(self.search) if self.search is not None else None


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(TrialSpec))
# Fields left out of the canonical JSON while they hold these values (added after trial keys
# existed: a trial that does not use them keeps its key).
_OMIT_WHEN_DEFAULT: dict[str, object] = {"seed_cv": None, "search": None, "cpu_isa": "native"}


def group_key(specs: list[TrialSpec]) -> str:
    """sha256 of a stack's trial keys in stack order: the same trials in the same order. It names
    a stacked group in its rows, and the part a task writes itself (rows_to=workers)."""
    return hashlib.sha256("\n".join(s.trial_key for s in specs).encode()).hexdigest()


def canonical_json(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def _plain(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value
