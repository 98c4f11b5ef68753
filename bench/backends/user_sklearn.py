"""Any scikit-learn classifier, named Hydra's way: `model=sklearn_estimator
model._target_=sklearn.ensemble.RandomForestClassifier +model.params.n_estimators=200`.

The class is imported by its dotted path, which comes from the command line or a config file only
(never from a results folder: a replay re-imports the path its run's saved config names). Its
constructor arguments are `model.params`, checked against the class's own `get_params()` before
any work; `random_state`, when the class has one, receives `seed_init` (so the rows declare the
`init` source, bench.backends.seed_use), and nothing reads `seed_order`.
"""

from __future__ import annotations

import functools
from typing import Any

from bench.backends.user_code import import_object

SEED_PARAM = "random_state"


import_estimator = import_object  # the class at 'package.module.Class' (bench.backends.user_code)


@functools.cache
def own_params(target: str) -> tuple[str, ...]:
    """The constructor arguments of the class at `target`, as scikit-learn's `get_params` lists
    them; ValueError when it is not a scikit-learn classifier."""
    from sklearn.base import is_classifier

    cls = import_estimator(target)
    try:
        instance = cls()
    except Exception as exc:  # noqa: BLE001 - a user's class may raise anything
        raise ValueError(f"{target} cannot be built without arguments: {exc}") from None
    if not hasattr(instance, "get_params") or not is_classifier(instance):
        raise ValueError(f"{target} is not a scikit-learn classifier (fit, predict, get_params)")
    return tuple(instance.get_params(deep=False))


def has_seed(target: str) -> bool:
    return SEED_PARAM in own_params(target)


def build(target: str, params: dict[str, Any], seed_init: int):
    """The estimator of one trial: its params, and `seed_init` as its random_state if it has one
    (a random_state in params is replaced: the seed sources are bench's to set)."""
    kwargs = dict(params)
    if has_seed(target):
        kwargs[SEED_PARAM] = seed_init
    return import_estimator(target)(**kwargs)
