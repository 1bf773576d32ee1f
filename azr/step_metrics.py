"""The numbers one self-play step reports: proposal outcomes, valid rate, learnability, solve
accuracy and rewards per task type, the comments of valid programs, the TRR++ group statistics
and the prompt budget's events.

Program text is model-written: it is only tokenized here (`tokenize`), never parsed into
anything that runs.
"""

from __future__ import annotations

import io
import tokenize
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import NamedTuple

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
    use), solve accuracy, rewards, and the comments of the valid proposals' programs (share that
    plan in comments, comment lines per program; induction's programs are the ones its proposer
    was shown)."""
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
        comments = [program_comments(p.new_task.program) for p in valid if p.new_task is not None]
        metrics[f"{task}/propose/comment_before_code"] = mean([float(c.plans) for c in comments])
        metrics[f"{task}/propose/comment_lines"] = mean([float(c.lines) for c in comments])
        solved = [s for s in solves if s.task == task]
        metrics[f"{task}/solve/accuracy"] = mean([s.accuracy for s in solved])
        metrics[f"{task}/solve/format_ok"] = mean(
            [0.0 if isinstance(s.parsed, FormatError) else 1.0 for s in solved]
        )
        metrics[f"{task}/solve/reward"] = mean([s.trajectory.reward for s in solved])
        metrics[f"{task}/solve/count"] = float(len(solved))
    return metrics


class ProgramComments(NamedTuple):
    """The comments of one program's source."""

    plans: bool
    """A comment stands on a line of its own with code after it (the paper's observation:
    comments that plan the code below them)."""
    lines: int
    """Lines that hold a comment (on their own or after code)."""


_NOT_CODE = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
    tokenize.ENCODING,
}


def program_comments(source: str) -> ProgramComments:
    """The comments of ``source``, read token by token (a ``#`` inside a string is no comment).
    Source that stops tokenizing part way counts the lines read up to there."""
    comment_lines: set[int] = set()
    code_lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.COMMENT:
                comment_lines.add(token.start[0])
            elif token.type not in _NOT_CODE:
                code_lines.update(range(token.start[0], token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):  # unterminated string or bracket, bad dedent
        pass
    alone = comment_lines - code_lines
    plans = bool(alone) and bool(code_lines) and min(alone) < max(code_lines)
    return ProgramComments(plans=plans, lines=len(comment_lines))


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
