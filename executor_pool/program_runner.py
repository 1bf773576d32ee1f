"""Running one program: literal inputs in, canonical reprs out, one JSON line per input.

STDLIB ONLY, shipped beside ``zygote.py`` and ``forkserver.py``. The zygotes import it before
they fork and the host imports it too (``static_checks``), so both sides parse inputs and render
outputs with the same code.

Literals
    ``parse_literal`` / ``parse_arguments`` accept ``ast.literal_eval``'s literals plus ``set()``
    and ``frozenset(<literal>)``; ``canonical_repr`` renders a plain literal equally under any
    hash seed (sets and frozensets sorted by their elements' canonical reprs) or raises
    ``OutputTooLarge`` / ``NonLiteral``.
Running
    ``prepare_job`` (in the zygote, pure: nothing of the program runs) compiles the program and
    parses one fresh copy of each input per call; ``run_program`` (in the sandboxed child)
    executes it, calls ``f`` and writes to a pipe:
        {"p": 1}                                progress: the next call of an input starts
        {"i": INDEX, "s": STATUS, "v": REPR_OR_NULL}   one result per input, in order
        {"end": 1}                              the last line (after the last input run)
    Per-input STATUS values: ok, memory, exception:<Type>, nondeterministic,
    output_too_large, non_literal_output, non_literal_input, no_entry. The zygote adds those
    it sees from outside (timeout, crash:<how>, skipped).
Checking
    ``run_check`` runs a program and its tests (a check job, one result: ``ok`` or the status
    that failed it; ``bad_test:<Type>`` when the test itself does not compile).
"""

from __future__ import annotations

import ast
import builtins
import math
import os
from json.encoder import encode_basestring_ascii as _json_string

PLAIN_SCALARS = (type(None), bool, int, float, complex, str, bytes)
PROGRESS_LINE = b'{"p": 1}\n'
"""Progress: the next call of an input starts (the zygote restarts its per-call clock)."""
END_LINE = b'{"end": 1}\n'
"""The child's last line: every result is written."""


# ----------------------------------------------------------------------------- literals
class OutputTooLarge(Exception):
    """The canonical repr would exceed the size cap."""


class NonLiteral(Exception):
    """The value is not a plain literal (custom object, function, NaN, cycle ...)."""


def canonical_repr(value: object, max_chars: int) -> str:
    """Repr of a plain literal, equal for equal values under any hash seed.

    Sets and frozensets list their elements sorted by canonical repr; only exact builtin types
    qualify (subclasses may override ``__eq__``/``__repr__``), floats must be finite.
    """
    parts: list[str] = []
    budget = [max_chars]
    _render(value, parts, budget, set())
    return "".join(parts)


def _emit(text: str, parts: list[str], budget: list[int]) -> None:
    budget[0] -= len(text)
    if budget[0] < 0:
        raise OutputTooLarge
    parts.append(text)


def _render(value: object, parts: list[str], budget: list[int], active: set[int]) -> None:
    kind = type(value)
    if kind is int and value.bit_length() > budget[0] * 4:  # > budget decimal digits
        raise OutputTooLarge
    if kind is float and not math.isfinite(value):
        raise NonLiteral("float")
    if kind is complex and not (math.isfinite(value.real) and math.isfinite(value.imag)):
        raise NonLiteral("complex")
    if kind in (str, bytes) and len(value) + 2 > budget[0]:
        raise OutputTooLarge  # before repr(): a 100 MB string must not be copied again
    if kind in PLAIN_SCALARS:
        _emit(repr(value), parts, budget)
        return
    if kind not in (list, tuple, dict, set, frozenset):
        raise NonLiteral(kind.__name__ if isinstance(kind.__name__, str) else "object")
    if id(value) in active:
        raise NonLiteral("cycle")
    active.add(id(value))
    if kind is dict:
        _emit("{", parts, budget)
        for n, (key, item) in enumerate(value.items()):
            _emit(", " if n else "", parts, budget)
            _render(key, parts, budget, active)
            _emit(": ", parts, budget)
            _render(item, parts, budget, active)
        _emit("}", parts, budget)
    elif kind in (set, frozenset):
        items = sorted(canonical_repr(item, budget[0]) for item in value)
        if not items:
            _emit("set()" if kind is set else "frozenset()", parts, budget)
        else:
            body = "{" + ", ".join(items) + "}"
            _emit(body if kind is set else "frozenset(" + body + ")", parts, budget)
    else:
        opening, closing = ("[", "]") if kind is list else ("(", ")")
        _emit(opening, parts, budget)
        for n, item in enumerate(value):
            _emit(", " if n else "", parts, budget)
            _render(item, parts, budget, active)
        _emit("," + closing if kind is tuple and len(value) == 1 else closing, parts, budget)
    active.discard(id(value))


