"""The tiny model's fixed probe as benchmarks: ``probe/deduction``, ``probe/abduction``,
``probe/induction`` (``probe`` names all three).

Each asks its rows of the probe file (`azr.tiny.probe`) with self-play's own solver prompt
(`azr.prompts.solve_prompt`) and reads the answer with self-play's strict parser; the sandbox
judges it exactly as self-play scores a solve (a `ScoreRequest`: deduction compares literal
values, abduction runs ``f`` on the answer, induction runs the answer program on the hidden
pairs). So a probe figure is a solve accuracy on tasks the model never trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azr.eval.benchmark import Answer, Benchmark, EvalInputError, Job, RowError
from azr.parsing import FormatError, parse_response
from azr.prompts import solve_prompt
from azr.tasks import Role, ScoreRequest, TaskType
from azr.tiny.probe import PROBE_FILE, ProbeTask, read_probe

PROBE = "probe"
"""The name that stands for the three probe benchmarks."""
PROBE_BENCHMARKS = tuple(f"{PROBE}/{task}" for task in TaskType)


@dataclass
class ProbeBenchmark(Benchmark[ProbeTask]):
    """The probe's tasks of one type."""

    task: TaskType = TaskType.DEDUCTION

    def problem_id(self, problem: ProbeTask) -> str:
        return problem.id

    def user_prompt(self, problem: ProbeTask) -> str:
        return solve_prompt(self.task, problem.item)

    def extract(self, problem: ProbeTask, response: str) -> Answer:
        parsed = parse_response(response, self.task, Role.SOLVE)
        if isinstance(parsed, FormatError):
            return Answer(None, format_ok=False, reason=f"format:{parsed.reason}")
        if self.task == TaskType.DEDUCTION:
            return Answer(parsed.output, format_ok=True)
        if self.task == TaskType.ABDUCTION:
            return Answer(parsed.inputs[0], format_ok=True)
        return Answer(parsed.program, format_ok=True)

    def from_generation(self, problem: ProbeTask, generation: Any) -> Answer:
        """A samples row written elsewhere (``{"task_id", "completion"}``): the whole
        response, in self-play's format."""
        if isinstance(generation, dict) and isinstance(generation.get("completion"), str):
            return self.extract(problem, generation["completion"])
        return Answer(None, format_ok=False, reason="no_completion")

    def job(self, problem: ProbeTask, answer: str) -> Job:
        if self.task == TaskType.INDUCTION:
            return ScoreRequest(
                task=self.task, program=problem.program, answer=answer, pairs=problem.hidden
            )
        return ScoreRequest(
            task=self.task,
            program=problem.program,
            input=problem.input,
            output=problem.output,
            answer=answer,
        )


def probe_benchmark(name: str, path: str | Path | None = None) -> ProbeBenchmark:
    """``probe/<task type>`` over a probe file (None: the shipped one)."""
    task_name = name.removeprefix(f"{PROBE}/")
    if name not in PROBE_BENCHMARKS:
        raise EvalInputError(f"unknown probe benchmark {name!r} ({', '.join(PROBE_BENCHMARKS)})")
    where = Path(path) if path is not None else PROBE_FILE
    try:
        rows, messages = read_probe(where)
    except OSError as exc:
        raise EvalInputError(f"cannot read probe file {where}: {exc.strerror}") from None
    problems = [row for row in rows if row.task == task_name]
    if not problems:
        raise EvalInputError(f"{where}: no {task_name} rows")
    errors = [RowError(w, m) for w, m in messages]
    return ProbeBenchmark(name=name, problems=problems, errors=errors, task=TaskType(task_name))
