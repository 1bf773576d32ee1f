"""Task schemas shared by every part of azr, and the typed executor interface.

Programs, inputs and outputs travel as *source text*: a program is Python source defining
`f`, an input is the text of an argument list (``"[1, 2], 'a'"``), an output is the
canonical repr of a plain literal value. Nothing here executes or evaluates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class TaskType(StrEnum):
    DEDUCTION = "deduction"
    ABDUCTION = "abduction"
    INDUCTION = "induction"


class Role(StrEnum):
    PROPOSE = "propose"
    SOLVE = "solve"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Triplet(_Frozen):
    """A verified deduction/abduction task: ``output == repr(f(*input))``."""

    program: str
    input: str
    output: str
    step: int = 0
    """Self-play step that produced it (0 for seeds)."""
    policy_version: int = 0
    """Policy version of the proposer that wrote it (0 for seeds)."""


class InductionTask(_Frozen):
    """A verified induction task: a program, its (input, output) pairs and a message.

    ``visible`` pairs are shown to the solver; ``hidden`` pairs are the tests.
    """

    program: str
    message: str
    visible: tuple[tuple[str, str], ...]
    hidden: tuple[tuple[str, str], ...]
    step: int = 0
    policy_version: int = 0


IDENTITY_PROGRAM = "def f(x):\n    return x"
IDENTITY_INPUT = "'Hello World'"
IDENTITY_TRIPLET = Triplet(program=IDENTITY_PROGRAM, input=IDENTITY_INPUT, output="'Hello World'")
IDENTITY_INDUCTION = InductionTask(
    program=IDENTITY_PROGRAM,
    message="The function gives back its argument unchanged.",
    visible=(("'Hello World'", "'Hello World'"), ("1", "1"), ("[1, 2]", "[1, 2]")),
    hidden=(("'abc'", "'abc'"), ("(3, 4)", "(3, 4)"), ("None", "None")),
)


class ValidationResult(_Frozen):
    """What the executor says about a proposed program and its inputs."""

    valid: bool
    outputs: tuple[str, ...] | None = None
    """Canonical output repr per input, in input order (None when invalid)."""
    reason: str | None = None
    """Machine-readable rejection reason (``syntax``, ``banned:os``, ``timeout`` ...)."""


class ScoreResult(_Frozen):
    """What the executor says about a solver answer."""

    accuracy: float = Field(ge=0.0, le=1.0)
    reason: str | None = None
    """Why the answer is not fully correct (``wrong``, ``non_literal_answer`` ...)."""


class ValidateRequest(_Frozen):
    program: str
    inputs: tuple[str, ...]
    require_distinct_inputs: bool = False
    """Induction: the inputs must be pairwise distinct."""


class ScoreRequest(_Frozen):
    task: TaskType
    program: str
    answer: str
    """Deduction: predicted output; abduction: predicted input; induction: a program."""
    input: str | None = None
    output: str | None = None
    pairs: tuple[tuple[str, str], ...] = ()
    """Induction: the hidden (input, output) pairs the answer program must reproduce."""


class CheckRequest(_Frozen):
    """A program and its tests (HumanEval style), run together in the sandbox.

    The sandbox runs ``program``, then ``test`` in the same namespace, then, when ``test``
    defined a function ``check``, calls ``check(<entry_point>)``. It passes when all of that
    returns without raising; the result is a `ScoreResult` (accuracy 1 or 0, and the status
    that failed it: ``exception:AssertionError``, ``timeout``, ``no_entry`` ...). Unlike the
    literal answers of self-play, both texts are arbitrary code: only the sandbox runs them.
    """

    program: str
    test: str
    entry_point: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=200)
    """Name of the function under test, defined by ``program``."""


class Executor(Protocol):
    """The environment: validates proposals and scores answers, results in request order."""

    def validate_many(self, requests: list[ValidateRequest]) -> list[ValidationResult]: ...

    def score_many(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...


class ProgramChecker(Protocol):
    """Runs programs against their tests in the sandbox (evaluation); results in request order."""

    def check_many(self, requests: list[CheckRequest]) -> list[ScoreResult]: ...


@dataclass(frozen=True, slots=True)
class TrainSample:
    """One trajectory the learner trains on: a prompt, the sampled response, its advantage.

    ``behaviour_logprobs[i]`` is the rollout engine's log-probability of
    ``response_token_ids[i]`` (the behaviour policy of the clipped importance ratio), so both
    lists have the same length. ``advantage`` is the TRR++ advantage of the whole response,
    applied to every response token. A plain dataclass (not pydantic): thousands travel per
    step and validation happens once, in the learner's batch builder.
    """

    prompt_token_ids: list[int]
    response_token_ids: list[int]
    behaviour_logprobs: list[float]
    advantage: float
    task: TaskType | None = None
    role: Role | None = None
    policy_version: int = 0
    """Policy version of the rollout weights that sampled the response."""
    temperature: float = 1.0
    """Sampling temperature the response was drawn at: the behaviour logprobs are of the
    distribution softmax(logits / temperature), so the learner scales its logits by it too."""
    top_p: float = 1.0
    """Nucleus mass it was drawn with; the learner trains only on 1.0 (the full distribution)."""
    top_k: int = 0
    """Top-k it was drawn with; 0 = off (the full vocabulary), the only value the learner takes."""