def literal_value(node: ast.AST) -> object:
    """Value of a literal expression node: ``ast.literal_eval``'s rules plus ``set()`` and
    ``frozenset(<literal>)`` (which canonical reprs contain); no ``...``, no other calls."""
    if isinstance(node, ast.Constant):
        if type(node.value) not in PLAIN_SCALARS:
            raise ValueError("not a plain literal")
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = [literal_value(item) for item in node.elts]
        return (
            tuple(items)
            if isinstance(node, ast.Tuple)
            else (items if isinstance(node, ast.List) else set(items))
        )
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ValueError("dict unpacking")
        return {
            literal_value(k): literal_value(v) for k, v in zip(node.keys, node.values, strict=True)
        }  # type: ignore[arg-type]
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("set", "frozenset")
        and not node.keywords
        and len(node.args) <= 1
        and not any(isinstance(arg, ast.Starred) for arg in node.args)
    ):
        maker = set if node.func.id == "set" else frozenset
        return maker(literal_value(node.args[0])) if node.args else maker()
    if isinstance(node, (ast.UnaryOp, ast.BinOp)):
        return ast.literal_eval(node)  # signed numbers and complex literals, nothing else
    raise ValueError(f"not a literal: {type(node).__name__}")


def parse_literal(text: str) -> object:
    """Parse one literal value from text (raises ValueError/SyntaxError/RecursionError...)."""
    return literal_value(ast.parse(text.strip(), mode="eval").body)


def parse_arguments(text: str) -> tuple:
    """Parse an argument list ``"1, [2], 'a',"`` as ``f(<text>)``: positional literals only."""
    call = ast.parse("f(" + text + "\n)", mode="eval").body
    if not isinstance(call, ast.Call) or call.keywords:
        raise ValueError("not a positional argument list")
    if any(isinstance(arg, ast.Starred) for arg in call.args):
        raise ValueError("starred argument")
    return tuple(literal_value(arg) for arg in call.args)


# ----------------------------------------------------------------------------- one program
def _type_name(error: BaseException) -> str:
    """Exception type name that a hostile metaclass cannot spoof; identifier chars only."""
    name = type.__dict__["__name__"].__get__(type(error))
    clean = "".join(ch for ch in str(name)[:64] if ch.isalnum() or ch == "_")
    return clean or "Exception"


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _compile(source: str, name: str, prefix: str) -> tuple[object, str | None]:
    """(code, None), or (None, the status that names why ``source`` does not compile)."""
    try:
        return compile(source, name, "exec"), None
    except MemoryError:
        return None, "memory"
    except BaseException as error:  # SyntaxError, RecursionError, ValueError (NUL bytes) ...
        return None, prefix + _type_name(error)


