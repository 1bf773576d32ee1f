"""Checking buffer entries and computing their dedup keys.

Entries carry model-written source text, treated as hostile data: parsed and compiled, never
executed, evaluated or unpickled. Every check reports a machine-readable reason
(EntryRejected), so one bad entry in a batch never costs the others. The dedup key
(AZR_SPEC "exact duplicates are skipped") is a digest of the normalised program (its compiled
code, source positions left out) and the normalised input(s) (their literal ASTs; induction:
all inputs, visible then hidden). Invariant: two entries share a key exactly when those normal
forms are equal; keys carry :data:`KEY_SCHEME`, as bytecode belongs to a Python version. Why
compile, and measured costs: docs/buffer.md.
"""

from __future__ import annotations

import ast
import hashlib
import marshal
import sys
import warnings
from collections.abc import Callable, Iterable
from types import CodeType
from typing import TypeVar

from azr.tasks import InductionTask, TaskType, Triplet

BufferEntry = Triplet | InductionTask
"""What a buffer holds: a Triplet (deduction/abduction) or an InductionTask (induction)."""

KEY_SCHEME = f"code-v2-{sys.implementation.cache_tag}"
"""Identifies how dedup keys are computed; stored with every add record."""

_T = TypeVar("_T")

Keys = list[tuple[str | None, str | None]]
"""Per entry ``(key, None)`` or ``(None, reason)``."""

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
_AST_ONLY = ast.PyCF_ONLY_AST  # compile(..., _AST_ONLY) is ast.parse without its Python wrapper


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
    # marshal format 0 is a plain, deterministic serialisation (no back-references, which
    # depend on reference counts, and no interning flags); the result is only hashed, never
    # loaded. It covers every field of the code objects: bytecode, exception table, argument
    # counts, flags, names, variables and constants.
    return marshal.dumps(_without_positions(code), 0)


def _without_positions(code: CodeType) -> CodeType:
    """``code`` with everything that records where the source text was left out.

    Source positions live in ``co_firstlineno`` and ``co_linetable`` (lines and columns) of
    each code object; nested functions and classes are code objects among the constants.
    """
    consts = code.co_consts
    if not _NESTED_TYPES.isdisjoint(map(type, consts)):
        consts = tuple(map(_canonical_const, consts))
    return code.replace(co_firstlineno=1, co_linetable=b"", co_consts=consts)


_NESTED_TYPES = frozenset({CodeType, frozenset, tuple})
"""Constant types that may hold code objects or frozensets (which need canonicalising)."""


def _canonical_const(value: object) -> object:
    kind = type(value)
    if kind is CodeType:
        return _without_positions(value)
    if kind is frozenset:
        # Iteration order follows the hash seed (str hashes are randomised): write the
        # elements sorted. StopIteration never occurs among compiled constants (it is a name,
        # not a literal), so the tagged tuple cannot be mistaken for a tuple constant.
        items = sorted(marshal.dumps(_canonical_const(v), 0) for v in value)
        return (StopIteration, tuple(items))
    if kind is tuple and not _NESTED_TYPES.isdisjoint(map(type, value)):
        return tuple(map(_canonical_const, value))
    return value


def _literal_args(text: str) -> list[ast.expr]:
    """The arguments of ``f(<text>)`` (not yet checked to be literals); raises EntryRejected."""
    try:
        call = compile(f"f({text}\n)", "<input>", "eval", _AST_ONLY, dont_inherit=True).body
    except _PARSE_ERRORS:
        raise EntryRejected("input_syntax") from None
    # "1), g(2" parses as one call only when the text closes nothing it did not open.
    if not isinstance(call, ast.Call) or call.keywords:
        raise EntryRejected("input_syntax")
    return call.args


def normalise_input(text: str) -> str:
    """An argument list (``"[1, 2], 'a'"``) in normal form; raises EntryRejected otherwise.

    It must parse as the arguments of a call ``f(<text>)`` and every argument must be a
    literal: inputs are data, never code (AZR_SPEC validation rule 2). Only positional
    arguments are allowed, like the executor accepts. Two inputs have the same normal form
    exactly when they have the same :func:`input_form` (the dedup key uses that one).
    """
    args = _literal_args(text)
    try:
        for arg in args:
            if not _walk_literal(arg, None):
                raise EntryRejected("input_not_literal")
        return ", ".join(ast.unparse(arg) for arg in args)
    except _PARSE_ERRORS:
        raise EntryRejected("input_syntax") from None


def input_form(text: str) -> str:
    """The literal AST of an argument list as a flat token string (the dedup key's input
    normal form); validates like :func:`normalise_input` and raises EntryRejected."""
    args = _literal_args(text)
    tokens = [f"a{len(args)}"]
    try:
        for arg in args:
            if not _walk_literal(arg, tokens):
                raise EntryRejected("input_not_literal")
    except _PARSE_ERRORS:  # repr of an int beyond the int-to-str digit limit: ValueError
        raise EntryRejected("input_syntax") from None
    return "\x00".join(tokens)


