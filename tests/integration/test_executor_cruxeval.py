"""CRUXEval conformance of SandboxExecutor on the real data set, on every backend.

The 788 programs whose inputs are literal argument lists validate with outputs equal (as
literals) to the gold outputs; the 12 whose inputs are expressions are rejected as
``non_literal_input``; every gold output (deduction) and gold input (abduction) scores 1.
"""

from __future__ import annotations

import pytest

from azr.cruxeval import CruxEvalRow, load_cruxeval
from azr.tasks import ScoreRequest, TaskType, ValidateRequest
from executor_pool.executor import SandboxExecutor
from executor_pool.program_runner import parse_literal

EXPRESSION_INPUTS = 12

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows() -> list[CruxEvalRow]:
    return load_cruxeval()  # the repo's copy: the test never skips for want of data


@pytest.fixture(scope="module")
def validations(executor: SandboxExecutor, rows: list[CruxEvalRow]) -> list:
    requests = [ValidateRequest(program=row.code, inputs=(row.input,)) for row in rows]
    return executor.validate_many(requests)


def test_literal_inputs_validate_to_the_gold_outputs(
    rows: list[CruxEvalRow], validations: list
) -> None:
    assert len(rows) == 800
    literal = [
        (row, result)
        for row, result in zip(rows, validations, strict=True)
        if result.reason != "non_literal_input"
    ]
    assert len(literal) == 800 - EXPRESSION_INPUTS
    wrong = [
        (row.id, result.reason or result.outputs)
        for row, result in literal
        if not result.valid or parse_literal(result.outputs[0]) != parse_literal(row.output)
    ]
    assert wrong == []


def test_expression_inputs_are_rejected(rows: list[CruxEvalRow], validations: list) -> None:
    rejected = [
        row.input for row, result in zip(rows, validations, strict=True) if not result.valid
    ]
    assert len(rejected) == EXPRESSION_INPUTS
    assert "range(100, 120)" in rejected and "dict(e=1, d=2, c=3)" in rejected
    assert {result.reason for result in validations if not result.valid} == {"non_literal_input"}


def test_gold_answers_score_one(
    executor: SandboxExecutor, rows: list[CruxEvalRow], validations: list
) -> None:
    tasks = [
        (row, result.outputs[0])
        for row, result in zip(rows, validations, strict=True)
        if result.valid
    ]
    requests = [
        ScoreRequest(
            task=TaskType.DEDUCTION,
            program=row.code,
            input=row.input,
            output=output,
            answer=row.output,
        )
        for row, output in tasks
    ] + [
        ScoreRequest(task=TaskType.ABDUCTION, program=row.code, output=output, answer=row.input)
        for row, output in tasks
    ]
    scores = executor.score_many(requests)
    assert [
        (r.task.value, r.program[:40])
        for r, s in zip(requests, scores, strict=True)
        if s.accuracy != 1.0
    ] == []
    assert len(scores) == 2 * (800 - EXPRESSION_INPUTS)
