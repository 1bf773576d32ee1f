"""The step's accounting with a scripted policy: two rounds, batch composition, rewards, TRR++.

The executor (process sandbox) and the buffers (durable store) are the real ones. The policy
is scripted because the point is to check numbers that a sampled LLM would make unknowable:
which proposals validate, how many Monte-Carlo samples each gets, what r_propose comes out.
The end-to-end tests (test_selfplay_e2e.py) run the same step with real vLLM.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from contextlib import contextmanager

import pytest

from actors.types import Completion, Generation
from azr.config import load_config
from azr.parsing import parse_response
from azr.prompts import format_response
from azr.selfplay import Services, StepRunner
from azr.step_metrics import step_metrics
from azr.step_types import Proposal, Trajectory
from azr.tasks import IDENTITY_PROGRAM, Role, TaskType, Triplet, ValidationResult
from buffer_service.buffers import TaskBuffers
from driver.runtime import BufferClient
from executor_pool.executor import SandboxExecutor

D, A, I = TaskType.DEDUCTION, TaskType.ABDUCTION, TaskType.INDUCTION  # noqa: E741


def _propose(task: TaskType, **blocks) -> str:
    return format_response(task, Role.PROPOSE, think="plan", **blocks)


def _solve(task: TaskType, **blocks) -> str:
    return format_response(task, Role.SOLVE, think="work", **blocks)


# Proposals, in prompt order per task type (batch_size = 2).
PROPOSALS = {
    D: [
        _propose(D, program="def f(x):\n    return x * 2", inputs=["3"]),  # valid, o = 6
        "no tags at all",  # format error
    ],
    A: [
        _propose(A, program="def f(x):\n    return 1 / 0", inputs=["1"]),  # raises: invalid
        _propose(A, program="def f(a, b):\n    return a + b", inputs=["1, 2"]),  # valid, o = 3
    ],
    I: [
        _propose(I, inputs=["1", "2"], message="gives back what it gets"),  # valid
        _propose(I, inputs=["1", "1"], message="gives back what it gets"),  # not distinct
    ],
}


class ScriptedPolicy:
    """Answers by prompt kind; on new tasks it alternates right and wrong answers."""

    def __init__(self, proposals: dict[TaskType, list[str]] = PROPOSALS):
        self.proposals = proposals
        self.calls: list[int] = []
        self.prompts: list[list[str]] = []
        self.proposed: Counter = Counter()
        self.alternate: Counter = Counter()

    def _kind(self, prompt: str) -> tuple[TaskType, Role]:
        markers = {
            "must predict the output exactly": (D, Role.PROPOSE),
            "must find an input": (A, Role.PROPOSE),
            "program-synthesis puzzle": (I, Role.PROPOSE),
            "Work out exactly what": (D, Role.SOLVE),
            "Find an input for which": (A, Role.SOLVE),
            "maps each input below": (I, Role.SOLVE),
        }
        (kind,) = [k for marker, k in markers.items() if marker in prompt]
        return kind

    def _answer(self, prompt: str) -> str:
        task, role = self._kind(prompt)
        if role == Role.PROPOSE:
            text = self.proposals[task][self.proposed[task] % len(self.proposals[task])]
            self.proposed[task] += 1
            return text
        new_task = {D: "x * 2", A: "a + b", I: "gives back what it gets"}[task]
        if new_task not in prompt:  # a buffer (identity) task: always right
            answer = {D: {"output": "'Hello World'"}, A: {"inputs": ["'Hello World'"]}}
            return _solve(task, **answer.get(task, {"program": "def f(x):\n    return x"}))
        self.alternate[task] += 1
        right = self.alternate[task] % 2 == 1
        if task == D:
            return _solve(D, output="6" if right else "7")
        if task == A:
            return _solve(A, inputs=["1, 2" if right else "5, 5"])
        return _solve(I, program="def f(x):\n    return x" if right else "def f(x):\n    return 0")

    def generate(self, prompts, sampling):
        assert sampling.seed is not None
        self.calls.append(len(prompts))
        self.prompts.append(list(prompts))
        return [
            Generation(
                prompt_token_ids=[1, 2, 3],
                completions=[
                    Completion([7, 8], self._answer(p), [-0.1, -0.2], "stop", 0)
                    for _ in range(sampling.n)
                ],
            )
            for p in prompts
        ]


class PlainTokenizer:
    """No chat template; one token per UTF-8 byte (a byte-level tokenizer without merges)."""

    chat_template = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))


SMALL = [
    "selfplay.batch_size=2",
    "selfplay.num_references=1",
    "selfplay.induction_inputs=2",
    "selfplay.mc_samples=4",
    "executor.timeout_s=3",
    "rollout.max_model_len=8192",  # byte-counted prompts (PlainTokenizer)
]


@contextmanager
def step_runner(tmp_path, *overrides: str, policy: ScriptedPolicy | None = None):
    """(runner, policy, buffers) over the real sandbox and buffers, config SMALL + overrides."""
    config = load_config(overrides=[*SMALL, *overrides])
    buffers = TaskBuffers(tmp_path / "buffer", seed=0)
    executor = SandboxExecutor(config.executor)
    policy = policy or ScriptedPolicy()
    services = Services(policy, executor, BufferClient.local(buffers), PlainTokenizer())
    try:
        yield StepRunner(config, services, random.Random(0)), policy, buffers
    finally:
        executor.close()
        buffers.close()


@pytest.fixture
def step_output(tmp_path):
    with step_runner(
        tmp_path, "rollout.propose.temperature=0.7", "rollout.solve.temperature=1.1"
    ) as (runner, policy, buffers):
        yield runner.run(step=1), policy, buffers


def test_one_step_is_two_generation_rounds(step_output):
    _, policy, _ = step_output
    # Round 1: 2 proposals x 3 types. Round 2: 4 MC samples x 3 new tasks + 1 buffer fill x 3.
    assert policy.calls == [6, 15]


def test_proposal_outcomes_and_rewards(step_output):
    output, _, _ = step_output
    rewards = defaultdict(list)
    for p in output.proposals:
        rewards[p.task].append(p.trajectory.reward)
    # Valid tasks are solved 2 of 4 times: s = 0.5, r_propose = 1 - s.
    assert rewards[D] == [0.5, -1.0]
    assert rewards[A] == [-0.5, 0.5]
    assert rewards[I] == [0.5, -0.5]
    assert [p.mc_accuracies for p in output.proposals if p.new_task] == [[1, 0, 1, 0]] * 3
    reasons = {
        p.validation.reason for p in output.proposals if p.validation and not p.validation.valid
    }
    assert len(reasons) == 2 and all(reasons)


def test_solve_batch_takes_new_tasks_first_then_fills_from_the_buffer(step_output):
    output, _, _ = step_output
    assert Counter(s.task for s in output.solves) == {D: 2, A: 2, I: 2}
    for task in (D, A, I):
        first, fill = [s for s in output.solves if s.task == task]
        assert first.item.program != "def f(x):\n    return x" or task == I
        assert first.trajectory.reward in (1.0, -0.5)  # one of its own MC samples
        assert fill.trajectory.reward == 1.0  # the identity task, answered right


def test_advantages_are_normalised_per_task_and_role(step_output):
    output, _, _ = step_output
    assert len(output.samples) == 12
    groups = defaultdict(list)
    for sample in output.samples:
        groups[(sample.task, sample.role)].append(sample.advantage)
    assert set(groups) == {(t, r) for t in (D, A, I) for r in Role}
    # deduction/propose rewards [0.5, -1]: mean -0.25, population std 0.75 -> [+1, -1]
    assert groups[(D, Role.PROPOSE)] == pytest.approx([1.0, -1.0], abs=1e-5)
    for values in groups.values():
        assert sum(values) == pytest.approx(0.0, abs=1e-5)


def test_valid_proposals_join_their_buffers_with_their_step(step_output):
    output, _, buffers = step_output
    assert {t: buffers.size(t) for t in (D, A, I)} == {D: 2, A: 2, I: 2}
    newest = buffers.entries(D)[-1]
    assert (newest.program, newest.input, newest.output, newest.step) == (
        "def f(x):\n    return x * 2",
        "3",
        "6",
        1,
    )
    induction = buffers.entries(I)[-1]
    assert len(induction.visible) == len(induction.hidden) == 1
    assert {*induction.visible, *induction.hidden} == {("1", "1"), ("2", "2")}
    assert output.metrics["deduction/propose/valid_rate"] == 0.5
    assert output.metrics["abduction/propose/learnability"] == 0.5


def test_n_proposals_per_prompt_are_each_their_own_proposal(tmp_path):
    """rollout.propose.n = 2: ceil(B / n) prompts per task type, B proposals, same accounting."""
    with step_runner(tmp_path, "rollout.propose.n=2") as (runner, policy, _):
        output = runner.run(step=1)
    assert policy.calls == [3, 15]  # one proposer prompt per task type, two completions each
    rewards = defaultdict(list)
    for p in output.proposals:
        rewards[p.task].append(p.trajectory.reward)
    assert rewards == {D: [0.5, -1.0], A: [-0.5, 0.5], I: [0.5, -0.5]}
    assert Counter((s.task, s.role) for s in output.samples) == {
        (t, r): 2 for t in (D, A, I) for r in Role
    }


def test_proposals_beyond_the_batch_are_not_kept(tmp_path):
    """B = 3 and n = 2: two prompts give four completions, three are proposals."""
    with step_runner(tmp_path, "rollout.propose.n=2", "selfplay.batch_size=3") as (runner, _, _):
        proposals = runner.propose(step=1)
    assert Counter(p.task for p in proposals) == {D: 3, A: 3, I: 3}


def test_induction_sources_are_uniform_over_the_programs_of_both_buffers(tmp_path):
    """Deduction holds 1 program, abduction 31: a source is the deduction one 1/32 of the time
    (plus abduction's own identity copy), not half the time as when a buffer is picked first."""
    with step_runner(tmp_path, "selfplay.task_types=[induction]") as (runner, _, buffers):
        programs = [f"def f(x):\n    return x + {k}" for k in range(30)]
        added = BufferClient.local(buffers).add(
            A, [Triplet(program=p, input="1", output=str(1 + k)) for k, p in enumerate(programs)]
        )
        assert added == 30 and buffers.size(D) == 1 and buffers.size(A) == 31
        sources = [src for _, src in runner.proposer_prompts(I, 640)]
    identity = sum(src == IDENTITY_PROGRAM for src in sources) / len(sources)
    assert identity == pytest.approx(2 / 32, abs=0.03)
    assert len(set(sources)) == 31  # every program can be drawn


def test_which_induction_pairs_are_hidden_is_drawn_not_the_proposers_order(tmp_path):
    inputs = [str(k) for k in range(6)]
    proposals = {I: [_propose(I, inputs=inputs, message="gives back what it gets")]}
    overrides = ("selfplay.task_types=[induction]", "selfplay.induction_inputs=6")
    with step_runner(tmp_path, *overrides, "selfplay.batch_size=8") as (runner, _, _):
        runner.services.generator.proposals = proposals
        tasks = [p.new_task for p in runner.propose(step=1)]
    assert len(tasks) == 8 and all(t is not None for t in tasks)
    for task in tasks:  # the identity program: outputs equal inputs, every pair kept once
        assert sorted(task.visible + task.hidden) == sorted((x, x) for x in inputs)
        assert len(task.visible) == len(task.hidden) == 3
    assert len({task.visible for task in tasks}) > 1  # not always the proposer's first three


def test_learnability_metric_follows_the_configured_rule():
    """A valid task every Monte-Carlo sample solves: 0 under "paper", -0.5 under "reference"."""
    trajectory = Trajectory(D, Role.PROPOSE, [1], [2], [-0.1], 0, "")
    triplet = Triplet(program="def f(x):\n    return x", input="1", output="1")
    proposal = Proposal(
        D,
        None,
        trajectory,
        parse_response(_propose(D, program=triplet.program, inputs=["1"]), D, Role.PROPOSE),
        validation=ValidationResult(valid=True, outputs=("1",)),
        new_task=triplet,
        mc_accuracies=[1.0, 1.0, 1.0],
    )
    assert step_metrics([proposal], [], [D], "paper")["deduction/propose/learnability"] == 0.0
    reference = step_metrics([proposal], [], [D], "reference")
    assert reference["deduction/propose/learnability"] == -0.5


# ---------------------------------------------------------------------- the prompt budget

LONG_INPUT = "'" + "a" * 3000 + "'"


def test_a_proposal_whose_solver_prompt_cannot_fit_is_rejected_as_prompt_too_long(tmp_path):
    """The solve budget (max_model_len - solve.max_tokens) is 2000 tokens: the identity solver
    prompts fit, a deduction proposal with a 3000-character input does not."""
    proposals = dict(PROPOSALS)
    proposals[D] = [_propose(D, program="def f(x):\n    return x", inputs=[LONG_INPUT])] * 2
    overrides = ("rollout.max_model_len=4000", "rollout.solve.max_tokens=2000")
    with step_runner(tmp_path, *overrides, policy=ScriptedPolicy(proposals)) as (
        runner,
        policy,
        buffers,
    ):
        output = runner.run(step=1)
        limit = runner.budget.limit(runner.config.rollout.solve)
        sent = [p for batch in policy.prompts for p in batch]
        assert all(runner.budget.length(p) <= limit for p in policy.prompts[1])
        assert buffers.size(D) == 1  # nothing added: only the identity seed
    mine = [p for p in output.proposals if p.task == D]
    assert [p.validation.reason for p in mine] == ["prompt_too_long"] * 2
    assert [p.trajectory.reward for p in mine] == [-0.5, -0.5]
    assert all(p.new_task is None for p in mine)
    assert output.metrics["deduction/budget/prompt_too_long"] == 2
    assert output.metrics["deduction/propose/outcome/invalid:prompt_too_long"] == 2
    assert output.metrics["abduction/budget/prompt_too_long"] == 0
    assert sent  # both rounds generated


def test_references_are_dropped_until_the_proposer_prompt_fits(tmp_path):
    """K = 6 long references cannot fit the proposer budget: the longest are dropped (counted)
    until the prompt fits; a budget with room keeps all six."""
    refs = [
        Triplet(
            program=f"def f(x):\n    y = {k}\n" + "    y += x\n" * (40 + k) + "    return y",
            input="1",
            output=str(k + 41 + k),
        )
        for k in range(6)
    ]
    with step_runner(tmp_path, "selfplay.num_references=6") as (runner, _, buffers):
        BufferClient.local(buffers).add(D, refs)
        roomy = runner.proposer_prompts(D, 4)
        assert all(p.count("### Reference") == 6 for p, _ in roomy)
        assert runner._budget_events[(D, "references_dropped")] == 0
        one_ref = runner.prompts.reference_prompt(D, refs[-1:])
        # Room for about three of the references beside the prompt's fixed text.
        budget = runner.budget.length(one_ref) + 2 * len(refs[0].program) + 256
        runner.budget.max_model_len = budget + runner.config.rollout.propose.max_tokens
        tight = runner.proposer_prompts(D, 4)
        limit = runner.budget.limit(runner.config.rollout.propose)
    kept = [p.count("### Reference") for p, _ in tight]
    assert all(runner.budget.length(p) <= limit for p, _ in tight)
    assert all(1 <= k < 6 for k in kept)
    assert runner._budget_events[(D, "references_dropped")] == sum(6 - k for k in kept)


def test_a_step_reports_the_budget_events_of_every_task_type(step_output):
    output, _, _ = step_output
    for task in (D, A, I):
        for event in (
            "references_dropped",
            "sources_too_long",
            "buffer_tasks_too_long",
            "prompt_too_long",
        ):
            assert output.metrics[f"{task}/budget/{event}"] == 0.0


def test_a_budget_too_small_for_the_identity_prompts_fails_at_start(tmp_path):
    small = ("rollout.max_model_len=1000", "rollout.propose.max_tokens=10")
    with (
        pytest.raises(ValueError, match=r"rollout.max_model_len \(1000\) minus rollout.propose"),
        step_runner(tmp_path, *small),
    ):
        pass


def test_samples_carry_the_sampling_they_were_drawn_with(step_output):
    """The learner takes its logprobs at each sample's temperature (the rollout's are of
    softmax(logits / T)); the step must hand over the one each role was sampled at."""
    output, _, _ = step_output
    temperatures = {r: {s.temperature for s in output.samples if s.role == r} for r in Role}
    assert temperatures == {Role.PROPOSE: {0.7}, Role.SOLVE: {1.1}}
    assert {(s.top_p, s.top_k) for s in output.samples} == {(1.0, 0)}