def check_output(text: str) -> None:
    """An output must be the repr of a literal value; raises EntryRejected otherwise."""
    try:
        node = compile(text.strip(), "<output>", "eval", _AST_ONLY, dont_inherit=True).body
        if not _walk_literal(node, None):
            raise EntryRejected("output_not_literal")
    except _PARSE_ERRORS:
        raise EntryRejected("output_syntax") from None


_CONTAINER_TAGS = {ast.Tuple: "t", ast.List: "l", ast.Set: "s"}
_SIGN_TAGS = {ast.USub: "-", ast.UAdd: "+"}
_BINOP_TAGS = {ast.Add: "A", ast.Sub: "S"}


def _walk_literal(node: ast.AST, tokens: list[str] | None) -> bool:
    """Whether an expression node is a plain literal (what ``ast.literal_eval`` accepts);
    when ``tokens`` is a list, the literal's normal form is appended to it.

    Tokens, in pre-order: ``c<repr>`` for a constant (``repr`` tells ``1``, ``1.0``,
    ``True``, ``'1'`` and ``b'1'`` apart and never contains a NUL, the separator the caller
    joins with), a one-letter tag plus the arity for a container (``t``/``l``/``s`` tuple,
    list, set, ``d`` dict, ``F``/``G`` a ``set(...)``/``frozenset(...)`` call), ``-``/``+``
    for a sign and ``A``/``S`` for the ``+``/``-`` of complex literals. Every token says how
    many children follow, so the tokens determine the tree: equal forms mean equal ASTs.
    Iterative, so deeply nested hostile input cannot exhaust the Python stack here.
    """
    emit = tokens.append if tokens is not None else None
    stack = [node]
    while stack:
        cur = stack.pop()
        kind = type(cur)
        if kind is ast.Constant:
            if emit:
                emit("c" + repr(cur.value))
        elif kind in _CONTAINER_TAGS:
            elts = cur.elts
            if emit:
                emit(f"{_CONTAINER_TAGS[kind]}{len(elts)}")
            stack.extend(reversed(elts))
        elif kind is ast.Dict:
            keys, values = cur.keys, cur.values
            if any(k is None for k in keys):  # {**x} unpacking
                return False
            if emit:
                emit(f"d{len(keys)}")
            for k, v in zip(reversed(keys), reversed(values), strict=True):
                stack.append(v)
                stack.append(k)
        elif kind is ast.UnaryOp and type(cur.op) in _SIGN_TAGS:
            if emit:
                emit(_SIGN_TAGS[type(cur.op)])
            stack.append(cur.operand)
        elif kind is ast.BinOp and type(cur.op) in _BINOP_TAGS:
            # complex literals such as 1+2j
            if emit:
                emit(_BINOP_TAGS[type(cur.op)])
            stack.append(cur.right)
            stack.append(cur.left)
        elif (
            kind is ast.Call
            and type(cur.func) is ast.Name
            and cur.func.id in ("set", "frozenset")
            and not cur.keywords
            and len(cur.args) <= 1
        ):
            # repr(set()) == "set()", repr(frozenset({1})) == "frozenset({1})"
            if emit:
                emit(f"{'F' if cur.func.id == 'set' else 'G'}{len(cur.args)}")
            stack.extend(reversed(cur.args))
        else:
            return False
    return True


def _digest(task: str, program: bytes, *inputs: str) -> str:
    # A 128-bit digest keeps the in-memory dedup index small at 100k+ entries per buffer;
    # length prefixes keep the concatenation unambiguous.
    parts = [task.encode(), program, *(i.encode("utf-8", "surrogatepass") for i in inputs)]
    framed = b"".join(len(p).to_bytes(8, "little") + p for p in parts)
    return hashlib.blake2b(framed, digest_size=16).hexdigest()


def entry_key(task: TaskType, entry: object, max_entry_chars: int) -> str:
    """Validate an entry for ``task`` and return its dedup key; raises EntryRejected.

    The key is a hex digest of the normalised program and normalised input(s).
    ``max_entry_chars`` caps the entry's total text: a sanity limit that protects the store
    (size validity of tasks is the executor's call), checked before any parsing.
    Checks run in this order and the first failure is the reason: entry type, step and
    policy version, field types, size, program, input(s), output(s).
    """
    if task is TaskType.INDUCTION:
        _check_provenance(task, entry)
        return _induction_key(task, entry, max_entry_chars)
    program, inp, out = triplet_texts(task, entry, max_entry_chars)
    fingerprint = program_fingerprint(program)
    form = input_form(inp)
    check_output(out)
    return _digest(task.value, fingerprint, form)