def prepare_job(job: dict) -> None:
    """Compile the program and parse every input (one fresh copy per call) before forking.

    Parsing and compiling are pure (nothing of the program runs); done in the warm zygote, the
    child starts with its code object and argument tuples ready and copies far fewer pages.
    Each call still gets its own freshly parsed arguments (``f`` may mutate them). A check job
    (``job["check"]``) compiles its test too; a test that does not compile is ``bad_test:*``.
    """
    job["code"], job["load_error"] = _compile(job["program"], "<program>", "exception:")
    job["args"] = []
    check = job.get("check")
    if check is not None:
        check["code"], test_error = _compile(check["test"], "<test>", "bad_test:")
        job["load_error"] = job["load_error"] or test_error
        return
    for text in job["inputs"]:
        try:
            job["args"].append([parse_arguments(text) for _ in range(job["repeat"])])
        except Exception:
            job["args"].append(None)  # the child reports non_literal_input for this input


def run_program(job: dict, out_fd: int) -> None:
    """Execute a prepared job in this (already sandboxed) process; one JSON line per input.

    Between two calls of one input a progress line restarts the zygote's per-call clock; the
    result line (itself progress) follows the last call at once, and the last one carries the
    end line in the same write: each write may wake the zygote, and its every wake-up costs
    copy-on-write faults.
    """
    # The real builtins module, not a copy: copying touches (and so copies) many shared pages.
    # A program that patches builtins only fools itself: the host re-checks what comes back.
    namespace = {"__name__": "__azr__", "__builtins__": builtins}
    limit, keep_going, load_error = job["max_output_chars"], job["keep_going"], job["load_error"]
    if load_error is None:
        try:
            exec(job["code"], namespace)
            entry = namespace.get("f")
            load_error = None if callable(entry) else "no_entry"
        except MemoryError:
            load_error = "memory"
        except BaseException as error:  # any exception, SystemExit and KeyboardInterrupt too
            load_error = "exception:" + _type_name(error)
    last = len(job["args"]) - 1
    for index, copies in enumerate(job["args"]):
        status, shown = "ok", None
        try:
            if load_error:
                raise _Failed(load_error)
            if copies is None:
                raise _Failed("non_literal_input")
            seen = []
            for args in copies:
                if seen:
                    _write_all(out_fd, PROGRESS_LINE)  # the next call's clock starts
                seen.append(canonical_repr(entry(*args), limit))
            if any(other != seen[0] for other in seen):
                raise _Failed("nondeterministic")
            shown = seen[0]
        except _Failed as failure:
            status = failure.args[0]
        except OutputTooLarge:
            status = "output_too_large"
        except NonLiteral:
            status = "non_literal_output"
        except MemoryError:
            status = "memory"
        except BaseException as error:
            status = "exception:" + _type_name(error)
        value = "null" if shown is None else _json_string(shown)
        line = f'{{"i": {index}, "s": {_json_string(status)}, "v": {value}}}\n'
        if index == last or (status != "ok" and not keep_going):
            _write_all(out_fd, line.encode() + END_LINE)
            return
        _write_all(out_fd, line.encode())
    _write_all(out_fd, END_LINE)  # no inputs


def run_check(job: dict, out_fd: int) -> None:
    """Execute a prepared check job in this (already sandboxed) process: the program, then the
    test in the same namespace, then ``check(<entry point>)`` when the test defines ``check``
    (HumanEval; a test that asserts at module level, as MBPP+'s do, has none). One result line,
    ``ok`` or the status that failed it, then the end line."""
    namespace = {"__name__": "__azr__", "__builtins__": builtins}
    check = job["check"]
    status = "ok"
    try:
        if job["load_error"]:
            raise _Failed(job["load_error"])
        exec(job["code"], namespace)
        candidate = namespace.get(check["entry_point"])
        if not callable(candidate):
            raise _Failed("no_entry")
        exec(check["code"], namespace)
        tests = namespace.get("check")
        if callable(tests):
            tests(candidate)
    except _Failed as failure:
        status = failure.args[0]
    except MemoryError:
        status = "memory"
    except BaseException as error:  # a failed assertion, any exception, SystemExit too
        status = "exception:" + _type_name(error)
    line = f'{{"i": 0, "s": {_json_string(status)}, "v": null}}\n'
    _write_all(out_fd, line.encode() + END_LINE)


class _Failed(Exception):
    """Internal: carries a per-input status out of the call loop."""
