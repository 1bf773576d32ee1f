"""Task-Relative REINFORCE++ advantages: one baseline per (task type x role).

For a sample in group g: ``A = (r - mean_g) / (std_g + eps)``, over that step's samples of
group g, with the population std (ddof = 0). Invariants: a group of one sample, or whose rewards
are all equal, gets advantage exactly 0; NaN or infinite rewards raise ValueError.
Why: docs/selfplay.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from azr.tasks import Role, TaskType

GroupKey = tuple[TaskType, Role]
ALL_GROUPS: tuple[GroupKey, ...] = tuple((task, role) for task in TaskType for role in Role)
"""The six TRR++ groups, in a fixed order (useful for logging)."""


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Reward statistics of one group in one step (population std)."""

    mean: float
    std: float
    count: int

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "count": float(self.count)}


def group_stats(groups: Sequence[GroupKey], rewards: Sequence[float]) -> dict[GroupKey, GroupStats]:
    """Mean, population std and count of the rewards of each group present in the batch."""
    by_group = _rewards_by_group(groups, rewards)
    return {key: _stats(values) for key, values in by_group.items()}


def trr_advantages(
    groups: Sequence[GroupKey], rewards: Sequence[float], eps: float = 1e-6
) -> list[float]:
    """Per-sample TRR++ advantages, in input order.

    ``groups[i]`` is the (task type, role) of sample i and ``rewards[i]`` its reward.
    """
    if not (eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    by_group = _rewards_by_group(groups, rewards)
    stats = {key: _stats(values) for key, values in by_group.items()}
    advantages = []
    for key, reward in zip(_checked_keys(groups), rewards, strict=True):
        values = by_group[key]
        if len(values) < 2 or max(values) == min(values):
            advantages.append(0.0)
            continue
        group = stats[key]
        advantages.append((float(reward) - group.mean) / (group.std + eps))
    return advantages


def summary_metrics(stats: dict[GroupKey, GroupStats]) -> dict[str, float]:
    """Flat ``"<task>/<role>/<stat>"`` metrics for logging, e.g. ``deduction/solve/mean``."""
    return {
        f"{task}/{role}/{name}": value
        for (task, role), group in stats.items()
        for name, value in group.as_dict().items()
    }


def _checked_keys(groups: Sequence[GroupKey]) -> list[GroupKey]:
    keys = []
    for index, group in enumerate(groups):
        try:
            task, role = group
            keys.append((TaskType(task), Role(role)))
        except (TypeError, ValueError) as error:
            raise ValueError(f"sample {index}: {group!r} is not a (TaskType, Role) pair") from error
    return keys


def _rewards_by_group(
    groups: Sequence[GroupKey], rewards: Sequence[float]
) -> dict[GroupKey, list[float]]:
    if len(groups) != len(rewards):
        raise ValueError(f"{len(groups)} groups but {len(rewards)} rewards")
    by_group: dict[GroupKey, list[float]] = {}
    for index, (key, reward) in enumerate(zip(_checked_keys(groups), rewards, strict=True)):
        value = float(reward)
        if not math.isfinite(value):
            raise ValueError(f"sample {index} ({key[0]}/{key[1]}): reward {reward!r} is not finite")
        by_group.setdefault(key, []).append(value)
    return by_group


def _stats(values: list[float]) -> GroupStats:
    mean = math.fsum(values) / len(values)
    variance = math.fsum((value - mean) ** 2 for value in values) / len(values)
    return GroupStats(mean=mean, std=math.sqrt(variance), count=len(values))
