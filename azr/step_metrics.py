"""The numbers one self-play step reports: proposal outcomes, valid rate, learnability, solve
accuracy and rewards per task type, the TRR++ group statistics and the prompt budget's events."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from azr.parsing import FormatError
from azr.prompt_budget import PROMPT_TOO_LONG
from azr.rewards import LearnabilityRule, learnability
from azr.step_types import Proposal, Solve
from azr.tasks import Role, TaskType
from azr.trr import group_stats, summary_metrics


def trr_metrics(
    groups: list[tuple[TaskType, Role]], rewards: list[float], advantages: list[float]
) -> dict[str, float]:
    """Reward mean/std/count and mean |advantage| of each (task type, role) group."""
    metrics = {f"trr/{k}": v for k, v in summary_metrics(group_stats(groups, rewards)).items()}
    by_group: dict[tuple[TaskType, Role], list[float]] = defaultdict(list)
    for key, value in zip(groups, advantages, strict=True):
        by_group[key].append(value)
    for (task, role), values in by_group.items():
        metrics[f"trr/{task}/{role}/advantage_abs_mean"] = sum(map(abs, values)) / len(values)
    return metrics


def step_metrics(
    proposals: list[Proposal],
    solves: list[Solve],
    task_types: Sequence[TaskType],
    learnability_rule: LearnabilityRule,
) -> dict[str, float]:
    """Per task type: proposal outcomes, valid rate, learnability (under the rule the rewards
    use), solve accuracy, rewards."""
    metrics: dict[str, float] = {}
    mean: Callable[[Sequence[float]], float] = lambda xs: sum(xs) / len(xs) if xs else 0.0  # noqa: E731
    for task in task_types:
        mine = [p for p in proposals if p.task == task]
        outcomes = Counter(proposal_outcome(p) for p in mine)
        for outcome, count in outcomes.items():
            metrics[f"{task}/propose/outcome/{outcome}"] = float(count)
        valid = [p for p in mine if p.new_task is not None]
        metrics[f"{task}/propose/valid_rate"] = len(valid) / len(mine) if mine else 0.0
        metrics[f"{task}/propose/learnability"] = mean(
            [learnability(p.mc_accuracies, learnability_rule) for p in valid if p.mc_accuracies]
        )
        metrics[f"{task}/propose/reward"] = mean([p.trajectory.reward for p in mine])
        solved = [s for s in solves if s.task == task]
        metrics[f"{task}/solve/accuracy"] = mean([s.accuracy for s in solved])
        metrics[f"{task}/solve/format_ok"] = mean(
            [0.0 if isinstance(s.parsed, FormatError) else 1.0 for s in solved]
        )
        metrics[f"{task}/solve/reward"] = mean([s.trajectory.reward for s in solved])
        metrics[f"{task}/solve/count"] = float(len(solved))
    return metrics


def proposal_outcome(proposal: Proposal) -> str:
    if isinstance(proposal.parsed, FormatError):
        return f"format_error:{proposal.parsed.reason}"
    if proposal.validation is None or not proposal.validation.valid:
        reason = proposal.validation.reason if proposal.validation else "unvalidated"
        return f"invalid:{reason}"
    return "valid"


BUDGET_EVENTS = {
    "references_dropped": "references dropped from deduction/abduction proposer prompts",
    "sources_too_long": "induction source programs drawn again (their prompt did not fit)",
    "buffer_tasks_too_long": "buffer tasks left out of a solve batch (their prompt did not fit)",
    "prompt_too_long": "proposals rejected because their solver prompt would not fit",
}
"""What the prompt budget counts per step and task type (``<task>/budget/<event>``)."""


def prompt_budget_metrics(
    proposals: list[Proposal],
    events: Counter[tuple[TaskType, str]],
    task_types: Sequence[TaskType],
) -> dict[str, float]:
    """``<task>/budget/<event>`` for every event of :data:`BUDGET_EVENTS` (0 when none)."""
    rejected = Counter(
        p.task
        for p in proposals
        if p.validation is not None and p.validation.reason == PROMPT_TOO_LONG
    )
    out = {}
    for task in task_types:
        for event in BUDGET_EVENTS:
            count = rejected[task] if event == PROMPT_TOO_LONG else events[(task, event)]
            out[f"{task}/budget/{event}"] = float(count)
    return out
