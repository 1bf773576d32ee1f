"""One AZR self-play step, in two generation rounds.

Round 1 generates every proposal of every task type at once, then validates them; round 2
generates the n Monte-Carlo samples of every valid proposal together with the buffer-filled
solves, then scores every answer. Invariants: nothing is generated twice (a new task's solve is
one of its own Monte-Carlo samples, chosen uniformly), and nothing here knows Ray: the services
are passed in (:class:`Services`). Why two rounds and not the reference's nine:
docs/selfplay.md.

With ``rollout.propose.n > 1`` each completion of a proposer prompt is its own proposal. Every
prompt fits ``max_model_len - max_tokens`` of its generation by construction
(`azr.prompt_budget`): references are dropped, over-long induction sources drawn again, a
proposal whose solver prompt cannot fit rejected as ``prompt_too_long``, an over-long buffer
task left out; each counted in the step's ``<task>/budget/<event>`` metrics.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from azr.config import AZRConfig, SamplingConfig
from azr.parsing import FormatError, ParsedAnswer, parse_response
from azr.prompt_budget import PROMPT_TOO_LONG, PromptBudget
from azr.prompts import (
    solve_prompt,
)
from azr.proposer_prompts import ProposerPrompts
from azr.rewards import propose_reward, solve_reward
from azr.step_metrics import prompt_budget_metrics, step_metrics, trr_metrics
from azr.step_types import Proposal, Solve, StepOutput, Task, Trajectory
from azr.tasks import (
    Executor,
    InductionTask,
    Role,
    ScoreRequest,
    TaskType,
    TrainSample,
    Triplet,
    ValidateRequest,
    ValidationResult,
)
from azr.trr import trr_advantages


class Generator(Protocol):
    """The rollout side: one completion list per prompt, in prompt order."""

    def generate(self, prompts: list[str], sampling: SamplingConfig) -> list[Any]: ...


class TaskStore(Protocol):
    """The buffer side (a thin client over the BufferActor)."""

    def reference_sets(self, task: TaskType, k: int, count: int) -> list[list[Task]]: ...

    def tasks(self, task: TaskType, n: int) -> list[Task]: ...

    def add(self, task: TaskType, tasks: list[Task]) -> int: ...

    def size(self, task: TaskType) -> int: ...


@dataclass
class Services:
    generator: Generator
    executor: Executor
    store: TaskStore
    tokenizer: Any
    max_model_len: int | None = None
    """The rollout engines' prompt + response limit (the config's, capped to the model's);
    None = ``rollout.max_model_len``."""


def _trajectories(
    task: TaskType, role: Role, generations: Sequence[Any], sampling: SamplingConfig
) -> list[Trajectory]:
    out = []
    for generation in generations:
        for completion in generation.completions:
            out.append(
                Trajectory(
                    task=task,
                    role=role,
                    prompt_token_ids=list(generation.prompt_token_ids),
                    token_ids=list(completion.token_ids),
                    logprobs=list(completion.logprobs),
                    policy_version=completion.policy_version,
                    text=completion.text,
                    temperature=sampling.temperature,
                    top_p=sampling.top_p,
                )
            )
    return out


def with_seed(sampling: SamplingConfig, seed: int, n: int | None = None) -> SamplingConfig:
    """A copy with an explicit seed (and n): every request of a run is reproducible."""
    update: dict[str, Any] = {"seed": seed if sampling.seed is None else sampling.seed + seed}
    if n is not None:
        update["n"] = n
    return sampling.model_copy(update=update)


class StepRunner:
    """Runs self-play steps with the services it is given; all randomness from one RNG."""

    def __init__(self, config: AZRConfig, services: Services, rng: random.Random):
        self.config = config
        self.services = services
        self.rng = rng
        self.task_types = [TaskType(t) for t in config.selfplay.task_types]
        self._timings: dict[str, float] = {}
        self.budget = PromptBudget(
            services.tokenizer, services.max_model_len or config.rollout.max_model_len
        )
        self._budget_events: Counter[tuple[TaskType, str]] = Counter()
        self.prompts = ProposerPrompts(
            config, services.store, services.tokenizer, self.budget, rng, self._budget_events
        )
        self.prompts.check_identity_prompts_fit(self.task_types)

    def _request_seed(self, step: int, round_: int) -> int:
        """A distinct, reproducible seed per (run seed, step, round); prompt i adds i."""
        return (self.config.seed * 100_003 + step) * 1_000_003 + round_ * 100_000

    # -- prompts -------------------------------------------------------------------------
    def _chat(self, text: str) -> str:
        return self.prompts.chat(text)

    def proposer_prompts(self, task: TaskType, count: int) -> list[tuple[str, str | None]]:
        """``count`` (rendered prompt, source program) pairs for one task type, each within
        the proposer's prompt budget (`azr.proposer_prompts`)."""
        return self.prompts.for_task(task, count)

    # -- round 1 -------------------------------------------------------------------------
    def propose(self, step: int, tasks: Sequence[TaskType] | None = None) -> list[Proposal]:
        """Generate and validate ``batch_size`` proposals per task type, in one round."""
        tasks = list(tasks or self.task_types)
        batch, sampling = self.config.selfplay.batch_size, self.config.rollout.propose
        # n completions per prompt, each its own proposal: ceil(B / n) prompts give B.
        prompt_sets = {t: self.proposer_prompts(t, math.ceil(batch / sampling.n)) for t in tasks}
        flat = [(t, p, src) for t in tasks for p, src in prompt_sets[t]]
        sampling = with_seed(sampling, self._request_seed(step, 1))
        generations = self._generate([p for _, p, _ in flat], sampling, "propose")
        proposals: list[Proposal] = []
        kept: Counter[TaskType] = Counter()
        for (task, _, source), generation in zip(flat, generations, strict=True):
            for trajectory in _trajectories(task, Role.PROPOSE, [generation], sampling):
                if kept[task] == batch:
                    break
                kept[task] += 1
                parsed = parse_response(
                    trajectory.text,
                    task,
                    Role.PROPOSE,
                    n_inputs=self.config.selfplay.induction_inputs,
                )
                proposals.append(Proposal(task, source, trajectory, parsed))
        self.validate(proposals)
        return proposals

    def validate(self, proposals: list[Proposal]) -> None:
        """Fill ``validation`` and ``new_task`` of every well-formed proposal; a valid one whose
        solver prompt would not fit the solve budget is rejected as ``prompt_too_long``."""
        pending: list[tuple[Proposal, ValidateRequest]] = []
        for proposal in proposals:
            parsed = proposal.parsed
            if isinstance(parsed, FormatError):
                continue
            early = parsed.rejection(proposal.source_program)
            if early is not None:
                proposal.validation = early
            elif proposal.task == TaskType.INDUCTION:
                request = ValidateRequest(
                    program=proposal.source_program or "",
                    inputs=parsed.inputs,
                    require_distinct_inputs=True,
                )
                pending.append((proposal, request))
            else:
                pending.append(
                    (proposal, ValidateRequest(program=parsed.program or "", inputs=parsed.inputs))
                )
        started = time.perf_counter()
        results = self.services.executor.validate_many([r for _, r in pending]) if pending else []
        self._timings["execute"] = self._timings.get("execute", 0.0) + time.perf_counter() - started
        limit = self.budget.limit(self.config.rollout.solve)
        for (proposal, request), result in zip(pending, results, strict=True):
            proposal.validation = result
            if result.valid and result.outputs is not None:
                task = self._task_from(proposal, request, result.outputs)
                if self.budget.fits(self._chat(solve_prompt(proposal.task, task)), limit):
                    proposal.new_task = task
                else:  # no solver could be asked it: not a task
                    proposal.validation = ValidationResult(valid=False, reason=PROMPT_TOO_LONG)

    def _task_from(
        self, proposal: Proposal, request: ValidateRequest, outputs: tuple[str, ...]
    ) -> Task:
        if proposal.task == TaskType.INDUCTION:
            assert isinstance(proposal.parsed, ParsedAnswer)
            shuffled = list(zip(request.inputs, outputs, strict=True))
            # Which pairs are hidden is the step's draw, not the proposer's choice.
            self.rng.shuffle(shuffled)
            pairs = tuple(shuffled)
            half = len(pairs) // 2
            return InductionTask(
                program=request.program,
                message=proposal.parsed.message or "",
                visible=pairs[:half],
                hidden=pairs[half:],
                policy_version=proposal.trajectory.policy_version,
            )
        return Triplet(
            program=request.program,
            input=request.inputs[0],
            output=outputs[0],
            policy_version=proposal.trajectory.policy_version,
        )

    # -- round 2 -------------------------------------------------------------------------
    def solve(self, step: int, proposals: list[Proposal]) -> list[Solve]:
        """Monte-Carlo samples of new tasks + buffer-filled solves, generated in one round.

        Returns the solve batch (``batch_size`` per task type at most): for each new task one
        of its own Monte-Carlo samples, then buffer tasks.
        """
        sp = self.config.selfplay
        new_by_type: dict[TaskType, list[Proposal]] = defaultdict(list)
        for proposal in proposals:
            if proposal.new_task is not None:
                new_by_type[proposal.task].append(proposal)
        jobs: list[tuple[TaskType, Task, Proposal | None]] = []
        prompts: list[str] = []
        limit = self.budget.limit(self.config.rollout.solve)
        for task in self.task_types:
            fresh = new_by_type[task]
            fill = max(0, sp.batch_size - len(fresh))
            for proposal in fresh:
                assert proposal.new_task is not None
                prompt = self._chat(solve_prompt(task, proposal.new_task))
                jobs.extend((task, proposal.new_task, proposal) for _ in range(sp.mc_samples))
                prompts.extend([prompt] * sp.mc_samples)
            for item in self.services.store.tasks(task, fill):
                prompt = self._chat(solve_prompt(task, item))
                # A buffer task of an earlier run with a larger budget: skipped, counted.
                if not self.budget.fits(prompt, limit):
                    self._budget_events[(task, "buffer_tasks_too_long")] += 1
                    continue
                jobs.append((task, item, None))
                prompts.append(prompt)
        # One prompt per sample (not n per prompt): one request shape for the whole round,
        # and per-prompt seeds make every Monte-Carlo sample reproducible on resume.
        sampling = with_seed(self.config.rollout.solve, self._request_seed(step, 2), n=1)
        generations = self._generate(prompts, sampling, "solve")
        solves = [
            Solve(task, item, _trajectories(task, Role.SOLVE, [generation], sampling)[0])
            for (task, item, _), generation in zip(jobs, generations, strict=True)
        ]
        self.score(solves)
        batch: list[Solve] = []
        for solve_, (_, _, proposal) in zip(solves, jobs, strict=True):
            if proposal is not None:
                proposal.mc_accuracies.append(solve_.accuracy)
        # Group the Monte-Carlo samples of each new task; pick one uniformly as its solve.
        by_proposal: dict[int, list[Solve]] = defaultdict(list)
        for solve_, (_, _, proposal) in zip(solves, jobs, strict=True):
            if proposal is None:
                batch.append(solve_)
            else:
                by_proposal[id(proposal)].append(solve_)
        picked = [self.rng.choice(group) for group in by_proposal.values()]
        per_type: dict[TaskType, list[Solve]] = defaultdict(list)
        for solve_ in picked + batch:
            per_type[solve_.task].append(solve_)
        return [s for t in self.task_types for s in per_type[t][: sp.batch_size]]

    def score(self, solves: list[Solve]) -> None:
        pending: list[tuple[Solve, ScoreRequest]] = []
        for solve_ in solves:
            parsed = parse_response(solve_.trajectory.text, solve_.task, Role.SOLVE)
            solve_.parsed = parsed
            if isinstance(parsed, FormatError):
                continue
            pending.append((solve_, _score_request(solve_.task, solve_.item, parsed)))
        started = time.perf_counter()
        results = self.services.executor.score_many([r for _, r in pending]) if pending else []
        self._timings["execute"] = self._timings.get("execute", 0.0) + time.perf_counter() - started
        for (solve_, _), result in zip(pending, results, strict=True):
            solve_.score = result

    def _generate(self, prompts: list[str], sampling: SamplingConfig, phase: str) -> list[Any]:
        started = time.perf_counter()
        out = self.services.generator.generate(prompts, sampling) if prompts else []
        self._timings[f"generate_{phase}"] = time.perf_counter() - started
        return out

    # -- rewards, advantages, buffer -----------------------------------------------------
    def finish(self, step: int, proposals: list[Proposal], solves: list[Solve]) -> StepOutput:
        """Rewards, TRR++ advantages, buffer adds and the step's metrics."""
        sp, le = self.config.selfplay, self.config.learner
        for proposal in proposals:
            ok = not isinstance(proposal.parsed, FormatError)
            proposal.trajectory.reward = propose_reward(
                ok, proposal.validation, proposal.mc_accuracies, sp.learnability_rule
            )
        for solve_ in solves:
            ok = not isinstance(solve_.parsed, FormatError)
            solve_.trajectory.reward = solve_reward(ok, solve_.score)
        trajectories = [p.trajectory for p in proposals] + [s.trajectory for s in solves]
        advantages = trr_advantages(
            [(t.task, t.role) for t in trajectories],
            [t.reward for t in trajectories],
            eps=le.advantage_eps,
        )
        samples = [
            TrainSample(
                prompt_token_ids=t.prompt_token_ids,
                response_token_ids=t.token_ids,
                behaviour_logprobs=t.logprobs,
                advantage=a,
                task=t.task,
                role=t.role,
                policy_version=t.policy_version,
                temperature=t.temperature,
                top_p=t.top_p,
            )
            for t, a in zip(trajectories, advantages, strict=True)
            if t.token_ids
        ]
        metrics = step_metrics(proposals, solves, self.task_types, sp.learnability_rule)
        metrics.update(
            trr_metrics(
                [(t.task, t.role) for t in trajectories],
                [t.reward for t in trajectories],
                advantages,
            )
        )
        for task in self.task_types:
            fresh = [p.new_task for p in proposals if p.task == task and p.new_task is not None]
            if fresh:
                stamped = [t.model_copy(update={"step": step}) for t in fresh]
                self.services.store.add(task, stamped)
        return StepOutput(samples, metrics, proposals, solves, timings=dict(self._timings))

    def run(self, step: int) -> StepOutput:
        """Round 1, round 2, rewards: one step's training samples."""
        self._timings = {}
        self._budget_events.clear()  # shared with self.prompts: cleared, not replaced
        proposals = self.propose(step)
        solves = self.solve(step, proposals)
        output = self.finish(step, proposals, solves)
        output.metrics.update(
            prompt_budget_metrics(proposals, self._budget_events, self.task_types)
        )
        return output


def _score_request(task: TaskType, item: Task, parsed: ParsedAnswer) -> ScoreRequest:
    if task == TaskType.INDUCTION:
        assert isinstance(item, InductionTask)
        return ScoreRequest(
            task=task, program=item.program, answer=parsed.program or "", pairs=item.hidden
        )
    assert isinstance(item, Triplet)
    answer = parsed.output if task == TaskType.DEDUCTION else parsed.inputs[0]
    return ScoreRequest(
        task=task, program=item.program, input=item.input, output=item.output, answer=answer or ""
    )
