"""bench.testing: a property over seeds at a stated confidence, instead of one seed's number.

The error rates are measured on cheap numpy simulations of "a model's accuracy at one seed" (a
binomial share of correct test rows, or a metric that takes a few discrete values and ties),
not on training: thousands of repetitions in well under a second each. The simulations draw
from fixed generators, so these tests are deterministic themselves.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from scipy import stats

from bench.testing import (
    UndecidedWarning,
    assert_over_seeds,
    check_over_seeds,
    over_seeds,
    reseeded,
)

REPS = 2000  # simulated test runs per error rate
N_TEST = 60  # test rows behind one simulated accuracy


def _accuracy(p: float, stream: int = 0):
    """A model whose test accuracy at seed s is Binomial(N_TEST, p) / N_TEST, fixed per seed."""

    def accuracy(seed: int) -> float:
        return np.random.default_rng([stream, seed]).binomial(N_TEST, p) / N_TEST

    return accuracy


def _ceiling(rate: float) -> float:
    """The most a share of REPS runs with true rate `rate` reaches but once in a thousand."""
    return stats.binom.ppf(0.999, REPS, rate) / REPS


def test_a_property_that_holds_passes_for_any_seed_base() -> None:
    """A real model (logistic regression, its training and test rows drawn by the seed), 10 seed
    bases."""
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    X, y = make_classification(
        2000, 8, n_informative=4, n_clusters_per_class=1, class_sep=1.0, random_state=0
    )

    def accuracy(seed: int) -> float:
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, train_size=100, test_size=100, random_state=seed
        )
        return LogisticRegression().fit(X_train, y_train).score(X_test, y_test)

    drawn = []
    for base in range(0, 1000, 100):
        sample = assert_over_seeds(accuracy, at_least=0.9, seeds=range(base, base + 6), looks=3)
        drawn.append(sample.n)
    assert max(drawn) <= 4  # clearly true: decided by the second look, 4 fits at most


def test_a_failing_property_is_reported_with_every_seed() -> None:
    accuracy = _accuracy(0.7)
    with pytest.raises(AssertionError) as info:
        assert_over_seeds(accuracy, at_least=0.8, seeds=range(100, 110))
    text = str(info.value)
    shown = dict(re.findall(r"(\d+): ([0-9.]+)", text.split("values by seed: ")[1]))
    n = len(shown)
    assert 2 <= n < 10  # clear: decided before the last look
    assert {int(s): float(v) for s, v in shown.items()} == pytest.approx(
        {s: accuracy(s) for s in range(100, 100 + n)}, abs=1e-6
    )
    assert text.startswith("fail: mean of accuracy = ")
    assert "wanted at_least=0.8 with 95% confidence" in text
    assert re.search(r"upper bound 0\.[0-9]+ < at_least=0\.8", text)
    assert re.search(r"about \d+ seeds decide", text)
    assert "at each of 3 looks [4, 7, 10], Bonferroni" in text


def test_false_fails_of_a_borderline_true_property_stay_within_alpha() -> None:
    """Mean accuracy exactly at the threshold (the property `at_least` holds, just): the
    sequential rule fails at most alpha of runs; the one-seed assertion it replaces fails far
    more often, on the same simulated accuracies."""
    p = 0.8
    values = np.random.default_rng(7).binomial(N_TEST, p, size=(REPS, 10)) / N_TEST
    verdicts = [
        check_over_seeds(lambda s, r=r: values[r, s], at_least=p, confidence=0.95)
        for r in range(REPS)
    ]
    false_fails = np.mean([v.outcome == "fail" for v in verdicts])
    assert false_fails <= _ceiling(0.05)
    one_seed_fails = np.mean(values[:, 0] < p)  # `assert accuracy(seed=0) >= 0.8`
    assert one_seed_fails > _ceiling(0.05)
    assert np.mean([v.sample.n for v in verdicts]) <= 10


def _few_point(values: tuple[float, ...], probs: tuple[float, ...], seed: int) -> np.ndarray:
    """REPS runs of 10 seeds of a metric that takes only `values` (a small test set's accuracy),
    with probabilities `probs`: ties within a run are the rule, not the exception."""
    rng = np.random.default_rng(seed)
    return np.asarray(values)[rng.choice(len(values), size=(REPS, 10), p=probs)]


@pytest.mark.parametrize(
    ("values", "probs", "side", "threshold"),
    [
        ((0.9, 1.0), (0.7, 0.3), "at_least", 0.93),  # the true mean: the old tie rule, 9.8%
        ((0.9, 1.0), (0.7, 0.3), "at_least", 0.91),  # below the true mean: 9.8% too
        ((0.9, 1.0), (0.9, 0.1), "at_least", 0.91),  # skewed (the 1.0 is rare): 48%
        ((0.9, 1.0), (0.4, 0.6), "at_most", 0.96),  # the other side: 5.3%
        ((0.8, 0.9, 1.0), (0.1, 0.2, 0.7), "at_most", 0.96),  # a rare low tail: 13.5%
    ],
)
def test_false_fails_of_discrete_tied_values_stay_within_alpha(
    values: tuple[float, ...], probs: tuple[float, ...], side: str, threshold: float
) -> None:
    """A metric with a few discrete values: seven seeds at 0.9 have a std of 1e-16, not 0, and
    say little about the spread of the mean; a true property still fails at most alpha of runs."""
    runs = _few_point(values, probs, seed=11)
    verdicts = [check_over_seeds(lambda s, r=r: runs[r, s], **{side: threshold}) for r in
                range(REPS)]  # fmt: skip
    assert np.mean([v.outcome == "fail" for v in verdicts]) <= _ceiling(0.05)


def test_discrete_values_still_pass_quickly_and_fail_when_clearly_false() -> None:
    runs = _few_point((0.9, 1.0), (0.7, 0.3), seed=12)[:200]
    verdicts = [check_over_seeds(lambda s, r=r: runs[r, s], at_least=0.8) for r in range(200)]
    assert all(v.outcome == "pass" and v.sample.n == 4 for v in verdicts)  # the first look
    runs = _few_point((0.6, 0.7, 0.8), (0.3, 0.4, 0.3), seed=13)[:200]
    verdicts = [check_over_seeds(lambda s, r=r: runs[r, s], at_least=0.9) for r in range(200)]
    assert np.mean([v.outcome == "fail" for v in verdicts]) >= 0.95


def test_false_fails_of_a_fraction_stay_within_alpha() -> None:
    """80% of seeds converge (exactly): Clopper-Pearson never fails more than alpha of runs; "the
    one seed converged" fails a fifth of them."""
    converged = np.random.default_rng(8).random((REPS, 10)) < 0.8
    false_fails = np.mean(
        [
            check_over_seeds(
                lambda s, r=r: converged[r, s], at_least=0.8, quantity="fraction"
            ).outcome
            == "fail"
            for r in range(REPS)
        ]
    )
    assert false_fails <= _ceiling(0.05)
    assert np.mean(~converged[:, 0]) > _ceiling(0.05)


def test_looks_stop_early_when_clear() -> None:
    calls: list[int] = []

    def accuracy(seed: int) -> float:
        calls.append(seed)
        return _accuracy(0.95)(seed)

    assert assert_over_seeds(accuracy, at_least=0.6, looks=(3, 6, 10)).n == 3
    assert calls == [0, 1, 2]  # one look, and each seed drawn once
    calls.clear()
    with pytest.raises(AssertionError, match="lower bound .* > at_most=0.6"):
        assert_over_seeds(accuracy, at_most=0.6, looks=(3, 6, 10))
    assert calls == [0, 1, 2]


def test_undecided_warns_or_fails_with_the_seeds_needed() -> None:
    def accuracy(seed: int) -> float:  # about at the threshold: 10 seeds cannot tell
        return 0.81 + (0.1 if seed % 2 else -0.1)

    with pytest.warns(UndecidedWarning, match=r"undecided: .*\n.*\n  about \d+ seeds decide"):
        sample = assert_over_seeds(accuracy, at_least=0.8)
    assert sample.n == 10
    with pytest.raises(AssertionError, match="^undecided: "):
        assert_over_seeds(accuracy, at_least=0.8, undecided="fail")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_over_seeds(accuracy, at_least=0.8, undecided="pass")


def test_both_sides_and_ties() -> None:
    accuracy = _accuracy(0.9, stream=4)
    verdict = check_over_seeds(accuracy, at_least=0.8, at_most=0.97)
    assert verdict.outcome == "pass" and verdict.level == pytest.approx(1 - 0.05 / 6)
    with pytest.raises(AssertionError, match="at_least=0.7 and at_most=0.8 .*\n.*\n.*lower bound"):
        assert_over_seeds(accuracy, at_least=0.7, at_most=0.8)
    # The same value at every seed: passes at once when it clears the threshold, and never
    # fails a mean (a tie says nothing of its spread), nor do two values: more seeds, undecided.
    assert check_over_seeds(lambda s: 1.0, at_least=0.9).sample.n == 4
    assert check_over_seeds(lambda s: 0.9, at_least=0.9, at_most=0.9).outcome == "pass"
    tie = check_over_seeds(lambda s: 0.5, at_least=0.9, looks=(2, 4, 6, 10))
    assert tie.outcome == "undecided" and tie.sample.n == 10 and tie.upper == 0.5
    assert "but from 1 distinct value(s): a mean fails only from 3 on" in tie.message()
    assert "seeds that take other values decide" in tie.message()
    noisy = check_over_seeds(lambda s: 0.9 + (1e-16 if s == 3 else 0.0), at_least=0.95)
    assert noisy.outcome == "undecided" and noisy.sample.distinct == 1  # float noise: a tie
    two = check_over_seeds(lambda s: (0.5, 0.6)[s % 2], at_least=0.9)
    assert two.outcome == "undecided" and two.upper < 0.9 and two.sample.distinct == 2
    three = check_over_seeds(lambda s: (0.5, 0.6, 0.55)[s % 3], at_least=0.9)
    assert three.outcome == "fail" and three.sample.n == 4


def test_over_seeds_gives_the_sample() -> None:
    sample = over_seeds(_accuracy(0.8), range(20))
    low, high = sample.interval(0.95)
    assert low < sample.mean < high and sample.n == 20 and list(sample.by_seed) == list(range(20))
    ci = stats.ttest_1samp(sample.values, 0).confidence_interval(0.95)  # scipy's own t interval
    assert (low, high) == pytest.approx((ci.low, ci.high))
    flips = over_seeds(lambda s: s % 4 != 0, range(8), quantity="fraction")
    assert flips.estimate == 0.75 and flips.bound("upper", 0.95) < 1.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="needs at_least, at_most"):
        check_over_seeds(lambda s: 1.0)
    with pytest.raises(ValueError, match="the last look must use every seed"):
        check_over_seeds(lambda s: 1.0, at_least=0.5, looks=(2, 4))
    with pytest.raises(ValueError, match="looks must increase from at least 2"):
        check_over_seeds(lambda s: 1.0, at_least=0.5, looks=(1, 10))
    with pytest.raises(ValueError, match=r"fn\(0\) returned nan"):
        check_over_seeds(lambda s: float("nan"), at_least=0.5)
    with pytest.raises(ValueError, match="method for quantity='fraction'"):
        check_over_seeds(lambda s: True, at_least=0.5, quantity="fraction", method="t")


def test_reseeded_moves_every_seed_and_index_zero_is_the_one_seed_trial() -> None:
    from bench.config import compose
    from bench.sweep import expand

    (spec,) = expand(compose(["+sweep=smoke", "libraries=[sklearn]", "sweep.varied=[none]",
                              "seeds.n=1"]))  # fmt: skip
    assert reseeded(spec, 0) == spec
    other = reseeded(spec, 1)
    assert all(getattr(other, f"seed_{s}") != getattr(spec, f"seed_{s}") for s in
               ("split", "order", "init"))  # fmt: skip
    assert other.trial_key != spec.trial_key and other.library == spec.library
