"""The comment metric (the paper's observation that programs come to plan in comments before
code) on hand-written programs: token-based, so a ``#`` in a string is no comment, and no
program is ever run."""

from __future__ import annotations

import pytest

from azr.step_metrics import program_comments, step_metrics
from azr.step_types import Proposal, Trajectory
from azr.tasks import InductionTask, Role, TaskType, Triplet, ValidationResult

PLAN_THEN_CODE = """\
# Step 1: split the words
# Step 2: count them
def f(text):
    words = text.split()
    return len(words)
"""
PLAN_INSIDE_BODY = """\
def f(xs):
    # keep the even numbers, then sum them
    evens = [x for x in xs if x % 2 == 0]
    return sum(evens)  # the total
"""
ONLY_TRAILING = """\
def f(x):
    return x + 1  # add one
# that's all
"""
HASH_IN_STRINGS = '''\
def f(s):
    marker = "# not a comment"
    doc = """
    # not one either
    """
    return s + marker + doc
'''
NO_COMMENTS = "def f(x):\n    return x * 2\n"
COMMENT_ONLY = "# nothing but a plan\n"


@pytest.mark.parametrize(
    ("source", "plans", "lines"),
    [
        (PLAN_THEN_CODE, True, 2),
        (PLAN_INSIDE_BODY, True, 2),  # the inline comment counts as a line, not as a plan
        (ONLY_TRAILING, False, 2),  # comments after the code plan nothing
        (HASH_IN_STRINGS, False, 0),
        (NO_COMMENTS, False, 0),
        (COMMENT_ONLY, False, 1),
        ("", False, 0),
    ],
    ids=["plan-then-code", "plan-in-body", "trailing", "hash-in-strings", "none", "only", "empty"],
)
def test_comment_lines_and_plans_before_code(source: str, plans: bool, lines: int) -> None:
    found = program_comments(source)
    assert found.plans is plans
    assert found.lines == lines


def test_source_that_stops_tokenizing_counts_what_was_read() -> None:
    # An unterminated bracket ends tokenizing with an error: the lines before it still count.
    found = program_comments("# plan\ndef f(x):\n    return (x +\n")
    assert found == (True, 1)


def _proposal(task: TaskType, program: str | None, valid: bool = True) -> Proposal:
    trajectory = Trajectory(task, Role.PROPOSE, [1], [2], [0.0], 0, "text")
    if task == TaskType.INDUCTION:
        new_task = InductionTask(
            program=program or "", message="m", visible=(("1", "1"),), hidden=(("2", "2"),)
        )
    else:
        new_task = Triplet(program=program or "", input="1", output="1")
    return Proposal(
        task,
        None,
        trajectory,
        parsed=None,  # type: ignore[arg-type]  # not read by the comment metric
        validation=ValidationResult(valid=valid, reason=None if valid else "error"),
        new_task=new_task if valid else None,
    )


def test_step_metrics_report_the_comments_of_valid_programs_per_task_type() -> None:
    proposals = [
        _proposal(TaskType.DEDUCTION, PLAN_THEN_CODE),
        _proposal(TaskType.DEDUCTION, NO_COMMENTS),
        _proposal(TaskType.DEDUCTION, ONLY_TRAILING),
        _proposal(TaskType.DEDUCTION, PLAN_THEN_CODE, valid=False),  # invalid: not counted
        _proposal(TaskType.INDUCTION, PLAN_INSIDE_BODY),
    ]
    tasks = [TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION]
    metrics = step_metrics(proposals, [], tasks, "paper")
    assert metrics["deduction/propose/comment_before_code"] == pytest.approx(1 / 3)
    assert metrics["deduction/propose/comment_lines"] == pytest.approx((2 + 0 + 2) / 3)
    assert metrics["induction/propose/comment_before_code"] == 1.0
    assert metrics["induction/propose/comment_lines"] == 2.0
    # No valid abduction proposal: the step reports 0, like its other means over nothing.
    assert metrics["abduction/propose/comment_before_code"] == 0.0
    assert metrics["abduction/propose/comment_lines"] == 0.0
