"""The proposer prompts of self-play, each built to fit the prompt budget (`azr.prompt_budget`).

Deduction/abduction prompts show K reference triplets from their buffer: the longest are dropped
(counted) until the prompt fits, the identity triplet standing in when none is left. Induction
prompts show one program drawn uniformly over the programs of the deduction and abduction
buffers together (AZR_SPEC); a program too long for the prompt is drawn again (counted), the
identity program standing in after `INDUCTION_SOURCE_DRAWS` draws. Start-up fails, naming the
numbers, when even the identity task's prompts do not fit.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from azr.config import AZRConfig
from azr.prompt_budget import PromptBudget
from azr.prompts import (
    propose_abduction_prompt,
    propose_deduction_prompt,
    propose_induction_prompt,
    render_chat,
    solve_prompt,
)
from azr.step_types import Task
from azr.tasks import IDENTITY_INDUCTION, IDENTITY_PROGRAM, IDENTITY_TRIPLET, TaskType, Triplet

INDUCTION_SOURCE_DRAWS = 4
"""Draws of an induction source program before a slot falls back to the identity program
(a program too long for the induction proposer prompt is drawn again)."""


class ReferenceSource(Protocol):
    """The buffer side the prompts draw from (`azr.selfplay.TaskStore`)."""

    def reference_sets(self, task: TaskType, k: int, count: int) -> list[list[Task]]: ...

    def size(self, task: TaskType) -> int: ...


class ProposerPrompts:
    """Builds the rendered (chat-template) prompts of one run within its budget; every
    budget event is counted into ``events`` (keys: (task type, event))."""

    def __init__(
        self,
        config: AZRConfig,
        store: ReferenceSource,
        tokenizer: Any,
        budget: PromptBudget,
        rng: random.Random,
        events: Counter[tuple[TaskType, str]],
    ) -> None:
        self.config = config
        self.store = store
        self.tokenizer = tokenizer
        self.budget = budget
        self.rng = rng
        self.events = events

    def chat(self, text: str) -> str:
        return render_chat(self.tokenizer, text)

    def check_identity_prompts_fit(self, task_types: Sequence[TaskType]) -> None:
        """Fail at start-up, naming the numbers, when the identity-task prompts (the fallback
        when nothing else fits, and the seed of every buffer) do not fit their budget."""
        ro = self.config.rollout
        for task in task_types:
            if task == TaskType.INDUCTION:
                propose, item = self.induction_prompt(IDENTITY_PROGRAM), IDENTITY_INDUCTION
            else:
                propose, item = self.reference_prompt(task, [IDENTITY_TRIPLET]), IDENTITY_TRIPLET
            solve = self.chat(solve_prompt(task, item))
            for kind, sampling, prompt in (
                ("propose", ro.propose, propose),
                ("solve", ro.solve, solve),
            ):
                limit = self.budget.limit(sampling)
                if not self.budget.fits(prompt, limit):
                    raise ValueError(
                        f"the identity task's {task} {kind} prompt has "
                        f"{self.budget.length(prompt)} tokens, but rollout.max_model_len "
                        f"({self.budget.max_model_len}) minus rollout.{kind}.max_tokens "
                        f"({sampling.max_tokens}) leaves {limit}"
                    )

    def reference_prompt(self, task: TaskType, references: Sequence[Triplet]) -> str:
        ex = self.config.executor
        build = propose_deduction_prompt if task == TaskType.DEDUCTION else propose_abduction_prompt
        return self.chat(
            build(
                references,
                banned_modules=ex.banned_modules,
                banned_builtins=ex.banned_builtins,
                timeout_s=ex.timeout_s,
            )
        )

    def induction_prompt(self, program: str) -> str:
        sp, ex = self.config.selfplay, self.config.executor
        return self.chat(
            propose_induction_prompt(program, n_inputs=sp.induction_inputs, timeout_s=ex.timeout_s)
        )

    def for_task(self, task: TaskType, count: int) -> list[tuple[str, str | None]]:
        """``count`` (rendered prompt, source program) pairs for one task type, each within
        the proposer's prompt budget."""
        limit = self.budget.limit(self.config.rollout.propose)
        if task == TaskType.INDUCTION:
            return [(self.induction_prompt(p), p) for p in self._induction_sources(count, limit)]
        k = self.config.selfplay.num_references
        return [
            (self._fitted_reference_prompt(task, refs, limit), None)
            for refs in self.store.reference_sets(task, k, count)
        ]

    def _fitted_reference_prompt(
        self, task: TaskType, references: list[Triplet], limit: int
    ) -> str:
        """The proposer prompt with as many of ``references`` as fit (see the module doc)."""
        refs = list(references)
        while True:
            prompt = self.reference_prompt(task, refs or [IDENTITY_TRIPLET])
            if not refs or self.budget.fits(prompt, limit):
                return prompt
            refs.remove(max(refs, key=lambda r: len(r.program) + len(r.input) + len(r.output)))
            self.events[(task, "references_dropped")] += 1

    def _induction_sources(self, count: int, limit: int) -> list[str]:
        """``count`` source programs whose induction prompts fit (see the module doc)."""
        programs: list[str | None] = [None] * count
        for _ in range(INDUCTION_SOURCE_DRAWS):
            open_slots = [i for i, p in enumerate(programs) if p is None]
            if not open_slots:
                break
            for slot, program in zip(open_slots, self._draw_programs(len(open_slots)), strict=True):
                if self.budget.fits(self.induction_prompt(program), limit):
                    programs[slot] = program
                else:
                    self.events[(TaskType.INDUCTION, "sources_too_long")] += 1
        return [p if p is not None else IDENTITY_PROGRAM for p in programs]

    def _draw_programs(self, count: int) -> list[str]:
        """``count`` programs, each uniform over the deduction and abduction buffers' entries:
        a buffer is picked in proportion to its size, then a program uniformly from it."""
        sources = (TaskType.DEDUCTION, TaskType.ABDUCTION)
        sizes = [self.store.size(t) for t in sources]
        if sum(sizes) == 0:
            return [IDENTITY_PROGRAM] * count
        picks = self.rng.choices(sources, weights=sizes, k=count)
        pools = {
            source: iter(self.store.reference_sets(source, 1, picks.count(source)))
            for source in sources
            if source in picks
        }
        return [next(pools[source])[0].program for source in picks]
