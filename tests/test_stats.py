"""Bootstrap intervals and the paired test that decides wins and ties between strategies."""
from __future__ import annotations

import numpy as np
import pytest

from ragtune.evaluate.stats import interval, interval_of, paired


def test_interval_of_constant_scores_is_a_point():
    result = interval([0.4] * 30)
    assert (result.mean, result.low, result.high, result.n) == pytest.approx((0.4, 0.4, 0.4, 30))


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for trial in range(200):
        sample = rng.random(100) < 0.7  # accuracy of a classifier that is right 70% of the time
        result = interval(sample, resamples=1000, seed=trial)
        assert result.low <= sample.mean() <= result.high
        covered += result.low <= 0.7 <= result.high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_paired_difference_sees_a_consistent_win_and_its_sign():
    a = [1.0] * 40 + [0.0] * 10
    b = [0.0] * 30 + [1.0] * 10 + [0.0] * 10
    win = paired(a, b)
    assert win.difference == pytest.approx(0.6) and not win.tie and win.low > 0
    assert win.p_value < 0.001
    loss = paired(b, a)
    assert loss.difference == pytest.approx(-0.6) and loss.high < 0 and not loss.tie
    assert loss.p_value == pytest.approx(win.p_value)


def test_paired_difference_inside_the_noise_is_a_tie():
    rng = np.random.default_rng(3)
    a = rng.random(60) < 0.8
    b = a.copy()
    b[:2] = ~b[:2]  # two of sixty examples differ
    result = paired(a, b)
    assert result.tie and result.low <= 0 <= result.high and result.p_value > 0.05
    same = paired([0.5, 0.7], [0.5, 0.7])
    assert same.tie and same.difference == 0 and same.p_value == 1.0


def test_pairing_cancels_per_example_difficulty():
    """B is A minus 0.02 on every example: unpaired the spread hides it, paired it is certain."""
    difficulty = np.random.default_rng(0).random(50)
    result = paired(difficulty, difficulty - 0.02)
    assert result.difference == pytest.approx(0.02) and (result.low, result.high) == pytest.approx((0.02, 0.02))
    assert not result.tie


def test_interval_of_a_metric_that_is_not_a_mean():
    truth = np.array([0, 0, 1, 1, 2, 2, 2, 0, 1, 2])
    guess = np.array([0, 1, 1, 1, 2, 0, 2, 0, 1, 2])

    def macro_f1(rows):
        t, g = truth[rows], guess[rows]
        scores = []
        for label in np.unique(t):
            tp = np.sum((t == label) & (g == label))
            denominator = np.sum(t == label) + np.sum(g == label)
            scores.append(2 * tp / denominator if denominator else 0.0)
        return float(np.mean(scores))

    result = interval_of(macro_f1, len(truth), resamples=300)
    assert result.mean == pytest.approx(macro_f1(np.arange(10)))
    assert result.low <= result.mean <= result.high < 1.0 + 1e-9


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="same examples in the same order"):
        paired([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no examples"):
        interval([])
    with pytest.raises(ValueError, match="finite"):
        interval([0.5, float("nan")])