def _check_provenance(task: TaskType, entry: object) -> None:
    if task is TaskType.INDUCTION:
        if not isinstance(entry, InductionTask):
            raise EntryRejected("wrong_entry_type")
    elif not isinstance(entry, Triplet):
        raise EntryRejected("wrong_entry_type")
    # pydantic models can be built with model_construct, which skips validation.
    step, version = entry.step, entry.policy_version
    if not isinstance(step, int) or not isinstance(version, int):
        raise EntryRejected("bad_step_or_version")
    if step < 0 or version < 0:
        raise EntryRejected("negative_step_or_version")


def triplet_texts(task: TaskType, entry: object, max_entry_chars: int) -> tuple[str, str, str]:
    """The checks of a triplet that need no parsing (type, provenance, size); returns its
    (program, input, output) texts or raises EntryRejected."""
    _check_provenance(task, entry)
    assert isinstance(entry, Triplet)
    program, inp, out = entry.program, entry.input, entry.output
    if not (isinstance(program, str) and isinstance(inp, str) and isinstance(out, str)):
        raise EntryRejected("wrong_field_type")
    if len(program) + len(inp) + len(out) > max_entry_chars:
        raise EntryRejected("entry_too_large")
    return program, inp, out


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
        inputs.append(input_form(pair[0]))
        check_output(pair[1])
    if len(set(inputs)) != len(inputs):
        raise EntryRejected("induction_inputs_not_distinct")
    return _digest(task.value, program, *inputs)


def batch_keys(
    task: TaskType,
    entries: Iterable[object],
    max_entry_chars: int,
    keys_of_texts: Callable[[TaskType, list[tuple[str, str, str]]], Keys] | None = None,
) -> Keys:
    """``(key, None)`` or ``(None, reason)`` per entry, compiler warnings silenced.

    ``keys_of_texts`` computes the triplets' keys once their texts passed :func:`triplet_texts`
    (default :func:`text_keys`; :class:`~buffer_service.key_pool.KeyPool` shares the work
    with helper processes).

    The same result as :func:`entry_key` per entry. Triplets are processed in passes over
    the batch (every program, then every input, then every output; an entry leaves at its
    first failure, so the reason is the one :func:`entry_key` gives), which keeps the
    compiler's and the parser's code in the CPU caches (docs/buffer.md). Hostile programs can
    trigger SyntaxWarnings by the thousand; they must not flood logs.
    """
    entries = list(entries)
    out: Keys = [(None, None)] * len(entries)
    if task is TaskType.INDUCTION:  # few per step, several inputs each: one by one
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i, entry in enumerate(entries):
                try:
                    out[i] = (entry_key(task, entry, max_entry_chars), None)
                except EntryRejected as exc:
                    out[i] = (None, exc.reason)
        return out
    texts: dict[int, tuple[str, str, str]] = {}
    for i, entry in enumerate(entries):
        try:
            texts[i] = triplet_texts(task, entry, max_entry_chars)
        except EntryRejected as exc:
            out[i] = (None, exc.reason)
    keys = (keys_of_texts or text_keys)(task, list(texts.values()))
    for i, result in zip(texts, keys, strict=True):
        out[i] = result
    return out


def text_keys(task: TaskType, texts: list[tuple[str, str, str]]) -> Keys:
    """``(key, None)`` or ``(None, reason)`` per deduction/abduction triplet given as the
    (program, input, output) texts :func:`triplet_texts` returned; compiler warnings silenced.

    Plain strings in, plain strings out: this is what a key process of
    :class:`~buffer_service.key_pool.KeyPool` runs.
    """
    out: Keys = [(None, None)] * len(texts)
    remaining = dict(enumerate(texts))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fingerprints = _pass(remaining, 0, program_fingerprint, out)
        forms = _pass(remaining, 1, input_form, out)
        _pass(remaining, 2, check_output, out)
    for i in remaining:
        out[i] = (_digest(task.value, fingerprints[i], forms[i]), None)
    return out


def _pass(
    texts: dict[int, tuple[str, str, str]],
    field: int,
    check: Callable[[str], _T],
    out: list[tuple[str | None, str | None]],
) -> dict[int, _T]:
    """Run ``check`` on one text of every entry still in ``texts``; entries it rejects get
    their reason in ``out`` and leave ``texts``. Returns the results by entry index."""
    results: dict[int, _T] = {}
    rejected: list[int] = []
    for i, row in texts.items():
        try:
            results[i] = check(row[field])
        except EntryRejected as exc:
            out[i] = (None, exc.reason)
            rejected.append(i)
    for i in rejected:
        del texts[i]
    return results


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
