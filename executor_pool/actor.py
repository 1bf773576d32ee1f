"""ExecutorActor: one sandbox (fork-server or container) with S parallel slots, as a Ray actor.

A *threaded* actor: the pool creates it with ``max_concurrency`` above its chunk limit, so
several chunks are inside at once and the sandbox keeps all S slots busy (it queues the
programs of concurrent calls on its slots) instead of Ray serialising the calls.
The actor never retries anything itself: when it dies, the pool re-runs its chunks elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import ray

from azr.config import ExecutorConfig
from azr.logs import route_process_output
from azr.tasks import CheckRequest, ScoreRequest, ScoreResult, ValidateRequest, ValidationResult
from executor_pool.executor import SandboxExecutor
from executor_pool.ray_metrics import STAT_COUNTERS, ActorMetrics

_Result = TypeVar("_Result")


class ExecutorActorImpl:
    """The actor's body (plain class, so it can be tested and reused without Ray)."""

    def __init__(
        self,
        config: ExecutorConfig,
        name: str,
        node_id: str,
        *,
        induction_scoring: Literal["binary", "fraction"] = "binary",
        metrics: bool = True,
    ):
        route_process_output(name.removeprefix("azr-"))
        self.name = name
        self.node_id = node_id
        self._slots = config.slots
        # Starting the sandbox here makes a broken backend (no Docker engine, missing
        # image) fail the actor's creation, which the pool reports as a start-up error.
        self._executor = SandboxExecutor(config, induction_scoring=induction_scoring)
        self._metrics = ActorMetrics(name, node_id) if metrics else None
        self._lock = threading.Lock()
        self._requests_inside = 0
        self._last_stats = self._stat_counts()

    def ready(self) -> dict[str, Any]:
        """Answered once the sandbox is up: where this actor runs."""
        return {"name": self.name, "node_id": self.node_id}

    def validate_many(self, requests: list[ValidateRequest]) -> list[ValidationResult]:
        """Validate a chunk of proposals; results in request order."""
        return self._run("validate", requests, self._executor.validate_many)

    def score_many(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        """Score a chunk of answers; results in request order."""
        return self._run("score", requests, self._executor.score_many)

    def check_many(self, requests: list[CheckRequest]) -> list[ScoreResult]:
        """Run a chunk of programs against their tests; results in request order."""
        return self._run("check", requests, self._executor.check_many)

    def stats(self) -> dict[str, Any]:
        """The sandbox's counters (runs, timeouts, memory kills, restarts ...)."""
        return dict(self._executor.stats())

    def close(self) -> None:
        """Stop the sandbox (fork-server / container)."""
        self._executor.close()

    def _run(
        self, kind: str, requests: list[Any], call: Callable[[list[Any]], list[_Result]]
    ) -> list[_Result]:
        started = time.monotonic()
        self._track(len(requests))
        try:
            results = call(list(requests))
        finally:
            self._track(-len(requests))
        if len(results) != len(requests):  # the pool would retry; say precisely why
            raise RuntimeError(
                f"sandbox returned {len(results)} results for {len(requests)} requests"
            )
        if self._metrics is not None:
            self._metrics.record_call(kind, len(requests), time.monotonic() - started)
            self._metrics.record_stat_deltas(self._stat_deltas())
        return results

    def _track(self, delta: int) -> None:
        with self._lock:
            self._requests_inside += delta
            inside = self._requests_inside
        if self._metrics is not None:
            self._metrics.record_load(inside, self._slots)

    def _stat_counts(self) -> dict[str, int]:
        stats = self._executor.stats()
        return {key: int(stats.get(key, 0)) for key in STAT_COUNTERS}

    def _stat_deltas(self) -> dict[str, int]:
        with self._lock:  # concurrent calls must not count one increment twice
            current = self._stat_counts()
            deltas = {key: current[key] - self._last_stats.get(key, 0) for key in current}
            self._last_stats = current
        return deltas


ExecutorActor = ray.remote(ExecutorActorImpl)
"""The Ray actor class; the pool sets scheduling, ``max_concurrency`` and resources per node."""
