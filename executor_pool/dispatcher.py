"""The ExecutorPool's dispatcher thread: membership, chunking, retries and backpressure.

Every piece of mutable pool state lives on this one thread, so none of it needs a lock;
other threads talk to it through an inbox queue and read an immutable ``Snapshot``.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError

from azr.config import ExecutorConfig
from executor_pool.membership import Member, MemberInfo, Membership, short_error
from executor_pool.ray_metrics import PoolMetrics

logger = logging.getLogger(__name__)

_POLL_S = 0.02
"""Longest wait for a finished call before the loop looks at its inbox again."""
_CLOSE_TIMEOUT_S = 10.0


class ExecutorPoolError(RuntimeError):
    """The pool could not produce results (retries exhausted, no executors, shut down)."""


@dataclass(frozen=True)
class Snapshot:
    """Read-only view of the dispatcher's state for other threads."""

    nodes: frozenset[str] = frozenset()
    usable_nodes: frozenset[str] = frozenset()
    """Executor nodes the pool has not given up on (after repeated start-up failures)."""
    ready_per_node: dict[str, int] = field(default_factory=dict)
    members: tuple[MemberInfo, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None
    fatal_error: str | None = None


@dataclass(eq=False)
class _Batch:
    kind: str
    size: int
    future: Future
    results: list[Any] = field(init=False)
    missing: int = field(init=False)

    def __post_init__(self) -> None:
        self.results = [None] * self.size
        self.missing = self.size

    @property
    def done(self) -> bool:
        return self.future.done()

    def fill(self, start: int, values: list[Any]) -> None:
        for offset, value in enumerate(values):
            if self.results[start + offset] is not None:
                # Cannot happen while a chunk is in flight at one actor only; fail loudly if it does.
                raise ExecutorPoolError(f"request {start + offset} got a second result")
            self.results[start + offset] = value
        self.missing -= len(values)
        if self.missing == 0 and not self.future.done():
            self.future.set_result(self.results)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


@dataclass(eq=False)
class _Chunk:
    batch: _Batch
    start: int
    requests: list[Any]
    attempts: int = 0
    """Failed runs so far."""


class Dispatcher:
    """Owns the executor actors and every queued or in-flight chunk (see pool.py)."""

    def __init__(
        self,
        config: ExecutorConfig,
        *,
        metrics: bool,
        max_nodes: int | None,
        induction_scoring: str,
    ):
        self._config = config
        self._metrics = PoolMetrics() if metrics else None
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._inbox_lock = threading.Lock()
        self._closed = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="azr-executor-pool", daemon=True)
        self._snapshot_lock = threading.Lock()
        self._snapshot = Snapshot()
        # Dispatcher-thread state from here on.
        self._counters: collections.Counter[str] = collections.Counter()
        self._membership = Membership(
            config,
            self._counters,
            max_nodes=max_nodes,
            actor_kwargs={"induction_scoring": induction_scoring, "metrics": metrics},
        )
        self._calls: dict[ray.ObjectRef, tuple[Member, _Chunk]] = {}
        self._pending: deque[_Chunk] = deque()
        self._no_capacity_since: float | None = None

    # -- called from any thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, kind: str, requests: list[Any]) -> Future:
        future: Future = Future()
        if not requests:
            future.set_result([])
            return future
        self._post("batch", _Batch(kind, len(requests), future), requests)
        return future

    def request_refresh(self) -> Future:
        future: Future = Future()
        self._post("refresh", future)
        return future

    def snapshot(self) -> Snapshot:
        """The state as of the loop's latest step (no waiting)."""
        with self._snapshot_lock:
            return self._snapshot

    def fresh_snapshot(self) -> Snapshot:
        """The state after everything submitted so far was taken in (waits one loop turn)."""
        future: Future = Future()
        self._post("snapshot", future)
        return future.result()

    def actor_stats(self, timeout_s: float) -> list[dict[str, Any]]:
        ready = [m for m in self.snapshot().members if m.state == "ready"]
        stats = ray.get([m.handle.stats.remote() for m in ready], timeout=timeout_s)
        return [
            {"name": m.name, "node_id": m.node_id, **s} for m, s in zip(ready, stats, strict=True)
        ]

    def stop(self) -> None:
        with self._inbox_lock:
            if self._closed:
                return
            self._closed = True
            self._inbox.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout=_CLOSE_TIMEOUT_S + 30)
        else:  # never started: nothing to tear down but the inbox
            self._fail_inbox()

    def _post(self, kind: str, *payload: Any) -> None:
        with self._inbox_lock:
            if self._closed:
                raise ExecutorPoolError("the executor pool is shut down")
            self._inbox.put((kind, payload))

    # -- the dispatcher thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                idle = not (self._calls or self._membership.starting_refs() or self._pending)
                self._read_inbox(self._config.discovery_interval_s if idle else 0.0)
                if self._stopping:
                    break
                try:
                    self._step()
                except Exception as exc:  # a bug here must fail callers, not hang them
                    logger.exception("executor pool dispatcher step failed")
                    self._fail_everything(ExecutorPoolError(f"executor pool failed: {exc!r}"))
        finally:
            self._teardown()

    def _read_inbox(self, block_s: float) -> None:
        try:
            item = self._inbox.get(timeout=block_s) if block_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, payload = item
            if kind == "stop":
                self._stopping = True
                return
            if kind == "batch":
                self._enqueue(*payload)
            elif kind == "refresh":
                (future,) = payload
                try:
                    self._membership.refresh()
                    future.set_result(self._membership.live_per_node())
                except Exception as exc:
                    future.set_exception(exc)
            elif kind == "snapshot":
                self._publish()
                payload[0].set_result(self.snapshot())
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _step(self) -> None:
        now = time.monotonic()
        self._membership.refresh_if_due(now)
        self._membership.expire_slow_starts(now)
        self._dispatch()
        self._check_capacity(now)
        self._poll()
        self._publish()

    def _enqueue(self, batch: _Batch, requests: list[Any]) -> None:
        # Split so that a batch spreads over every actor, but never above chunk_size.
        targets = self._membership.live_count()
        targets = max(1, targets or len(self._membership.nodes) * self._config.per_node)
        size = max(1, min(self._config.chunk_size, math.ceil(len(requests) / targets)))
        for start in range(0, len(requests), size):
            self._pending.append(_Chunk(batch, start, requests[start : start + size]))
        self._counters["batches"] += 1
        self._counters["requests"] += len(requests)

    # -- work ------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        limit = self._config.max_chunks_in_flight
        free = [m for m in self._membership.members if m.state == "ready" and m.in_flight < limit]
        while self._pending and free:
            chunk = self._pending.popleft()
            if chunk.batch.done:  # failed or cancelled: drop the rest of it
                continue
            # Least loaded first, then least recently used: spreads chunks over every node.
            member = min(free, key=lambda m: (m.in_flight, m.last_used))
            method = getattr(member.handle, f"{chunk.batch.kind}_many")
            self._calls[method.remote(chunk.requests)] = (member, chunk)
            member.in_flight += 1
            member.last_used = self._membership.next_sequence()
            self._counters["chunks_dispatched"] += 1
            if member.in_flight >= limit:
                free.remove(member)

    def _poll(self) -> None:
        refs = [*self._calls, *self._membership.starting_refs()]
        if not refs:
            if self._pending:  # work but no actor yet: wait for one without spinning
                time.sleep(_POLL_S)
            return
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=_POLL_S, fetch_local=True)
        for ref in done:
            if self._membership.is_starting_ref(ref):
                self._membership.on_started(ref)
            else:
                self._on_chunk_done(ref)

    def _on_chunk_done(self, ref: ray.ObjectRef) -> None:
        member, chunk = self._calls.pop(ref)
        member.in_flight -= 1
        try:
            results = ray.get(ref)
        except RayActorError as exc:
            self._membership.retire(member, f"it died ({short_error(exc)})")
            self._retry(chunk, exc)
            return
        except Exception as exc:  # the sandbox or the actor's code failed on this chunk
            self._retry(chunk, exc)
            return
        if chunk.batch.done:
            return
        if not isinstance(results, list) or len(results) != len(chunk.requests):
            self._retry(chunk, ExecutorPoolError(f"{member.name} returned a malformed result"))
            return
        chunk.batch.fill(chunk.start, results)
        self._counters["requests_completed"] += len(results)

    def _retry(self, chunk: _Chunk, exc: BaseException) -> None:
        chunk.attempts += 1
        if chunk.batch.done:
            return
        if chunk.attempts > self._config.max_retries:
            chunk.batch.fail(
                ExecutorPoolError(
                    f"a chunk of {len(chunk.requests)} {chunk.batch.kind} requests failed "
                    f"{chunk.attempts} times; last error: {short_error(exc)}"
                )
            )
            return
        self._counters["chunks_retried"] += 1
        if self._metrics is not None:
            self._metrics.retries.inc(1)
        self._pending.appendleft(chunk)  # first in line: it has waited longest

    def _check_capacity(self, now: float) -> None:
        membership = self._membership
        if not self._pending or membership.has_capacity():
            self._no_capacity_since = None
            return
        if membership.fatal_error is not None:
            self._fail_pending(ExecutorPoolError(membership.fatal_error))
            return
        if self._no_capacity_since is None:
            self._no_capacity_since = now
        elif now - self._no_capacity_since > self._config.start_timeout_s:
            where = f"offering resource {self._config.resource!r}" if self._config.resource else ""
            self._fail_pending(
                ExecutorPoolError(
                    f"no executor actor for {self._config.start_timeout_s:.0f}s: "
                    f"{len(membership.nodes)} alive executor nodes {where}".rstrip()
                    + (
                        f"; last start-up error: {membership.last_error}"
                        if membership.last_error
                        else ""
                    )
                )
            )
            self._no_capacity_since = None

    # -- reporting and teardown ------------------------------------------------------------

    def _publish(self) -> None:
        pending = sum(len(c.requests) for c in self._pending if not c.batch.done)
        in_flight = sum(len(chunk.requests) for _, chunk in self._calls.values())
        membership = self._membership
        ready = membership.ready_per_node()
        counters = dict(self._counters, pending_requests=pending, in_flight_requests=in_flight)
        snapshot = Snapshot(
            nodes=membership.nodes,
            usable_nodes=membership.usable_nodes(),
            ready_per_node=ready,
            members=tuple(m.info() for m in membership.members),
            counters=counters,
            last_error=membership.last_error,
            fatal_error=membership.fatal_error,
        )
        with self._snapshot_lock:
            self._snapshot = snapshot
        if self._metrics is not None:
            self._metrics.publish(
                pending, in_flight, {n: ready.get(n, 0) for n in membership.nodes}
            )

    def _fail_pending(self, exc: ExecutorPoolError) -> None:
        while self._pending:
            self._pending.popleft().batch.fail(exc)

    def _fail_everything(self, exc: ExecutorPoolError) -> None:
        self._fail_pending(exc)
        for _, chunk in self._calls.values():
            chunk.batch.fail(exc)

    def _fail_inbox(self) -> None:
        while True:
            try:
                kind, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            error = ExecutorPoolError("the executor pool is shut down")
            if kind == "batch":
                payload[0].fail(error)
            elif kind in ("refresh", "snapshot"):
                payload[0].set_exception(error)

    def _teardown(self) -> None:
        error = ExecutorPoolError("the executor pool is shut down")
        self._fail_everything(error)
        self._calls.clear()
        with self._inbox_lock:
            self._closed = True
        self._fail_inbox()
        if not ray.is_initialized():
            return
        self._membership.close_all(_CLOSE_TIMEOUT_S)
        self._publish()
