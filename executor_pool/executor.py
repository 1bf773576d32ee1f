"""SandboxExecutor: the azr.tasks.Executor that validates proposals and scores answers, and the
azr.tasks.ProgramChecker that runs evaluation programs against their tests.

Semantics are AZR_SPEC's "Validating a proposal" and "Scoring an answer": static checks run
here, on the host, before anything reaches the sandbox; programs run in the fork-server
(fresh processes, two hash seeds, two calls) and only canonical reprs come back, which are
re-checked here before they are trusted. Answers are parsed as literals, never evaluated,
and compared with ``==`` between literal values (``6 == 6.0``).
"""

from __future__ import annotations

import bisect
import collections
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Literal

from azr.config import ExecutorConfig
from azr.tasks import (
    CheckRequest,
    ScoreRequest,
    ScoreResult,
    TaskType,
    ValidateRequest,
    ValidationResult,
)
from executor_pool.sandbox import ForkServerClient, ProcessSandbox
from executor_pool.static_checks import Rejected, StaticChecker

COUNTERS = (
    "validate_requests", "score_requests", "check_requests", "static_rejections", "runs",
    "timeouts", "memory_kills", "crashes",
)  # fmt: skip
"""Counters ``SandboxExecutor.stats()`` always reports (besides ``sandbox_restarts``)."""
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def make_sandbox(config: ExecutorConfig) -> ForkServerClient:
    """The sandbox client for ``config.backend`` (docker is imported only when asked for)."""
    if config.backend == "process":
        return ProcessSandbox(config)
    if config.backend == "docker":
        from executor_pool.docker_sandbox import DockerSandbox

        return DockerSandbox(config)
    raise ValueError(f"unknown executor backend {config.backend!r}")


