"""BufferActor: the task buffers as a durable Ray actor.

The actor is a thin shell around :class:`TaskBuffers`: it owns no logic besides metrics.
Ray restarts it after a crash (``max_restarts=-1``); the constructor then reopens the same
store directory, so every acknowledged add is back. Calls in flight during a crash are
retried on the restarted actor: they are all safe to repeat (adds are deduplicated and,
with a request id, answered from the idempotency ledger; sampling, checkpoint and restore
have no side effect that a second run changes).

The actor is pinned to the node that creates it, because its store lives on that node's disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray
from ray.actor import ActorHandle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from azr.config import BufferConfig
from azr.logs import route_process_output
from azr.tasks import TaskType
from buffer_service.buffers import TaskBuffers
from buffer_service.entries import BufferEntry
from buffer_service.metrics import BufferMetrics
from buffer_service.results import AddResult

TASK_RETRIES = 5
"""Times a call is retried after the actor died (a poison input must not retry forever)."""


class BufferActor:
    """Ray actor serving the deduction, abduction and induction buffers (one call at a time)."""

    def __init__(
        self,
        store_dir: str,
        *,
        seed: int,
        max_size: int | None,
        max_entry_chars: int,
        key_workers: int = 0,
    ) -> None:
        route_process_output("buffer")
        self._buffers = TaskBuffers(
            store_dir,
            seed=seed,
            max_size=max_size,
            max_entry_chars=max_entry_chars,
            key_workers=key_workers,
        )
        self._metrics = BufferMetrics()
        self._metrics.record_recovery(self._buffers.recovery)
        for task in TaskType:
            self._metrics.record_size(task, self._buffers.size(task))

    def add_many(
        self, task: TaskType | str, entries: list[BufferEntry], request_id: str | None = None
    ) -> AddResult:
        """See :meth:`TaskBuffers.add_many`; returns once the entries are on disk.

        Clients should send ``EntryBatch(entries)``: the same list, serialised in a compact form
        that halves what a batch costs in transit (:mod:`buffer_service.wire`).
        """
        task = TaskType(task)
        start = time.perf_counter()
        result = self._buffers.add_many(task, entries, request_id)
        self._metrics.record_add(
            task, result, self._buffers.size(task), time.perf_counter() - start
        )
        return result

    def sample_references(self, task: TaskType | str, k: int) -> list[BufferEntry]:
        """See :meth:`TaskBuffers.sample_references`."""
        task = TaskType(task)
        start = time.perf_counter()
        out = self._buffers.sample_references(task, k)
        self._metrics.record_sample(task, "references", time.perf_counter() - start)
        return out

    def sample_reference_sets(
        self, task: TaskType | str, k: int, count: int
    ) -> list[list[BufferEntry]]:
        """See :meth:`TaskBuffers.sample_reference_sets`."""
        task = TaskType(task)
        start = time.perf_counter()
        out = self._buffers.sample_reference_sets(task, k, count)
        self._metrics.record_sample(task, "reference_sets", time.perf_counter() - start)
        return out

    def sample_tasks(
        self, task: TaskType | str, n: int, new_first: bool = True, step: int | None = None
    ) -> list[BufferEntry]:
        """See :meth:`TaskBuffers.sample_tasks`."""
        task = TaskType(task)
        start = time.perf_counter()
        out = self._buffers.sample_tasks(task, n, new_first=new_first, step=step)
        self._metrics.record_sample(task, "tasks", time.perf_counter() - start)
        return out

    def size(self, task: TaskType | str) -> int:
        """Entries in one buffer."""
        return self._buffers.size(task)

    def entries(self, task: TaskType | str) -> list[BufferEntry]:
        """All entries of one buffer, oldest first (inspection and tests; large)."""
        return self._buffers.entries(task)

    def stats(self) -> dict:
        """:meth:`TaskBuffers.stats` plus the metric totals this actor exported."""
        return {**self._buffers.stats(), "metrics": self._metrics.totals()}

    def checkpoint(self, path: str, step: int) -> str:
        """See :meth:`TaskBuffers.checkpoint`; returns the file written."""
        return self._buffers.checkpoint(path, step)

    def restore(self, path: str, step: int) -> None:
        """See :meth:`TaskBuffers.restore`."""
        self._buffers.restore(path, step)
        for task in TaskType:
            self._metrics.record_size(task, self._buffers.size(task))

    def pid(self) -> int:
        """The worker process id (operations and crash tests)."""
        return os.getpid()

    def key_worker_pids(self) -> list[int]:
        """Process ids of the running dedup-key helpers (operations and crash tests)."""
        return self._buffers.key_worker_pids()


def create_buffer_actor(
    config: BufferConfig,
    store_dir: str | Path | None = None,
    *,
    seed: int = 0,
    name: str | None = None,
) -> ActorHandle:
    """Start a BufferActor on this node with Ray restarts enabled.

    ``store_dir`` overrides ``config.dir`` (the driver passes ``<run dir>/buffer`` when
    ``config.dir`` is None); ``seed`` is the run's master seed (sampling reproducibility).
    """
    target = store_dir if store_dir is not None else config.dir
    if target is None:
        raise ValueError("buffer store directory: pass store_dir or set buffer.dir")
    options: dict = {
        "max_restarts": -1,
        "max_task_retries": TASK_RETRIES,
        "num_cpus": 0,  # I/O-bound and light; it must not block CPU-hungry actors from placing
        "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False
        ),
    }
    if name is not None:
        options["name"] = name
    remote_cls = ray.remote(BufferActor)
    return remote_cls.options(**options).remote(
        str(Path(target).resolve()),
        seed=seed,
        max_size=config.max_size,
        max_entry_chars=config.max_entry_chars,
        key_workers=config.key_workers,
    )
