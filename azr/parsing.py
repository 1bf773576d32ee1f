"""Strict, structural parsing of model responses.

Every generation must have the R1 shape::

    <think> reasoning </think> <answer> fenced blocks </answer>

with exactly one of each tag, in that order, and inside the answer fenced blocks (a line
```` ```label ````, the content, a line ```` ``` ````) of these labels only:

=====================  =========================================================
propose deduction      one ``python`` + one ``input``
propose abduction      one ``python`` + one ``input``
propose induction      one or more ``input`` (kept in order) + one ``message``
solve deduction        one ``output``
solve abduction        one ``input``
solve induction        one ``python``
=====================  =========================================================

Invariants: :func:`parse_response` never raises and never falls back to "the whole answer"
(a missing, duplicated, empty or unexpected block is a :class:`FormatError`); it evaluates
nothing; it runs in time linear in the text. The full rules and why: docs/selfplay.md.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

from azr.tasks import Role, TaskType, ValidationResult

MAX_RESPONSE_CHARS = 100_000
"""Default cap on a response's length; longer text is ``text_too_long`` before any scan."""

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

BLOCK_LABELS = ("python", "input", "output", "message")

WRONG_INPUT_COUNT = "wrong_input_count"
"""Validation reason: an induction proposal did not give exactly N inputs."""
MESSAGE_LEAKS_CODE = "message_leaks_code"
"""Validation reason: an induction message contains the program's code."""

# Fence lines. Each is matched against a single line with fullmatch; the character classes
# cannot overlap each other, so matching is linear in the line length.
_OPEN_FENCE = re.compile(r"[ \t]*```([A-Za-z0-9_+.-]+)[ \t]*")
_CLOSE_FENCE = re.compile(r"[ \t]*```[ \t]*")
_ANY_FENCE_START = re.compile(r"[ \t]*```")
_MAX_LABEL_IN_REASON = 24

# How many of each block a combination requires: (minimum, maximum or None for unbounded).
_BlockRule = dict[str, tuple[int, int | None]]
_RULES: dict[tuple[TaskType, Role], _BlockRule] = {
    (TaskType.DEDUCTION, Role.PROPOSE): {"python": (1, 1), "input": (1, 1)},
    (TaskType.ABDUCTION, Role.PROPOSE): {"python": (1, 1), "input": (1, 1)},
    (TaskType.INDUCTION, Role.PROPOSE): {"input": (1, None), "message": (1, 1)},
    (TaskType.DEDUCTION, Role.SOLVE): {"output": (1, 1)},
    (TaskType.ABDUCTION, Role.SOLVE): {"input": (1, 1)},
    (TaskType.INDUCTION, Role.SOLVE): {"python": (1, 1)},
}


def required_blocks(task: TaskType, role: Role) -> dict[str, tuple[int, int | None]]:
    """The block labels a combination allows, each with its (min, max) count (max None = any)."""
    return dict(_RULES[(TaskType(task), Role(role))])


@dataclass(frozen=True, slots=True)
class FormatError:
    """A response that does not have the required structure.

    ``reason`` is machine-readable and stable (``no_answer_tag``, ``missing_block:python``,
    ``duplicate_block:output``, ``empty_block:input``, ``text_too_long`` ...); ``detail`` is
    for humans.
    """

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """The blocks of a well-formed response, stripped, as source text (nothing evaluated)."""

    task: TaskType
    role: Role
    think: str
    program: str | None = None
    inputs: tuple[str, ...] = ()
    output: str | None = None
    message: str | None = None
    expected_inputs: int | None = field(default=None)
    """Induction proposals: the N the prompt asked for (None when not given to the parser)."""

    @property
    def input(self) -> str:
        """The single input of a deduction/abduction proposal or an abduction answer."""
        if len(self.inputs) != 1:
            raise ValueError(f"{self.task}/{self.role} answer has {len(self.inputs)} inputs")
        return self.inputs[0]

    def rejection(self, program: str | None = None) -> ValidationResult | None:
        """A validation failure decided from the text alone, or None when there is none.

        For induction proposals: ``wrong_input_count`` when ``expected_inputs`` is set and the
        count differs, and ``message_leaks_code`` when the message contains the program
        (pass the program the proposer was shown). The caller skips the executor for such
        proposals and treats them as "well formed but failed validation".
        """
        if self.task != TaskType.INDUCTION or self.role != Role.PROPOSE:
            return None
        if self.expected_inputs is not None and len(self.inputs) != self.expected_inputs:
            return ValidationResult(valid=False, reason=WRONG_INPUT_COUNT)
        if (
            program is not None
            and self.message is not None
            and message_leaks_code(self.message, program)
        ):
            return ValidationResult(valid=False, reason=MESSAGE_LEAKS_CODE)
        return None


ParseResult = ParsedAnswer | FormatError


def message_leaks_code(message: str, program: str, *, min_line_chars: int = 16) -> bool:
    """Whether an induction message reveals the program's code.

    True when the message defines ``f`` or contains any program line of at least
    ``min_line_chars`` non-space characters verbatim (short lines such as ``return x`` are
    too generic to count as leaks).
    """
    squashed_message = "".join(message.split())
    if "deff(" in squashed_message:
        return True
    for line in program.split("\n"):
        squashed_line = "".join(line.split())
        if len(squashed_line) >= min_line_chars and squashed_line in squashed_message:
            return True
    return False