class ExecutorStats:
    """Counters and a latency histogram the executor actor exports as ``azr_executor_*``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter(dict.fromkeys(COUNTERS, 0))
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.latency_sum_s = 0.0
        self._recent: collections.deque[float] = collections.deque(maxlen=2048)

    def record_run(self, status: str, latency_s: float) -> None:
        with self._lock:
            self.counters["runs"] += 1
            if status == "timeout":
                self.counters["timeouts"] += 1
            elif status == "memory":
                self.counters["memory_kills"] += 1
            elif status.startswith("crash") or status == "sandbox_failure":
                self.counters["crashes"] += 1
            self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_S, latency_s)] += 1
            self.latency_sum_s += latency_s
            self._recent.append(latency_s)

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.counters[name] += amount

    def snapshot(self) -> dict:
        with self._lock:
            recent = sorted(self._recent)
            quantile = (lambda q: recent[min(len(recent) - 1, int(q * len(recent)))]) if recent else None  # fmt: skip
            return {
                **self.counters,
                "latency_s": {
                    "buckets": dict(zip((*LATENCY_BUCKETS_S, float("inf")), self.latency_buckets, strict=True)),
                    "sum": self.latency_sum_s,
                    "count": sum(self.latency_buckets),
                    "p50": quantile(0.5) if quantile else None,
                    "p99": quantile(0.99) if quantile else None,
                },
            }  # fmt: skip


class SandboxExecutor:
    """Validates proposals and scores answers in a sandbox; results in request order."""

    def __init__(
        self,
        config: ExecutorConfig,
        *,
        induction_scoring: Literal["binary", "fraction"] = "binary",
        sandbox: ForkServerClient | None = None,
    ) -> None:
        self.config = config
        self.induction_scoring = induction_scoring
        self.checker = StaticChecker(config)
        self.sandbox = sandbox if sandbox is not None else make_sandbox(config)
        self._stats = ExecutorStats()

    # ------------------------------------------------------------------ validate
    def validate_many(self, requests: list[ValidateRequest]) -> list[ValidationResult]:
        """AZR_SPEC rules 1-6 for each proposal (program + inputs)."""
        self._stats.count("validate_requests", len(requests))
        pending = [self._start_validation(request) for request in requests]
        return [outcome() for outcome in pending]

    def _start_validation(self, request: ValidateRequest) -> Callable[[], ValidationResult]:
        try:
            self.checker.check_program(request.program)
            if not request.inputs:
                raise Rejected("no_inputs")
            keys = [self.checker.input_key(text) for text in request.inputs]
            if request.require_distinct_inputs and len(set(keys)) != len(keys):
                raise Rejected("duplicate_inputs")
        except Rejected as rejection:
            self._stats.count("static_rejections")
            result = ValidationResult(valid=False, reason=rejection.reason)
            return lambda: result
        future = self._run("validate", request.program, request.inputs)

        def outcome() -> ValidationResult:
            status, results = self._reply(future)
            if status != "ok":
                return ValidationResult(valid=False, reason=status)
            try:
                outputs = tuple(self.checker.canonical_output(value) for _, value in results)
            except Rejected as rejection:
                return ValidationResult(valid=False, reason=rejection.reason)
            return ValidationResult(valid=True, outputs=outputs)

        return outcome

    # ------------------------------------------------------------------ score
    def score_many(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Accuracy in [0, 1] per answer (deduction, abduction, induction)."""
        self._stats.count("score_requests", len(requests))
        pending = [self._start_scoring(request) for request in requests]
        return [outcome() for outcome in pending]

    def _start_scoring(self, request: ScoreRequest) -> Callable[[], ScoreResult]:
        try:
            if request.task == TaskType.DEDUCTION:
                return self._score_deduction(request)
            if request.task == TaskType.ABDUCTION:
                return self._score_abduction(request)
            return self._score_induction(request)
        except Rejected as rejection:
            result = ScoreResult(accuracy=0.0, reason=rejection.reason)
            return lambda: result

    def _expected(self, text: str | None) -> object:
        if text is None:
            raise Rejected("bad_task")
        return self.checker.parse_value(text, reason="bad_task")

    def _score_deduction(self, request: ScoreRequest) -> Callable[[], ScoreResult]:
        expected = self._expected(request.output)
        answer = self.checker.parse_value(request.answer)
        result = _score(_literal_equal(answer, expected))
        return lambda: result

    def _score_abduction(self, request: ScoreRequest) -> Callable[[], ScoreResult]:
        expected = self._expected(request.output)
        try:
            self.checker.parse_input(request.answer)  # a literal argument tuple, nothing else
        except Rejected:
            raise Rejected("non_literal_answer") from None
        future = self._run("run", request.program, (request.answer,))

        def outcome() -> ScoreResult:
            status, results = self._reply(future)
            if status != "ok":
                return ScoreResult(accuracy=0.0, reason=status)
            return _score(self._output_equals(results[0][1], expected))

        return outcome

    def _score_induction(self, request: ScoreRequest) -> Callable[[], ScoreResult]:
        if not request.pairs:
            raise Rejected("bad_task")
        expected = [self._expected(output) for _, output in request.pairs]
        self.checker.check_program(request.answer)
        inputs = tuple(text for text, _ in request.pairs)
        future = self._run("run", request.answer, inputs, keep_going=True)

        def outcome() -> ScoreResult:
            status, results = self._reply(future)
            if len(results) != len(expected):
                return ScoreResult(accuracy=0.0, reason=status)
            passed = [
                item_status == "ok" and self._output_equals(value, want)
                for (item_status, value), want in zip(results, expected, strict=True)
            ]
            share = sum(passed) / len(passed)
            accuracy = share if self.induction_scoring == "fraction" else float(share == 1.0)
            if accuracy == 1.0:
                return ScoreResult(accuracy=1.0)
            reason = status if status != "ok" else "wrong"
            return ScoreResult(accuracy=accuracy, reason=reason)

        return outcome

    # ------------------------------------------------------------------ check
    def check_many(self, requests: list[CheckRequest]) -> list[ScoreResult]:
        """Run each program against its tests (evaluation): accuracy 1 when they pass, else 0
        with the status that failed them. No static checks: the code is arbitrary (HumanEval
        solutions import hashlib) and only the sandbox runs it."""
        self._stats.count("check_requests", len(requests))
        pending = [self._start_check(request) for request in requests]
        return [outcome() for outcome in pending]

    def _start_check(self, request: CheckRequest) -> Callable[[], ScoreResult]:
        if len(request.program) + len(request.test) > self.config.max_check_chars:
            result = ScoreResult(accuracy=0.0, reason="check_too_large")
            return lambda: result
        future = self.sandbox.submit(
            {
                "op": "check",
                "program": request.program,
                "test": request.test,
                "entry_point": request.entry_point,
                "timeout": self.config.timeout_s,
            }
        )

        def outcome() -> ScoreResult:
            status, results = self._reply(future)
            if status == "ok" and len(results) == 1:
                return ScoreResult(accuracy=1.0)
            return ScoreResult(
                accuracy=0.0, reason=status if status != "ok" else "sandbox_protocol"
            )

        return outcome

    def _output_equals(self, text: object, expected: object) -> bool:
        try:
            value = self.checker.parse_value(self.checker.canonical_output(text))
        except Rejected:
            return False
        return _literal_equal(value, expected)

    # ------------------------------------------------------------------ sandbox plumbing
    def _run(
        self, op: str, program: str, inputs: tuple[str, ...], keep_going: bool = False
    ) -> Future:
        request = {
            "op": op,
            "program": program,
            "inputs": list(inputs),
            "timeout": self.config.timeout_s,
            "keep_going": keep_going,
        }
        return self.sandbox.submit(request)

    def _reply(self, future: Future) -> tuple[str, list]:
        reply = future.result()
        status = reply.get("status")
        results = reply.get("results")
        if not isinstance(status, str) or not isinstance(results, list):
            status, results = "sandbox_protocol", []
        results = [
            r for r in results if isinstance(r, list) and len(r) == 2 and isinstance(r[0], str)
        ]
        wall = reply.get("wall_s")
        self._stats.record_run(status, float(wall) if isinstance(wall, (int, float)) else 0.0)
        return status[:80], results

    def stats(self) -> dict:
        """Counters (runs, timeouts, memory_kills, crashes, restarts ...) and latency."""
        return {**self._stats.snapshot(), "sandbox_restarts": self.sandbox.restarts}

    def close(self) -> None:
        """Stop the sandbox."""
        self.sandbox.close()

    def __enter__(self) -> SandboxExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _literal_equal(left: object, right: object) -> bool:
    """``==`` between two literal values (6 == 6.0); a comparison that blows up is unequal."""
    try:
        return bool(left == right)
    except (RecursionError, MemoryError):
        return False


def _score(correct: bool) -> ScoreResult:
    return ScoreResult(accuracy=1.0) if correct else ScoreResult(accuracy=0.0, reason="wrong")
