"""Math benchmarks: ``math:FILE.jsonl`` rows (``problem``, ``answer``), graded with math-verify.

The model reasons in <think> and gives its final answer in <answer> (as ``\\boxed{...}``);
math-verify extracts the last boxed or LaTeX expression of the answer (of the whole response
when it lacks the strict format) and compares it with the gold answer symbolically. Grading
runs in the sandbox, never here: math-verify parses expressions with sympy's ``parse_expr``,
which evaluates text, and a hostile expression (``2^{2^{2^{99}}}``) can take any time or
memory. The sandbox imports math-verify before it forks (`MATH_SANDBOX_MODULES`, with the
modules it would otherwise import lazily, which an isolated program cannot); should a grading
still need a module the sandbox lacks, it fails as ``exception:SandboxLacksModule`` rather
than as a silent "not equal".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.eval.benchmark import Answer, Benchmark, EvalInputError, Job, RowError
from azr.eval.code_bench import read_lines
from azr.parsing import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN
from azr.prompts import solve_math_prompt
from azr.tasks import CheckRequest

MATH_SANDBOX_MODULES = (
    "math_verify",
    # What math-verify and sympy import on first use rather than at import time.
    "antlr4.LL1Analyzer",
    "sympy.assumptions.wrapper",
    "sympy.combinatorics",
    "sympy.physics.units",
    "sympy.sets.handlers.functions",
    "sympy.sets.setexpr",
    "sympy.tensor.tensor",
)

GRADER = """\
import builtins as _builtins

from math_verify import parse, verify

GOLD = {gold!r}


class BadGoldAnswer(Exception):
    pass


class SandboxLacksModule(Exception):
    pass


def check(candidate):
    missing = []
    real_import = _builtins.__import__

    def recording_import(name, *args, **kwargs):
        try:
            return real_import(name, *args, **kwargs)
        except ImportError:
            missing.append(name)
            raise

    _builtins.__import__ = recording_import
    try:
        gold = parse(GOLD, parsing_timeout=None)
        if not gold:
            raise BadGoldAnswer(GOLD[:200])
        same = verify(gold, parse(candidate(), parsing_timeout=None), timeout_seconds=None)
    finally:
        _builtins.__import__ = real_import
    if missing and not same:
        raise SandboxLacksModule(",".join(sorted(set(missing))))
    assert same, "not equivalent"
"""


@dataclass(frozen=True)
class MathProblem:
    """A problem statement and its gold answer (LaTeX or plain)."""

    id: str
    problem: str
    answer: str


@dataclass
class MathBenchmark(Benchmark[MathProblem]):
    """A math file graded with math-verify in the sandbox."""

    def problem_id(self, problem: MathProblem) -> str:
        return problem.id

    def user_prompt(self, problem: MathProblem) -> str:
        return solve_math_prompt(problem.problem)

    def extract(self, problem: MathProblem, response: str) -> Answer:
        body = answer_body(response)
        if body is not None:
            return Answer(body, format_ok=True)
        return Answer(response, format_ok=False)

    def from_generation(self, problem: MathProblem, generation: Any) -> Answer:
        text = generation.get("completion") if isinstance(generation, dict) else None
        if not isinstance(text, str):
            return Answer(None, format_ok=False, reason="no_completion")
        body = answer_body(text)
        return Answer(text if body is None else body, format_ok=True)

    def job(self, problem: MathProblem, answer: str) -> Job:
        return CheckRequest(
            program=f"def answer():\n    return {answer!r}\n",
            test=GRADER.format(gold=gold_text(problem.answer)),
            entry_point="answer",
        )


def answer_body(response: str) -> str | None:
    """The text inside <answer> of a response with the strict think/answer shape, else None."""
    tags = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
    if any(response.count(tag) != 1 for tag in tags):
        return None
    positions = [response.find(tag) for tag in tags]
    if positions != sorted(positions) or response[: positions[0]].strip():
        return None
    if response[positions[3] + len(ANSWER_CLOSE) :].strip():
        return None
    body = response[positions[2] + len(ANSWER_OPEN) : positions[3]].strip()
    return body or None


def gold_text(answer: str) -> str:
    """The gold answer as math-verify reads it best: in ``$...$`` unless already delimited."""
    if "$" in answer or "\\boxed" in answer:
        return answer
    return f"${answer}$"


def math_file_benchmark(name: str, path: str | Path) -> MathBenchmark:
    """``math:FILE.jsonl``: rows with ``problem`` and ``answer`` (and optionally an ``id``)."""
    problems: list[MathProblem] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    stem = Path(path).name
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
            problem = _math_problem(row, default_id=f"{stem}:{number}")
        except (json.JSONDecodeError, ValueError) as exc:
            errors.append(RowError(where, f"not a math row ({exc})"))
            continue
        if problem.id in seen:
            errors.append(RowError(where, f"duplicate id {problem.id!r}"))
            continue
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise EvalInputError(f"{path}: no usable problem ({len(errors)} bad rows)")
    return MathBenchmark(
        name=name, problems=problems, errors=errors, sandbox_modules=MATH_SANDBOX_MODULES
    )


def _math_problem(row: Any, default_id: str) -> MathProblem:
    if not isinstance(row, dict):
        raise ValueError("a row must be a JSON object")
    problem, answer = row.get("problem"), row.get("answer")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("missing or non-text field 'problem'")
    if isinstance(answer, int | float) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ValueError("missing or empty field 'answer'")
    ident = row.get("id", row.get("task_id", default_id))
    return MathProblem(id=str(ident), problem=problem, answer=answer)
