"""Strict response parsing: known good/bad answers for all six combinations, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azr.parsing import (
    MAX_RESPONSE_CHARS,
    MESSAGE_LEAKS_CODE,
    TAGS,
    WRONG_INPUT_COUNT,
    FormatError,
    ParsedAnswer,
    message_leaks_code,
    parse_response,
)
from azr.prompts import format_response
from azr.tasks import IDENTITY_PROGRAM, Role, TaskType

PROGRAM = "def f(a, b):\n    total = 0\n    for x in a:\n        total += x * b\n    return total"

# One valid answer body per combination (the blocks inside <answer>).
GOOD_BODIES: dict[tuple[TaskType, Role], str] = {
    (TaskType.DEDUCTION, Role.PROPOSE): f"```python\n{PROGRAM}\n```\n```input\n[1, 2], 3\n```",
    (TaskType.ABDUCTION, Role.PROPOSE): f"```python\n{PROGRAM}\n```\n```input\n[4], 5\n```",
    (TaskType.INDUCTION, Role.PROPOSE): (
        "```input\n1\n```\n```input\n'a'\n```\n```message\nReturns its argument.\n```"
    ),
    (TaskType.DEDUCTION, Role.SOLVE): "```output\n9\n```",
    (TaskType.ABDUCTION, Role.SOLVE): "```input\n[1], 20\n```",
    (TaskType.INDUCTION, Role.SOLVE): "```python\ndef f(x):\n    return x\n```",
}
COMBOS = list(GOOD_BODIES)


def wrap(body: str, think: str = "step by step") -> str:
    return f"<think>{think}</think>\n<answer>\n{body}\n</answer>"


def reason(text: str, task: TaskType, role: Role) -> str:
    result = parse_response(text, task, role)
    assert isinstance(result, FormatError), f"expected a FormatError, got {result}"
    return result.reason


@pytest.mark.parametrize(("task", "role"), COMBOS)
def test_good_answer_parses_for_every_combination(task: TaskType, role: Role) -> None:
    result = parse_response(wrap(GOOD_BODIES[(task, role)]), task, role)
    assert isinstance(result, ParsedAnswer)
    assert (result.task, result.role, result.think) == (task, role, "step by step")


def test_parsed_fields_per_combination() -> None:
    ded = parse_response(
        wrap(GOOD_BODIES[(TaskType.DEDUCTION, Role.PROPOSE)]), "deduction", "propose"
    )
    assert isinstance(ded, ParsedAnswer)
    assert (ded.program, ded.inputs, ded.input, ded.output) == (
        PROGRAM,
        ("[1, 2], 3",),
        "[1, 2], 3",
        None,
    )
    ind = parse_response(
        wrap(GOOD_BODIES[(TaskType.INDUCTION, Role.PROPOSE)]), TaskType.INDUCTION, Role.PROPOSE
    )
    assert isinstance(ind, ParsedAnswer)
    assert (ind.inputs, ind.message, ind.program) == (("1", "'a'"), "Returns its argument.", None)
    out = parse_response(
        wrap(GOOD_BODIES[(TaskType.DEDUCTION, Role.SOLVE)]), TaskType.DEDUCTION, Role.SOLVE
    )
    assert isinstance(out, ParsedAnswer) and out.output == "9"
    abd = parse_response(
        wrap(GOOD_BODIES[(TaskType.ABDUCTION, Role.SOLVE)]), TaskType.ABDUCTION, Role.SOLVE
    )
    assert isinstance(abd, ParsedAnswer) and abd.input == "[1], 20"
    syn = parse_response(
        wrap(GOOD_BODIES[(TaskType.INDUCTION, Role.SOLVE)]), TaskType.INDUCTION, Role.SOLVE
    )
    assert isinstance(syn, ParsedAnswer) and syn.program == "def f(x):\n    return x"


def test_blocks_are_stripped_and_python_keeps_relative_indentation() -> None:
    body = "```python\n\n    def f(x):\n        return x   \n\n```\n```input\n   'a b'  \n```"
    result = parse_response(wrap(body), TaskType.DEDUCTION, Role.PROPOSE)
    assert isinstance(result, ParsedAnswer)
    assert result.program == "def f(x):\n    return x"
    assert result.input == "'a b'"


def test_prose_between_blocks_is_ignored_and_crlf_fences_work() -> None:
    body = "The program:\r\n```python\r\ndef f(x):\r\n    return x\r\n```\r\nand its input\r\n```input\r\n1\r\n```"
    result = parse_response(wrap(body), TaskType.DEDUCTION, Role.PROPOSE)
    assert isinstance(result, ParsedAnswer)
    assert result.input == "1"
    assert result.program == "def f(x):\n    return x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("```output\n9\n```", "no_answer_tag"),
        ("<think>x</think>", "no_answer_tag"),
        ("<think>x</think><answer>```output\n9\n```", "unclosed_answer_tag"),
        ("<answer>\n```output\n9\n```\n</answer>", "no_think_tag"),
        ("<think>x <answer>\n```output\n9\n```\n</answer>", "unclosed_think_tag"),
        (wrap("```output\n9\n```") + "<answer>1</answer>", "duplicate_answer_tag"),
        (
            "<think>a<think>b</think></think><answer>\n```output\n9\n```\n</answer>",
            "duplicate_think_tag",
        ),
        (
            "<think>x</think><answer>\n<think>y</think>\n```output\n9\n```\n</answer>",
            "duplicate_think_tag",
        ),
        ("<answer>\n```output\n9\n```\n</answer><think>x</think>", "tag_order"),
        ("<think>x<answer>\n```output\n9\n```\n</think></answer>", "tag_order"),
        ("Sure! " + wrap("```output\n9\n```"), "text_before_think"),
        (
            "<think>x</think> so: <answer>\n```output\n9\n```\n</answer>",
            "text_between_think_and_answer",
        ),
        (wrap("```output\n9\n```") + " hope this helps", "text_after_answer"),
        (wrap("The output is 9."), "missing_block:output"),
        (wrap(""), "missing_block:output"),
        (wrap("```output\n9\n```\n```output\n10\n```"), "duplicate_block:output"),
        (wrap("```output\n   \n```"), "empty_block:output"),
        (wrap("```output\n9\n"), "unclosed_block:output"),
        (wrap("```output\n9\n```python\nx\n```"), "unclosed_block:output"),
        (wrap("```\n9\n```"), "unlabelled_block"),
        (wrap("```output 9```"), "malformed_fence"),
        (wrap("```input\n9\n```"), "unexpected_block:input"),
        (wrap("```output\n9\n```\n```python\ndef f(x): return x\n```"), "unexpected_block:python"),
    ],
)
def test_bad_deduction_answers(text: str, expected: str) -> None:
    assert reason(text, TaskType.DEDUCTION, Role.SOLVE) == expected


@pytest.mark.parametrize(
    ("task", "role", "body", "expected"),
    [
        ("deduction", "propose", "```input\n1\n```", "missing_block:python"),
        ("deduction", "propose", f"```python\n{PROGRAM}\n```", "missing_block:input"),
        (
            "abduction",
            "propose",
            f"```python\n{PROGRAM}\n```\n```python\n{PROGRAM}\n```\n```input\n1\n```",
            "duplicate_block:python",
        ),
        (
            "abduction",
            "propose",
            f"```python\n{PROGRAM}\n```\n```input\n1\n```\n```input\n2\n```",
            "duplicate_block:input",
        ),
        (
            "deduction",
            "propose",
            f"```python\n{PROGRAM}\n```\n```input\n1\n```\n```output\n3\n```",
            "unexpected_block:output",
        ),
        ("induction", "propose", "```message\nhint\n```", "missing_block:input"),
        ("induction", "propose", "```input\n1\n```", "missing_block:message"),
        (
            "induction",
            "propose",
            "```input\n1\n```\n```message\na\n```\n```message\nb\n```",
            "duplicate_block:message",
        ),
        (
            "induction",
            "propose",
            "```input\n1\n```\n```input\n\n```\n```message\nm\n```",
            "empty_block:input",
        ),
        (
            "induction",
            "propose",
            "```input\n1\n```\n```message\nm\n```\n```python\nx\n```",
            "unexpected_block:python",
        ),
        ("abduction", "solve", "```input\n1\n```\n```input\n2\n```", "duplicate_block:input"),
        ("abduction", "solve", "```output\n1\n```", "unexpected_block:output"),
        ("abduction", "solve", "the input is 1", "missing_block:input"),
        ("induction", "solve", "def f(x):\n    return x", "missing_block:python"),
        (
            "induction",
            "solve",
            "```python\ndef f(x):\n    return x\n```\n```python\ndef f(x): return 1\n```",
            "duplicate_block:python",
        ),
    ],
)
def test_bad_answers_other_combinations(task: str, role: str, body: str, expected: str) -> None:
    assert reason(wrap(body), TaskType(task), Role(role)) == expected


def test_induction_input_count_is_a_validation_matter_not_a_format_error() -> None:
    text = wrap(GOOD_BODIES[(TaskType.INDUCTION, Role.PROPOSE)])  # 2 inputs
    wrong = parse_response(text, TaskType.INDUCTION, Role.PROPOSE, n_inputs=10)
    assert isinstance(wrong, ParsedAnswer) and wrong.expected_inputs == 10
    rejection = wrong.rejection(IDENTITY_PROGRAM)
    assert rejection is not None and not rejection.valid and rejection.reason == WRONG_INPUT_COUNT
    right = parse_response(text, TaskType.INDUCTION, Role.PROPOSE, n_inputs=2)
    assert isinstance(right, ParsedAnswer) and right.rejection(IDENTITY_PROGRAM) is None
    # Other combinations never carry an input-count expectation.
    solve = parse_response(wrap("```input\n1\n```"), TaskType.ABDUCTION, Role.SOLVE, n_inputs=10)
    assert (
        isinstance(solve, ParsedAnswer)
        and solve.expected_inputs is None
        and solve.rejection() is None
    )


def test_message_that_leaks_the_program_is_rejected() -> None:
    body = f"```input\n[1], 2\n```\n```message\nIt runs:\n{PROGRAM}\n```"
    parsed = parse_response(wrap(body), TaskType.INDUCTION, Role.PROPOSE, n_inputs=1)
    assert isinstance(parsed, ParsedAnswer)
    rejection = parsed.rejection(PROGRAM)
    assert rejection is not None and rejection.reason == MESSAGE_LEAKS_CODE
    assert message_leaks_code("use def  f(x) and return x", "def g(y):\n    return y")
    doubling = "def f(values):\n    result = [v * 2 for v in values]\n    return result"
    assert message_leaks_code("hint: result = [v*2 for v in values]", doubling)
    assert not message_leaks_code("hint: it does return result", doubling)  # too short to leak
    assert not message_leaks_code("Multiplies each element by b and sums.", PROGRAM)


def test_unknown_combination_and_non_text_do_not_raise() -> None:
    assert reason(wrap("```output\n1\n```"), "nonsense", Role.SOLVE) == "unknown_task_role"  # type: ignore[arg-type]
    not_text = parse_response(None, TaskType.DEDUCTION, Role.SOLVE)  # type: ignore[arg-type]
    assert isinstance(not_text, FormatError) and not_text.reason == "not_text"


def test_text_too_long_is_rejected_before_scanning() -> None:
    text = wrap("```output\n" + "9" * MAX_RESPONSE_CHARS + "\n```")
    assert reason(text, TaskType.DEDUCTION, Role.SOLVE) == "text_too_long"
    assert isinstance(
        parse_response(text, TaskType.DEDUCTION, Role.SOLVE, max_chars=len(text)), ParsedAnswer
    )


ADVERSARIAL_FILLERS = {
    "backticks": "`" * 400_000,
    "spaces": " " * 400_000 + "x",
    "unclosed fence": "```" + "a" * 400_000,
    "indented fences": ("\t```" + " " * 50 + "\n") * 7_000,
    "think tags": "<think" * 60_000,
    "output fences": "```output\n" * 40_000,
}


@pytest.mark.timeout(30)  # a hang guard, not a timing assertion: linear scans take ms here
@pytest.mark.parametrize(
    ("filler", "bare", "in_answer", "in_output_block"),
    [
        # (filler, then the verdict on: the filler alone, inside <answer>, inside an output block
        # inside <answer>); a str is a FormatError reason, a tuple ("output", x) a parsed answer.
        ("backticks", "no_answer_tag", "malformed_fence", ("output", "`" * 400_000)),
        ("spaces", "no_answer_tag", "missing_block:output", ("output", "x")),
        (
            "unclosed fence",
            "no_answer_tag",
            "unclosed_block:" + "a" * 24,
            "unclosed_block:output",
        ),
        ("indented fences", "no_answer_tag", "unlabelled_block", "unlabelled_block"),
        ("think tags", "no_answer_tag", "missing_block:output", ("output", "<think" * 60_000)),
        ("output fences", "no_answer_tag", "unclosed_block:output", "unclosed_block:output"),
    ],
)
def test_adversarial_inputs_do_not_backtrack(
    filler: str, bare: object, in_answer: object, in_output_block: object
) -> None:
    # Patterns that make backtracking regexes explode (long runs of fence characters,
    # unclosed fences, whitespace runs); with a raised size cap so the scan really runs.
    text = ADVERSARIAL_FILLERS[filler]
    for wrapped, want in (
        (text, bare),
        (wrap(text), in_answer),
        (wrap(f"```output\n{text}\n```"), in_output_block),
    ):
        result = parse_response(wrapped, TaskType.DEDUCTION, Role.SOLVE, max_chars=1_000_000)
        if isinstance(want, tuple):
            assert isinstance(result, ParsedAnswer), result
            assert result.output == want[1]
        else:
            assert isinstance(result, FormatError) and result.reason == want, result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=400), task=st.sampled_from(TaskType), role=st.sampled_from(Role))
def test_any_string_gives_parsed_answer_or_format_error(
    text: str, task: TaskType, role: Role
) -> None:
    result = parse_response(text, task, role)
    assert isinstance(result, ParsedAnswer | FormatError)


# Near-valid responses: assembled from the pieces a response is made of, so the fuzzer
# spends its time on tag/fence structure rather than on random unicode.
_PIECES = st.sampled_from(
    [
        "<think>", "</think>", "<answer>", "</answer>", "```python\n", "```input\n",
        "```output\n", "```message\n", "```\n", "\n```", "```", "\n", " ", "\r\n",
        "def f(x):\n    return x\n", "1, 2", "'a'", "[1, {2: 3}]", "hint", "```py\n",
    ]
)  # fmt: skip
_NEAR_VALID = st.lists(st.one_of(_PIECES, st.text(max_size=5)), max_size=30).map("".join)


_CONTENT = st.text(alphabet="ab1 ,'[]\n\t`<>/", max_size=12)
_EDIT = st.tuples(
    st.sampled_from(["insert", "delete", "duplicate"]),
    st.integers(0, 10_000),
    st.integers(0, 40),
    _PIECES,
)


def _skeleton(combo: tuple[TaskType, Role], contents: list[str]) -> str:
    """A response with every block the combination needs, filled with arbitrary text."""
    labels = {
        "propose": ["python", "input"]
        if combo[0] != TaskType.INDUCTION
        else ["input", "input", "message"],
        "solve": {"deduction": ["output"], "abduction": ["input"], "induction": ["python"]}[
            combo[0]
        ],
    }[combo[1]]
    blocks = "\n".join(
        f"```{label}\n{contents[i % len(contents)]}\n```" for i, label in enumerate(labels)
    )
    return wrap(blocks, think=contents[0])


def _apply(text: str, edit: tuple[str, int, int, str]) -> str:
    kind, at, length, piece = edit
    at %= len(text) + 1
    if kind == "insert":
        return text[:at] + piece + text[at:]
    if kind == "delete":
        return text[:at] + text[at + length :]
    return text[:at] + text[at : at + length] * 2 + text[at + length :]


@settings(max_examples=500, deadline=None)
@given(
    combo=st.sampled_from(COMBOS),
    contents=st.lists(_CONTENT, min_size=1, max_size=3),
    edits=st.lists(_EDIT, max_size=3),
    n_inputs=st.none() | st.integers(0, 12),
)
def test_near_valid_responses_never_raise(
    combo: tuple[TaskType, Role], contents: list[str], edits: list, n_inputs: int | None
) -> None:
    text = _skeleton(combo, contents)
    for edit in edits:
        text = _apply(text, edit)
    result = parse_response(text, *combo, n_inputs=n_inputs)
    assert isinstance(result, ParsedAnswer | FormatError)
    if isinstance(result, ParsedAnswer):
        # Whatever parsed is structurally sound: required blocks present, non-empty,
        # stripped, and tag-free (nothing falls back to raw text).
        assert (result.task, result.role) == combo
        texts = [*result.inputs, result.output, result.message]
        present = [v for v in texts if v is not None]
        assert all(v and v == v.strip() for v in present)
        if result.program is not None:
            assert result.program.strip() and result.program == result.program.rstrip()
            present.append(result.program)
        assert present and not any(tag in v for v in present for tag in TAGS)
        assert result.rejection() is None or result.rejection().reason == WRONG_INPUT_COUNT
    elif not edits and all("`" not in c and "<" not in c for c in contents):
        # Untouched skeletons only fail for an empty block.
        assert result.reason.startswith("empty_block:"), result


@settings(max_examples=200, deadline=None)
@given(text=_NEAR_VALID, combo=st.sampled_from(COMBOS))
def test_strings_of_response_pieces_never_raise(text: str, combo: tuple[TaskType, Role]) -> None:
    assert isinstance(parse_response(text, *combo), ParsedAnswer | FormatError)


@settings(max_examples=200, deadline=None)
@given(
    combo=st.sampled_from(COMBOS),
    mutation=st.sampled_from(["drop_think", "drop_answer_close", "dup_answer", "prefix", "suffix"]),
)
def test_mutated_valid_responses_are_format_errors(
    combo: tuple[TaskType, Role], mutation: str
) -> None:
    text = wrap(GOOD_BODIES[combo])
    mutated = {
        "drop_think": text.replace("<think>", "", 1),
        "drop_answer_close": text.replace("</answer>", "", 1),
        "dup_answer": text + "<answer></answer>",
        "prefix": "Answer: " + text,
        "suffix": text + "\nDone.",
    }[mutation]
    assert isinstance(parse_response(mutated, *combo), FormatError)


_BLOCK_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="`<>"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip())


@settings(max_examples=200, deadline=None)
@given(
    think=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=60),
    value=_BLOCK_TEXT,
    message=_BLOCK_TEXT,
)
def test_format_response_round_trips_through_parse(think: str, value: str, message: str) -> None:
    program = "def f(x):\n    " + "return " + repr(value)
    cases = [
        (TaskType.DEDUCTION, Role.PROPOSE, {"program": program, "inputs": [value]}),
        (TaskType.ABDUCTION, Role.PROPOSE, {"program": program, "inputs": [value]}),
        (TaskType.INDUCTION, Role.PROPOSE, {"inputs": [value, value + "0"], "message": message}),
        (TaskType.DEDUCTION, Role.SOLVE, {"output": value}),
        (TaskType.ABDUCTION, Role.SOLVE, {"inputs": [value]}),
        (TaskType.INDUCTION, Role.SOLVE, {"program": program}),
    ]
    for task, role, items in cases:
        parsed = parse_response(format_response(task, role, think=think, **items), task, role)
        assert isinstance(parsed, ParsedAnswer), parsed
        assert parsed.think == think.strip()
        assert parsed.program == items.get("program")
        assert parsed.inputs == tuple(v.strip() for v in items.get("inputs", ()))
        assert parsed.output == (value.strip() if "output" in items else None)
        assert parsed.message == (message.strip() if "message" in items else None)


def test_format_response_rejects_missing_or_extra_items() -> None:
    with pytest.raises(ValueError, match="python"):
        format_response(TaskType.DEDUCTION, Role.PROPOSE, think="t", inputs=["1"])
    with pytest.raises(ValueError, match="output"):
        format_response(
            TaskType.DEDUCTION,
            Role.PROPOSE,
            think="t",
            program="def f(x): return x",
            inputs=["1"],
            output="1",
        )
    with pytest.raises(ValueError, match="input"):
        format_response(TaskType.ABDUCTION, Role.SOLVE, think="t", inputs=["1", "2"])
    with pytest.raises(ValueError, match="empty"):
        format_response(TaskType.DEDUCTION, Role.SOLVE, think="t", output="  ")
    with pytest.raises(ValueError, match="tags"):
        format_response(TaskType.DEDUCTION, Role.SOLVE, think="a </think> b", output="1")
    with pytest.raises(ValueError, match="fence"):
        format_response(
            TaskType.INDUCTION, Role.SOLVE, think="t", program="x = 1\n```\ndef f(x): return x"
        )
