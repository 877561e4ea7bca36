"""Probe within noise of chance (issue 15 item 3): a one-sided exact binomial test."""

import math

import pytest

from merdg.evaluation.chance import binomial_tail, chance_test, near_chance_probes


def test_binomial_tail_matches_the_sum_of_terms():
    for n, p in [(10, 0.1), (37, 0.5), (200, 1 / 26)]:
        for k in (0, 1, n // 3, n):
            exact = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert binomial_tail(k, n, p) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert binomial_tail(0, 5, 0.3) == pytest.approx(1.0) and binomial_tail(6, 5, 0.3) == 0.0
    assert 0.0 < binomial_tail(5000, 100000, 0.04) < 1.0  # large n stays finite


def test_issue_probes_are_flagged_and_learning_ones_are_not():
    # 26 classes; the frame probe of the report sat at 3.97 % on source validation
    stuck = chance_test(0.0397, 151, 26)
    assert stuck.near_chance and stuck.correct == 6 and stuck.p_value > 0.3
    assert "within noise of chance" in stuck.describe("frames")
    learning = chance_test(0.12, 151, 26)
    assert not learning.near_chance and learning.p_value < 0.01
    assert "above chance" in learning.describe()
    flagged = near_chance_probes({"frames": 0.0397, "mfcc": 0.62}, 151, 26)
    assert list(flagged) == ["frames"]
    # imbalanced classes: a constant prediction reaches the majority share
    assert chance_test(0.6, 400, 2, chance=0.6).near_chance
    assert not chance_test(0.6, 400, 2).near_chance


@pytest.mark.parametrize("kwargs,match", [
    ({"accuracy": 1.2, "n": 10, "num_classes": 3}, "accuracy must be a fraction"),
    ({"accuracy": 0.5, "n": 0, "num_classes": 3}, "n must be >= 1"),
    ({"accuracy": 0.5, "n": 10, "num_classes": 1}, "num_classes must be >= 2"),
    ({"accuracy": 0.5, "n": 10, "num_classes": 3, "alpha": 0.0}, "alpha must be in"),
    ({"accuracy": 0.5, "n": 10, "num_classes": 3, "chance": 1.0}, "chance must be in"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        chance_test(**kwargs)
