"""Static checks (executor_pool/static_checks.py) and the shared literal helpers (program_runner)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from azr.config import ExecutorConfig
from executor_pool.program_runner import (
    NonLiteral,
    OutputTooLarge,
    canonical_repr,
    parse_arguments,
    parse_literal,
)
from executor_pool.static_checks import Rejected, StaticChecker

CHECKER = StaticChecker(ExecutorConfig())
BODY = "\ndef f(x):\n    return x\n"


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("import os", "banned:os"),
        ("import os.path", "banned:os"),
        ("from os import path", "banned:os"),
        ("from os.path import join", "banned:os"),
        ("import os as y", "banned:os"),
        ("import math, subprocess", "banned:subprocess"),
        ("from concurrent.futures import ThreadPoolExecutor", "banned:concurrent"),
        ("import importlib.util", "banned:importlib"),
        ("from . import sibling", "banned:relative_import"),
    ],
)
def test_banned_imports_are_caught_in_every_spelling(header: str, reason: str) -> None:
    assert CHECKER.program_reason(header + BODY) == reason


def test_allowed_imports_and_a_dotted_ban_entry() -> None:
    assert CHECKER.program_reason("import math\nfrom collections import Counter" + BODY) is None
    # A dotted entry matches its own prefix, unlike the reference code's ban list.
    checker = StaticChecker(ExecutorConfig(banned_modules=["os.path"]))
    assert checker.program_reason("import os.path" + BODY) == "banned:os.path"
    assert checker.program_reason("from os import path" + BODY) == "banned:os.path"
    assert checker.program_reason("import os" + BODY) is None


@pytest.mark.parametrize(
    ("program", "reason"),
    [
        ("def f(x):\n    return eval(x)", "banned:eval"),
        ("def f(x):\n    return __import__('o' + 's')", "banned:__import__"),
        ("def f(x):\n    return ().__class__.__base__.__subclasses__()", "banned:__subclasses__"),
        ("def f(x):\n    return f.__globals__", "banned:__globals__"),
        ("def f(x):\n    return getattr(f, '__glo' + 'bals__')", "banned:getattr"),
        ("def f(x):\n    return __builtins__", "banned:__builtins__"),
        ("def f(x):\n    return (lambda: 0).__code__", "banned:__code__"),
        ("def f(x):\n    g = (i for i in x)\n    return g.gi_frame.f_globals", "banned:f_globals"),
        ("def f(x):\n    return open('/etc/passwd').read()", "banned:open"),
        ("def f(x):\n    exit()", "banned:exit"),
        # A parameter named like a builtin in another function does not unban the builtin.
        ("def g(eval):\n    return eval\ndef f(x):\n    return eval(x)", "banned:eval"),
        ("def f(x)\n    return x", "syntax"),
        ("def f(x):\nreturn x", "syntax"),
        ("def g(x):\n    return x", "no_entry"),
        ("f = lambda x: x", "no_entry"),
        ("x" * 20001 + BODY, "program_too_large"),
    ],
)
def test_program_rejections_carry_a_reason(program: str, reason: str) -> None:
    assert CHECKER.program_reason(program) == reason


def test_ordinary_programs_pass() -> None:
    programs = [
        "def f(input):\n    return input",  # a parameter that shadows a banned builtin
        "def f(nums):\n    print = 0\n    return nums",
        "def f(d):\n    return [(__, d[__]) for __ in d]",  # `__` is not a dunder
        "class A:\n    def __init__(self, v):\n        super().__init__()\n        self.v = v\n"
        "def f(x):\n    return A(x).v",
        "from typing import List\n\ndef f(x: List[int]) -> int:\n    return sum(x)",
        "def f():\n    return 1",  # zero arguments: validation itself accepts it (AZR_SPEC)
    ]
    for program in programs:
        assert CHECKER.program_reason(program) is None, program


@pytest.mark.parametrize(
    ("text", "args"),
    [
        ("1", (1,)),
        ("1, 2,", (1, 2)),  # trailing comma
        ("[1, 2], 'a'", ([1, 2], "a")),
        ("{'a': (1,)}, -2.5, 1+2j", ({"a": (1,)}, -2.5, 1 + 2j)),
        ("b'x', None, True", (b"x", None, True)),
        ("{1, 2}, set(), frozenset({3})", ({1, 2}, set(), frozenset({3}))),
        ("1 # ) comment", (1,)),
        ("", ()),
    ],
)
def test_literal_inputs_parse(text: str, args: tuple) -> None:
    assert CHECKER.parse_input(text) == args


@pytest.mark.parametrize(
    "text",
    [
        "1)\nTrue or (1",  # injection that would make `f(...)` a different program
        "1), (2",
        "__import__('os').system('true')",
        "x",
        "[1] * 3",
        "''.join(['a'])",
        "dict(a=1)",
        "range(3)",
        "lambda x: x",
        "*[1, 2]",
        "a=1",
        "1e999",  # inf is not a plain literal
        "...",
        "{**{}}",
        "[[1]",
    ],
)
def test_non_literal_inputs_are_rejected(text: str) -> None:
    with pytest.raises(Rejected) as caught:
        CHECKER.parse_input(text)
    assert caught.value.reason == "non_literal_input"


def test_input_size_is_capped_before_parsing() -> None:
    with pytest.raises(Rejected) as caught:
        CHECKER.parse_input("[" * 5000)
    assert caught.value.reason == "input_too_large"
    deep = "[" * 1000 + "]" * 1000  # deep nesting within the size cap: a reason, not a crash
    with pytest.raises(Rejected):
        CHECKER.parse_input(deep * 2)


def test_answers_are_literals_only() -> None:
    assert CHECKER.parse_value("[1, 2.0]") == [1, 2]
    for answer in ("A()", "f(1)", "1 if True else 2", "print(1)", "x"):
        with pytest.raises(Rejected) as caught:
            CHECKER.parse_value(answer)
        assert caught.value.reason == "non_literal_answer"


def test_sandbox_outputs_must_be_canonical() -> None:
    assert CHECKER.canonical_output("{1, 2}") == "{1, 2}"
    assert CHECKER.canonical_output("-0j") == "-0j"
    for forged in ("{1, {2}}", "__import__('os')", "float('nan')", 7, "'" + "x" * 4000 + "'"):
        with pytest.raises(Rejected) as caught:
            CHECKER.canonical_output(forged)
        assert caught.value.reason == "sandbox_protocol"


def test_canonical_repr_rules() -> None:
    assert canonical_repr((1,), 100) == "(1,)"
    assert (
        canonical_repr({"b": {3, 1, 2}, "a": frozenset()}, 100)
        == "{'b': {1, 2, 3}, 'a': frozenset()}"
    )
    assert canonical_repr(set(), 100) == "set()"
    assert canonical_repr([1.5, -0.0, 2j, b"\x00"], 100) == "[1.5, -0.0, 2j, b'\\x00']"
    with pytest.raises(OutputTooLarge):
        canonical_repr("x" * 200, 100)  # never truncated
    with pytest.raises(OutputTooLarge):
        canonical_repr(10**5000, 4000)
    cycle: list = []
    cycle.append(cycle)

    class Always(int):
        def __eq__(self, other: object) -> bool:
            return True

    for value in (math.nan, math.inf, complex(1, math.nan), cycle, Always(1), len, object(), ...):
        with pytest.raises(NonLiteral):
            canonical_repr(value, 100)


def test_parse_arguments_keeps_keywords_and_starred_out() -> None:
    for text in ("a=1", "*x", "**{}"):
        with pytest.raises((ValueError, SyntaxError)):
            parse_arguments(text)


LITERALS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.complex_numbers(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3)
        | st.frozensets(st.integers() | st.text(max_size=3), max_size=4)
        | st.sets(st.integers() | st.text(max_size=3), max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(LITERALS)
def test_canonical_repr_round_trips_and_is_order_independent(value: object) -> None:
    text = canonical_repr(value, 1 << 20)
    parsed = parse_literal(text)
    assert parsed == value or (value != value)  # noqa: PLR0124 - -0.0j style corner cases only
    if "j" not in text:  # complex reprs with signed zeros do not round-trip textually
        assert canonical_repr(parsed, 1 << 20) == text
    if isinstance(value, (set, frozenset)):
        rebuilt = type(value)(sorted(value, key=repr, reverse=True))
        assert canonical_repr(rebuilt, 1 << 20) == text
