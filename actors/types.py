"""What a rollout returns: plain dataclasses (cheap to send through the Ray object store)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Completion:
    """One sampled response to one prompt."""

    token_ids: list[int]
    """Generated token ids (the stop token included when the engine emitted one)."""
    text: str
    """Decoded text of `token_ids` (special tokens skipped)."""
    logprobs: list[float]
    """Log-probability of each sampled token under the *processed* distribution (after
    temperature/top-p), the behaviour policy of the learner's importance ratio; same length
    as `token_ids`."""
    finish_reason: str | None
    """``"stop"`` (EOS / end-of-turn / stop string), ``"length"`` (hit max_tokens or
    max_model_len), ``"prompt_too_long"`` (the engine could not take the prompt; no tokens) or
    None."""
    policy_version: int
    """Version of the weights that generated it (0 = the initial checkpoint)."""


@dataclass(frozen=True)
class Generation:
    """All completions of one prompt, in request order."""

    prompt_token_ids: list[int]
    completions: list[Completion] = field(default_factory=list)
