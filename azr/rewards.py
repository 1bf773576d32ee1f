"""Rewards with format penalties (AZR_SPEC "Rewards with format penalties").

Every generation gets one scalar reward: ``-1.0`` (:data:`FORMAT_PENALTY`) when the response is
not well formed; ``-0.5`` (:data:`WRONG_PENALTY`) when it is well formed but wrong (a solve with
accuracy 0, a proposal that failed validation); otherwise ``r_role``: the solve accuracy (a
partial induction accuracy counts as itself) or the learnability of the proposed task under the
configured rule (``"paper"`` or ``"reference"``, see :func:`learnability`). Why: docs/selfplay.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from azr.tasks import ScoreResult, ValidationResult

FORMAT_PENALTY = -1.0
"""Reward of a response that is not well formed."""
WRONG_PENALTY = -0.5
"""Reward of a well-formed response that is wrong or fails validation."""

LearnabilityRule = Literal["paper", "reference"]
InductionScoring = Literal["binary", "fraction"]


def induction_accuracy(per_pair_correct: Sequence[bool], mode: InductionScoring) -> float:
    """Accuracy of an induction answer from its per-hidden-pair results.

    ``binary`` (the paper's default): 1.0 only when every pair passes. ``fraction``: the
    share of pairs that pass. No pairs at all is an error: a task must have hidden tests.
    """
    if not per_pair_correct:
        raise ValueError("an induction answer needs at least one hidden pair")
    passed = sum(1 for correct in per_pair_correct if correct)
    if mode == "binary":
        return 1.0 if passed == len(per_pair_correct) else 0.0
    if mode == "fraction":
        return passed / len(per_pair_correct)
    raise ValueError(f"unknown induction scoring mode {mode!r}")


def solve_reward(parsed_ok: bool, score: ScoreResult | None) -> float:
    """Reward of one solver response.

    ``parsed_ok`` is False for a FormatError (``score`` is then ignored: unparsable answers
    are never scored). A parsed answer needs its executor ``score``.
    """
    if not parsed_ok:
        return FORMAT_PENALTY
    if score is None:
        raise ValueError("a well-formed solve needs a ScoreResult")
    accuracy = _checked_accuracy(score.accuracy)
    return accuracy if accuracy > 0.0 else WRONG_PENALTY


def learnability(mc_accuracies: Sequence[float], rule: LearnabilityRule = "paper") -> float:
    """Learnability of a valid task from its Monte-Carlo solve accuracies (each in [0, 1]).

    With s their mean: ``1 - s`` if ``0 < s < 1``; otherwise 0 (``"paper"``) or -0.5
    (``"reference"``, as the reference code trains).
    """
    if not mc_accuracies:
        raise ValueError("learnability needs at least one Monte-Carlo solve accuracy")
    s = math.fsum(_checked_accuracy(a) for a in mc_accuracies) / len(mc_accuracies)
    if rule not in ("paper", "reference"):
        raise ValueError(f"unknown learnability rule {rule!r}")
    if 0.0 < s < 1.0:
        return 1.0 - s
    return 0.0 if rule == "paper" else WRONG_PENALTY


def propose_reward(
    parsed_ok: bool,
    validation: ValidationResult | None,
    mc_accuracies: Sequence[float],
    rule: LearnabilityRule = "paper",
) -> float:
    """Reward of one proposer response.

    -1 when not parsed; -0.5 when validation failed (``validation`` None counts as failed:
    a proposal that never reached the executor is not a task); otherwise the learnability of
    the task from its ``mc_accuracies``.
    """
    if not parsed_ok:
        return FORMAT_PENALTY
    if validation is None or not validation.valid:
        return WRONG_PENALTY
    return learnability(mc_accuracies, rule)


def _checked_accuracy(value: float) -> float:
    accuracy = float(value)
    if not 0.0 <= accuracy <= 1.0:  # also rejects NaN
        raise ValueError(f"accuracy must be in [0, 1], got {value!r}")
    return accuracy
