"""scikit-learn's own estimator checks over the PyTorch and Keras classifiers (and scikit-learn's).

Why: the heart experiment runs pipelines, GridSearchCV and cross_val_score over every library, so
each backend must behave as a scikit-learn classifier in all the ways scikit-learn itself checks.
Epochs are few and the learning rate high so that the checks stay fast and still learn their toy
problems (check_classifiers_train asks for > 83% training accuracy).

Checks that are not run, and why (passed to `expected_failed_checks`, so each is reported as
xfail with its reason): see EXPECTED_FAILED below; the README's "Equivalent models" section lists
the same.
"""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from bench.backends import estimator_class

pytestmark = pytest.mark.usefixtures("single_threaded")

FAST = {"epochs": 20, "lr": 0.05, "batch_size": 32}

# Checks a backend fails by design, with the reason. Empty where every check passes.
EXPECTED_FAILED: dict[str, dict[str, str]] = {}


def _estimators():
    out = []
    for library in ("torch", "tensorflow", "sklearn"):
        cls = estimator_class(library)
        out += [
            cls(model="logreg", **FAST),
            cls(model="mlp", hidden_sizes=(8,), **FAST),
            cls(model="linear_svm", **FAST),
        ]
    return out


def _expected_failed(estimator) -> dict[str, str]:
    return EXPECTED_FAILED.get(f"{estimator.library}:{estimator.model}", {})


@parametrize_with_checks(_estimators(), expected_failed_checks=_expected_failed)
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)
