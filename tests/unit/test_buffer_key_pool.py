"""KeyPool: dedup keys shared with helper processes give exactly the in-process keys."""

import os
import signal
import time

import psutil
import pytest

from azr.tasks import IDENTITY_INDUCTION, TaskType, Triplet
from buffer_service import TaskBuffers
from buffer_service.entries import batch_keys
from buffer_service.key_pool import MIN_PARALLEL_BATCH, KeyPool

D = TaskType.DEDUCTION
LIMIT = 10_000


def mixed_batch(n: int) -> list[object]:
    """``n`` entries: valid, duplicate and every kind of rejection, interleaved."""
    kinds = [
        lambda i: Triplet(program=f"def f(x):\n    return x + {i}", input=str(i), output="0"),
        lambda i: Triplet(
            program=f"# dup {i}\ndef f(x):\n    return x + {i - 1}", input=str(i - 1), output="0"
        ),
        lambda i: Triplet(program="def f(x):\n  return x +", input="1", output="1"),
        lambda i: Triplet(program="def f(x):\n    return x", input="os", output="1"),
        lambda i: Triplet(program="def f(x):\n    return x", input=str(i), output="f(1)"),
        lambda i: Triplet(program="def f(x):\n    return x\n" + "#" * LIMIT, input="1", output="1"),
        lambda i: {"program": "def f(x): return x"},
        lambda i: Triplet.model_construct(
            program=1, input="1", output="1", step=0, policy_version=0
        ),
        lambda i: Triplet(program=f"def g(x):\n    return {i}", input="1", output="1"),
    ]
    return [kinds[i % len(kinds)](i) for i in range(n)]


@pytest.mark.parametrize("workers", [1, 2])
def test_helpers_give_exactly_the_in_process_keys(workers):
    batch = mixed_batch(4 * MIN_PARALLEL_BATCH + 5)
    pool = KeyPool(workers)
    try:
        assert pool.batch_keys(D, batch, LIMIT) == batch_keys(D, batch, LIMIT)
        assert len(pool.pids()) >= 1  # the batch really went to helpers
        reasons = {r for _, r in pool.batch_keys(D, batch, LIMIT)}
        assert {"program_syntax", "input_not_literal", "program_without_f", None} <= reasons
        # Induction and small batches stay in process, with the same answers.
        small = batch[: MIN_PARALLEL_BATCH - 1]
        assert pool.batch_keys(D, small, LIMIT) == batch_keys(D, small, LIMIT)
        ind = [IDENTITY_INDUCTION] * MIN_PARALLEL_BATCH
        assert pool.batch_keys(TaskType.INDUCTION, ind, LIMIT) == batch_keys(
            TaskType.INDUCTION, ind, LIMIT
        )
    finally:
        pool.close()
    assert pool.pids() == []


def test_a_dead_helper_costs_only_time_and_the_pool_starts_afresh():
    batch = mixed_batch(3 * MIN_PARALLEL_BATCH)
    expected = batch_keys(D, batch, LIMIT)
    pool = KeyPool(1)
    try:
        assert pool.batch_keys(D, batch, LIMIT) == expected
        (first,) = pool.pids()
        os.kill(first, signal.SIGKILL)
        assert pool.batch_keys(D, batch, LIMIT) == expected  # the chunk was redone in process
        assert pool.batch_keys(D, batch, LIMIT) == expected  # and a fresh pool took over
        (second,) = pool.pids()
        assert second != first
    finally:
        pool.close()


def test_buffers_with_helpers_store_what_buffers_without_them_store(tmp_path):
    batch = mixed_batch(5 * MIN_PARALLEL_BATCH)
    results, contents = [], []
    for workers in (0, 2):
        buffers = TaskBuffers(tmp_path / f"w{workers}", seed=0, key_workers=workers)
        results.append(buffers.add_many(D, batch, request_id="r"))
        contents.append(buffers.entries(D))
        helpers = buffers.key_worker_pids()
        buffers.close()
        assert (len(helpers) > 0) == (workers > 0)
        deadline = time.monotonic() + 10
        while any(psutil.pid_exists(p) for p in helpers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(psutil.pid_exists(p) for p in helpers)  # close() stops them
    assert results[0] == results[1] and results[0].added > 0 and results[0].rejected
    assert contents[0] == contents[1]
