"""Host-side static checks of programs, inputs and literal answers (AZR_SPEC "Validating").

Runs before anything reaches the sandbox and never executes the text it checks: programs are
only parsed (``ast`` and ``symtable``), inputs and answers only go through the literal parser
shared with the sandbox (``program_runner.parse_arguments`` / ``parse_literal``). Every
rejection is a machine-readable reason string: ``program_too_large``, ``syntax``, ``no_entry``,
``banned:<module|builtin|name>``, ``input_too_large``, ``non_literal_input`` ... Imports are
banned by every prefix of a dotted or aliased name (``from os import path`` gives
``banned:os``). The ban is for task quality; the sandbox is the security boundary.
"""

from __future__ import annotations

import ast
import symtable
from collections.abc import Iterable

from azr.config import ExecutorConfig
from executor_pool.program_runner import NonLiteral, OutputTooLarge, canonical_repr
from executor_pool.program_runner import parse_arguments as _parse_arguments
from executor_pool.program_runner import parse_literal as _parse_literal

# Dunder attributes a normal program may touch (``super().__init__``, operator methods ...);
# every other ``x.__name__``-style attribute is an introspection trick and is banned.
ALLOWED_DUNDER_ATTRIBUTES = frozenset(
    [
        "__init__",
        "__name__",
        "__doc__",
        "__len__",
        "__iter__",
        "__next__",
        "__getitem__",
        "__setitem__",
        "__contains__",
        "__add__",
        "__sub__",
        "__mul__",
        "__eq__",
        "__ne__",
        "__lt__",
        "__le__",
        "__gt__",
        "__ge__",
        "__hash__",
        "__str__",
        "__repr__",
        "__call__",
        "__bool__",
        "__neg__",
        "__post_init__",
    ]
)
# Frame, code and generator internals: the ways from a value to someone else's globals.
BANNED_ATTRIBUTES = frozenset(
    [
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "gi_frame",
        "gi_code",
        "cr_frame",
        "cr_code",
        "ag_frame",
        "tb_frame",
        "tb_next",
        "co_code",
        "func_globals",
    ]
)
ALLOWED_DUNDER_NAMES = frozenset({"__name__", "__doc__"})


class Rejected(ValueError):
    """A static check failed; ``reason`` is the machine-readable rejection reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StaticChecker:
    """Checks programs, inputs and answers against the limits and bans of an ExecutorConfig."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.banned_modules = frozenset(config.banned_modules)
        self.banned_builtins = frozenset(config.banned_builtins)

    # ------------------------------------------------------------------ programs
    def program_reason(self, program: str) -> str | None:
        """None when the program may run, else the rejection reason."""
        try:
            self.check_program(program)
        except Rejected as rejection:
            return rejection.reason
        return None

    def check_program(self, program: str) -> ast.Module:
        """Parse the program and apply every static rule; raise Rejected, return the AST."""
        if len(program) > self.config.max_program_chars:
            raise Rejected("program_too_large")
        try:
            tree = ast.parse(program, mode="exec")
            table = symtable.symtable(program, "<program>", "exec")
        except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
            raise Rejected("syntax") from None
        if not any(isinstance(node, ast.FunctionDef) and node.name == "f" for node in tree.body):
            raise Rejected("no_entry")
        for node in ast.walk(tree):
            self._check_node(node)
        self._check_builtin_references(table)
        return tree

    def _check_node(self, node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self._check_module(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise Rejected("banned:relative_import")
            module = node.module or ""
            self._check_module(module)
            for alias in node.names:
                self._check_module(f"{module}.{alias.name}")
        elif isinstance(node, ast.Attribute):
            attr = node.attr
            is_dunder = _is_dunder(attr)
            if attr in BANNED_ATTRIBUTES or (is_dunder and attr not in ALLOWED_DUNDER_ATTRIBUTES):
                raise Rejected(f"banned:{attr}")
        elif isinstance(node, ast.Name):
            name = node.id
            # Reading `__builtins__`, `__loader__` ... is a trick; a class body may still
            # define `__hash__ = None` or `__slots__`.
            loads = isinstance(node.ctx, ast.Load)
            if loads and _is_dunder(name) and name not in ALLOWED_DUNDER_NAMES:
                raise Rejected(f"banned:{name}")

    def _check_module(self, dotted: str) -> None:
        parts = dotted.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if prefix in self.banned_modules:
                raise Rejected(f"banned:{prefix}")

    def _check_builtin_references(self, module_table: symtable.SymbolTable) -> None:
        """Reject references that resolve to a banned builtin.

        A name resolves to the builtin when a scope uses it as a global and the module never
        binds it; a parameter or local of the same name (``def f(input): ...``) is fine.
        """
        module_bound = {
            symbol.get_name()
            for symbol in module_table.get_symbols()
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace()
        }
        for table in _all_tables(module_table):
            for symbol in table.get_symbols():
                name = symbol.get_name()
                if name not in self.banned_builtins or not symbol.is_referenced():
                    continue
                resolves_to_global = table is module_table or symbol.is_global()
                if resolves_to_global and name not in module_bound:
                    raise Rejected(f"banned:{name}")

    # ------------------------------------------------------------------ inputs, answers
    def parse_input(self, text: str) -> tuple:
        """Argument tuple of an input (``"[1, 2], 'a'"``); raise Rejected when not literal."""
        if len(text) > self.config.max_input_chars:
            raise Rejected("input_too_large")
        try:
            args = _parse_arguments(text)
            canonical_repr(args, 1 << 62)  # plain literals only (no inf/nan, no Ellipsis)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, NonLiteral):
            raise Rejected("non_literal_input") from None
        except OutputTooLarge:  # pragma: no cover - the budget above is unbounded
            raise Rejected("input_too_large") from None
        return args

    def input_key(self, text: str) -> str:
        """Canonical form of an input, for the induction distinctness rule."""
        return canonical_repr(self.parse_input(text), 1 << 62)

    def parse_value(self, text: str, reason: str = "non_literal_answer") -> object:
        """A single literal value (a deduction answer or a stored output)."""
        if len(text) > max(self.config.max_input_chars, self.config.max_output_chars):
            raise Rejected(reason)
        try:
            value = _parse_literal(text)
            canonical_repr(value, 1 << 62)
        except (SyntaxError, ValueError, TypeError, RecursionError, MemoryError, NonLiteral):
            raise Rejected(reason) from None
        return value

    def canonical_output(self, text: object) -> str:
        """Re-check an output repr that came back from the sandbox (defence in depth)."""
        if not isinstance(text, str) or len(text) > self.config.max_output_chars:
            raise Rejected("sandbox_protocol")
        try:
            value = _parse_literal(text)
            canonical = canonical_repr(value, self.config.max_output_chars)
            # Equal values, not equal text: complex reprs with signed zeros ("-0j") do not
            # survive a parse/repr round trip textually.
            same = canonical == text or _parse_literal(canonical) == value
        except Exception:
            raise Rejected("sandbox_protocol") from None
        if not same:
            raise Rejected("sandbox_protocol")
        return text


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _all_tables(table: symtable.SymbolTable) -> Iterable[symtable.SymbolTable]:
    yield table
    for child in table.get_children():
        yield from _all_tables(child)
