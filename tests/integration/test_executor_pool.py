"""ExecutorPool on a real multi-node Ray cluster (ray.cluster_utils.Cluster on one machine).

One cluster for the whole module (starting nodes is the expensive part), grown and shrunk by
the tests: executor nodes join, an actor is killed, nodes are removed. The tests run in any
order: each one adds the nodes it needs (`worker_nodes` holds the live ones) and states its
expectations in terms of the cluster as it finds it. Every program runs in the real process
sandbox.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest
import ray
from ray.cluster_utils import Cluster

from azr.config import DockerConfig, ExecutorConfig
from azr.tasks import ScoreRequest, TaskType, ValidateRequest
from executor_pool.pool import ExecutorPool, ExecutorPoolError

pytestmark = pytest.mark.slow

PER_NODE = 2
NODE_ARGS = {"num_cpus": 1, "resources": {"executor": 2}, "include_dashboard": False}
# Metrics reach the node's Prometheus endpoint every 0.5 s instead of every 10 s.
# A crashed node is declared dead after 3 missed 1 s health checks (Ray's default: ~15 s+).
HEAD_ARGS = {
    **NODE_ARGS,
    "_system_config": {
        "metrics_report_interval_ms": 500,
        "health_check_period_ms": 1000,
        "health_check_failure_threshold": 3,
    },
}
# A loop long enough (tens of ms per call) that a batch is still running when we break things.
SLOW_PROGRAM = (
    "def f(n):\n    total = 0\n    for i in range(n):\n        total += i % 7\n    return total"
)


def slow_requests(count: int, base: int = 20_000) -> tuple[list[ValidateRequest], list[str]]:
    """Requests whose outputs all differ, so a result in the wrong slot cannot pass."""
    sizes = [base + 97 * i for i in range(count)]
    requests = [ValidateRequest(program=SLOW_PROGRAM, inputs=(str(n),)) for n in sizes]
    # sum(i % 7 for i in range(n)) in closed form: full cycles of 0..6, then the remainder.
    expected = [repr(n // 7 * 21 + (n % 7) * (n % 7 - 1) // 2) for n in sizes]
    return requests, expected


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    done = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def executor_config(**changes: object) -> ExecutorConfig:
    settings: dict[str, object] = {
        "per_node": PER_NODE,
        "slots": 2,
        "resource": "executor",
        "chunk_size": 3,
        "max_chunks_in_flight": 2,
        "timeout_s": 10.0,
        "discovery_interval_s": 0.3,
        "start_timeout_s": 60.0,
    }
    settings.update(changes)
    return ExecutorConfig(**settings)


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, seen: Callable[[], object] = str
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; saw {seen()}")
        time.sleep(0.05)


def busy_member_on(pool: ExecutorPool, nodes: set[str]) -> Callable[[], bool]:
    def condition() -> bool:
        return any(
            m.node_id in nodes and m.state == "ready" and m.chunks_in_flight > 0
            for m in pool.members()
        )

    return condition


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster(initialize_head=True, head_node_args=HEAD_ARGS)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def pool(cluster: Cluster) -> Iterator[ExecutorPool]:
    pool = ExecutorPool(executor_config())
    try:
        yield pool
    finally:
        pool.shutdown()


@pytest.fixture(scope="module")
def worker_nodes() -> list:
    """Live executor nodes added by the tests (a test that removes one takes it out)."""
    return []


def head_id() -> str:
    return ray.get_runtime_context().get_node_id()


def executor_nodes(worker_nodes: list) -> set[str]:
    return {head_id(), *(n.node_id for n in worker_nodes)}


def wait_for_placement(pool: ExecutorPool, worker_nodes: list, what: str) -> None:
    """Until every live executor node, and only those, has its PER_NODE ready actors."""
    nodes = executor_nodes(worker_nodes)
    wait_for(lambda: pool.placement() == dict.fromkeys(nodes, PER_NODE), 60, what, pool.members)


@pytest.fixture(scope="module")
def killed_mid_batch(pool: ExecutorPool) -> dict:
    """One executor actor killed while a batch runs (shared by the tests that look at what
    that did: results, counters, exported metrics)."""
    before = pool.stats()
    requests, expected = slow_requests(24, base=3_000_000)
    running = pool.submit_validate(requests)
    wait_for(busy_member_on(pool, {head_id()}), 30, "a busy actor")
    victim = next(m for m in pool.members() if m.chunks_in_flight > 0 and m.state == "ready")
    ray.kill(victim.handle, no_restart=True)
    outputs = [r.outputs for r in running.result(timeout=120)]
    return {
        "before": before,
        "after": pool.stats(),
        "requests": len(requests),
        "outputs": outputs,
        "expected": [(e,) for e in expected],
        "victim": victim,
    }


def test_a_backend_that_cannot_start_fails_the_pool_with_its_error(cluster: Cluster) -> None:
    config = executor_config(backend="docker", docker=DockerConfig(image="azr-no-such-image:never"))
    with pytest.raises(ExecutorPoolError) as failure:
        ExecutorPool(config)
    message = str(failure.value)
    assert "failed to start on every executor node" in message
    # The backend's own error, whichever this machine gives (docker_sandbox.require_image).
    if shutil.which("docker") is None:
        assert "docker backend: the docker CLI is not on PATH" in message
    elif docker_engine_answers():
        assert "image 'azr-no-such-image:never' is not on this engine" in message
    else:
        assert "docker backend: the Docker engine does not answer" in message or (
            "docker image inspect failed" in message
        )


def test_pool_places_per_node_actors_and_keeps_input_order(
    pool: ExecutorPool, worker_nodes: list
) -> None:
    wait_for_placement(pool, worker_nodes, "per-node actors")
    requests = [
        ValidateRequest(program=f"def f(x):\n    return x * {i}", inputs=(repr(i), "'ab'"))
        for i in range(13)
    ]
    requests.insert(5, ValidateRequest(program="import os\ndef f(x):\n    return x", inputs=("1",)))
    results = pool.validate_many(requests)
    assert len(results) == len(requests)
    assert results[5].valid is False and results[5].reason == "banned:os"
    good = results[:5] + results[6:]
    assert [r.outputs for r in good] == [(repr(i * i), repr("ab" * i)) for i in range(13)]
    assert pool.validate_many([]) == []


def test_score_many_and_the_async_api(pool: ExecutorPool) -> None:
    scores = [
        ScoreRequest(task=TaskType.DEDUCTION, program="", answer="6.0", output="6"),
        ScoreRequest(task=TaskType.DEDUCTION, program="", answer="7", output="6"),
        ScoreRequest(
            task=TaskType.ABDUCTION, program="def f(x):\n    return x + 1", answer="4", output="5"
        ),
    ]
    validations, expected = slow_requests(6, base=1_000)

    async def both() -> tuple[list, list]:
        return await asyncio.gather(
            pool.score_many_async(scores), pool.validate_many_async(validations)
        )

    score_results, validation_results = asyncio.run(both())
    assert [s.accuracy for s in score_results] == [1.0, 0.0, 1.0]
    assert score_results[1].reason == "wrong"
    assert [r.outputs for r in validation_results] == [(e,) for e in expected]
    with pytest.raises(TypeError):
        pool.validate_many(scores)  # type: ignore[arg-type]


def test_nodes_that_join_get_executors_2_2_2_and_share_the_work(
    cluster: Cluster, pool: ExecutorPool, worker_nodes: list
) -> None:
    requests, expected = slow_requests(24)
    running = pool.submit_validate(requests)
    # Two executor nodes join during the run; a node without the resource gets nothing.
    worker_nodes.extend(cluster.add_node(**NODE_ARGS) for _ in range(2))
    plain = cluster.add_node(num_cpus=1, include_dashboard=False)
    assert [r.outputs for r in running.result(timeout=120)] == [(e,) for e in expected]

    joined = executor_nodes(worker_nodes)
    wait_for_placement(pool, worker_nodes, "2 actors on every executor node")
    assert plain.node_id not in pool.placement()
    assert len([m for m in pool.members() if m.state == "ready"]) == len(joined) * PER_NODE

    before = {s["name"]: s.get("validate_requests", 0) for s in pool.actor_stats()}
    requests, expected = slow_requests(24, base=2_000)
    assert [r.outputs for r in pool.validate_many(requests)] == [(e,) for e in expected]
    after = pool.actor_stats()
    worked = {
        s["node_id"] for s in after if s.get("validate_requests", 0) > before.get(s["name"], 0)
    }
    assert worked == joined, "every executor node should have run part of the batch"


def test_backpressure_bounds_chunks_in_flight_per_actor(pool: ExecutorPool) -> None:
    limit = pool.config.max_chunks_in_flight
    requests, expected = slow_requests(48, base=10_000)
    running = pool.submit_validate(requests)
    peak_in_flight, saw_queue = 0, False
    while not running.done():
        stats = pool.stats()
        saw_queue |= stats["pending_requests"] > 0
        peak_in_flight = max([peak_in_flight, *(m.chunks_in_flight for m in pool.members())])
        time.sleep(0.01)
    assert [r.outputs for r in running.result()] == [(e,) for e in expected]
    assert 0 < peak_in_flight <= limit
    assert saw_queue, "a batch larger than the pool's capacity must wait on the driver"


def test_killing_an_actor_mid_batch_returns_every_result_exactly_once(
    pool: ExecutorPool, killed_mid_batch: dict
) -> None:
    before, after = killed_mid_batch["before"], killed_mid_batch["after"]
    victim = killed_mid_batch["victim"]
    assert killed_mid_batch["outputs"] == killed_mid_batch["expected"]
    assert (
        after["requests_completed"] - before.get("requests_completed", 0)
        == killed_mid_batch["requests"]
    )
    assert after["chunks_retried"] > before.get("chunks_retried", 0)
    assert after["actors_died"] > before.get("actors_died", 0)
    # The dead actor's node is alive, so it gets a replacement.
    wait_for(lambda: pool.placement().get(victim.node_id) == PER_NODE, 60, "a replacement")
    assert victim.name not in {m.name for m in pool.members() if m.state != "dead"}


@pytest.mark.parametrize("graceful", [True, False], ids=["removed", "crashed"])
def test_removing_a_node_mid_batch_loses_no_program(
    cluster: Cluster, pool: ExecutorPool, worker_nodes: list, graceful: bool
) -> None:
    if not worker_nodes:  # run alone (or after the other removal): add the node to remove
        worker_nodes.append(cluster.add_node(**NODE_ARGS))
        wait_for_placement(pool, worker_nodes, "actors on the added node")
    doomed = worker_nodes.pop()
    before = pool.stats()
    requests, expected = slow_requests(24, base=3_100_000)
    running = pool.submit_validate(requests)
    wait_for(busy_member_on(pool, {doomed.node_id}), 30, "work on the doomed node")
    cluster.remove_node(doomed, allow_graceful=graceful)  # crashed: every process SIGKILLed

    assert [r.outputs for r in running.result(timeout=120)] == [(e,) for e in expected]
    after = pool.stats()
    assert after["requests_completed"] - before.get("requests_completed", 0) == len(requests)
    assert after["chunks_retried"] > before.get("chunks_retried", 0)
    wait_for_placement(pool, worker_nodes, "placement on the remaining nodes")


def test_actors_and_pool_export_azr_metrics_tagged_by_actor_and_node(
    cluster: Cluster, pool: ExecutorPool, killed_mid_batch: dict, worker_nodes: list
) -> None:
    wait_for_placement(pool, worker_nodes, "a replacement for the killed actor")
    pool.validate_many(slow_requests(6, base=1_000)[0])
    wanted = [  # Ray exports `azr_x` as `ray_azr_x`
        r'ray_azr_executor_requests_total\{[^}]*actor="azr-executor-[^"]+"[^}]*kind="validate"[^}]*node="[0-9a-f]+"',
        r"ray_azr_executor_runs_total\{",
        r"ray_azr_executor_latency_seconds_bucket\{",
        r"ray_azr_executor_in_flight\{",
        r"ray_azr_executor_queue_depth\{",
        r"ray_azr_executor_pool_retries_total\{",  # the killed actor's chunks were retried
        rf'ray_azr_executor_pool_actors\{{[^}}]*node="{head_id()}"[^}}]*\}} {float(PER_NODE)}',
        r"ray_azr_executor_pool_queue_depth\{",
    ]
    url = f"http://127.0.0.1:{cluster.head_node.metrics_export_port}/metrics"
    missing = wanted
    deadline = time.monotonic() + 30
    while missing and time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        missing = [pattern for pattern in wanted if not re.search(pattern, text)]
        time.sleep(0.5)
    assert not missing, f"metrics not exported: {missing}"


def test_no_executor_node_fails_the_batch_clearly_and_shutdown_is_final(cluster: Cluster) -> None:
    config = executor_config(resource="no-node-has-this", start_timeout_s=1.0)
    pool = ExecutorPool(config, wait_ready=False)
    request = ValidateRequest(program="def f(x):\n    return x", inputs=("1",))
    with pytest.raises(ExecutorPoolError, match="no executor actor .*'no-node-has-this'"):
        pool.validate_many([request])
    pool.shutdown()
    pool.shutdown()  # idempotent
    with pytest.raises(ExecutorPoolError, match="shut down"):
        pool.validate_many([request])
