"""Checking buffer entries and computing their dedup keys.

Entries carry model-written source text, so everything here treats it as hostile data: it is
parsed and compiled but never executed, evaluated or unpickled. Every check reports a
machine-readable reason (EntryRejected), so one bad entry in a batch never costs the others.

Dedup key (AZR_SPEC "exact duplicates are skipped"): a digest of the normalised program and
the normalised input(s); induction keys use the tuple of all inputs (visible then hidden).

- Inputs are normalised by an AST round-trip (``ast.unparse`` of each literal argument).
- Programs are normalised one step further down the same pipeline: the AST is *compiled*
  and the code objects are fingerprinted with every source position left out. Comments,
  blank lines, indentation, spacing and redundant parentheses therefore never make a
  duplicate look new, exactly as with ``ast.unparse(ast.parse(src))``; in addition, programs
  the compiler folds to identical code (``x * (1 + 1)`` vs ``x * 2``, dead ``if 0:`` blocks)
  are duplicates too, which they are behaviourally. Why not ``ast.unparse``: it is pure
  Python and costs ~75 us per program on top of the parse (measured on CRUXEval programs),
  which alone would cap batched adds below the 10,000/s target; compiling costs ~10 us more
  than parsing and runs in C.
- Bytecode belongs to a Python version, so keys carry a scheme tag (:data:`KEY_SCHEME`); the
  buffer recomputes stored keys when the interpreter changes.
"""

from __future__ import annotations

import ast
import hashlib
import marshal
import sys
import warnings
from collections.abc import Iterable
from types import CodeType

from azr.tasks import InductionTask, TaskType, Triplet

BufferEntry = Triplet | InductionTask
"""What a buffer holds: a Triplet (deduction/abduction) or an InductionTask (induction)."""

KEY_SCHEME = f"code-v1-{sys.implementation.cache_tag}"
"""Identifies how dedup keys are computed; stored with every add record."""

MAX_INDUCTION_PAIRS = 64
"""Sanity cap on an induction task's (input, output) pairs (the paper uses 10)."""


