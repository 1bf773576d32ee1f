"""ExecutorPool: the driver-side front of every ExecutorActor in the cluster.

Places ``executor.per_node`` actors on every node that offers ``executor.resource``, splits
each batch into chunks spread over the actors (at most ``executor.max_chunks_in_flight`` per
actor) and hands back results in request order. Invariant: each request's result is recorded
exactly once; a chunk whose actor died is re-run elsewhere (at most ``executor.max_retries``
times) and nothing from the failed call is kept. All Ray bookkeeping runs on one dispatcher
thread (``dispatcher.py``, ``membership.py``), so the blocking (``validate_many``), future
(``submit_validate``) and asyncio (``validate_many_async``) forms are thread-safe.
``check_many`` / ``submit_check`` run evaluation programs against their tests.
Membership, retries and backpressure in detail: docs/executor.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Literal

from azr.config import ExecutorConfig
from azr.tasks import CheckRequest, ScoreRequest, ScoreResult, ValidateRequest, ValidationResult
from executor_pool.dispatcher import Dispatcher, ExecutorPoolError
from executor_pool.membership import MemberInfo

__all__ = ["ExecutorPool", "ExecutorPoolError", "MemberInfo"]


class ExecutorPool:
    """Executor actors across the cluster behind one ``azr.tasks.Executor`` interface.

    Needs ``ray.init`` first. The constructor places the actors and, unless ``wait_ready``
    is False, waits until every placed actor has started its sandbox, so a backend that
    cannot start (no Docker engine, missing image) fails here with the actor's error.
    """

    def __init__(
        self,
        config: ExecutorConfig,
        *,
        wait_ready: bool = True,
        metrics: bool = True,
        max_nodes: int | None = None,
        induction_scoring: Literal["binary", "fraction"] = "binary",
    ):
        """``max_nodes`` caps how many nodes get actors (the CLI's single-node mode uses 1);
        ``induction_scoring`` is ``selfplay.induction_scoring``; ``metrics`` turns the
        ``azr_executor*`` metrics on (``metrics.enabled``)."""
        self.config = config
        self._dispatcher = Dispatcher(
            config, metrics=metrics, max_nodes=max_nodes, induction_scoring=induction_scoring
        )
        self._dispatcher.start()
        if wait_ready:
            try:
                self.wait_ready(timeout_s=config.start_timeout_s)
            except BaseException:
                self.shutdown()
                raise

    # -- blocking API (azr.tasks.Executor) -------------------------------------------------

    def validate_many(self, requests: Sequence[ValidateRequest]) -> list[ValidationResult]:
        """Validate proposals; results in request order. Blocks: use the async form in a loop."""
        return self.submit_validate(requests).result()

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Score answers; results in request order. Blocks: use the async form in a loop."""
        return self.submit_score(requests).result()

    def check_many(self, requests: Sequence[CheckRequest]) -> list[ScoreResult]:
        """Run programs against their tests (``azr.tasks.ProgramChecker``); request order."""
        return self.submit_check(requests).result()

    # -- non-blocking API ------------------------------------------------------------------

    def submit_validate(
        self, requests: Sequence[ValidateRequest]
    ) -> Future[list[ValidationResult]]:
        """Queue a validation batch; the future resolves to results in request order, or to
        ``ExecutorPoolError`` when a chunk failed more than ``executor.max_retries`` times."""
        _check_types(requests, ValidateRequest)
        return self._dispatcher.submit("validate", list(requests))

    def submit_score(self, requests: Sequence[ScoreRequest]) -> Future[list[ScoreResult]]:
        """Queue a scoring batch (see ``submit_validate``)."""
        _check_types(requests, ScoreRequest)
        return self._dispatcher.submit("score", list(requests))

    def submit_check(self, requests: Sequence[CheckRequest]) -> Future[list[ScoreResult]]:
        """Queue a batch of programs and their tests (see ``submit_validate``)."""
        _check_types(requests, CheckRequest)
        return self._dispatcher.submit("check", list(requests))

    async def validate_many_async(
        self, requests: Sequence[ValidateRequest]
    ) -> list[ValidationResult]:
        """``validate_many`` for asyncio: awaits without blocking the event loop."""
        return await asyncio.wrap_future(self.submit_validate(requests))

    async def score_many_async(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """``score_many`` for asyncio: awaits without blocking the event loop."""
        return await asyncio.wrap_future(self.submit_score(requests))

    # -- cluster membership ----------------------------------------------------------------

    def refresh(self) -> dict[str, int]:
        """Look at the cluster now: place actors on new nodes, replace dead ones, forget
        removed nodes. Returns the number of live (starting or ready) actors per node id."""
        return self._dispatcher.request_refresh().result()

    def wait_ready(self, timeout_s: float | None = None, *, poll_s: float = 0.1) -> dict[str, int]:
        """Block until every usable executor node has ``per_node`` ready actors (after a
        refresh). A node whose actors failed to start 3 times in a row is not usable: it is
        logged and skipped, so one broken node does not stop the others.

        Raises ``ExecutorPoolError`` with the last start-up error when actors keep failing to
        start, or ``TimeoutError`` when they are still starting after ``timeout_s``.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.refresh()
        while True:
            snapshot = self._dispatcher.snapshot()
            if snapshot.usable_nodes and all(
                snapshot.ready_per_node.get(node, 0) >= self.config.per_node
                for node in snapshot.usable_nodes
            ):
                return dict(snapshot.ready_per_node)
            if snapshot.fatal_error is not None:
                raise ExecutorPoolError(snapshot.fatal_error)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(
                    f"executor actors not ready after {timeout_s:.0f}s: ready per node "
                    f"{snapshot.ready_per_node}, executor nodes {sorted(snapshot.nodes)}"
                    + (
                        f"; last start-up error: {snapshot.last_error}"
                        if snapshot.last_error
                        else ""
                    )
                )
            time.sleep(poll_s)

    def placement(self) -> dict[str, int]:
        """Ready actors per node id (no cluster call)."""
        return dict(self._dispatcher.fresh_snapshot().ready_per_node)

    def members(self) -> list[MemberInfo]:
        """Every actor the pool currently tracks (handle, node, state, chunks in flight)."""
        return list(self._dispatcher.fresh_snapshot().members)

    def stats(self) -> dict[str, int]:
        """Pool counters: batches, requests, chunks dispatched/retried, actors started/died,
        start-up failures, pending and in-flight requests."""
        return dict(self._dispatcher.fresh_snapshot().counters)

    def actor_stats(self, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Each ready actor's own counters (``SandboxExecutor.stats()`` plus node and name)."""
        return self._dispatcher.actor_stats(timeout_s)

    # -- lifetime --------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Fail queued batches with ``ExecutorPoolError``, close and kill every actor (idempotent)."""
        self._dispatcher.stop()

    close = shutdown

    def __enter__(self) -> ExecutorPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _check_types(requests: Sequence[object], expected: type) -> None:
    # A wrong type found here is the caller's bug; finding it on an actor would cost a retry.
    for index, request in enumerate(requests):
        if not isinstance(request, expected):
            raise TypeError(
                f"request {index} is {type(request).__name__}, expected {expected.__name__}"
            )
