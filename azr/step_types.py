"""What one self-play step produces: trajectories, proposals, solves and the step's output.

Plain dataclasses, filled in by `azr.selfplay.StepRunner` and read by the step's metrics
(`azr.step_metrics`) and the driver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from azr.parsing import FormatError, ParsedAnswer
from azr.tasks import (
    InductionTask,
    Role,
    ScoreResult,
    TaskType,
    TrainSample,
    Triplet,
    ValidationResult,
)

Task = Triplet | InductionTask


@dataclass
class Trajectory:
    """One generated response with everything needed to reward and train on it."""

    task: TaskType
    role: Role
    prompt_token_ids: list[int]
    token_ids: list[int]
    logprobs: list[float]
    policy_version: int
    text: str
    reward: float = 0.0
    temperature: float = 1.0
    """Sampling temperature it was drawn at (the learner's logprobs must use the same)."""
    top_p: float = 1.0
    """Nucleus mass it was drawn with."""


@dataclass
class Proposal:
    task: TaskType
    source_program: str | None  # induction: the program the proposer was shown
    trajectory: Trajectory
    parsed: ParsedAnswer | FormatError
    validation: ValidationResult | None = None
    new_task: Task | None = None
    mc_accuracies: list[float] = field(default_factory=list)


@dataclass
class Solve:
    task: TaskType
    item: Task
    trajectory: Trajectory
    parsed: ParsedAnswer | FormatError | None = None
    score: ScoreResult | None = None

    @property
    def accuracy(self) -> float:
        return self.score.accuracy if self.score is not None else 0.0


@dataclass
class StepOutput:
    """One step's result: training samples, metrics, and what was generated and scored."""

    samples: list[TrainSample]
    metrics: dict[str, float]
    proposals: list[Proposal]
    solves: list[Solve]
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of the step: ``generate_propose``, ``generate_solve``, ``execute``."""
