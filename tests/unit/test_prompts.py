"""Prompt builders: every required element present; chat template and its fallback."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from azr.config import DEFAULT_BANNED_BUILTINS, DEFAULT_BANNED_MODULES
from azr.parsing import ParsedAnswer, parse_response
from azr.prompts import (
    FALLBACK_CHAT_FORMAT,
    format_response,
    propose_abduction_prompt,
    propose_deduction_prompt,
    propose_induction_prompt,
    render_chat,
    solve_abduction_prompt,
    solve_deduction_prompt,
    solve_induction_prompt,
    solve_prompt,
)
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_TRIPLET, Role, TaskType, Triplet

REFERENCES = [
    IDENTITY_TRIPLET,
    Triplet(program="def f(s):\n    return s[::-1]", input="'abc'", output="'cba'"),
    Triplet(program="def f(n, k):\n    return n % k", input="17, 5", output="2"),
]
SPEC_BANNED = ["random", "time", "os", "sys", "subprocess", "socket", "pickle", "importlib"]


def _propose(task: TaskType) -> str:
    builder = propose_deduction_prompt if task == TaskType.DEDUCTION else propose_abduction_prompt
    return builder(
        REFERENCES,
        banned_modules=DEFAULT_BANNED_MODULES,
        banned_builtins=DEFAULT_BANNED_BUILTINS,
        timeout_s=10.0,
    )


def _answer_section(prompt: str) -> str:
    return prompt[prompt.index("## Answer format") :]


@pytest.mark.parametrize("task", [TaskType.DEDUCTION, TaskType.ABDUCTION])
def test_reference_proposer_prompt_has_every_required_element(task: TaskType) -> None:
    prompt = _propose(task)
    for ref in REFERENCES:  # every reference rendered as program + input + output blocks
        for label, text in (("python", ref.program), ("input", ref.input), ("output", ref.output)):
            assert f"```{label}\n{text}\n```" in prompt
    assert prompt.count("### Reference") == len(REFERENCES)
    banned_line = next(line for line in prompt.splitlines() if "modules:" in line)
    for module in DEFAULT_BANNED_MODULES:  # the ban names every configured module
        assert f" {module}," in banned_line or banned_line.endswith(f" {module}.")
    builtin_line = next(line for line in prompt.splitlines() if "builtins:" in line)
    assert all(name in builtin_line for name in DEFAULT_BANNED_BUILTINS)
    for rule in (
        "named `f`",
        "at least one parameter",
        "returns a value",
        "deterministic",
        "randomness",
        "clock",
        "I/O",
        "printing",
        "external state",
        "Helper functions and classes",
        "10 seconds",
        "multi-step reasoning",
        "different from every reference",
        "comma-separated Python literals",
    ):
        assert rule in prompt, rule
    section = _answer_section(prompt)
    for element in ("<think>", "</think>", "<answer>", "</answer>", "```python\n", "```input\n"):
        assert element in section
    assert "```output" not in section and "```message" not in section


def test_deduction_and_abduction_proposers_state_their_solver_goal() -> None:
    assert "predict the output" in _propose(TaskType.DEDUCTION)
    assert "find an input" in _propose(TaskType.ABDUCTION)


def test_banned_modules_come_from_the_argument() -> None:
    prompt = propose_deduction_prompt(REFERENCES, banned_modules=["zlib", "os"], timeout_s=2.5)
    assert "these modules: os, zlib." in prompt
    assert "2.5 seconds" in prompt
    with pytest.raises(ValueError, match="reference"):
        propose_deduction_prompt([], banned_modules=SPEC_BANNED, timeout_s=1.0)


def test_induction_proposer_prompt_asks_for_n_inputs_and_a_code_free_message() -> None:
    program = "def f(xs):\n    return sorted(xs)[-1]"
    prompt = propose_induction_prompt(program, n_inputs=10, timeout_s=10.0)
    assert f"```python\n{program}\n```" in prompt
    assert "exactly 10 inputs" in prompt and "different from each other" in prompt
    assert "half (5)" in prompt
    assert "comma-separated Python literals" in prompt
    assert "must not contain the code" in prompt
    section = _answer_section(prompt)
    assert "```input\n" in section and "```message\n" in section
    assert "```python" not in section
    with pytest.raises(ValueError):
        propose_induction_prompt(program, n_inputs=0, timeout_s=1.0)


def test_solver_prompts_show_what_the_solver_sees_and_hide_the_rest() -> None:
    ded = solve_deduction_prompt("def f(x):\n    return x * 2", "21")
    assert "```python\ndef f(x):\n    return x * 2\n```" in ded and "```input\n21\n```" in ded
    assert "```output\n" in _answer_section(ded)
    abd = solve_abduction_prompt("def f(x):\n    return x * 2", "42")
    assert "```output\n42\n```" in abd and "```input\n" in _answer_section(abd)
    assert "```input\n21" not in abd
    ind = solve_prompt(TaskType.INDUCTION, IDENTITY_INDUCTION)
    assert IDENTITY_INDUCTION.message in ind
    for inp, out in IDENTITY_INDUCTION.visible:
        assert f"```input\n{inp}\n```\n```output\n{out}\n```" in ind
    for inp, _ in IDENTITY_INDUCTION.hidden:  # hidden tests and the program never leak
        assert f"```input\n{inp}\n```" not in ind
    assert "return x" not in ind
    assert "```python\n" in _answer_section(ind)
    assert solve_prompt(TaskType.DEDUCTION, IDENTITY_TRIPLET) == solve_deduction_prompt(
        IDENTITY_TRIPLET.program, IDENTITY_TRIPLET.input
    )
    assert solve_prompt("abduction", IDENTITY_TRIPLET) == solve_abduction_prompt(  # type: ignore[arg-type]
        IDENTITY_TRIPLET.program, IDENTITY_TRIPLET.output
    )
    with pytest.raises(TypeError):
        solve_prompt(TaskType.INDUCTION, IDENTITY_TRIPLET)
    with pytest.raises(ValueError):
        solve_induction_prompt([], "hint")


def _tiny_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_render_chat_applies_the_tokenizers_chat_template() -> None:
    user_text = solve_deduction_prompt("def f(x):\n    return x", "1")
    rendered = render_chat(_tiny_tokenizer(CHATML), user_text)
    assert rendered == f"<|im_start|>user\n{user_text}<|im_end|>\n<|im_start|>assistant\n"


def test_render_chat_falls_back_without_a_chat_template() -> None:
    tokenizer = _tiny_tokenizer(None)
    assert not tokenizer.chat_template
    rendered = render_chat(tokenizer, "Question?")
    assert rendered == FALLBACK_CHAT_FORMAT.format(user_text="Question?")
    assert rendered.endswith("User: Question?\nAssistant: ")
    assert "<think>" in rendered and "<answer>" in rendered


@pytest.mark.parametrize(
    ("task", "role", "items"),
    [
        ("deduction", "propose", {"program": "def f(x):\n    return x + 1", "inputs": ["1"]}),
        ("abduction", "propose", {"program": "def f(x):\n    return x + 1", "inputs": ["1"]}),
        ("induction", "propose", {"inputs": ["1", "2", "3", "4"], "message": "adds one"}),
        ("deduction", "solve", {"output": "2"}),
        ("abduction", "solve", {"inputs": ["1"]}),
        ("induction", "solve", {"program": "def f(x):\n    return x + 1"}),
    ],
)
def test_format_response_renders_the_format_the_prompt_asks_for(
    task: str, role: str, items: dict
) -> None:
    text = format_response(TaskType(task), Role(role), think="Let me trace it.", **items)
    assert text.startswith("<think>") and text.endswith("</answer>")
    parsed = parse_response(text, TaskType(task), Role(role), n_inputs=4)
    assert isinstance(parsed, ParsedAnswer)
    assert parsed.rejection() is None