class EntryRejected(Exception):
    """An entry is malformed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Parsing hostile text can fail in more ways than SyntaxError: NUL bytes give ValueError,
# deep nesting gives RecursionError/MemoryError in the parser, compiler or ast.unparse.
_PARSE_ERRORS = (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError)


def program_fingerprint(program: str) -> bytes:
    """Canonical bytes of a program (see the module docstring); raises EntryRejected.

    The program must define a top-level ``f`` (function or class): every task calls it.
    Compiler warnings are not silenced here: :func:`batch_keys` does it once per batch.
    """
    try:
        code = compile(program, "<program>", "exec", dont_inherit=True, optimize=0)
    except _PARSE_ERRORS:
        raise EntryRejected("program_syntax") from None
    if "f" not in code.co_names or not any(
        isinstance(c, CodeType) and c.co_name == "f" for c in code.co_consts
    ):
        raise EntryRejected("program_without_f")
    # marshal format 0 is a plain, deterministic serialisation (no back-references or
    # interning flags); the result is only hashed, never loaded.
    return marshal.dumps(_canonical_code(code), 0)


def _canonical_code(code: CodeType) -> tuple:
    # Everything that defines behaviour; nothing that records where the source text was
    # (co_firstlineno, co_linetable and co_filename are left out).
    return (
        code.co_code,
        code.co_exceptiontable,
        code.co_argcount,
        code.co_posonlyargcount,
        code.co_kwonlyargcount,
        code.co_flags,
        code.co_name,
        code.co_qualname,
        code.co_names,
        code.co_varnames,
        code.co_freevars,
        code.co_cellvars,
        tuple(_canonical_const(c) for c in code.co_consts),
    )


def _canonical_const(value: object) -> object:
    if isinstance(value, CodeType):
        return ("<code>", _canonical_code(value))
    if isinstance(value, tuple):
        return ("<tuple>", tuple(_canonical_const(v) for v in value))
    if isinstance(value, frozenset):  # iteration order depends on the hash seed: sort
        items = [marshal.dumps(_canonical_const(v), 0) for v in value]
        return ("<frozenset>", tuple(sorted(items)))
    return value


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


def _digest(task: str, program: bytes, *inputs: str) -> str:
    # A 128-bit digest keeps the in-memory dedup index small at 100k+ entries per buffer;
    # length prefixes keep the concatenation unambiguous.
    h = hashlib.blake2b(digest_size=16)
    for data in (task.encode(), program, *(i.encode("utf-8", "surrogatepass") for i in inputs)):
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def entry_key(task: TaskType, entry: object, max_entry_chars: int) -> str:
    """Validate an entry for ``task`` and return its dedup key; raises EntryRejected.

    The key is a hex digest of the normalised program and normalised input(s).
    ``max_entry_chars`` caps the entry's total text: a sanity limit that protects the store
    (size validity of tasks is the executor's call), checked before any parsing.
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
    if isinstance(entry, Triplet):
        texts = (entry.program, entry.input, entry.output)
        if not all(isinstance(t, str) for t in texts):
            raise EntryRejected("wrong_field_type")
        if sum(map(len, texts)) > max_entry_chars:
            raise EntryRejected("entry_too_large")
        program = program_fingerprint(entry.program)
        inputs = normalise_input(entry.input)
        check_output(entry.output)
        return _digest(task.value, program, inputs)
    return _induction_key(task, entry, max_entry_chars)


def _induction_key(task: TaskType, entry: InductionTask, max_entry_chars: int) -> str:
    if not entry.visible or not entry.hidden:
        raise EntryRejected("induction_needs_visible_and_hidden")
    pairs = tuple(entry.visible) + tuple(entry.hidden)
    if len(pairs) > MAX_INDUCTION_PAIRS:
        raise EntryRejected("too_many_pairs")
    if any(len(pair) != 2 or not all(isinstance(x, str) for x in pair) for pair in pairs):
        raise EntryRejected("wrong_field_type")
    if not isinstance(entry.program, str) or not isinstance(entry.message, str):
        raise EntryRejected("wrong_field_type")
    total = len(entry.program) + len(entry.message) + sum(len(a) + len(b) for a, b in pairs)
    if total > max_entry_chars:
        raise EntryRejected("entry_too_large")
    program = program_fingerprint(entry.program)
    inputs: list[str] = []
    for pair in pairs:
        inputs.append(normalise_input(pair[0]))
        check_output(pair[1])
    if len(set(inputs)) != len(inputs):
        raise EntryRejected("induction_inputs_not_distinct")
    return _digest(task.value, program, *inputs)


def batch_keys(
    task: TaskType, entries: Iterable[object], max_entry_chars: int
) -> list[tuple[str | None, str | None]]:
    """``(key, None)`` or ``(None, reason)`` per entry, compiler warnings silenced.

    Hostile programs can trigger SyntaxWarnings by the thousand; they must not flood logs.
    """
    out: list[tuple[str | None, str | None]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for entry in entries:
            try:
                out.append((entry_key(task, entry, max_entry_chars), None))
            except EntryRejected as exc:
                out.append((None, exc.reason))
    return out


def entry_to_dict(entry: BufferEntry) -> dict:
    """JSON-ready fields of an entry (the store format; tuples become lists).

    Written out by hand: ``model_dump`` costs more than the rest of storing an entry.
    """
    if isinstance(entry, Triplet):
        return {
            "program": entry.program,
            "input": entry.input,
            "output": entry.output,
            "step": entry.step,
            "policy_version": entry.policy_version,
        }
    return {
        "program": entry.program,
        "message": entry.message,
        "visible": [list(p) for p in entry.visible],
        "hidden": [list(p) for p in entry.hidden],
        "step": entry.step,
        "policy_version": entry.policy_version,
    }


def entry_from_dict(task: TaskType, data: dict) -> BufferEntry:
    """Rebuild an entry from :func:`entry_to_dict` output, validating field types."""
    model = InductionTask if task is TaskType.INDUCTION else Triplet
    return model.model_validate(data)
