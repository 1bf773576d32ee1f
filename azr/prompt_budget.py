"""The prompt budget: every prompt a step sends fits ``max_model_len - max_tokens``.

A prompt of ``L`` tokens leaves the engine ``max_model_len - L`` tokens to answer in, so a
prompt longer than ``max_model_len - max_tokens`` could cut its response short, and one
longer than ``max_model_len`` could not be generated at all. `azr.selfplay.StepRunner`
builds prompts to fit by construction (references dropped, over-long tasks rejected as
``prompt_too_long``); this class only measures.

Lengths are counted with the policy's own tokenizer, the way the engine counts them
(``tokenizer.encode(text)``, special tokens included). Tokenizing every prompt of a step is
the expensive part, so a prompt whose UTF-8 size plus :data:`SPECIAL_TOKEN_SLACK` is within
the limit is accepted without tokenizing: every token of a byte-level BPE (Qwen, the tiny
model) covers at least one byte of the text, and the slack covers the few tokens a tokenizer
adds that cover none (BOS, a leading-space marker).
"""

from __future__ import annotations

from typing import Any

from azr.config import SamplingConfig

PROMPT_TOO_LONG = "prompt_too_long"
"""Validation reason of a proposal whose solver prompt would not fit the solve budget."""
SPECIAL_TOKEN_SLACK = 8
"""Tokens a tokenizer may add beyond one per byte of text (BOS/EOS, a prefix-space piece)."""


class PromptBudget:
    """Token limits of the prompts of each kind of generation, and the lengths of prompts."""

    def __init__(self, tokenizer: Any, max_model_len: int) -> None:
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len

    def limit(self, sampling: SamplingConfig) -> int:
        """Longest prompt (tokens) that leaves room for ``sampling.max_tokens`` of response."""
        return self.max_model_len - sampling.max_tokens

    def length(self, prompt: str) -> int:
        """Tokens of ``prompt`` as the engine counts them."""
        return len(self.tokenizer.encode(prompt))

    def fits(self, prompt: str, limit: int) -> bool:
        """Whether ``prompt`` is at most ``limit`` tokens (tokenized only when it may not be)."""
        if len(prompt.encode("utf-8")) + SPECIAL_TOKEN_SLACK <= limit:
            return True
        return self.length(prompt) <= limit
