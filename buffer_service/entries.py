"""Checking buffer entries and computing their dedup keys.

Entries carry model-written source text, so everything here treats it as hostile data: it is
parsed (``ast.parse``) but never compiled, evaluated or unpickled. Every check returns a
machine-readable reason instead of raising, so one bad entry in a batch never costs the others.

Dedup key (AZR_SPEC "exact duplicates are skipped"): the program and the inputs, each
normalised by an AST round-trip (``ast.unparse(ast.parse(src))``) so comments, blank lines and
spacing do not make a duplicate look new. Induction keys use the tuple of all inputs
(visible then hidden).
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass

from azr.tasks import InductionTask, TaskType, Triplet

BufferEntry = Triplet | InductionTask
"""What a buffer holds: a Triplet (deduction/abduction) or an InductionTask (induction)."""


@dataclass(frozen=True)
class EntryLimits:
    """Size limits on entry fields (characters); larger entries are rejected, never truncated."""

    max_program_chars: int = 20_000
    max_input_chars: int = 4_000
    max_output_chars: int = 4_000
    max_message_chars: int = 4_000
    max_pairs: int = 64


class EntryRejected(Exception):
    """An entry is malformed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Parsing hostile text can fail in more ways than SyntaxError: NUL bytes give ValueError,
# deep nesting gives RecursionError/MemoryError in the parser or in ast.unparse.
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


def normalise_program(program: str) -> str:
    """The program as ``ast.unparse`` prints it; raises EntryRejected when it is not valid.

    The program must define a top-level ``f`` (function or class); that is what every task
    calls.
    """
    try:
        tree = ast.parse(program, mode="exec")
        defines_f = any(
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and node.name == "f"
            for node in tree.body
        )
        if not defines_f:
            raise EntryRejected("program_without_f")
        return ast.unparse(tree)
    except _PARSE_ERRORS:
        raise EntryRejected("program_syntax") from None


def normalise_input(text: str) -> str:
    """An argument list (``"[1, 2], 'a'"``) in normal form; raises EntryRejected otherwise.

    It must parse as the arguments of a call ``f(<text>)`` and every argument must be a
    literal: inputs are data, never code (AZR_SPEC validation rule 2). Only positional
    arguments are allowed, like the executor accepts.
    """
    try:
        call = ast.parse(f"f({text}\n)", mode="eval").body
    except _PARSE_ERRORS:
        raise EntryRejected("input_syntax") from None
    # "1), g(2" parses as one call only when the text closes nothing it did not open.
    if not isinstance(call, ast.Call) or call.keywords:
        raise EntryRejected("input_syntax")
    try:
        for arg in call.args:
            if isinstance(arg, ast.Starred) or not _is_literal(arg):
                raise EntryRejected("input_not_literal")
        return ", ".join(ast.unparse(arg) for arg in call.args)
    except _PARSE_ERRORS:
        raise EntryRejected("input_syntax") from None


def check_output(text: str) -> None:
    """An output must be the repr of a literal value; raises EntryRejected otherwise."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
        if not _is_literal(node):
            raise EntryRejected("output_not_literal")
    except _PARSE_ERRORS:
        raise EntryRejected("output_syntax") from None


def _is_literal(node: ast.AST) -> bool:
    """Whether an expression node is a plain literal (what ``ast.literal_eval`` accepts).

    Iterative, so deeply nested hostile input cannot exhaust the Python stack here.
    """
    stack = [node]
    while stack:
        cur = stack.pop()
        match cur:
            case ast.Constant():
                pass
            case ast.Tuple(elts=elts) | ast.List(elts=elts) | ast.Set(elts=elts):
                stack.extend(elts)
            case ast.Dict(keys=keys, values=values):
                if any(k is None for k in keys):  # {**x} unpacking
                    return False
                stack.extend(k for k in keys if k is not None)
                stack.extend(values)
            case ast.UnaryOp(op=ast.USub() | ast.UAdd(), operand=operand):
                stack.append(operand)
            case ast.BinOp(op=ast.Add() | ast.Sub(), left=left, right=right):
                # complex literals such as 1+2j
                stack.extend((left, right))
            case ast.Call(func=ast.Name(id="set" | "frozenset"), args=args, keywords=[]):
                # repr(set()) == "set()", repr(frozenset({1})) == "frozenset({1})"
                if len(args) > 1:
                    return False
                stack.extend(args)
            case _:
                return False
    return True


def _digest(*parts: str) -> str:
    # A 128-bit digest keeps the in-memory dedup index small at 100k+ entries per buffer.
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _check_len(value: str, limit: int, field: str) -> None:
    if len(value) > limit:
        raise EntryRejected(f"{field}_too_large")


def entry_key(task: TaskType, entry: object, limits: EntryLimits) -> str:
    """Validate an entry for ``task`` and return its dedup key; raises EntryRejected.

    The key is a hex digest of the normalised program and normalised input(s).
    """
    if task is TaskType.INDUCTION:
        if not isinstance(entry, InductionTask):
            raise EntryRejected("wrong_entry_type")
    elif not isinstance(entry, Triplet):
        raise EntryRejected("wrong_entry_type")
    # pydantic models can be built with model_construct, which skips validation.
    if not isinstance(entry.step, int) or not isinstance(entry.policy_version, int):
        raise EntryRejected("bad_step_or_version")
    if entry.step < 0 or entry.policy_version < 0:
        raise EntryRejected("negative_step_or_version")
    if not isinstance(entry.program, str):
        raise EntryRejected("wrong_field_type")
    _check_len(entry.program, limits.max_program_chars, "program")
    if isinstance(entry, Triplet):
        if not isinstance(entry.input, str) or not isinstance(entry.output, str):
            raise EntryRejected("wrong_field_type")
        _check_len(entry.input, limits.max_input_chars, "input")
        _check_len(entry.output, limits.max_output_chars, "output")
        program = normalise_program(entry.program)
        inputs = normalise_input(entry.input)
        check_output(entry.output)
        return _digest(task.value, program, inputs)
    return _induction_key(task, entry, limits)


def _induction_key(task: TaskType, entry: InductionTask, limits: EntryLimits) -> str:
    if not isinstance(entry.message, str):
        raise EntryRejected("wrong_field_type")
    _check_len(entry.message, limits.max_message_chars, "message")
    pairs = tuple(entry.visible) + tuple(entry.hidden)
    if not entry.visible or not entry.hidden:
        raise EntryRejected("induction_needs_visible_and_hidden")
    if len(pairs) > limits.max_pairs:
        raise EntryRejected("too_many_pairs")
    program = normalise_program(entry.program)
    inputs: list[str] = []
    for pair in pairs:
        if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
            raise EntryRejected("wrong_field_type")
        _check_len(pair[0], limits.max_input_chars, "input")
        _check_len(pair[1], limits.max_output_chars, "output")
        inputs.append(normalise_input(pair[0]))
        check_output(pair[1])
    if len(set(inputs)) != len(inputs):
        raise EntryRejected("induction_inputs_not_distinct")
    return _digest(task.value, program, *inputs)


def entry_to_dict(entry: BufferEntry) -> dict:
    """JSON-ready fields of an entry (the store format; tuples become lists)."""
    return entry.model_dump(mode="json")


def entry_from_dict(task: TaskType, data: dict) -> BufferEntry:
    """Rebuild an entry from :func:`entry_to_dict` output, validating field types."""
    model = InductionTask if task is TaskType.INDUCTION else Triplet
    return model.model_validate(data)