def normalize_block(label: str, content: str) -> str:
    """Strip a block's surrounding whitespace; python keeps its relative indentation."""
    if label != "python":
        return content.strip()
    lines = content.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return textwrap.dedent("\n".join(line.rstrip() for line in lines))


def parse_response(
    text: str,
    task: TaskType,
    role: Role,
    *,
    n_inputs: int | None = None,
    max_chars: int = MAX_RESPONSE_CHARS,
) -> ParseResult:
    """Parse ``text`` for the given combination; never raises for any ``text``.

    ``n_inputs`` (induction proposals) is recorded as ``ParsedAnswer.expected_inputs``; a
    count mismatch is reported by :meth:`ParsedAnswer.rejection`, not here.
    """
    try:
        combo = (TaskType(task), Role(role))
        rules = _RULES[combo]
    except (ValueError, KeyError):
        return FormatError("unknown_task_role", f"{task!r}/{role!r}")
    if not isinstance(text, str):
        return FormatError("not_text", type(text).__name__)
    if len(text) > max_chars:
        return FormatError("text_too_long", f"{len(text)} > {max_chars} characters")
    split = _split_tags(text)
    if isinstance(split, FormatError):
        return split
    think, answer = split
    blocks = _scan_blocks(answer)
    if isinstance(blocks, FormatError):
        return blocks
    by_label = _check_counts(blocks, rules)
    if isinstance(by_label, FormatError):
        return by_label
    return ParsedAnswer(
        task=combo[0],
        role=combo[1],
        think=think.strip(),
        program=_single(by_label, "python"),
        inputs=tuple(by_label.get("input", ())),
        output=_single(by_label, "output"),
        message=_single(by_label, "message"),
        expected_inputs=n_inputs if combo == (TaskType.INDUCTION, Role.PROPOSE) else None,
    )


def _split_tags(text: str) -> tuple[str, str] | FormatError:
    """Check the four tags (each exactly once, in order) and return (think, answer) bodies."""
    for tag, missing in (
        (ANSWER_OPEN, "no_answer_tag"),
        (ANSWER_CLOSE, "unclosed_answer_tag"),
        (THINK_OPEN, "no_think_tag"),
        (THINK_CLOSE, "unclosed_think_tag"),
    ):
        count = text.count(tag)
        if count == 0:
            return FormatError(missing, f"no {tag}")
        if count > 1:
            kind = "answer" if "answer" in tag else "think"
            return FormatError(f"duplicate_{kind}_tag", f"{tag} appears {count} times")
    positions = [text.find(tag) for tag in TAGS]
    if positions != sorted(positions):
        return FormatError("tag_order", "expected <think> </think> <answer> </answer>")
    think_open, think_close, answer_open, answer_close = positions
    if text[:think_open].strip():
        return FormatError("text_before_think")
    if text[think_close + len(THINK_CLOSE) : answer_open].strip():
        return FormatError("text_between_think_and_answer")
    if text[answer_close + len(ANSWER_CLOSE) :].strip():
        return FormatError("text_after_answer")
    think = text[think_open + len(THINK_OPEN) : think_close]
    answer = text[answer_open + len(ANSWER_OPEN) : answer_close]
    return think, answer


def _scan_blocks(answer: str) -> list[tuple[str, str]] | FormatError:
    """Split an answer body into (label, normalised content) blocks, in order."""
    blocks: list[tuple[str, str]] = []
    open_label: str | None = None
    body: list[str] = []
    for raw_line in answer.split("\n"):
        # Fences are recognised on CRLF text too; contents keep their characters as written.
        line = raw_line.removesuffix("\r")
        if open_label is None:
            if not _ANY_FENCE_START.match(line):
                continue  # prose between blocks is allowed and ignored
            opened = _OPEN_FENCE.fullmatch(line)
            if opened is None:
                reason = "unlabelled_block" if _CLOSE_FENCE.fullmatch(line) else "malformed_fence"
                return FormatError(reason, line[:80])
            open_label, body = opened.group(1).lower(), []
        elif _CLOSE_FENCE.fullmatch(line):
            blocks.append((open_label, normalize_block(open_label, "\n".join(body))))
            open_label = None
        elif _OPEN_FENCE.fullmatch(line):
            # A new labelled fence inside a block means the previous one was never closed.
            return FormatError(f"unclosed_block:{_safe_label(open_label)}", line[:80])
        else:
            body.append(raw_line)
    if open_label is not None:
        return FormatError(f"unclosed_block:{_safe_label(open_label)}")
    return blocks


def _check_counts(
    blocks: list[tuple[str, str]], rules: _BlockRule
) -> dict[str, list[str]] | FormatError:
    """Group blocks by label and enforce the combination's allowed labels and counts."""
    by_label: dict[str, list[str]] = {}
    for label, content in blocks:
        if label not in rules:
            return FormatError(f"unexpected_block:{_safe_label(label)}")
        if not content:
            return FormatError(f"empty_block:{label}")
        by_label.setdefault(label, []).append(content)
    for label, (minimum, maximum) in rules.items():
        count = len(by_label.get(label, ()))
        if count < minimum:
            return FormatError(f"missing_block:{label}")
        if maximum is not None and count > maximum:
            return FormatError(f"duplicate_block:{label}", f"{count} {label} blocks")
    return by_label


def _single(by_label: dict[str, list[str]], label: str) -> str | None:
    values = by_label.get(label)
    return values[0] if values else None


def _safe_label(label: str) -> str:
    return label[:_MAX_LABEL_IN_REASON]
