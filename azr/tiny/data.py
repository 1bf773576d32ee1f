"""The warm start's data: supervised examples of well-formed AZR responses built from CRUXEval.

Train half only (even ``sample_<k>`` ids; the odd half is for evaluation). Proposal targets are
a small pool of the shortest train programs, and the solves of those programs get a share of
every batch, so Monte-Carlo solves of the model's own proposals succeed sometimes. Proposer
prompts use a default ``ExecutorConfig``'s bans and timeout, the text self-play shows by
default. Nothing here executes a program (``ast.literal_eval`` only). Why: docs/tiny.md.
"""

from __future__ import annotations

import ast
import random
import threading
from dataclasses import dataclass

from azr import prompts
from azr.config import ExecutorConfig
from azr.cruxeval import CruxEvalRow, split_rows
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, Role, TaskType, Triplet

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
"""References per warm-start proposer prompt (self-play uses K=6; 2 keeps sequences short)."""
INDUCTION_INPUTS = 4
"""Inputs per warm-start induction proposal."""
PROPOSAL_POOL = 8
"""Shortest train programs used as proposal targets and references."""
REFERENCE_DRAWS = 1
"""Deduction/abduction proposer prompts per pool program (different reference draws)."""
IDENTITY_INDUCTION_PROPOSALS = 4
"""Induction proposals whose source is the identity seed (the first step's only program)."""
IDENTITY_HINT = IDENTITY_INDUCTION.message
GROUPS = {"propose": 2, "induce": 2, "known": 4, "general": 0}
"""Sequences of each example group in a warm-start batch of 8 (scaled for other sizes; the
remainder goes to "general"). Proposals matter most for self-play — a valid program must
survive sampling, and a model this small only reproduces programs it has seen many times — and
known solves make the Monte-Carlo solves of its own proposals succeed sometimes. The general
train-half solves get no share at batch 8: self-play only solves programs its proposer wrote,
and the known solves teach the answer format as well; they stay in the tokenizer corpus."""
_EXECUTOR = ExecutorConfig()
# Proposer prompts read exactly like self-play's with a default executor config (the tiny model
# is sensitive to any difference): its banned modules and builtins, and its timeout.
TIMEOUT_S = _EXECUTOR.timeout_s
COMBOS = [(t, r) for r in (Role.PROPOSE, Role.SOLVE) for t in TaskType]

