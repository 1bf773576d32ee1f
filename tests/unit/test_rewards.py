"""Rewards with format penalties, learnability (both rules) and induction accuracy."""

from __future__ import annotations

import math

import pytest

from azr.rewards import (
    FORMAT_PENALTY,
    WRONG_PENALTY,
    induction_accuracy,
    learnability,
    propose_reward,
    solve_reward,
)
from azr.tasks import ScoreResult, ValidationResult

VALID = ValidationResult(valid=True, outputs=("1",))
INVALID = ValidationResult(valid=False, reason="banned:os")


def test_solve_reward_format_wrong_and_right() -> None:
    assert solve_reward(False, None) == FORMAT_PENALTY == -1.0
    # A format failure is -1 even if a score were (wrongly) supplied.
    assert solve_reward(False, ScoreResult(accuracy=1.0)) == -1.0
    assert solve_reward(True, ScoreResult(accuracy=0.0, reason="wrong")) == WRONG_PENALTY == -0.5
    assert solve_reward(True, ScoreResult(accuracy=1.0)) == 1.0
    # fraction mode: partial accuracy is the reward itself
    assert solve_reward(True, ScoreResult(accuracy=0.6)) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="ScoreResult"):
        solve_reward(True, None)


@pytest.mark.parametrize(
    ("correct", "binary", "fraction"),
    [
        ([True] * 5, 1.0, 1.0),
        ([True, True, True, True, False], 0.0, 0.8),
        ([False] * 5, 0.0, 0.0),
        ([True], 1.0, 1.0),
    ],
)
def test_induction_accuracy_modes(correct: list[bool], binary: float, fraction: float) -> None:
    assert induction_accuracy(correct, "binary") == binary
    assert induction_accuracy(correct, "fraction") == pytest.approx(fraction)


def test_induction_accuracy_rejects_empty_and_unknown_mode() -> None:
    with pytest.raises(ValueError):
        induction_accuracy([], "binary")
    with pytest.raises(ValueError, match="mode"):
        induction_accuracy([True], "majority")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("successes", "paper", "reference"),
    [
        (0, 0.0, -0.5),  # s = 0: unsolvable, no signal
        (8, 0.0, -0.5),  # s = 1: trivial, no signal
        (4, 0.5, 0.5),  # s = 0.5
        (1, 0.875, 0.875),  # s = 1/8
        (7, 0.125, 0.125),  # s = 7/8
    ],
)
def test_learnability_with_eight_samples(successes: int, paper: float, reference: float) -> None:
    samples = [1.0] * successes + [0.0] * (8 - successes)
    assert learnability(samples, "paper") == pytest.approx(paper)
    assert learnability(samples, "reference") == pytest.approx(reference)


def test_learnability_averages_fractional_accuracies() -> None:
    # fraction-mode induction: s = mean(0.5, 0.5, 1, 0) = 0.5
    assert learnability([0.5, 0.5, 1.0, 0.0]) == pytest.approx(0.5)
    # every sample partially right: 0 < s < 1 even though no sample is fully right
    assert learnability([0.2] * 8, "reference") == pytest.approx(0.8)


@pytest.mark.parametrize("bad", [[], [1.5], [-0.1], [math.nan], [0.5, math.inf]])
def test_learnability_rejects_bad_accuracies(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        learnability(bad)


def test_learnability_rejects_unknown_rule() -> None:
    with pytest.raises(ValueError, match="rule"):
        learnability([0.5], "median")  # type: ignore[arg-type]


def test_propose_reward_penalties_and_learnability() -> None:
    half = [1.0] * 4 + [0.0] * 4
    assert propose_reward(False, None, [], "paper") == -1.0
    assert propose_reward(False, VALID, half, "paper") == -1.0
    assert propose_reward(True, INVALID, [], "paper") == -0.5
    assert propose_reward(True, None, [], "reference") == -0.5  # never validated: not a task
    assert propose_reward(True, VALID, half, "paper") == pytest.approx(0.5)
    assert propose_reward(True, VALID, [1.0] * 8, "paper") == 0.0
    assert propose_reward(True, VALID, [0.0] * 8, "reference") == -0.5
    with pytest.raises(ValueError):
        propose_reward(True, VALID, [], "paper")  # a valid task needs its MC estimate
