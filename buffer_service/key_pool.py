"""KeyPool: the dedup keys of a large batch, computed in parallel processes.

Keys are CPU-bound Python (parse and compile) that holds the GIL, so a batch of deduction or
abduction triplets is cut into ``workers + 1`` contiguous chunks: this process computes the
first, helper processes the others. Invariants: the result is exactly that of
:func:`~buffer_service.entries.batch_keys`; helpers only parse and compile (plain text in,
plain keys out), die with the buffer's process, and a helper's failure only costs time (its
chunk is recomputed here). Why and measured costs: docs/buffer.md.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor

from azr.tasks import TaskType
from buffer_service import entries
from buffer_service.entries import Keys, batch_keys, text_keys

log = logging.getLogger(__name__)

MIN_PARALLEL_BATCH = 64
"""Smaller batches stay in process: shipping a chunk costs more than it saves."""

_PR_SET_PDEATHSIG = 1


class KeyPool:
    """Dedup keys of batches, computed by this process and ``workers`` helper processes."""

    def __init__(self, workers: int) -> None:
        if workers < 0:
            raise ValueError(f"key workers must be >= 0, got {workers}")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def batch_keys(self, task: TaskType, batch: list[object], max_entry_chars: int) -> Keys:
        """The same list as :func:`~buffer_service.entries.batch_keys`."""
        return batch_keys(task, batch, max_entry_chars, self._text_keys)

    def _text_keys(self, task: TaskType, texts: list[tuple[str, str, str]]) -> Keys:
        if not self.workers or len(texts) < MIN_PARALLEL_BATCH:
            return text_keys(task, texts)
        size = -(-len(texts) // (self.workers + 1))
        chunks = [texts[start : start + size] for start in range(0, len(texts), size)]
        futures = [self._submit(task, chunk) for chunk in chunks[1:]]
        keys = text_keys(task, chunks[0])
        for chunk, future in zip(chunks[1:], futures, strict=True):
            keys += self._result(future, task, chunk)
        return keys

    def pids(self) -> list[int]:
        """Process ids of the running helpers (operations and tests)."""
        # ProcessPoolExecutor keeps no public list of its workers.
        processes = getattr(self._pool, "_processes", None) or {}
        return sorted(processes)

    def close(self) -> None:
        """Stop the helpers (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _start(self) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([entries.__name__])
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=_die_with_parent
        )

    def _submit(self, task: TaskType, chunk: list[tuple[str, str, str]]) -> Future | None:
        try:
            if self._pool is None:
                self._start()
            assert self._pool is not None
            return self._pool.submit(text_keys, task, chunk)
        except Exception as exc:  # a broken pool refuses work: compute in process
            self._discard(exc)
            return None

    def _result(self, future: Future | None, task: TaskType, chunk: list) -> Keys:
        if future is not None:
            try:
                return future.result()
            except Exception as exc:  # BrokenProcessPool: a helper died mid-chunk
                self._discard(exc)
        return text_keys(task, chunk)

    def _discard(self, exc: BaseException) -> None:
        log.warning(
            "dedup-key helper failed (%s: %s); computing in process", type(exc).__name__, exc
        )
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _die_with_parent() -> None:
    """Helper initialiser: die when the forkserver does (which exits with our owner)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent was gone before the signal was armed
        os._exit(1)