_THINK = {
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
    group: str = "general"
    """Which :data:`GROUPS` share it is drawn from."""


def split_cruxeval(records: list[CruxEvalRow]) -> tuple[list[Triplet], list[Triplet]]:
    """(train, eval) triplets by CRUXEval's fixed split (`azr.cruxeval.split_rows`).

    Records without an input (zero-argument programs) are left out of both halves.
    """
    # Zero-argument programs: AZR asks for >= 1 parameter.
    train, held_out = split_rows([r for r in records if r.input.strip()])
    return [r.triplet for r in train], [r.triplet for r in held_out]


def _variants(input_text: str, count: int) -> list[str]:
    """`count` distinct inputs near a trusted CRUXEval input (type-preserving literal edits)."""
    with AST_LOCK:
        args = list(ast.literal_eval(f"({input_text},)"))
    out = [input_text]
    for shift in range(1, 50):
        if len(out) >= count:
            break
        changed = [_nudge(arg, shift) for arg in args]
        text = ", ".join(repr(a) for a in changed)
        if text not in out:
            out.append(text)
    return out


def _nudge(value: object, shift: int) -> object:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value + shift
    if isinstance(value, str):
        return value + "abcdefghij"[shift % 10] if value else "x" * shift
    if isinstance(value, list):
        return value[shift % len(value) :] + value[: shift % len(value)] if value else [shift]
    if isinstance(value, tuple):
        return tuple(_nudge(list(value), shift))
    if isinstance(value, dict):
        return {**value, f"k{shift}": shift}
    return value


def _hint(triplet: Triplet) -> str:
    ok_in, args = literal(f"({triplet.input},)")
    ok_out, output = literal(triplet.output)
    if not (ok_in and ok_out):  # a few CRUXEval values are calls such as set()
        return "Compare how the outputs change with the inputs."
    nargs, kind = len(args), type(output).__name__
    plural = "s" if nargs != 1 else ""
    return f"The function takes {nargs} argument{plural} and returns a {kind}."


def _identity_inputs(train: list[Triplet], count: int, rng: random.Random) -> list[str]:
    """Short one-argument literal inputs taken from train triplets (for identity examples)."""
    single = []
    for t in train:
        ok, args = literal(f"({t.input},)")
        if ok and len(args) == 1 and len(t.input) <= 40:
            single.append(repr(args[0]))
    single = sorted(set(single))
    return rng.sample(single, min(count, len(single)))


def build_examples(train: list[Triplet], *, seed: int) -> list[WarmExample]:
    """Supervised examples in four groups (see :data:`GROUPS`).

    - propose: every pool program as the target of deduction/abduction proposals;
    - induce: induction proposals whose source is a pool program or the identity seed;
    - known: the solves of the pool triplets and induction solves of the identity seed — the
      programs the proposer writes or is shown — so self-play's Monte-Carlo solves of its own
      proposals can succeed sometimes (a stand-in for a model that knows some programs);
    - general: deduction/abduction/induction solves of every train triplet.
    """
    rng = random.Random(seed)
    banned = _EXECUTOR.banned_modules
    builtins = _EXECUTOR.banned_builtins
    literal_inputs = [t for t in train if literal(f"({t.input},)")[0]]
    pool = sorted(literal_inputs, key=lambda t: (len(t.program), t.program))[:PROPOSAL_POOL]
    examples = []

    def add(group: str, task: TaskType, role: Role, prompt: str, **blocks: object) -> None:
        response = prompts.format_response(task, role, think=_THINK[(task, role)], **blocks)
        examples.append(WarmExample(task, role, prompt, response, group))

    def solves(group: str, t: Triplet, visible: list[tuple[str, str]], hint: str) -> None:
        add(group, TaskType.DEDUCTION, Role.SOLVE,
            prompts.solve_deduction_prompt(t.program, t.input), output=t.output)  # fmt: skip
        add(group, TaskType.ABDUCTION, Role.SOLVE,
            prompts.solve_abduction_prompt(t.program, t.output), inputs=[t.input])  # fmt: skip
        add(group, TaskType.INDUCTION, Role.SOLVE,
            prompts.solve_induction_prompt(visible, hint), program=t.program)  # fmt: skip

    for target in pool:
        others = [t for t in pool if t is not target]
        for task in (TaskType.DEDUCTION, TaskType.ABDUCTION):
            builder = (
                prompts.propose_deduction_prompt
                if task == TaskType.DEDUCTION
                else prompts.propose_abduction_prompt
            )
            for _ in range(REFERENCE_DRAWS):
                # Self-play starts from the identity triplet alone and grows its references
                # with its own (pool-like) proposals: show 1..K references, often the seed.
                refs = rng.sample(others, rng.randint(1, NUM_REFERENCES))
                if rng.random() < 0.5:
                    refs = [IDENTITY_TRIPLET, *refs[:-1]]
                prompt = builder(
                    refs, banned_modules=banned, banned_builtins=builtins, timeout_s=TIMEOUT_S
                )
                add("propose", task, Role.PROPOSE, prompt, program=target.program,
                    inputs=[target.input])  # fmt: skip
    # Induction proposals: the source program comes from the deduction/abduction buffers, which
    # start with the identity seed and then fill with pool-like programs.
    identity_inputs = _identity_inputs(train, IDENTITY_INDUCTION_PROPOSALS * INDUCTION_INPUTS, rng)
    sources = [(t, _variants(t.input, INDUCTION_INPUTS), _hint(t)) for t in pool]
    for k in range(IDENTITY_INDUCTION_PROPOSALS):
        chunk = identity_inputs[k * INDUCTION_INPUTS : (k + 1) * INDUCTION_INPUTS]
        sources.append((IDENTITY_TRIPLET, chunk, IDENTITY_HINT))
    for source, inputs, hint in sources:
        prompt = prompts.propose_induction_prompt(
            source.program, n_inputs=INDUCTION_INPUTS, timeout_s=TIMEOUT_S
        )
        add("induce", TaskType.INDUCTION, Role.PROPOSE, prompt, inputs=inputs, message=hint)
    # Known programs: the pool triplets (one visible pair: only CRUXEval's is known without
    # running the program) and the identity seed as an induction solve (output = input).
    for t in pool:
        solves("known", t, [(t.input, t.output)], _hint(t))
    half = INDUCTION_INPUTS // 2
    for k in range(len(identity_inputs)):
        visible = [(v, v) for v in (identity_inputs * 2)[k : k + half]]
        prompt = prompts.solve_induction_prompt(visible, IDENTITY_HINT)
        add("known", TaskType.INDUCTION, Role.SOLVE, prompt, program=IDENTITY_TRIPLET.program)
    for t in train:
        solves("general", t, [(t.input, t.output)], _hint(t))
    rng.shuffle(examples)
    return examples


def corpus_texts(records: list[CruxEvalRow], *, seed: int) -> list[str]:
    """Prompt and response texts of the train half, for training the tokenizer."""
    train, _ = split_cruxeval(records)
    return [text for ex in build_examples(train, seed=seed) for text in (ex.prompt, ex.response)]
