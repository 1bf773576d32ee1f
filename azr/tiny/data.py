"""The warm start's data: supervised examples of well-formed AZR responses over program families.

Every program and input comes from the *warm* split of `azr.tiny.families` (the probe split is
never shown), and every answer from the families' trusted twins: nothing here runs a program
text. Proposer prompts use a default ``ExecutorConfig``'s bans and timeout, the text self-play
shows by default. Why families and these shares: docs/tiny.md.
"""

from __future__ import annotations

import ast
import random
import threading
from dataclasses import dataclass

from azr import prompts
from azr.config import ExecutorConfig
from azr.tasks import (
    IDENTITY_INDUCTION,
    IDENTITY_PROGRAM,
    IDENTITY_TRIPLET,
    Role,
    TaskType,
    Triplet,
)
from azr.tiny.families import draw_digits, draw_task, split_of

# CPython 3.11's AST constructor is not thread-safe ("AST constructor recursion depth
# mismatch" when two threads build the dataset at once): parse under one lock.
AST_LOCK = threading.Lock()


def literal(text: str) -> tuple[bool, object]:
    """(True, value) when ``text`` is a Python literal, else (False, None)."""
    try:
        with AST_LOCK:
            return True, ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
        return False, None


NUM_REFERENCES = 2
"""References per warm-start proposer prompt (self-play's tiny config shows as many)."""
INDUCTION_INPUTS = 4
"""Inputs per induction proposal (half shown to the solver, half hidden)."""
EXAMPLES_PER_COMBO = 400
"""Examples drawn per (task type, role); a warm-start step samples from them by GROUPS."""
GROUPS = {"propose": 1, "induce": 1, "solve": 6}
"""Sequences of each example group in a warm-start batch of 8 (scaled for other sizes; the
remainder goes to "solve"): deduction/abduction proposals, induction proposals, and solves of
all three types."""
_GROUP_OF = {
    (TaskType.DEDUCTION, Role.PROPOSE): "propose",
    (TaskType.ABDUCTION, Role.PROPOSE): "propose",
    (TaskType.INDUCTION, Role.PROPOSE): "induce",
}
_EXECUTOR = ExecutorConfig()
# Proposer prompts read exactly like self-play's with a default executor config (the tiny model
# is sensitive to any difference): its banned modules and builtins, and its timeout.
TIMEOUT_S = _EXECUTOR.timeout_s
COMBOS = [(t, r) for r in (Role.PROPOSE, Role.SOLVE) for t in TaskType]

THINK = {
    (TaskType.DEDUCTION, Role.PROPOSE): "I write a short new program and an input for it.",
    (TaskType.ABDUCTION, Role.PROPOSE): "I write a short new program and an input for it.",
    (TaskType.INDUCTION, Role.PROPOSE): "I pick varied inputs and describe the program.",
    (TaskType.DEDUCTION, Role.SOLVE): "I trace f on the input step by step.",
    (TaskType.ABDUCTION, Role.SOLVE): "I look for an input that gives the output.",
    (TaskType.INDUCTION, Role.SOLVE): "I write a function that fits the examples.",
}


@dataclass(frozen=True)
class WarmExample:
    """One supervised example: a user prompt and the well-formed response to learn."""

    task: TaskType
    role: Role
    prompt: str
    response: str
    group: str = "solve"
    """Which :data:`GROUPS` share it is drawn from."""


def render(task: TaskType, role: Role, prompt: str, **blocks: object) -> WarmExample:
    """The example whose response is the well-formed answer with ``blocks``."""
    response = prompts.format_response(task, role, think=THINK[(task, role)], **blocks)
    return WarmExample(task, role, prompt, response, _GROUP_OF.get((task, role), "solve"))


def _references(rng: random.Random) -> list[Triplet]:
    """1..K warm-split triplets; half the time the identity seed first (self-play starts from
    the identity triplet alone and grows its references with its own family-like proposals)."""
    refs = []
    for _ in range(rng.randint(1, NUM_REFERENCES)):
        t = draw_task(rng, "warm")
        refs.append(Triplet(program=t.program, input=t.inputs[0], output=t.outputs[0]))
    if rng.random() < 0.5:
        refs = [IDENTITY_TRIPLET, *refs[:-1]]
    return refs


