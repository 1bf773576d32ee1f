"""CRUXEval-O and CRUXEval-I as benchmarks: the self-play solver prompts on CRUXEval rows.

``cruxeval-o`` asks for the output of ``f`` on the row's input (deduction), ``cruxeval-i``
for an input that gives the row's output (abduction), with `azr.prompts.solve_prompt`: eval
and training ask the same question and read the answer with the same strict parser.

Judging: an answer is first scored exactly as self-play scores it (a `ScoreRequest`: literals
only, compared as values; abduction runs ``f`` in the sandbox). An answer that is not a literal
(``range(3)``, ``'a' * 3``) is then judged as CRUXEval's own harness judges it,
``assert f(<answer>) == <output>`` / ``assert <output> == <answer>``, run in the sandbox (a
`CheckRequest`), so figures, and generations made elsewhere, compare with CRUXEval's. Problems
come held-out half first (odd ids: never seen by the tiny model's warm start), so any subset
is a held-out one.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.cruxeval import CruxEvalFormatError, CruxEvalRow, read_cruxeval, resolve_data_path
from azr.eval.benchmark import Answer, Benchmark, EvalInputError, Job, RowError, Verdict
from azr.parsing import FormatError, parse_response
from azr.prompts import solve_prompt
from azr.tasks import CheckRequest, Role, ScoreRequest, TaskType

TASKS = {"cruxeval-o": TaskType.DEDUCTION, "cruxeval-i": TaskType.ABDUCTION}
NON_LITERAL = "non_literal_answer"
"""The self-play scorer's reason for an answer that is not a literal (then the second job)."""
MAX_ANSWER_CHARS = 4000


@dataclass
class CruxEvalBenchmark(Benchmark[CruxEvalRow]):
    """CRUXEval-O (deduction) or CRUXEval-I (abduction) over CRUXEval rows."""

    task: TaskType = TaskType.DEDUCTION

    def problem_id(self, problem: CruxEvalRow) -> str:
        return problem.id

    def user_prompt(self, problem: CruxEvalRow) -> str:
        return solve_prompt(self.task, problem.triplet)

    def extract(self, problem: CruxEvalRow, response: str) -> Answer:
        parsed = parse_response(response, self.task, Role.SOLVE)
        if isinstance(parsed, FormatError):
            return Answer(None, format_ok=False, reason=f"format:{parsed.reason}")
        text = parsed.output if self.task == TaskType.DEDUCTION else parsed.inputs[0]
        return Answer(text, format_ok=True)

    def from_generation(self, problem: CruxEvalRow, generation: Any) -> Answer:
        """CRUXEval's generations format: the output as written (``-o``), or the call
        ``f(...)`` whose arguments are the input (``-i``)."""
        if not isinstance(generation, str):
            return Answer(None, format_ok=False, reason="not_a_string")
        if self.task == TaskType.DEDUCTION:
            return Answer(generation.strip(), format_ok=True)
        arguments = call_arguments(generation)
        if arguments is None:
            return Answer(None, format_ok=False, reason="not_a_call_of_f")
        return Answer(arguments, format_ok=True)

    def job(self, problem: CruxEvalRow, answer: str) -> Job:
        return ScoreRequest(
            task=self.task,
            program=problem.code,
            input=problem.input,
            output=problem.output,
            answer=answer,
        )

    def second_job(self, problem: CruxEvalRow, answer: str, verdict: Verdict) -> Job | None:
        """CRUXEval's harness for an answer that is an expression but not a literal."""
        if verdict.reason != NON_LITERAL or len(answer) > MAX_ANSWER_CHARS:
            return None
        if self.task == TaskType.DEDUCTION:
            if not _parses(answer, "eval"):
                return None
            # The answer is a value, not a call: no `f` is defined for it to call.
            return CheckRequest(
                program=f"def answer():\n    return (\n{answer}\n)\n",
                test=f"def check(candidate):\n    assert {problem.output} == candidate()\n",
                entry_point="answer",
            )
        if call_arguments(f"f({answer}\n)") is None:
            return None
        return CheckRequest(
            program=problem.code,
            test=f"def check(candidate):\n    assert candidate({answer}\n) == {problem.output}\n",
            entry_point="f",
        )


def call_arguments(text: str) -> str | None:
    """The argument list of one call ``f(...)`` written as text, or None when ``text`` is
    anything else (two calls, an attribute, ``f(1)(2)``, not Python). Parsed, never run."""
    text = text.strip()
    if not (text.startswith("f(") and text.endswith(")")) or len(text) > MAX_ANSWER_CHARS:
        return None
    try:
        call = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "f"):
        return None
    return text[2:-1]


def _parses(text: str, mode: str) -> bool:
    try:
        ast.parse(text, mode=mode)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def cruxeval_benchmark(name: str, path: str | Path | None = None) -> CruxEvalBenchmark:
    """``cruxeval-o`` or ``cruxeval-i`` over a CRUXEval file (None: the repo's own copy)."""
    if name not in TASKS:
        raise EvalInputError(f"unknown CRUXEval benchmark {name!r} (cruxeval-o, cruxeval-i)")
    try:
        rows, messages = read_cruxeval(path)
    except CruxEvalFormatError as exc:
        raise EvalInputError(str(exc)) from None
    if not rows:
        raise EvalInputError(f"{resolve_data_path(path)}: no CRUXEval rows")
    errors = [RowError(where, message) for where, message in messages]
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row.id in seen:
            errors.append(RowError(f"{resolve_data_path(path)}:{row.id}", "duplicate id"))
            continue
        seen.add(row.id)
        unique.append(row)
    held_out_first = sorted(unique, key=lambda row: not row.held_out)
    return CruxEvalBenchmark(name=name, problems=held_out_first, errors=errors, task=TASKS[name])
