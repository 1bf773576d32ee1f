"""BufferActor on a real local Ray cluster: API, metrics, a hard crash, concurrent clients."""

import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.request

import psutil
import pytest
import ray
from ray.exceptions import RayActorError

from azr.config import BufferConfig
from azr.tasks import IDENTITY_INDUCTION, TaskType, Triplet
from buffer_service import AddResult, EntryBatch, create_buffer_actor
from buffer_service.buffers import LOG_NAME
from buffer_service.entries import entry_key
from buffer_service.record_log import encode_record
from buffer_service.records import add_payload

pytestmark = pytest.mark.slow

D, A = TaskType.DEDUCTION, TaskType.ABDUCTION


@pytest.fixture(scope="module")
def ray_cluster():
    """A private Ray cluster whose metrics agent exports every second; yields its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # address="local": always a private cluster, never one another engineer started here.
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 1000},
    )
    # Workers cannot import this test module: ship its client actor class by value.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield port
    ray.shutdown()


def trip(i: int, step: int = 1) -> Triplet:
    return Triplet(
        program=f"def f(x):\n    return x - {i}", input="10", output=str(10 - i), step=step
    )


def test_actor_api_and_metric_totals(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(max_size=4), tmp_path, seed=3)
    result = ray.get(actor.add_many.remote(D, [trip(1), trip(1), trip(2), trip(3, step=-1)]))
    assert (result.added, result.duplicates, result.rejected) == (
        2,
        (1,),
        ((3, "negative_step_or_version"),),
    )
    ray.get(actor.add_many.remote(D, [trip(i) for i in range(3, 6)]))  # evicts 2
    assert ray.get(actor.size.remote(D)) == 4
    assert len(ray.get(actor.sample_tasks.remote(D, 3))) == 3
    assert len(set(e.program for e in ray.get(actor.sample_references.remote(D, 4)))) == 4
    stats = ray.get(actor.stats.remote())
    assert stats["buffers"]["deduction"]["evictions"] == 2
    metrics = stats["metrics"]
    assert metrics["adds:deduction"] == 5  # add_many calls (the seeding at open is in the size)
    assert metrics["dedup_hits:deduction"] == 1
    assert metrics["evictions:deduction"] == 2
    assert metrics["rejected:deduction:negative_step_or_version"] == 1
    assert metrics["size:deduction"] == 4
    assert metrics["samples:deduction:tasks"] == 1
    ray.kill(actor, no_restart=True)


def test_entry_batch_through_ray_gives_the_plain_list_result(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(), tmp_path, seed=0)
    respaced = trip(1).model_copy(update={"program": "def f(x):  # same\n    return x-1"})
    wrong = Triplet.model_construct(program=7, input="1", output="1", step=1, policy_version=0)
    batch = [trip(1), respaced, wrong, trip(2, step=-1), IDENTITY_INDUCTION, trip(3)]
    as_list = ray.get(actor.add_many.remote(D, batch))
    as_batch = ray.get(actor.add_many.remote(A, EntryBatch(batch)))
    assert as_batch == as_list
    assert as_list.rejected == (
        (2, "wrong_field_type"),
        (3, "negative_step_or_version"),
        (4, "wrong_entry_type"),
    )
    assert ray.get(actor.entries.remote(A))[1:] == [trip(1), trip(3)]
    ray.kill(actor, no_restart=True)


def test_metrics_reach_the_prometheus_endpoint(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(), tmp_path, seed=0)
    task = IDENTITY_INDUCTION.model_copy(update={"program": "def f(x):\n    return x  # v2"})
    result = ray.get(actor.add_many.remote(TaskType.INDUCTION, [task]))
    assert result.duplicates == (0,)  # same program as the seed once comments are ignored
    wanted = {
        r'ray_azr_buffer_dedup_hits_total\{[^}]*task="induction"[^}]*\} 1\.0',
        r'ray_azr_buffer_size\{[^}]*task="induction"[^}]*\} 1\.0',
        r'ray_azr_buffer_add_latency_s_count\{[^}]*task="induction"[^}]*\} 1\.0',
    }
    deadline = time.monotonic() + 60
    while wanted and time.monotonic() < deadline:
        url = f"http://127.0.0.1:{ray_cluster}/metrics"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        wanted = {w for w in wanted if not re.search(w, body)}
        time.sleep(0.5)
    assert not wanted, f"not exported: {wanted}"
    ray.kill(actor, no_restart=True)


def _stream_adds(actor, batches, acknowledged: dict, failures: list) -> None:
    """A client that streams batches and retries every unacknowledged one itself."""
    for rid, batch in batches:
        while True:
            try:
                # No Ray-level retry: this client sees the failure and retries on its own.
                ref = actor.add_many.options(max_task_retries=0).remote(D, batch, request_id=rid)
                acknowledged[rid] = ray.get(ref, timeout=60)
                break
            except RayActorError:
                failures.append(rid)
                time.sleep(0.02)


def _running(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_hard_kill_loses_no_acknowledged_add_and_retries_do_not_duplicate(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(key_workers=1), tmp_path, seed=0)
    # Batches large enough for the dedup-key helpers (KeyPool.MIN_PARALLEL_BATCH).
    batches = [(f"b{b}", [trip(b * 100 + i) for i in range(80)]) for b in range(60)]
    acknowledged: dict[str, AddResult] = {}
    failures: list[str] = []
    client = threading.Thread(target=_stream_adds, args=(actor, batches, acknowledged, failures))
    client.start()
    pids, helpers = set(), set()
    for kill_after in (10, 30):  # two hard kills while the stream is running
        while len(acknowledged) < kill_after and client.is_alive():
            time.sleep(0.005)
        pid = ray.get(actor.pid.remote())
        helpers.update(ray.get(actor.key_worker_pids.remote()))
        pids.add(pid)
        os.kill(pid, signal.SIGKILL)
    client.join(timeout=120)
    assert not client.is_alive()
    assert len(acknowledged) == len(batches)
    entries = ray.get(actor.entries.remote(D))
    programs = [e.program for e in entries[1:]]
    assert len(programs) == len(set(programs))  # nothing stored twice
    assert sorted(programs) == sorted(e.program for _, batch in batches for e in batch)
    # Every batch was added once; a retried batch whose first try had landed says so.
    for rid, batch in batches:
        result = acknowledged[rid]
        assert result.added == len(batch) and not result.duplicates, (rid, result)
    assert ray.get(actor.pid.remote()) not in pids  # it really was restarted
    assert failures, "the kills never interrupted a call: nothing was retried"
    # The killed actors' dedup-key helpers died with them (no orphan keeps running).
    assert helpers
    deadline = time.monotonic() + 20
    while _running(helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(helpers)
    print(
        f"retried calls: {failures}; replayed: {[r for r, a in acknowledged.items() if a.replayed]}"
    )
    ray.kill(actor, no_restart=True)


def test_batch_on_disk_but_unacknowledged_is_answered_from_the_ledger(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(), tmp_path, seed=0)
    log_file = tmp_path / LOG_NAME
    pid = ray.get(actor.pid.remote())
    for attempt in range(3):  # the kill must land between the write and the reply
        rid = f"big{attempt}"
        batch = [trip(attempt * 100_000 + i) for i in range(10_000)]
        # The exact bytes the actor will write for this batch: kill once all are in the file.
        keyed = [(entry_key(D, e, BufferConfig().max_entry_chars), e) for e in batch]
        record = encode_record(add_payload(D, rid, 1, keyed, AddResult(added=len(batch))))
        size_after = log_file.stat().st_size + len(record)
        ref = actor.add_many.options(max_task_retries=0).remote(D, batch, request_id=rid)
        deadline = time.monotonic() + 120
        while log_file.stat().st_size < size_after and time.monotonic() < deadline:
            time.sleep(0.0005)
        assert log_file.stat().st_size == size_after, "the batch record never reached the file"
        os.kill(pid, signal.SIGKILL)
        try:
            ray.get(ref)
        except RayActorError:
            break
        pid = ray.get(actor.pid.remote())
    else:
        pytest.fail("the reply always beat the kill")
    retry = ray.get(actor.add_many.remote(D, batch, request_id=rid))
    assert retry.replayed and retry.added == len(batch) and not retry.duplicates
    programs = [e.program for e in ray.get(actor.entries.remote(D))]
    assert len(programs) == len(set(programs)) == 1 + (attempt + 1) * len(batch)
    ray.kill(actor, no_restart=True)


@ray.remote(num_cpus=0)
class Client:
    """Adds its own entries plus entries every client shares, sampling in between."""

    def run(self, actor, client_id: int, rounds: int) -> tuple[int, int]:
        added = sampled = 0
        for r in range(rounds):
            own = [trip(client_id * 10_000 + r * 10 + i, step=r + 1) for i in range(10)]
            shared = [trip(900_000 + r * 10 + i, step=r + 1) for i in range(5)]
            result = ray.get(actor.add_many.remote(A, own + shared))
            added += result.added
            sampled += len(ray.get(actor.sample_tasks.remote(A, 8)))
            sampled += len(ray.get(actor.sample_references.remote(A, 6)))
        return added, sampled


def test_concurrent_clients_lose_and_duplicate_nothing(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(), tmp_path, seed=0)
    clients = [Client.remote() for _ in range(3)]
    rounds = 20
    results = ray.get([c.run.remote(actor, i, rounds) for i, c in enumerate(clients)])
    distinct = 3 * rounds * 10 + rounds * 5
    assert sum(added for added, _ in results) == distinct  # each shared entry added exactly once
    assert all(sampled == rounds * 14 for _, sampled in results)
    entries = ray.get(actor.entries.remote(A))
    assert len(entries) == 1 + distinct
    assert len({e.program for e in entries}) == len(entries)
    for c in clients:
        ray.kill(c)
    ray.kill(actor, no_restart=True)


def test_checkpoint_restore_through_the_actor_reproduces_samples(ray_cluster, tmp_path):
    actor = create_buffer_actor(BufferConfig(dir=str(tmp_path / "store")), seed=11)
    ray.get(actor.add_many.remote(D, [trip(i) for i in range(30)]))
    ray.get(actor.checkpoint.remote(str(tmp_path / "ckpt"), 1))
    original = ray.get(actor.sample_tasks.remote(D, 12, step=2))
    ray.get(actor.add_many.remote(D, [trip(100 + i, step=2) for i in range(10)]))
    ray.get(actor.restore.remote(str(tmp_path / "ckpt"), 1))
    assert ray.get(actor.size.remote(D)) == 31
    assert ray.get(actor.sample_tasks.remote(D, 12, step=2)) == original
    ray.kill(actor, no_restart=True)