def _identity_inputs(rng: random.Random, count: int) -> list[str]:
    """Distinct warm-split one-argument inputs for the identity program (digit lists)."""
    out: list[str] = []
    while len(out) < count:
        text = repr(draw_digits(rng))
        if split_of(text) == "warm" and text not in out:
            out.append(text)
    return out


def proposal_example(task: TaskType, rng: random.Random) -> WarmExample:
    """A deduction/abduction proposal: references in, a new warm program and input out."""
    build = (
        prompts.propose_deduction_prompt
        if task == TaskType.DEDUCTION
        else prompts.propose_abduction_prompt
    )
    prompt = build(
        _references(rng),
        banned_modules=_EXECUTOR.banned_modules,
        banned_builtins=_EXECUTOR.banned_builtins,
        timeout_s=TIMEOUT_S,
    )
    target = draw_task(rng, "warm")
    return render(task, Role.PROPOSE, prompt, program=target.program, inputs=[target.inputs[0]])


def induction_proposal_example(rng: random.Random) -> WarmExample:
    """An induction proposal: a program in (a warm family's, or the identity seed, the first
    step's only source), four distinct inputs and the family's hint out."""
    if rng.random() < 0.25:
        program, inputs = IDENTITY_PROGRAM, _identity_inputs(rng, INDUCTION_INPUTS)
        message = IDENTITY_INDUCTION.message
    else:
        t = draw_task(rng, "warm", INDUCTION_INPUTS)
        program, inputs, message = t.program, list(t.inputs), t.family.hint
    prompt = prompts.propose_induction_prompt(
        program, n_inputs=INDUCTION_INPUTS, timeout_s=TIMEOUT_S
    )
    return render(TaskType.INDUCTION, Role.PROPOSE, prompt, inputs=inputs, message=message)


def solve_examples(rng: random.Random) -> list[WarmExample]:
    """Deduction, abduction and induction solves of one warm-split task each."""
    t = draw_task(rng, "warm")
    deduction = render(
        TaskType.DEDUCTION, Role.SOLVE,
        prompts.solve_deduction_prompt(t.program, t.inputs[0]), output=t.outputs[0],
    )  # fmt: skip
    t = draw_task(rng, "warm")
    abduction = render(
        TaskType.ABDUCTION, Role.SOLVE,
        prompts.solve_abduction_prompt(t.program, t.outputs[0]), inputs=[t.inputs[0]],
    )  # fmt: skip
    t = draw_task(rng, "warm", INDUCTION_INPUTS)
    visible = list(zip(t.inputs, t.outputs, strict=True))[: INDUCTION_INPUTS // 2]
    induction = render(
        TaskType.INDUCTION, Role.SOLVE,
        prompts.solve_induction_prompt(visible, t.family.hint), program=t.program,
    )  # fmt: skip
    return [deduction, abduction, induction]


def build_examples(*, seed: int, per_combo: int = EXAMPLES_PER_COMBO) -> list[WarmExample]:
    """``per_combo`` examples of each (task type, role), all from the warm split, shuffled."""
    rng = random.Random(seed)
    examples: list[WarmExample] = []
    for _ in range(per_combo):
        examples.append(proposal_example(TaskType.DEDUCTION, rng))
        examples.append(proposal_example(TaskType.ABDUCTION, rng))
        examples.append(induction_proposal_example(rng))
        examples.extend(solve_examples(rng))
    rng.shuffle(examples)
    return examples


def corpus_texts(*, seed: int, per_combo: int = EXAMPLES_PER_COMBO // 4) -> list[str]:
    """Prompt and response texts of warm-start examples, for training the tokenizer."""
    return [
        text
        for ex in build_examples(seed=seed, per_combo=per_combo)
        for text in (ex.prompt, ex.response)
    ]
