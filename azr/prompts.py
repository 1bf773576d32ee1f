"""Prompt builders for the six (task type x role) combinations, and a response renderer.

One builder per combination (``propose_deduction_prompt`` ... ``solve_induction_prompt``), each
explicit about what its prompt shows; :func:`solve_prompt` builds a solver prompt from a buffer
task (evaluation asks CRUXEval with it too; :func:`solve_code_prompt` and :func:`solve_math_prompt`
ask the code and math benchmarks in the same answer format); :func:`render_chat` wraps the user message in the tokenizer's chat template. Invariants:
every prompt ends with the exact output format :mod:`azr.parsing` enforces, and
``parse_response(format_response(...))`` returns the same (normalised) blocks. The wording is
this project's own (docs/selfplay.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from azr.config import DEFAULT_BANNED_BUILTINS as _CONFIG_BANNED_BUILTINS
from azr.parsing import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    TAGS,
    THINK_CLOSE,
    THINK_OPEN,
    FormatError,
    normalize_block,
    parse_response,
    required_blocks,
)
from azr.tasks import InductionTask, Role, TaskType, Triplet

FALLBACK_CHAT_FORMAT = (
    "A conversation between a user and an assistant. The assistant first reasons inside "
    "<think> </think> and then gives its final answer inside <answer> </answer>.\n"
    "User: {user_text}\nAssistant: "
)
"""Used by :func:`render_chat` when the tokenizer has no chat template (base models)."""


def _fence(label: str, content: str) -> str:
    return f"```{label}\n{content}\n```"


def _format_section(blocks: Sequence[tuple[str, str]]) -> str:
    """The closing 'answer format' section: the R1 skeleton with the required fenced blocks."""
    skeleton = "\n".join(_fence(label, placeholder) for label, placeholder in blocks)
    return (
        "## Answer format\n"
        "Reason step by step inside <think> </think>, then give the final answer inside "
        "<answer> </answer>. Use exactly one think block and one answer block, put nothing "
        "outside them, and put each item in its own fenced block with the label shown "
        "(no other fenced blocks):\n"
        f"<think> your reasoning </think>\n<answer>\n{skeleton}\n</answer>"
    )


DEFAULT_BANNED_BUILTINS = tuple(_CONFIG_BANNED_BUILTINS)
"""Builtins named by proposer prompts when the caller gives none: ExecutorConfig's default list,
so a prompt built without an executor config (the tiny model's warm start) reads exactly like
the self-play prompt of a default config (the tiny model is sensitive to any difference)."""


def _program_rules(
    banned_modules: Sequence[str], banned_builtins: Sequence[str], timeout_s: float
) -> str:
    banned = ", ".join(sorted(set(banned_modules))) or "(none)"
    builtins = ", ".join(sorted(set(banned_builtins))) or "(none)"
    return (
        "## Rules for the program\n"
        "- The entry point is a function named `f` that takes at least one parameter and "
        "returns a value.\n"
        "- It must be deterministic: the same input always gives the same output. No "
        "randomness, no clock or dates, no file/network/console I/O, no printing, no "
        "environment or other external state.\n"
        f"- Do not import or use these modules: {banned}.\n"
        f"- Do not call or name these builtins: {builtins}.\n"
        "- Helper functions and classes may be defined at the top, before `f`.\n"
        f"- It must finish well within {timeout_s:g} seconds.\n"
        "- Make it require careful, multi-step reasoning to trace, and make it clearly "
        "different from every reference program above.\n"
    )


_INPUT_RULE = (
    "- An input is the argument list of a call to `f`, written as comma-separated Python "
    "literals (numbers, strings, lists, tuples, dicts, sets, booleans, None): for "
    "`def f(a, b)` write `[1, 2], 'xy'`. Literals only, no expressions or variable names.\n"
)


def _render_references(references: Sequence[Triplet]) -> str:
    parts = []
    for number, ref in enumerate(references, start=1):
        parts.append(
            f"### Reference {number}\n"
            f"{_fence('python', ref.program)}\n"
            f"{_fence('input', ref.input)}\n"
            f"{_fence('output', ref.output)}"
        )
    return "\n\n".join(parts)


def _propose_with_references(
    goal: str,
    references: Sequence[Triplet],
    banned_modules: Sequence[str],
    banned_builtins: Sequence[str],
    timeout_s: float,
) -> str:
    if not references:
        raise ValueError("a deduction/abduction proposer prompt needs at least one reference")
    return (
        "You design code-reasoning puzzles: a Python program and one input for it. "
        f"{goal}\n\n"
        "## Reference puzzles (program, input and the output it produces)\n"
        f"{_render_references(references)}\n\n"
        f"{_program_rules(banned_modules, banned_builtins, timeout_s)}"
        f"{_INPUT_RULE}\n"
        "Write one new program and one input. Do not write the output: it is computed by "
        "running your program.\n\n"
        + _format_section(
            [("python", "def f(...):\n    ..."), ("input", "comma-separated literals")]
        )
    )


def propose_deduction_prompt(
    references: Sequence[Triplet],
    *,
    banned_modules: Sequence[str],
    timeout_s: float,
    banned_builtins: Sequence[str] = DEFAULT_BANNED_BUILTINS,
) -> str:
    """Proposer, deduction: show K reference triplets, ask for a new program and an input.

    ``banned_modules``/``banned_builtins`` come from ``ExecutorConfig``; ``timeout_s`` is the
    executor's per-program timeout (``ExecutorConfig.timeout_s``), stated so proposals stay
    well under it.
    """
    goal = "A solver will see your program and input and must predict the output exactly."
    return _propose_with_references(goal, references, banned_modules, banned_builtins, timeout_s)


def propose_abduction_prompt(
    references: Sequence[Triplet],
    *,
    banned_modules: Sequence[str],
    timeout_s: float,
    banned_builtins: Sequence[str] = DEFAULT_BANNED_BUILTINS,
) -> str:
    """Proposer, abduction: show K reference triplets, ask for a new program and an input."""
    goal = (
        "A solver will see your program and the output it produces and must find an input "
        "that yields exactly that output."
    )
    return _propose_with_references(goal, references, banned_modules, banned_builtins, timeout_s)


def propose_induction_prompt(program: str, *, n_inputs: int, timeout_s: float) -> str:
    """Proposer, induction: show one program, ask for ``n_inputs`` inputs and a message.

    The proposer writes no program here, so the program-writing rules are replaced by the
    rules for inputs and the message (which must not contain the code).
    """
    if n_inputs < 1:
        raise ValueError("n_inputs must be at least 1")
    half = n_inputs // 2
    return (
        "You design a program-synthesis puzzle from an existing Python program. A solver "
        f"will see half ({half}) of your inputs with the outputs the program gives for them, plus "
        "your message, and must write a program that also reproduces the outputs for the "
        "other inputs, which stay hidden.\n\n"
        "## The program\n"
        f"{_fence('python', program)}\n\n"
        "## Rules for the inputs\n"
        f"- Give exactly {n_inputs} inputs, all different from each other, each in its own "
        "input block.\n"
        f"{_INPUT_RULE}"
        "- Each input must make `f` return a value without raising, well within "
        f"{timeout_s:g} seconds.\n"
        "- Choose varied inputs that together reveal the program's behaviour, including "
        "edge cases.\n\n"
        "## Rules for the message\n"
        "- Write a short hint or plain-language description of what the program does.\n"
        "- The message must not contain the code or any line of it.\n\n"
        + _format_section(
            [("input", f"input {k}") for k in (1, 2)]
            + [("input", f"... one block per input, {n_inputs} in total")]
            + [("message", "your hint")]
        )
    )


def solve_deduction_prompt(program: str, input: str) -> str:
    """Solver, deduction: show the program and the input, ask for the output."""
    return (
        "Work out exactly what the Python function `f` below returns when called with the "
        "given input (the input is the argument list of the call).\n\n"
        f"{_fence('python', program)}\n{_fence('input', input)}\n\n"
        "Give the returned value as a Python literal.\n\n"
        + _format_section([("output", "the returned value")])
    )


def solve_abduction_prompt(program: str, output: str) -> str:
    """Solver, abduction: show the program and an output, ask for an input producing it."""
    return (
        "Find an input for which the Python function `f` below returns exactly the given "
        "output. Any input that works is correct.\n\n"
        f"{_fence('python', program)}\n{_fence('output', output)}\n\n"
        "Write the input as the argument list of the call to `f`: comma-separated Python "
        "literals, for example `[1, 2], 'xy'` for `f([1, 2], 'xy')`.\n\n"
        + _format_section([("input", "comma-separated literals")])
    )


def solve_induction_prompt(visible: Sequence[tuple[str, str]], message: str) -> str:
    """Solver, induction: show the visible (input, output) pairs and the message."""
    if not visible:
        raise ValueError("an induction solver prompt needs at least one visible pair")
    pairs = "\n\n".join(
        f"### Example {number}\n{_fence('input', inp)}\n{_fence('output', out)}"
        for number, (inp, out) in enumerate(visible, start=1)
    )
    return (
        "Write a Python function `f` that maps each input below to its output (each input is "
        "the argument list of a call to `f`). It will also be checked on further inputs you "
        "do not see, so capture the general rule, not just these examples.\n\n"
        f"## Hint\n{message}\n\n## Examples\n{pairs}\n\n"
        "The program must be deterministic, print nothing and do no I/O; helper functions "
        "may be defined before `f`.\n\n" + _format_section([("python", "def f(...):\n    ...")])
    )


def solve_code_prompt(code_prompt: str) -> str:
    """Evaluation (HumanEval, EvalPlus files): complete a function from its signature and
    docstring. The answer is one python block, read like an induction answer."""
    return (
        "Complete the Python function below so that it does what its docstring says. Write "
        "the whole function, with any imports and helper functions it needs.\n\n"
        f"{_fence('python', code_prompt.strip(chr(10)))}\n\n"
        + _format_section([("python", "the complete function")])
    )


def solve_math_prompt(problem: str) -> str:
    """Evaluation (math files): solve a problem; the final answer goes in the answer block."""
    return (
        "Solve the following math problem.\n\n"
        f"{problem.strip()}\n\n"
        "## Answer format\n"
        "Reason step by step inside <think> </think>, then give only the final answer inside "
        "<answer> </answer>, in LaTeX as \\boxed{...}:\n"
        "<think> your reasoning </think>\n<answer> \\boxed{your final answer} </answer>"
    )


def solve_prompt(task_type: TaskType, task: Triplet | InductionTask) -> str:
    """The solver prompt for a buffer task (induction shows only the visible pairs)."""
    task_type = TaskType(task_type)
    if task_type == TaskType.INDUCTION:
        if not isinstance(task, InductionTask):
            raise TypeError("an induction solve needs an InductionTask")
        return solve_induction_prompt(task.visible, task.message)
    if not isinstance(task, Triplet):
        raise TypeError(f"a {task_type} solve needs a Triplet")
    if task_type == TaskType.DEDUCTION:
        return solve_deduction_prompt(task.program, task.input)
    return solve_abduction_prompt(task.program, task.output)


def render_chat(tokenizer: Any, user_text: str) -> str:
    """Wrap ``user_text`` as one user turn ready for generation.

    With a chat template: ``tokenizer.apply_chat_template([{"role": "user", ...}],
    add_generation_prompt=True, tokenize=False)``. Without one (base models):
    :data:`FALLBACK_CHAT_FORMAT`, a plain "User: ... Assistant: " transcript that restates
    the think/answer convention. Either way the model's response must start with
    ``<think>`` (nothing is pre-filled).
    """
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_text}],
            add_generation_prompt=True,
            tokenize=False,
        )
        if not isinstance(rendered, str):
            raise TypeError(f"chat template returned {type(rendered).__name__}, not str")
        return rendered
    return FALLBACK_CHAT_FORMAT.format(user_text=user_text)


def format_response(
    task: TaskType,
    role: Role,
    *,
    think: str,
    program: str | None = None,
    inputs: Sequence[str] = (),
    output: str | None = None,
    message: str | None = None,
) -> str:
    """Render a well-formed response for the combination (warm-start data, tests).

    Give exactly the items the combination needs (deduction/abduction proposals and
    abduction answers: one input in ``inputs``). Blocks are normalised as the parser does,
    so ``parse_response`` of the result returns the normalised values. Raises ValueError
    for a missing or extra item, an empty block, tags in the text, or a fence line inside a
    block — this is for trusted callers, never for model output.
    """
    task, role = TaskType(task), Role(role)
    rules = required_blocks(task, role)
    given = {
        "python": [program] if program is not None else [],
        "input": list(inputs),
        "output": [output] if output is not None else [],
        "message": [message] if message is not None else [],
    }
    blocks: list[tuple[str, str]] = []
    for label, values in given.items():
        minimum, maximum = rules.get(label, (0, 0))
        if not minimum <= len(values) <= (maximum if maximum is not None else len(values)):
            raise ValueError(f"{task}/{role} takes {minimum}..{maximum} {label}, got {len(values)}")
        blocks.extend((label, _checked_block(label, value)) for value in values)
    # Order: program first, then inputs, output, message — the order the prompts show.
    if any(tag in think for tag in TAGS):
        raise ValueError("think text must not contain think/answer tags")
    body = "\n".join(_fence(label, content) for label, content in blocks)
    text = f"{THINK_OPEN}\n{think.strip()}\n{THINK_CLOSE}\n{ANSWER_OPEN}\n{body}\n{ANSWER_CLOSE}"
    parsed = parse_response(text, task, role)
    if isinstance(parsed, FormatError):
        raise ValueError(f"rendered response does not parse: {parsed}")
    return text


def _checked_block(label: str, value: str) -> str:
    content = normalize_block(label, value)
    if not content:
        raise ValueError(f"empty {label} block")
    if any(tag in content for tag in TAGS):
        raise ValueError(f"{label} block must not contain think/answer tags")
    if any(line.lstrip(" \t").startswith("```") for line in content.split("\n")):
        raise ValueError(f"{label} block must not contain a fence line")
    return content
