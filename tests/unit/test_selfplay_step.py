"""The step's accounting with a scripted policy: two rounds, batch composition, rewards, TRR++.

The executor (process sandbox) and the buffers (durable store) are the real ones. The policy
is scripted because the point is to check numbers that a sampled LLM would make unknowable:
which proposals validate, how many Monte-Carlo samples each gets, what r_propose comes out.
The end-to-end tests (test_selfplay_e2e.py) run the same step with real vLLM.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from actors.types import Completion, Generation
from azr.config import load_config
from azr.prompts import format_response
from azr.selfplay import Services, StepRunner
from azr.tasks import Role, TaskType
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

    def __init__(self):
        self.calls: list[int] = []
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
            text = PROPOSALS[task][self.proposed[task]]
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
        assert sampling.n == 1 and sampling.seed is not None
        self.calls.append(len(prompts))
        return [
            Generation(
                prompt_token_ids=[1, 2, 3],
                completions=[Completion([7, 8], self._answer(p), [-0.1, -0.2], "stop", 0)],
            )
            for p in prompts
        ]


class PlainTokenizer:
    chat_template = None


@pytest.fixture
def step_output(tmp_path):
    config = load_config(
        overrides=[
            "selfplay.batch_size=2",
            "selfplay.num_references=1",
            "selfplay.induction_inputs=2",
            "selfplay.mc_samples=4",
            "executor.timeout_s=3",
            "rollout.propose.temperature=0.7",
            "rollout.solve.temperature=1.1",
        ]
    )
    buffers = TaskBuffers(tmp_path / "buffer", seed=0)
    executor = SandboxExecutor(config.executor)
    policy = ScriptedPolicy()
    services = Services(policy, executor, BufferClient.local(buffers), PlainTokenizer())
    try:
        runner = StepRunner(config, services, random.Random(0))
        yield runner.run(step=1), policy, buffers
    finally:
        executor.close()
        buffers.close()


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
    assert induction.visible == (("1", "1"),) and induction.hidden == (("2", "2"),)
    assert output.metrics["deduction/propose/valid_rate"] == 0.5
    assert output.metrics["abduction/propose/learnability"] == 0.5


def test_samples_carry_the_sampling_they_were_drawn_with(step_output):
    """The learner takes its logprobs at each sample's temperature (the rollout's are of
    softmax(logits / T)); the step must hand over the one each role was sampled at."""
    output, _, _ = step_output
    temperatures = {r: {s.temperature for s in output.samples if s.role == r} for r in Role}
    assert temperatures == {Role.PROPOSE: {0.7}, Role.SOLVE: {1.1}}
    assert {(s.top_p, s.top_k) for s in output.samples} == {(1.0, 0)}
