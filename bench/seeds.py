"""Seeds derived per source by hashing, so that varying one source never moves another.

`derive(base, "split", 3)` depends only on its three arguments: changing the order seed's index, or
adding a new source, leaves every split seed as it was. sha256 rather than Python's `hash` because
the value must be identical across processes, machines and Python versions.
"""

from __future__ import annotations

import hashlib

# cv: the folds of a grid search's cross-validation (bench.trial); used only with search.enabled.
SOURCES = ("split", "order", "init", "cv")


def derive(base: int, source: str, index: int) -> int:
    """A uint32 seed for `source` at position `index` of a sweep rooted at `base`."""
    if source not in SOURCES:
        raise ValueError(f"unknown seed source {source!r}; expected one of {SOURCES}")
    if base < 0 or index < 0:
        raise ValueError(f"seeds must be non-negative, got base={base}, index={index}")
    digest = hashlib.sha256(f"bench-seed:{base}:{source}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
