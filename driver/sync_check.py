"""The weight-sync check: after a sync, each rollout engine's logprobs must equal the learner's.

A sync can go wrong without an error: a tensor vLLM keeps from before, a layer loaded under the
wrong name, a tied head left stale. The engines would then sample from a policy the learner
never trained while training goes on. So after the first sync of a process, and then every
``learner.verify_sync_every`` syncs, the driver scores one fixed probe sequence on both sides
and stops the run when the mean per-token difference exceeds the tolerance (tight when both
sides compute in float32, looser for bfloat16 kernels).

The probe is a realistic transcript (the identity task's solver prompt and a well-formed
answer, in the chat template), so it exercises the tokens a run generates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azr.config import LearnerConfig
from azr.prompts import format_response, render_chat, solve_prompt
from azr.tasks import IDENTITY_TRIPLET, Role, TaskType

PROBE_MAX_TOKENS = 512
"""Longest probe (tokens); shorter when the engine's max_model_len is smaller."""


def probe_token_ids(tokenizer: Any, max_model_len: int) -> list[int]:
    """The fixed probe: the identity deduction task's solver prompt and its right answer."""
    prompt = render_chat(tokenizer, solve_prompt(TaskType.DEDUCTION, IDENTITY_TRIPLET))
    answer = format_response(
        TaskType.DEDUCTION,
        Role.SOLVE,
        think="f returns its argument unchanged, so the output is the input.",
        output=IDENTITY_TRIPLET.output,
    )
    ids = list(tokenizer.encode(prompt + answer))
    # prompt_logprobs generates one token after the probe: it must leave room for it.
    return ids[: min(PROBE_MAX_TOKENS, max_model_len - 1)]


@dataclass(frozen=True)
class SyncCheck:
    """One comparison of the engines' probe logprobs with the learner's."""

    version: int
    mean_abs: float
    """Largest (over engines) mean |rollout − learner| logprob per probe token, in nats."""
    max_abs: float
    """Largest single-token |difference| (over engines and tokens)."""
    worst_actor: int
    tolerance: float
    tokens: int

    @property
    def ok(self) -> bool:
        return self.mean_abs <= self.tolerance

    def metrics(self) -> dict[str, float]:
        """The check's entries of the sync report (``sync/verify_*`` in metrics.jsonl)."""
        return {"verify_mean_abs": self.mean_abs, "verify_max_abs": self.max_abs}

    def message(self) -> str:
        return (
            f"weight sync to version {self.version} is wrong: rollout engine "
            f"{self.worst_actor}'s logprobs differ from the learner's by {self.mean_abs:.3g} "
            f"nats per token on average (largest {self.max_abs:.3g}) over the "
            f"{self.tokens}-token probe, above the tolerance {self.tolerance:g} "
            "(learner.verify_sync_tolerance*): the engine does not serve the learner's weights"
        )


def tolerance_for(config: LearnerConfig, both_float32: bool) -> float:
    """``verify_sync_tolerance`` if set, else the float32 or the bfloat16 default."""
    if config.verify_sync_tolerance is not None:
        return config.verify_sync_tolerance
    if both_float32:
        return config.verify_sync_tolerance_fp32
    return config.verify_sync_tolerance_bf16


class SyncVerifier:
    """Counts syncs and compares the probe's logprobs after the ones that are due."""

    def __init__(
        self,
        probe: list[int],
        every: int,
        tolerance: float,
        learner_logprobs: Callable[[list[list[int]]], list[list[float]]],
        rollout_logprobs: Callable[[list[list[int]]], list[list[list[float]]]],
    ) -> None:
        """``rollout_logprobs``: one list of per-sequence logprobs per engine."""
        if len(probe) < 2:
            raise ValueError("the sync probe needs at least 2 tokens")
        self.probe = probe
        self.every = every
        self.tolerance = tolerance
        self._learner = learner_logprobs
        self._rollout = rollout_logprobs
        self.syncs = 0

    def due(self) -> bool:
        """Whether the sync just counted is checked: the first, then every ``every``-th."""
        return self.every > 0 and (self.syncs - 1) % self.every == 0

    def after_sync(self, version: int) -> SyncCheck | None:
        """Count one sync; compare the probe's logprobs if due (None when not)."""
        self.syncs += 1
        if not self.due():
            return None
        (learner,) = self._learner([self.probe])
        means, largest = [], 0.0
        for (engine,) in self._rollout([self.probe]):
            diffs = [abs(a - b) for a, b in zip(engine, learner, strict=True)]
            means.append(sum(diffs) / len(diffs))
            largest = max(largest, *diffs)
        worst = max(range(len(means)), key=means.__getitem__)
        return SyncCheck(
            version=version,
            mean_abs=means[worst],
            max_abs=largest,
            worst_actor=worst,
            tolerance=self.tolerance,
            tokens=len(self.probe),
        )
