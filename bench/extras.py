"""What a sweep needs beyond the base install, and the one-line refusal that names the extra.

`pip install seedbench` alone reads, analyses and reports results. Running a sweep needs Ray
(`[ray]`: every sweep runs on it) and scikit-learn (`[sklearn]`: every sweep loads, splits and
scores its data with it), plus torch (`[torch]`) or TensorFlow (`[tensorflow]`, or
`[tensorflow-gpu]`) for the libraries it trains in; `python -m bench export mlflow` needs
`[mlflow]`. `missing` and `not_installed` look for them without importing any
(importlib's finders only), so the check is cheap and runs before any work.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

DISTRIBUTION = "seedbench"

# what -> (modules it must find, name in messages, extra that installs it)
NEEDS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "ray": (("ray",), "Ray", "ray"),
    "sklearn": (("sklearn", "threadpoolctl"), "scikit-learn", "sklearn"),
    "torch": (("torch",), "torch", "torch"),
    "tensorflow": (("tensorflow", "keras"), "tensorflow", "tensorflow"),
}
_ALWAYS = {
    "ray": "every sweep runs on it",
    "sklearn": "every sweep loads and scores its data with it",
}


def installed(module: str) -> bool:
    """True if `import module` would find something (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it, or a broken entry in sys.modules
        return False


def not_installed(modules: Sequence[str], extra: str, why: str) -> str | None:
    """None if every module is installed, else one line naming those that are not, what needs
    them, and the extra that brings them: `mlflow is not installed (export mlflow needs it);
    pip install 'seedbench[mlflow]'`."""
    gaps = [m for m in modules if not installed(m)]
    if not gaps:
        return None
    verb = "is" if len(gaps) == 1 else "are"
    return (
        f"{' and '.join(gaps)} {verb} not installed ({why}); pip install '{DISTRIBUTION}[{extra}]'"
    )


def trained_libraries(plain: dict[str, Any]) -> set[str]:
    """The libraries a sweep's models train in: the user's networks their one library,
    scikit-learn-only models scikit-learn, the others `libraries` (or their own)."""
    from bench.config import (
        SKLEARN_ONLY_PARAMS,
        USER_NETWORKS,
        ConfigError,
        model_libraries,
        selected_models,
    )

    try:
        models = [m for _, m in selected_models(plain)]
    except ConfigError:  # refused later by validate_models, naming the key
        models = [plain["model"]]
    libraries: set[str] = set()
    for m in models:
        if m["name"] in USER_NETWORKS:
            libraries.add(USER_NETWORKS[m["name"]])
        elif m["name"] in SKLEARN_ONLY_PARAMS:
            libraries.add("sklearn")
        else:
            libraries.update(model_libraries(plain, m))
    return libraries


def missing(plain: dict[str, Any]) -> str | None:
    """None if everything the sweep needs is installed, else one line naming what is not and the
    `pip install` that brings it."""
    libraries = trained_libraries(plain)
    gaps: list[tuple[str, str, str | None]] = []  # (name, extra, why; None: a library it trains in)
    for what in ("ray", "sklearn", "torch", "tensorflow"):
        modules, name, extra = NEEDS[what]
        if what not in libraries and what not in _ALWAYS:
            continue
        if not all(installed(m) for m in modules):
            gaps.append((name, extra, None if what in libraries else _ALWAYS[what]))
    if not gaps:
        return None
    install = f"pip install '{DISTRIBUTION}[{','.join(sorted(extra for _, extra, _ in gaps))}]'"
    if any(extra == "tensorflow" for _, extra, _ in gaps):
        install += f" (or '{DISTRIBUTION}[tensorflow-gpu]' for TensorFlow with CUDA)"
    if all(why is None for *_, why in gaps):
        names = " and ".join(name for name, *_ in gaps)
        return f"libraries: {names} {'is' if len(gaps) == 1 else 'are'} not installed; {install}"
    names = ", ".join(f"{name} ({why or 'in libraries'})" for name, _, why in gaps)
    return f"not installed: {names}; {install}"
