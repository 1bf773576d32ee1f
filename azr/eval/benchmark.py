"""What an evaluation is made of: a benchmark, its problems, answers and verdicts.

A `Benchmark` holds its problems (in a fixed order: a subset is always a prefix) and knows
four things about each: the user message that asks it (`user_prompt`), how to take the answer
out of a model's response (`extract`) or out of a generations file written elsewhere
(`from_generation`), and what the sandbox must run to judge an answer (`job`: a `ScoreRequest`,
a `CheckRequest`, or a `Verdict` decided without running anything). Nothing here runs code.

Bad input never loses good input: a row that cannot be used becomes a `RowError` naming its
file and line, and the other rows stay; only a file that cannot be used at all (missing,
unreadable, no rows) raises `EvalInputError`.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from azr.tasks import CheckRequest, ScoreRequest


class EvalInputError(ValueError):
    """A benchmark, file or model cannot be used at all; the message names it."""


@dataclass(frozen=True)
class RowError:
    """One row that could not be used (the others are): where it is and what is wrong."""

    where: str
    """``FILE:LINE`` (or ``FILE:KEY`` in a JSON object)."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Answer:
    """What one response (or one outside generation) gives to judge."""

    text: str | None
    """The answer to score (a literal, an argument list, a program, a math answer); None when
    there is none, and then ``reason`` says why."""
    format_ok: bool
    """Whether the response had the strict <think>/<answer> format of self-play."""
    reason: str | None = None


@dataclass(frozen=True)
class Verdict:
    """Whether an answer is right, and if not, why (``wrong``, ``exception:AssertionError``,
    ``timeout``, ``format:no_answer_tag`` ...)."""

    passed: bool
    reason: str | None = None


Job = ScoreRequest | CheckRequest | Verdict
"""What judging one answer takes: a sandbox request, or a verdict already decided."""

P = TypeVar("P")


@dataclass
class Benchmark(ABC, Generic[P]):
    """A named list of problems and the rules that ask and judge them."""

    name: str
    problems: list[P]
    errors: list[RowError] = field(default_factory=list)
    """Rows of the source file that were left out, each naming its line."""

    sandbox_modules: tuple[str, ...] = ()
    """Modules the sandbox must import before it forks for this benchmark's jobs."""

    @abstractmethod
    def problem_id(self, problem: P) -> str:
        """The problem's id as its source names it (``sample_3``, ``HumanEval/0`` ...)."""

    @abstractmethod
    def user_prompt(self, problem: P) -> str:
        """The user message that asks the problem (wrapped in the chat template later)."""

    @abstractmethod
    def extract(self, problem: P, response: str) -> Answer:
        """The answer in a model's response to `user_prompt`."""

    @abstractmethod
    def from_generation(self, problem: P, generation: Any) -> Answer:
        """The answer in one generation written elsewhere (score-only mode): a string in
        CRUXEval's format, a dict (one JSONL row) in HumanEval's."""

    @abstractmethod
    def job(self, problem: P, answer: str) -> Job:
        """What the sandbox runs to judge ``answer``."""

    def second_job(self, problem: P, answer: str, verdict: Verdict) -> Job | None:
        """A second way to judge an answer the first job turned down, or None (the default)."""
        return None

    def subset(self, size: int | None) -> Benchmark[P]:
        """This benchmark with only its first ``size`` problems (all when None)."""
        if size is None or size >= len(self.problems):
            return self
        smaller = copy.copy(self)
        smaller.problems = self.problems[:size]
        return smaller
