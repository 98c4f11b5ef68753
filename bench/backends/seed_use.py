"""Which seed sources reach each backend's training, per model and mode.

A row that records a seed the training never read says more than was measured: varying only
`seed_order` for scikit-learn's `LogisticRegression()` (lbfgs, no random state) gives the same
model n times, and an analysis would report a zero-variance "source". So every backend declares
here, without importing its library (the driver and the sweep read it), which sources reach its
training and which it merges into one random state. `tests/test_seed_use.py` trains every
library x model x mode with each source varied alone and checks the weight hashes against this
table; the sweep leaves out the trials a declaration makes pointless (bench.sweep), and each row
records its declaration in `seed_sources`.

A declaration is a tuple of groups: a group of one source is a source of its own; a group of
several is one random state fed from all of them (varying any member moves all of it), which the
analysis treats as one joint source. `split` always reaches the training (it picks the rows), and
`cv` (the grid search's folds) whenever a search runs.
"""

from __future__ import annotations

Groups = tuple[tuple[str, ...], ...]

SEPARATE: Groups = (("order",), ("init",))

# scikit-learn in `defaults` mode, as a typical user writes it (bench.backends.sklearn):
# - LogisticRegression() uses lbfgs, which draws nothing;
# - LinearSVC() with dual="auto" takes the primal solver, which draws nothing, whenever the
#   training part has more rows than features (every dataset bench ships); with fewer rows the
#   dual coordinate descent would shuffle with its random_state;
# - MLPClassifier has one random_state for the initial weights and the shuffling, which bench
#   derives from both seeds (bench.backends.base.combined_seed).
_SKLEARN_DEFAULTS: dict[str, Groups] = {
    "logreg": (),
    "linear_svm": (),
    "mlp": (("order", "init"),),
}

# The scikit-learn-only models (bench.trial.sklearn_only_estimator): the SVM has no seed (no
# Platt scaling), the tree's random_state (seed_init) breaks ties between equally good splits.
_SKLEARN_ONLY: dict[str, Groups] = {"svm_rbf": (), "decision_tree": (("init",),)}


def _user_sklearn(target: str | None) -> Groups:
    """A user's scikit-learn classifier: `seed_init` reaches it as its random_state, if it has
    one (bench.backends.user_sklearn); this imports its class (scikit-learn with it)."""
    from bench.backends.user_sklearn import has_seed

    return (("init",),) if target and has_seed(target) else ()


def _sklearn(model: str, mode: str, target: str | None = None) -> Groups:
    if model == "sklearn_estimator":
        return _user_sklearn(target)
    if model in _SKLEARN_ONLY:
        return _SKLEARN_ONLY[model]
    if mode == "defaults":
        return _SKLEARN_DEFAULTS[model]
    return SEPARATE  # aligned/shared: random_state=seed_init, bench's orders from seed_order


def _neural(model: str, mode: str, target: str | None = None) -> Groups:
    """PyTorch and Keras, every model and mode, the user's own networks too (trained by bench's
    loop, bench.backends.user_neural): initial weights drawn under `seed_init`, batch orders from
    `seed_order` (the library's own generator, or bench's in shared order mode)."""
    return SEPARATE


DECLARATIONS = {"sklearn": _sklearn, "torch": _neural, "tensorflow": _neural}


def seed_groups(
    library: str, model: str, mode: str, search: bool = False, target: str | None = None
) -> Groups:
    """The groups of seed sources that reach a trial's training, `split` first. KeyError for a
    library or model no backend declares: the config knows only declared ones, so that is a
    missing declaration (tests/test_seed_use.py covers every library x model x mode)."""
    groups = (("split",), *DECLARATIONS[library](model, mode, target))
    return (*groups, ("cv",)) if search else groups


def seed_sources(
    library: str, model: str, mode: str, search: bool = False, target: str | None = None
) -> str | None:
    """The row's `seed_sources`: groups joined by `,`, members of a merged group by `+`
    (for example `split,order+init`); a source that is not named had no effect. None for a
    combination no backend declares (its trial can only end as an error row)."""
    try:
        groups = seed_groups(library, model, mode, search, target)
    except (KeyError, ValueError):
        return None
    return ",".join("+".join(g) for g in groups)


def leave_out(varied: str, groups: Groups, swept: tuple[str, ...] | list[str] = ()) -> str | None:
    """Why trials that vary only `varied` would measure nothing new, or None when they do: the
    source does not reach the training, or it shares its random state with a source the sweep
    also varies alone (`swept`, the sweep's `varied` list) and named before it in its group,
    whose trials already vary the whole group."""
    if varied in ("all", "none", "split"):
        return None
    for group in groups:
        if varied in group:
            first = next((s for s in group if s in swept), varied)
            if first == varied:
                return None
            return f"merged with {first} (one random state): varied={first} covers it"
    return f"seed_{varied} does not reach the training"


def table() -> str:
    """The markdown table in docs/design.md: which seeds reach each model's training in each mode
    (`python -m bench.backends.seed_use`; tests/test_seed_use.py checks the page holds it)."""
    from bench.backends import LIBRARIES
    from bench.backends.base import MODES
    from bench.models import MODELS

    def cell(groups: Groups) -> str:
        named = ", ".join("+".join(g) for g in groups)
        return named or "none"

    lines = [
        "| model | mode | " + " | ".join(LIBRARIES) + " |",
        "|---|---|" + "---|" * len(LIBRARIES),
    ]
    for model in (*MODELS, *_SKLEARN_ONLY):
        for mode in ("defaults",) if model in _SKLEARN_ONLY else MODES:
            cells = []
            for library in LIBRARIES:
                if (model in _SKLEARN_ONLY and library != "sklearn") or (
                    model == "cnn" and library == "sklearn"
                ):
                    cells.append("-")
                else:
                    cells.append(cell(DECLARATIONS[library](model, mode)))
            shown = "any" if model in _SKLEARN_ONLY else mode  # one estimator in every mode
            lines.append(f"| {model} | {shown} | " + " | ".join(cells) + " |")
    lines.append("| sklearn_estimator | any | init, if the class has a random_state | - | - |")
    lines.append("| torch_module | aligned | - | order, init | - |")  # bench.backends.user_torch
    lines.append("| keras_model | aligned | - | - | order, init |")  # bench.backends.user_keras
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
